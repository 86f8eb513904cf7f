"""snapshot_from_objects: what the scheduler reads from Node, Slice and Herd objects."""

from __future__ import annotations

from typing import Any

import pytest

from runink.controllers import scheduling as sch
from runink.schemas import errors

GI = 1 << 30


def node_obj(name: str, **status: Any) -> dict[str, Any]:
    st = {
        "allocatable": {"cpu": "4", "memory": "8Gi"},
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    st.update(status)
    return {
        "kind": "Node",
        "metadata": {"name": name, "labels": {"zone": "a"}},
        "spec": {},
        "status": st,
    }


def slice_obj(name: str, herd: str = "team", **spec: Any) -> dict[str, Any]:
    phase = spec.pop("phase", "Pending")
    base = {"resources": {"cpu": "500m", "memory": "1Gi"}}
    base.update(spec)
    return {
        "kind": "Slice",
        "metadata": {"name": name, "herd": herd, "creationTimestamp": "2026-11-26T10:00:00Z"},
        "spec": base,
        "status": {"phase": phase},
    }


def test_bound_slices_count_as_used_unless_finished() -> None:
    slices = [
        slice_obj("running", nodeName="n0", phase="Running"),
        slice_obj("done", nodeName="n0", phase="Succeeded"),
        slice_obj("failed", nodeName="n0", phase="Failed"),
        slice_obj("waiting"),
    ]
    herds = [
        {
            "kind": "Herd",
            "metadata": {"name": "team"},
            "spec": {"quota": {"cpu": "2", "slices": 10}},
        }
    ]
    snap = sch.snapshot_from_objects([node_obj("n0")], slices, herds, now=0.0)
    (n0,) = snap.nodes
    assert n0.used == sch.Resources(500, GI, 0, 1)
    assert [s.key.name for s in snap.pending] == ["waiting"]
    (quota,) = snap.herds
    assert (quota.cpu, quota.memory, quota.slices, quota.used) == (
        2000,
        None,
        10,
        sch.Resources(500, GI, 0, 1),
    )


def test_node_fields_capacity_fallback_readiness_and_taints() -> None:
    obj = node_obj("n1", conditions=[{"type": "Ready", "status": "False"}])
    del obj["status"]["allocatable"]
    obj["status"]["capacity"] = {"cpu": "1500m", "memory": "512Mi", "gpu": 2, "slices": 20}
    obj["spec"] = {
        "unschedulable": True,
        "taints": [{"key": "gpu", "value": "true", "effect": "NoExecute"}],
    }
    (n1,) = sch.snapshot_from_objects([obj], [], [], now=0.0).nodes
    assert n1.allocatable == sch.Resources(1500, 512 << 20, 2, 20)
    assert (n1.ready, n1.unschedulable) == (False, True)
    assert n1.taints == (sch.Taint("gpu", "true", "NoExecute"),)


def test_slice_constraints_are_read_in_both_affinity_forms() -> None:
    short = slice_obj(
        "short",
        nodeSelector={"zone": "a"},
        tolerations=[{"key": "gpu", "operator": "Exists"}],
        affinity={"required": [{"key": "disk", "operator": "In", "values": ["ssd"]}]},
        locality={"nodes": ["n0"], "labels": {"zone": "a"}},
        priority=5,
    )
    k8s = slice_obj(
        "k8s",
        affinity={
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 7,
                        "preference": {"matchExpressions": [{"key": "zone", "operator": "Exists"}]},
                    }
                ],
            }
        },
    )
    snap = sch.snapshot_from_objects([], [short, k8s], [], now=0.0)
    by_name = {s.key.name: s for s in snap.pending}
    s = by_name["short"]
    assert dict(s.node_selector) == {"zone": "a"}
    assert s.tolerations == (sch.Toleration("gpu", "Exists"),)
    assert s.locality == sch.LocalityHint(frozenset({"n0"}), (("zone", "a"),))
    assert s.priority == 5 and s.cpu == 500 and s.memory == GI
    ssd = (sch.LabelRequirement("disk", "In", ("ssd",)),)
    assert s.affinity.required == (ssd,)
    assert by_name["k8s"].affinity == sch.NodeAffinity(
        required=(ssd,),
        preferred=(sch.PreferredTerm(7, (sch.LabelRequirement("zone", "Exists"),)),),
    )


def test_slices_being_deleted_are_not_scheduled() -> None:
    obj = slice_obj("gone")
    obj["metadata"]["deletionTimestamp"] = "2026-11-26T10:01:00Z"
    assert sch.snapshot_from_objects([], [obj], [], now=0.0).pending == ()


def test_a_bad_quantity_names_the_object_and_field() -> None:
    with pytest.raises(errors.Invalid) as info:
        sch.snapshot_from_objects([], [slice_obj("bad", resources={"cpu": "lots"})], [], now=0.0)
    assert "Slice team/bad" in str(info.value)
    assert info.value.errors[0].path == "spec.resources.cpu"


def test_objects_to_plan_end_to_end() -> None:
    nodes = [node_obj("n0"), node_obj("n1", conditions=[])]
    slices = [slice_obj(f"s{i}", resources={"cpu": "2", "memory": "1Gi"}) for i in range(3)]
    snap = sch.snapshot_from_objects(nodes, slices, [], now=0.0, policy="spread")
    plan = sch.schedule(snap, now=0.0)
    assert sorted(plan.placements.values()) == ["n0", "n0"]
    (reason,) = plan.unplaced.values()
    assert reason == "0/2 nodes available: 1 NotReady, 1 insufficient cpu."
