"""Model validation a user notices: pipeline DAG errors with field paths, kind-specific rules."""

from __future__ import annotations

from typing import Any

import pytest

from runink import schemas
from runink.schemas import errors


def _pipeline(steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": {"name": "p", "herd": "h"},
        "spec": {"steps": steps, **spec},
    }


def _errors(obj: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(errors.Invalid) as exc:
        schemas.validate(obj)
    return {e.path: e.message for e in exc.value.errors}


def test_cycle_names_the_dependency_and_the_loop() -> None:
    got = _errors(
        _pipeline(
            [
                {"name": "a", "python": "m:f", "dependsOn": ["c"]},
                {"name": "b", "python": "m:f", "dependsOn": ["a"]},
                {"name": "c", "python": "m:f", "dependsOn": [{"step": "b", "condition": "always"}]},
            ]
        )
    )
    assert set(got) == {
        "spec.steps[0].dependsOn[0]",
        "spec.steps[1].dependsOn[0]",
        "spec.steps[2].dependsOn[0]",
    }
    assert "dependency cycle: a -> c -> b -> a" in got["spec.steps[0].dependsOn[0]"]


def test_unknown_dependency_self_dependency_and_duplicates() -> None:
    got = _errors(
        _pipeline(
            [
                {"name": "a", "python": "m:f", "dependsOn": ["x", "a"]},
                {"name": "a", "command": ["true"]},
            ],
            **{"finally": [{"name": "z", "command": ["true"], "dependsOn": ["a"]}]},
        )
    )
    assert got["spec.steps[0].dependsOn[0]"] == "unknown step 'x'"
    assert "depends on itself" in got["spec.steps[0].dependsOn[1]"]
    assert got["spec.steps[1].name"] == "duplicate step name 'a' (also spec.steps[0].name)"
    assert "finally steps run after all steps" in got["spec.finally[0].dependsOn[0]"]


@pytest.mark.parametrize(
    ("step", "needle"),
    [
        ({"name": "a"}, "(none set)"),
        ({"name": "a", "python": "m:f", "command": ["x"]}, "(python and command set)"),
    ],
)
def test_python_xor_command(step: dict[str, Any], needle: str) -> None:
    got = _errors(_pipeline([{"name": "ok", "python": "m:f"}, step]))
    assert needle in got["spec.steps[1]"]


@pytest.mark.parametrize(
    ("step", "path", "needle"),
    [
        ({"python": "not a ref"}, "spec.steps[0].python", "module:function"),
        (
            {"python": "m:f", "params": [{"name": "n", "type": "int", "default": "x"}]},
            "spec.steps[0].params[0].default",
            "not of type int",
        ),
        (
            {"python": "m:f", "params": [{"name": "n", "type": "int", "default": True}]},
            "spec.steps[0].params[0].default",
            "not of type int",
        ),
        (
            {"python": "m:f", "secrets": [{"secret": "s", "as": "file", "path": "rel"}]},
            "spec.steps[0].secrets[0].path",
            "absolute",
        ),
        (
            {"python": "m:f", "retry": {"backoff": {"jitter": 2}}},
            "spec.steps[0].retry.backoff.jitter",
            "less than or equal to 1",
        ),
        (
            {"python": "m:f", "matrix": {"params": {"x": []}}},
            "spec.steps[0].matrix.params.x",
            "at least one value",
        ),
        (
            {"python": "m:f", "network": "bridge"},
            "spec.steps[0].network",
            "'none', 'host' or 'isolated'",
        ),
        (
            {"python": "m:f", "resources": {"memory": "1GB"}},
            "spec.steps[0].resources.memory",
            "unknown suffix",
        ),
        ({"python": "m:f", "env": {"1BAD": "x"}}, "spec.steps[0].env", "environment variable name"),
    ],
)
def test_step_field_errors(step: dict[str, Any], path: str, needle: str) -> None:
    got = _errors(_pipeline([{"name": "a", **step}]))
    assert path in got, got
    assert needle in got[path]


def test_schedule_cron_is_checked() -> None:
    got = _errors(_pipeline([{"name": "a", "python": "m:f"}], schedule={"cron": "every night"}))
    assert "five-field cron" in got["spec.schedule.cron"]
    ok = _pipeline([{"name": "a", "python": "m:f"}], schedule={"cron": "@daily"})
    assert schemas.validate(ok)["spec"]["schedule"]["concurrencyPolicy"] == "Allow"


def test_models_are_frozen_and_accept_python_names() -> None:
    step = schemas.Step(name="a", python="m:f", depends_on=["b"], timeout_seconds=5)
    assert step.dependencies()[0].condition == "success"
    assert step.model_dump(by_alias=True, exclude_none=True)["timeoutSeconds"] == 5
    with pytest.raises(Exception, match="frozen"):
        step.name = "b"  # type: ignore[misc]


def test_quality_rule_checks_need_their_fields() -> None:
    obj = {
        "apiVersion": "runink.io/v1",
        "kind": "QualityRule",
        "metadata": {"name": "q", "herd": "h"},
        "spec": {
            "dataset": "d",
            "checks": [
                {"type": "regex", "column": "c"},
                {"type": "range", "column": "x"},
                {"type": "regex", "column": "c", "pattern": "("},
            ],
        },
    }
    got = _errors(obj)
    assert got["spec.checks[0].pattern"] == "required for a regex check"
    assert "needs min or max" in got["spec.checks[1]"]
    assert "invalid regular expression" in got["spec.checks[2].pattern"]


def test_cluster_role_binding_needs_cluster_role_and_secret_data_is_base64() -> None:
    crb = {
        "apiVersion": "runink.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "b"},
        "spec": {
            "subjects": [{"kind": "User", "name": "ann"}],
            "roleRef": {"kind": "Role", "name": "r"},
        },
    }
    assert _errors(crb) == {"spec.roleRef.kind": "must be ClusterRole"}
    secret = {
        "apiVersion": "runink.io/v1",
        "kind": "Secret",
        "metadata": {"name": "s", "herd": "h"},
        "spec": {"data": {"k": "%%%"}},
    }
    assert "base64" in _errors(secret)["spec.data.k"]


def test_every_kind_validates_a_minimal_object() -> None:
    minimal_specs: dict[str, dict[str, Any]] = {
        "Pipeline": {"steps": [{"name": "a", "python": "m:f"}]},
        "PipelineRun": {"pipelineRef": {"name": "p"}},
        "Slice": {"pipeline": "p", "run": "r", "step": "a", "command": ["true"]},
        "RoleBinding": {
            "subjects": [{"kind": "Group", "name": "g"}],
            "roleRef": {"kind": "Role", "name": "r"},
        },
        "ClusterRoleBinding": {
            "subjects": [{"kind": "Group", "name": "g"}],
            "roleRef": {"kind": "ClusterRole", "name": "r"},
        },
        "Dataset": {"uri": "file:///x"},
        "QualityRule": {"dataset": "d", "checks": [{"type": "row_count", "min": 1}]},
        "Annotation": {
            "annotationType": "pii",
            "annotationValue": True,
            "annotatedDataRef": {"dataset": "d"},
        },
        "GitSource": {"url": "file:///repo"},
        "Event": {"involvedObject": {"kind": "Slice", "name": "s"}, "reason": "Scheduled"},
    }
    for info in schemas.all_kinds():
        meta = {"name": "x", "herd": "h"} if info.namespaced else {"name": "x"}
        obj = {"apiVersion": info.api_version, "kind": info.kind, "metadata": meta}
        if info.kind in minimal_specs:
            obj["spec"] = minimal_specs[info.kind]
        out = schemas.validate(obj)
        assert schemas.validate(out) == out, info.kind
