"""Admission (server-owned metadata, herd rules, validation paths) and errors across the wire."""

from __future__ import annotations

import pytest

from runink import store
from runink.api import _admission, _wire
from runink.schemas import errors


def pipeline(**meta: object) -> dict:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": {"name": "p", "herd": "team", **meta},
        "spec": {"steps": [{"name": "s", "command": ["true"]}]},
    }


@pytest.fixture
async def barn():
    b = store.open_memory()
    await b.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "team"}, "spec": {}}
    )
    try:
        yield b
    finally:
        await b.close()


async def test_create_drops_server_owned_metadata(barn):
    out = await _admission.admit_create(
        barn, pipeline(uid="forged", generation=7, resourceVersion="9")
    )
    assert "uid" not in out["metadata"] and "generation" not in out["metadata"]
    assert "resourceVersion" not in out["metadata"]


async def test_update_keeps_server_owned_metadata_from_live(barn):
    live = await barn.create(await _admission.admit_create(barn, pipeline()))
    out = await _admission.admit_update(
        barn, pipeline(creationTimestamp="2000-01-01T00:00:00Z"), live
    )
    assert out["metadata"]["creationTimestamp"] == live["metadata"]["creationTimestamp"]
    assert out["metadata"]["uid"] == live["metadata"]["uid"]


async def test_unknown_field_is_invalid_with_its_path(barn):
    bad = pipeline()
    bad["spec"]["stepz"] = 1
    with pytest.raises(errors.Invalid) as e:
        await _admission.admit_create(barn, bad)
    assert "spec.stepz" in [fe.path for fe in e.value.errors]


async def test_missing_herd_and_herd_on_cluster_kind(barn):
    with pytest.raises(errors.NotFound, match="herd 'ghost' does not exist"):
        await _admission.admit_create(barn, pipeline(herd="ghost"))
    with pytest.raises(errors.Invalid) as e:
        await _admission.admit_create(
            barn, {"kind": "Herd", "metadata": {"name": "h", "herd": "team"}, "spec": {}}
        )
    assert e.value.errors[0].path == "metadata.herd"


async def test_unknown_kind_points_at_kind_field(barn):
    with pytest.raises(errors.Invalid) as e:
        await _admission.admit_create(barn, {"kind": "Pipelin", "metadata": {"name": "x"}})
    assert e.value.errors[0].path == "kind"


def test_invalid_round_trips_with_field_errors():
    err = errors.Invalid(
        "invalid Pipeline p",
        errors=[errors.FieldError("spec.steps[0].name", "required", file="f.yaml", line=3)],
    )
    back = _wire.error_from_payload(_wire.error_payload(err))
    assert isinstance(back, errors.Invalid)
    assert back.errors == err.errors and back.message == err.message


def test_conflict_keeps_current_resource_version():
    err = errors.Conflict("stale", details={"currentResourceVersion": "42"})
    back = _wire.error_from_payload(_wire.error_payload(err))
    assert isinstance(back, errors.Conflict) and back.details["currentResourceVersion"] == "42"
    assert _wire.status_code(err).name == "ABORTED"
