"""Safety properties of the pure scheduler over generated clusters (hypothesis).

The checker below re-implements the rules independently of the scheduler's internals: no node
overcommitted, no Herd quota exceeded, nothing on a NotReady / cordoned / untolerated-tainted or
non-matching node, every pending slice placed or given a reason, no rejection that the final
state contradicts, and the plan independent of the order of the snapshot's tuples.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from hypothesis import given, strategies as st

from runink.controllers import scheduling as sch

GI = 1 << 30
_TAINTS = [
    sch.Taint("dedicated", "batch", "NoSchedule"),
    sch.Taint("gpu", "true", "NoExecute"),
    sch.Taint("spot", "yes", "PreferNoSchedule"),
]
_TOLERATIONS = [
    sch.Toleration("dedicated", "Equal", "batch", "NoSchedule"),
    sch.Toleration("dedicated", "Equal", "other"),
    sch.Toleration("gpu", "Exists"),
    sch.Toleration("", "Exists"),
]
_REQS = [
    sch.LabelRequirement("zone", "In", ("a",)),
    sch.LabelRequirement("zone", "NotIn", ("a",)),
    sch.LabelRequirement("disk", "Exists"),
    sch.LabelRequirement("disk", "DoesNotExist"),
]


@st.composite
def nodes(draw: st.DrawFn) -> list[sch.NodeInfo]:
    out = []
    for i in range(draw(st.integers(0, 7))):
        cpu = draw(st.sampled_from([0, 1000, 2000, 4000]))
        mem = draw(st.sampled_from([0, GI, 2 * GI, 4 * GI]))
        gpu = draw(st.sampled_from([0, 0, 1, 2]))
        slices = draw(st.sampled_from([1, 2, 3, sch.UNLIMITED]))
        used = sch.Resources(
            draw(st.integers(0, cpu)),
            draw(st.integers(0, mem)),
            draw(st.integers(0, gpu)),
            draw(st.integers(0, min(slices, 2))),
        )
        labels = {}
        if draw(st.booleans()):
            labels["zone"] = draw(st.sampled_from(["a", "b"]))
        if draw(st.booleans()):
            labels["disk"] = "ssd"
        out.append(
            sch.NodeInfo(
                name=f"n{i}",
                allocatable=sch.Resources(cpu, mem, gpu, slices),
                used=used,
                labels=labels,
                taints=tuple(draw(st.lists(st.sampled_from(_TAINTS), unique=True, max_size=2))),
                ready=draw(st.booleans()) or draw(st.booleans()),
                unschedulable=draw(st.integers(0, 4)) == 0,
            )
        )
    return out


@st.composite
def slices(draw: st.DrawFn) -> list[sch.PendingSlice]:
    out = []
    for i in range(draw(st.integers(0, 20))):
        affinity = sch.NodeAffinity()
        if draw(st.booleans()):
            affinity = sch.NodeAffinity(
                required=tuple(
                    tuple(draw(st.lists(st.sampled_from(_REQS), min_size=1, max_size=2)))
                    for _ in range(draw(st.integers(0, 2)))
                ),
                preferred=tuple(
                    sch.PreferredTerm(draw(st.integers(1, 100)), (r,))
                    for r in draw(st.lists(st.sampled_from(_REQS), max_size=2))
                ),
            )
        out.append(
            sch.PendingSlice(
                key=sch.SliceKey(draw(st.sampled_from(["h0", "h1", "h2", "h3"])), f"s{i}"),
                cpu=draw(st.sampled_from([0, 500, 1000, 2000])),
                memory=draw(st.sampled_from([0, GI // 2, GI])),
                gpu=draw(st.sampled_from([0, 0, 0, 1])),
                node_selector=draw(
                    st.sampled_from([{}, {}, {"zone": "a"}, {"zone": "b", "disk": "ssd"}])
                ),
                affinity=affinity,
                tolerations=tuple(draw(st.lists(st.sampled_from(_TOLERATIONS), max_size=2))),
                locality=draw(
                    st.sampled_from(
                        [
                            sch.LocalityHint(),
                            sch.LocalityHint(nodes=frozenset({"n1", "n3"})),
                            sch.LocalityHint(labels=(("zone", "b"),)),
                        ]
                    )
                ),
                priority=draw(st.integers(0, 2)),
                creation=draw(st.integers(0, 5)),
            )
        )
    return out


@st.composite
def herds(draw: st.DrawFn) -> list[sch.HerdQuota]:
    out = []
    for name in ("h0", "h1", "h2"):  # h3 has no Herd object: no quota
        # Tight limits more often than none, so that quota edges are actually reached.
        q = st.sampled_from([None, 0, 1, 2, 3])
        out.append(
            sch.HerdQuota(
                herd=name,
                cpu=draw(st.none() | st.sampled_from([0, 1000, 2500, 5000])),
                memory=draw(st.none() | st.sampled_from([0, GI, 3 * GI])),
                gpu=draw(q),
                slices=draw(q),
                used=sch.Resources(
                    draw(st.sampled_from([0, 500])),
                    draw(st.sampled_from([0, GI // 2])),
                    draw(st.integers(0, 1)),
                    draw(st.integers(0, 1)),
                ),
            )
        )
    return out


@st.composite
def snapshots(draw: st.DrawFn) -> sch.Snapshot:
    return sch.Snapshot(
        nodes=tuple(draw(nodes())),
        pending=tuple(draw(slices())),
        herds=tuple(draw(herds())),
        policy=draw(st.sampled_from(["binpack", "spread"])),
    )


# --- an independent statement of the rules ---------------------------------------------------


def _tolerated(taint: sch.Taint, tolerations: tuple[sch.Toleration, ...]) -> bool:
    for t in tolerations:
        effect_ok = t.effect in ("", taint.effect)
        if t.key == "" and t.operator == "Exists" and effect_ok:
            return True
        if t.key == taint.key and effect_ok and (t.operator == "Exists" or t.value == taint.value):
            return True
    return False


def _req_ok(r: sch.LabelRequirement, labels: Mapping[str, str]) -> bool:
    has = r.key in labels
    return {
        "In": has and labels.get(r.key) in r.values,
        "NotIn": not has or labels.get(r.key) not in r.values,
        "Exists": has,
        "DoesNotExist": not has,
    }[r.operator]


def _statically_eligible(s: sch.PendingSlice, n: sch.NodeInfo) -> bool:
    if not n.ready or n.unschedulable:
        return False
    if any(n.labels.get(k) != v for k, v in s.node_selector.items()):
        return False
    if s.affinity.required and not any(
        all(_req_ok(r, n.labels) for r in term) for term in s.affinity.required
    ):
        return False
    return all(t.effect == "PreferNoSchedule" or _tolerated(t, s.tolerations) for t in n.taints)


def _final_free(snap: sch.Snapshot, plan: sch.Plan) -> dict[str, list[int]]:
    by_key = {s.key: s for s in snap.pending}
    free = {
        n.name: [
            n.allocatable.cpu - n.used.cpu,
            n.allocatable.memory - n.used.memory,
            n.allocatable.gpu - n.used.gpu,
            n.allocatable.slices - n.used.slices,
        ]
        for n in snap.nodes
    }
    for key, node in plan.placements.items():
        s = by_key[key]
        f = free[node]
        f[0] -= s.cpu
        f[1] -= s.memory
        f[2] -= s.gpu
        f[3] -= 1
    return free


def _final_herd_usage(snap: sch.Snapshot, plan: sch.Plan) -> dict[str, list[int]]:
    by_key = {s.key: s for s in snap.pending}
    usage = {h.herd: [h.used.cpu, h.used.memory, h.used.gpu, h.used.slices] for h in snap.herds}
    for key in plan.placements:
        s = by_key[key]
        u = usage.setdefault(s.herd, [0, 0, 0, 0])
        u[0] += s.cpu
        u[1] += s.memory
        u[2] += s.gpu
        u[3] += 1
    return usage


def _limits(h: sch.HerdQuota) -> list[float]:
    return [float("inf") if v is None else v for v in (h.cpu, h.memory, h.gpu, h.slices)]


def check_plan(snap: sch.Snapshot, plan: sch.Plan) -> None:
    keys = {s.key for s in snap.pending}
    assert set(plan.placements) | set(plan.unplaced) == keys
    assert not set(plan.placements) & set(plan.unplaced)
    nodes_by_name = {n.name: n for n in snap.nodes}
    by_key = {s.key: s for s in snap.pending}

    free = _final_free(snap, plan)
    for name, f in free.items():
        # The generator never starts a node overcommitted, so this holds for every node.
        assert min(f) >= 0, f"{name} overcommitted: free after plan {f}"

    usage = _final_herd_usage(snap, plan)
    quotas = {h.herd: h for h in snap.herds}
    for herd, u in usage.items():
        if herd in quotas and any(by_key[k].herd == herd for k in plan.placements):
            for used, limit in zip(u, _limits(quotas[herd]), strict=True):
                assert used <= limit, f"herd {herd} over quota: {u}"

    for key, node in plan.placements.items():
        assert _statically_eligible(by_key[key], nodes_by_name[node]), (key, node)

    for key, reason in plan.unplaced.items():
        s = by_key[key]
        if reason.startswith("herd quota exceeded: "):
            u = usage[s.herd]
            need = [s.cpu, s.memory, s.gpu, 1]
            lim = _limits(quotas[s.herd])
            assert any(u[i] + need[i] > lim[i] for i in range(4)), (key, reason)
        else:
            assert reason.startswith(f"0/{len(snap.nodes)} nodes available: "), reason
            for n in snap.nodes:
                f = free[n.name]
                fits = f[0] >= s.cpu and f[1] >= s.memory and f[2] >= s.gpu and f[3] >= 1
                assert not (fits and _statically_eligible(s, n)), (
                    f"{key} rejected ({reason}) but fits {n.name}"
                )


@given(snapshots())
def test_plans_are_safe_and_complete(snap: sch.Snapshot) -> None:
    check_plan(snap, sch.schedule(snap, now=0.0))


@given(snapshots(), st.randoms(use_true_random=False))
def test_plan_does_not_depend_on_input_order(snap: sch.Snapshot, rnd: random.Random) -> None:
    shuffled = [list(snap.nodes), list(snap.pending), list(snap.herds)]
    for part in shuffled:
        rnd.shuffle(part)
    other = sch.Snapshot(
        nodes=tuple(shuffled[0]),
        pending=tuple(shuffled[1]),
        herds=tuple(shuffled[2]),
        policy=snap.policy,
    )
    assert sch.schedule(other, now=0.0) == sch.schedule(snap, now=0.0)


@given(snapshots(), st.integers(1, 8))
def test_spread_candidates_change_choices_not_outcomes(snap: sch.Snapshot, k: int) -> None:
    plan = sch.schedule(snap, now=0.0, candidates=k)
    check_plan(snap, plan)
