"""Table tests of what a user sees: reasons, scoring (binpack vs spread, preferences), fair share."""

from __future__ import annotations

import pytest

from runink.controllers import scheduling as sch

GI = 1 << 30


def node(name: str, cpu: int = 4000, mem: int = 8 * GI, gpu: int = 0, **kw: object) -> sch.NodeInfo:
    used = kw.pop("used", sch.Resources())
    return sch.NodeInfo(name, sch.Resources(cpu, mem, gpu, 110), used, **kw)  # type: ignore[arg-type]


def pending(
    name: str, herd: str = "team", cpu: int = 1000, mem: int = GI, **kw: object
) -> sch.PendingSlice:
    return sch.PendingSlice(sch.SliceKey(herd, name), cpu=cpu, memory=mem, **kw)  # type: ignore[arg-type]


def run(
    nodes: list[sch.NodeInfo],
    slices: list[sch.PendingSlice],
    herds: list[sch.HerdQuota] = (),
    policy: sch.Policy = "binpack",
) -> sch.Plan:  # type: ignore[assignment]
    return sch.schedule(sch.Snapshot(tuple(nodes), tuple(slices), tuple(herds), policy), now=0.0)


def test_reason_counts_each_node_once_kubernetes_style() -> None:
    nodes = [node(f"n{i}", mem=GI // 2) for i in range(3)]
    nodes += [node("n3", ready=False), node("n4", ready=False)]
    plan = run(nodes, [pending("big")])
    assert plan.unplaced[sch.SliceKey("team", "big")] == (
        "0/5 nodes available: 3 insufficient memory, 2 NotReady."
    )


@pytest.mark.parametrize(
    ("extra", "slice_kw", "expected"),
    [
        ({"unschedulable": True}, {}, "1 unschedulable"),
        (
            {"labels": {"zone": "b"}},
            {"node_selector": {"zone": "a"}},
            "1 didn't match node selector",
        ),
        (
            {"labels": {"zone": "b"}},
            {
                "affinity": sch.NodeAffinity(
                    required=((sch.LabelRequirement("zone", "In", ("a",)),),)
                )
            },
            "1 didn't match node affinity",
        ),
        (
            {"taints": (sch.Taint("dedicated", "ml", "NoSchedule"),)},
            {},
            "1 untolerated taint dedicated=ml:NoSchedule",
        ),
        (
            {"taints": (sch.Taint("dedicated", "ml", "NoExecute"),)},
            {},
            "1 untolerated taint dedicated=ml:NoExecute",
        ),
        ({}, {"gpu": 1}, "1 insufficient gpu"),
        ({}, {"cpu": 8000}, "1 insufficient cpu"),
    ],
)
def test_each_filter_names_itself(
    extra: dict[str, object], slice_kw: dict[str, object], expected: str
) -> None:
    plan = run([node("n0", **extra)], [pending("s", **slice_kw)])
    assert plan.unplaced[sch.SliceKey("team", "s")] == f"0/1 nodes available: {expected}."


def test_toleration_lets_a_slice_onto_a_tainted_node() -> None:
    taint = sch.Taint("dedicated", "ml", "NoSchedule")
    tol = sch.Toleration("dedicated", "Equal", "ml", "NoSchedule")
    plan = run([node("n0", taints=(taint,))], [pending("s", tolerations=(tol,))])
    assert plan.placements == {sch.SliceKey("team", "s"): "n0"}


def test_quota_reason_names_resource_usage_and_need() -> None:
    herd = sch.HerdQuota("team", cpu=4000, used=sch.Resources(cpu=3500))
    plan = run([node("n0")], [pending("s", cpu=1000)], [herd])
    assert plan.unplaced[sch.SliceKey("team", "s")] == (
        "herd quota exceeded: cpu 3500m/4000m used, slice needs 1000m"
    )


def test_quota_counts_slices_placed_in_the_same_pass() -> None:
    herd = sch.HerdQuota("team", memory=2 * GI, slices=5)
    plan = run(
        [node("n0", mem=64 * GI)], [pending(f"s{i}", cpu=0, mem=GI) for i in range(3)], [herd]
    )
    assert sorted(k.name for k in plan.placements) == ["s0", "s1"]
    assert plan.unplaced[sch.SliceKey("team", "s2")] == (
        "herd quota exceeded: memory 2Gi/2Gi used, slice needs 1Gi"
    )


def test_a_too_big_slice_does_not_block_smaller_ones_of_its_herd() -> None:
    herd = sch.HerdQuota("team", cpu=2000)
    slices = [pending("big", cpu=3000, creation=0), pending("small", cpu=1000, creation=1)]
    plan = run([node("n0")], slices, [herd])
    assert sch.SliceKey("team", "small") in plan.placements
    assert sch.SliceKey("team", "big") in plan.unplaced


def test_binpack_fills_the_fullest_node_spread_the_emptiest() -> None:
    nodes = [node("a-half-full", used=sch.Resources(2000, 4 * GI, 0, 2)), node("b-empty")]
    slices = [pending("s")]
    assert (
        run(nodes, slices, policy="binpack").placements[sch.SliceKey("team", "s")] == "a-half-full"
    )
    assert run(nodes, slices, policy="spread").placements[sch.SliceKey("team", "s")] == "b-empty"


def test_binpack_consolidates_and_spread_balances() -> None:
    nodes = [node("n0"), node("n1")]
    slices = [pending(f"s{i}") for i in range(4)]
    packed = run(nodes, slices, policy="binpack").placements
    spread = run(nodes, slices, policy="spread").placements
    assert sorted(packed.values()) == ["n0"] * 4
    assert sorted(spread.values()) == ["n0", "n0", "n1", "n1"]


def test_data_locality_and_preferred_affinity_beat_packing() -> None:
    nodes = [node("full", used=sch.Resources(3000, 0, 0, 1)), node("data", labels={"zone": "b"})]
    near = pending("near", locality=sch.LocalityHint(nodes=frozenset({"data"})))
    by_label = pending("by-label", locality=sch.LocalityHint(labels=(("zone", "b"),)))
    pref = sch.NodeAffinity(
        preferred=(sch.PreferredTerm(10, (sch.LabelRequirement("zone", "In", ("b",)),)),)
    )
    liked = pending("liked", affinity=pref)
    plan = run(nodes, [near, by_label, liked, pending("plain", cpu=500)])
    assert plan.placements[near.key] == "data"
    assert plan.placements[by_label.key] == "data"
    assert plan.placements[liked.key] == "data"
    assert plan.placements[sch.SliceKey("team", "plain")] == "full"


def test_preference_yields_when_the_preferred_node_is_full() -> None:
    nodes = [node("data", cpu=1000), node("other")]
    slices = [
        pending(f"s{i}", locality=sch.LocalityHint(nodes=frozenset({"data"})), creation=i)
        for i in range(2)
    ]
    plan = run(nodes, slices)
    assert plan.placements == {slices[0].key: "data", slices[1].key: "other"}


def test_prefer_no_schedule_taint_and_gpu_nodes_are_avoided_when_possible() -> None:
    nodes = [
        node("a-gpu", gpu=2),
        node("b-spot", taints=(sch.Taint("spot", "yes", "PreferNoSchedule"),)),
        node("c-plain", used=sch.Resources(3000, 0, 0, 1)),
    ]
    plan = run(nodes, [pending("cpu-only", cpu=500), pending("wants-gpu", gpu=1)])
    assert plan.placements[sch.SliceKey("team", "cpu-only")] == "c-plain"
    assert plan.placements[sch.SliceKey("team", "wants-gpu")] == "a-gpu"
    # An untolerated PreferNoSchedule taint weighs more than leaving a GPU node free...
    plan = run(nodes[:2], [pending("cpu-only")])
    assert plan.placements[sch.SliceKey("team", "cpu-only")] == "a-gpu"
    # ...and when only a soft-avoided node is left, it is used.
    plan = run(nodes[1:2], [pending("cpu-only")])
    assert plan.placements[sch.SliceKey("team", "cpu-only")] == "b-spot"


def test_higher_priority_goes_first_when_room_is_short() -> None:
    slices = [pending("old-low", creation=0), pending("new-high", creation=5, priority=10)]
    plan = run([node("n0", cpu=1000)], slices)
    assert plan.placements == {sch.SliceKey("team", "new-high"): "n0"}
    assert plan.unplaced[sch.SliceKey("team", "old-low")].endswith("1 insufficient cpu.")


def test_fair_share_splits_room_between_two_herds() -> None:
    nodes = [node("n0", cpu=5000, mem=64 * GI), node("n1", cpu=5000, mem=64 * GI)]
    slices = [pending(f"a{i}", herd="alpha", creation=i) for i in range(10)]
    slices += [pending(f"b{i}", herd="beta", creation=i) for i in range(10)]
    placed = run(nodes, slices).placements
    assert sum(k.herd == "alpha" for k in placed) == 5
    assert sum(k.herd == "beta" for k in placed) == 5


def test_fair_share_counts_what_a_herd_already_runs() -> None:
    # 18 cores, alpha already runs 4: the 14 free go 5 to alpha and 9 to beta (9 cores each).
    nodes = [
        node("n0", cpu=9000, mem=64 * GI, used=sch.Resources(4000, 0, 0, 4)),
        node("n1", cpu=9000, mem=64 * GI),
    ]
    slices = [pending(f"a{i}", herd="alpha", creation=i, mem=0) for i in range(10)]
    slices += [pending(f"b{i}", herd="beta", creation=i, mem=0) for i in range(10)]
    herds = [sch.HerdQuota("alpha", used=sch.Resources(4000, 0, 0, 4)), sch.HerdQuota("beta")]
    placed = run(nodes, slices, herds).placements
    assert sum(k.herd == "alpha" for k in placed) == 5
    assert sum(k.herd == "beta" for k in placed) == 9


def test_empty_cluster_says_so() -> None:
    plan = run([], [pending("s")])
    assert (
        plan.unplaced[sch.SliceKey("team", "s")] == "0/0 nodes available: no nodes in the cluster."
    )
