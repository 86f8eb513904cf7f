"""Registry lookups, plugin registration, JSON Schema files and `explain` output."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from runink import schemas
from runink.schemas import errors, export, registry


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("pl", "Pipeline"),
        ("PipelineRuns", "PipelineRun"),
        ("run", "PipelineRun"),
        ("pr", "PipelineRun"),
        ("sl", "Slice"),
        ("no", "Node"),
        ("sa", "ServiceAccount"),
        ("ds", "Dataset"),
        ("qr", "QualityRule"),
        ("ann", "Annotation"),
        ("gs", "GitSource"),
        ("ev", "Event"),
        ("herds", "Herd"),
        ("HERD", "Herd"),
        ("secret", "Secret"),
    ],
)
def test_lookup_accepts_every_name(name: str, kind: str) -> None:
    assert registry.lookup(name).kind == kind


def test_lookup_suggests() -> None:
    with pytest.raises(errors.Invalid, match="did you mean 'pipelineruns'"):
        registry.lookup("pipelinerunz")


def test_scopes_and_columns() -> None:
    assert not registry.lookup("herd").namespaced
    assert not registry.lookup("node").namespaced
    assert registry.lookup("slice").namespaced
    headers = [c.header for c in registry.lookup("runs").columns if not c.wide_only]
    assert headers == ["NAME", "PIPELINE", "PHASE", "STARTED", "DURATION"]
    assert [c.header for c in registry.lookup("pl").columns if not c.wide_only] == [
        "NAME",
        "STEPS",
        "SCHEDULE",
        "AGE",
    ]


def test_register_plugin_kind_and_refuse_duplicates() -> None:
    class Widget(BaseModel):
        kind: str = "Widget"

    info = registry.KindInfo(
        "example.com/v1", "Widget", "widgets", "widget", ("wd",), True, Widget, (registry.NAME,)
    )
    registry.register(info)
    try:
        assert registry.lookup("wd") is info
        assert registry.get("example.com/v1", "Widget") is info
        with pytest.raises(errors.AlreadyExists):
            registry.register(info)
        clash = registry.KindInfo(
            "example.com/v1", "Gadget", "gadgets", "gadget", ("pl",), True, Widget, ()
        )
        with pytest.raises(errors.AlreadyExists, match="'pl'"):
            registry.register(clash)
    finally:
        registry.unregister("example.com/v1", "Widget")
    with pytest.raises(errors.Invalid):
        registry.lookup("wd")


def test_committed_json_schemas_are_current() -> None:
    for name, text in export.render().items():
        path = export.OUT_DIR / name
        assert path.exists(), f"{path} missing: run python -m runink.schemas.export"
        assert path.read_text() == text, f"{path} is stale: run python -m runink.schemas.export"


def test_json_schema_carries_field_docstrings() -> None:
    s = schemas.json_schema("pipeline")
    step = s["$defs"]["Step"]["properties"]
    assert "module:function" in step["python"]["description"]
    assert "dependsOn" in step


def test_explain_a_field() -> None:
    text = schemas.explain("pipeline.spec.steps")
    assert text.startswith("KIND:       Pipeline\nVERSION:    runink.io/v1\n")
    assert "FIELD: steps <[]Object>" in text
    assert "DESCRIPTION:\n    The steps; order does not matter" in text
    assert "  name\t<string> -required-" in text
    assert "  network\t<string>" in text and "One of: none, host, isolated." in text


def test_explain_kind_and_bad_field() -> None:
    assert "  spec\t<Object> -required-" in schemas.explain("runs")
    with pytest.raises(errors.Invalid, match=r"'stepz' does not exist in Pipeline\.spec"):
        schemas.explain("pipeline.spec.stepz")
