"""The manifest codec: every refusal names file, document, line and field path; round trips hold."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest

from runink import schemas
from runink.schemas import errors

EXAMPLES = pathlib.Path(__file__).parents[3] / "manifests" / "examples"

PIPELINE = """\
apiVersion: runink.io/v1
kind: Pipeline
metadata:
  name: nightly
  herd: finance
spec:
  steps:
    - name: extract
      python: etl.extract:main
    - name: load
      command: [python, -m, etl.load]
      dependsOn: [extract]
"""


def _only_error(exc: pytest.ExceptionInfo[errors.Invalid]) -> errors.FieldError:
    assert len(exc.value.errors) == 1, exc.value.errors
    return exc.value.errors[0]


def test_examples_parse() -> None:
    kinds = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        kinds += [m.info.kind for m in schemas.parse_manifests(path.read_text(), str(path))]
    assert sorted(kinds) == ["Herd", "Pipeline", "ServiceAccount"]


def test_parse_fills_defaults_and_normalizes_depends_on() -> None:
    [m] = schemas.parse_manifests(PIPELINE, "p.yaml")
    step = m.obj["spec"]["steps"][1]
    assert step["dependsOn"] == [{"step": "extract", "condition": "success"}]
    assert step["resources"] == {"cpu": "100m", "memory": "128Mi", "gpu": 0}
    assert step["network"] == "isolated"
    assert m.document.line == 1


def test_round_trip_through_yaml_is_stable() -> None:
    [m] = schemas.parse_manifests(PIPELINE, "p.yaml")
    [again] = schemas.parse_manifests(schemas.dump_yaml(m.obj), "again.yaml")
    assert again.obj == m.obj
    assert schemas.validate(m.obj) == m.obj


def test_multi_document_skips_empty_and_keeps_indices() -> None:
    text = "---\n---\n" + PIPELINE + "---\n" + PIPELINE.replace("nightly", "hourly")
    docs = schemas.load_documents(text, "multi.yaml")
    assert [d.index for d in docs] == [1, 2]
    assert docs[1].line == 16
    assert docs[1].line_of(("spec", "steps", 1, "dependsOn", 0)) == 27


def test_dump_yaml_list_is_multi_document() -> None:
    text = schemas.dump_yaml([{"a": 1}, {"b": 2}])
    assert [d.data for d in schemas.load_documents(text)] == [{"a": 1}, {"b": 2}]


def test_unknown_field_names_file_line_path_and_suggests() -> None:
    text = PIPELINE.replace("      dependsOn: [extract]", "      dependOn: [extract]")
    with pytest.raises(errors.Invalid) as exc:
        schemas.parse_manifests(text, "p.yaml")
    e = _only_error(exc)
    assert (e.file, e.document, e.line, e.path) == ("p.yaml", 0, 12, "spec.steps[1].dependOn")
    assert "did you mean 'dependsOn'" in e.message
    assert "p.yaml, document 0, line 12: spec.steps[1].dependOn" in str(exc.value)


def test_every_document_is_validated_and_reported_at_once() -> None:
    bad1 = PIPELINE.replace("name: nightly", "name: Nightly_1")
    bad2 = "apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: a\n  herd: b\n"
    with pytest.raises(errors.Invalid) as exc:
        schemas.parse_manifests(bad1 + "---\n" + bad2, "two.yaml")
    got = {(e.document, e.line, e.path) for e in exc.value.errors}
    assert got == {(0, 4, "metadata.name"), (1, 18, "metadata.herd")}
    assert any("cluster-scoped" in e.message for e in exc.value.errors)


@pytest.mark.parametrize(
    ("text", "path", "line", "needle"),
    [
        (
            "apiVersion: runink.io/v1\nkind: Pipelne\nmetadata: {name: a}\n",
            "kind",
            2,
            "did you mean 'Pipeline'",
        ),
        (
            "apiVersion: runink.io/v2\nkind: Pipeline\nmetadata: {name: a}\n",
            "apiVersion",
            1,
            "runink.io/v1",
        ),
        ("kind: Herd\nmetadata: {name: a}\n", "apiVersion", 1, "missing"),
        (
            "apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: a\n  labels: {x: 1}\n",
            "metadata.labels.x",
            5,
            "string",
        ),
    ],
)
def test_kind_and_version_refusals(text: str, path: str, line: int, needle: str) -> None:
    with pytest.raises(errors.Invalid) as exc:
        schemas.parse_manifests(text, "k.yaml")
    e = _only_error(exc)
    assert (e.file, e.document, e.path, e.line) == ("k.yaml", 0, path, line)
    assert needle in e.message


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("a: &x [1]\nb: *x\n", 1, "anchor &x"),
        ("a: 1\nb: [\n", 3, "invalid YAML"),
        ("a: 1\na: 2\n", 2, "invalid YAML"),
        ("- 1\n- 2\n", 1, "must be a mapping"),
        ("a: !secret x\n", 1, "custom YAML tag"),
        ("a: " + "[" * 70 + "]" * 70 + "\n", 1, "nesting deeper than 64"),
    ],
)
def test_document_refusals(text: str, line: int, needle: str) -> None:
    with pytest.raises(errors.Invalid) as exc:
        schemas.load_documents("x: 1\n---\n" + text, "r.yaml")
    e = _only_error(exc)
    assert (e.file, e.document, e.line) == ("r.yaml", 1, line + 2)
    assert needle in e.message
    assert "r.yaml, document 1, line" in str(exc.value)


def test_oversized_document_is_refused() -> None:
    big = (
        "apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: a\n  annotations:\n    x: "
        + "y" * (1 << 20)
        + "\n"
    )
    with pytest.raises(errors.Invalid) as exc:
        schemas.load_documents("a: 1\n---\n" + big, "big.yaml")
    e = _only_error(exc)
    assert (e.document, e.line) == (1, 2)  # the line of its "---"
    assert "byte limit" in e.message


def test_alias_bomb_is_refused_before_expansion() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 30)]
    with pytest.raises(errors.Invalid, match="anchor"):
        schemas.load_documents("\n".join(lines), "bomb.yaml")


def test_timestamps_stay_strings_and_are_checked() -> None:
    text = PIPELINE.replace(
        "  herd: finance\n", "  herd: finance\n  creationTimestamp: 2024-05-01T12:00:00Z\n"
    )
    [m] = schemas.parse_manifests(text, "t.yaml")
    assert m.obj["metadata"]["creationTimestamp"] == "2024-05-01T12:00:00Z"
    with pytest.raises(errors.Invalid) as exc:
        schemas.parse_manifests(text.replace("12:00:00Z", "12:00:00"), "t.yaml")
    e = _only_error(exc)
    assert (e.path, e.line) == ("metadata.creationTimestamp", 6)
    assert "time zone" in e.message


def test_validate_reports_paths_without_file() -> None:
    obj: dict[str, Any] = {
        "apiVersion": "runink.io/v1",
        "kind": "Slice",
        "metadata": {"name": "s"},
        "spec": {
            "pipeline": "p",
            "run": "r",
            "step": "a",
            "python": "m:f",
            "resources": {"cpu": "lots"},
        },
    }
    with pytest.raises(errors.Invalid) as exc:
        schemas.validate(obj)
    e = _only_error(exc)
    assert e.path == "spec.resources.cpu"
    assert "invalid cpu quantity 'lots'" in e.message
    assert e.file is None
