"""Server-side apply field ownership: conflicts, force, shared fields, removal of dropped fields."""

from __future__ import annotations

import pytest

from runink.api import _apply
from runink.schemas import errors


def obj(spec: dict, labels: dict | None = None) -> dict:
    return {"kind": "Pipeline", "metadata": {"name": "p", "labels": labels or {}}, "spec": spec}


def owners(o: dict) -> dict[str, list[str]]:
    return {e["manager"]: e["fields"] for e in o["metadata"]["managedFields"]}


def test_second_manager_changing_an_owned_field_conflicts_naming_field_and_owner():
    live = _apply.apply(None, obj({"schedule": "a", "x": 1}), "alice")
    with pytest.raises(errors.Conflict) as e:
        _apply.apply(live, obj({"schedule": "b"}), "bob")
    assert e.value.details["conflicts"] == [{"field": "spec.schedule", "manager": "alice"}]
    assert "spec.schedule (owned by alice)" in e.value.message


def test_force_moves_ownership():
    live = _apply.apply(None, obj({"schedule": "a", "x": 1}), "alice")
    after = _apply.apply(live, obj({"schedule": "b"}), "bob", force=True)
    assert after["spec"] == {"schedule": "b", "x": 1}
    assert owners(after) == {"alice": ["spec.x"], "bob": ["spec.schedule"]}


def test_same_value_is_shared_and_survives_one_manager_dropping_it():
    live = _apply.apply(None, obj({"schedule": "a"}), "alice")
    shared = _apply.apply(live, obj({"schedule": "a"}), "bob")
    assert owners(shared) == {"alice": ["spec.schedule"], "bob": ["spec.schedule"]}
    dropped = _apply.apply(shared, obj({}), "alice")
    assert dropped["spec"] == {"schedule": "a"}  # bob still owns it


def test_field_dropped_by_its_only_owner_is_removed():
    live = _apply.apply(None, obj({"schedule": "a", "x": 1}, {"runink.io/app": "l"}), "alice")
    after = _apply.apply(live, obj({"x": 1}), "alice")
    assert after["spec"] == {"x": 1}
    assert after["metadata"].get("labels", {}) == {}


def test_plain_update_takes_changed_fields_from_appliers():
    live = _apply.apply(None, obj({"schedule": "a", "x": 1}), "alice")
    new = obj({"schedule": "z", "x": 1})
    new["metadata"]["managedFields"] = live["metadata"]["managedFields"]
    fields = {e["manager"]: e["fields"] for e in _apply.record_update(live, new, "kubectl-edit")}
    assert fields == {"alice": ["spec.x"], "kubectl-edit": ["spec.schedule"]}


def test_label_keys_with_dots_round_trip_through_field_paths():
    path = ("metadata", "labels", "runink.io/app")
    assert _apply.parse_path(_apply.path_str(path)) == path
