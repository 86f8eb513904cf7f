"""``schedule(snapshot, now) -> Plan``: one pure scheduling pass (filter, score, quotas, fair share).

The scheduler controller takes a snapshot of the informers' caches, calls this, writes each binding
with a compare-and-swap and re-evaluates on conflict (Nomad's optimistic design). No I/O and no
asyncio here: import-linter forbids them, and purity is what lets the property tests in
tests/unit/scheduling check thousands of generated clusters.

How it stays fast (research/measured.md): static filters are evaluated once per *node class* (nodes
with the same relevant labels, taints and GPU presence), slices with the same *shape* (resources +
constraints) share one candidate list and one cached failure, and a placement looks at few nodes:
first fit over nodes sorted fullest first (binpack, a forward-only pointer per shape) or the best of
``candidates`` fitting nodes after a rotating pointer (spread). Both shortcuts rely on one fact:
within a pass free capacity only shrinks, so a node that cannot take a shape now never will. Before
a slice is declared unplaceable every eligible node is checked exactly, so the shortcuts can change
which node is chosen, never whether a slice is placed.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from runink.controllers.scheduling import _model
from runink.schemas import quantity

#: Preference score a data-locality match adds (preferred-affinity weights are 1-100).
LOCALITY_WEIGHT = 100

_NOT_READY = "NotReady"
_UNSCHEDULABLE = "unschedulable"
_SELECTOR = "didn't match node selector"
_AFFINITY = "didn't match node affinity"

# A constraint key: everything about a slice, except its resource amounts, that decides which
# nodes are eligible and in which preference order.
_ConstraintKey = tuple[
    tuple[tuple[str, str], ...],  # node selector, sorted
    _model.NodeAffinity,
    tuple[_model.Toleration, ...],
    _model.LocalityHint,
    bool,  # needs a GPU (GPU-less slices prefer nodes without GPUs)
]


# How a shape holds a segment: the group's list itself, its own aligned copy with nodes that can
# no longer take it marked -1, or a compacted copy (positions no longer match the group's).
_SHARED, _COPIED, _COMPACTED = 0, 1, 2


class _Group:
    """Eligible nodes for one constraint key, split into preference segments (best first)."""

    __slots__ = (
        "floors",
        "min_cpu",
        "min_gpu",
        "min_memory",
        "rotors",
        "segments",
        "static_reasons",
    )

    def __init__(
        self,
        segments: list[list[int]],
        static_reasons: dict[str, int],
        minimum: tuple[int, int, int],
    ) -> None:
        self.segments = segments
        self.static_reasons = static_reasons
        # The smallest request of any slice with these constraints in this pass: binpack moves
        # ``floors`` past nodes that cannot take even that, so new shapes do not rescan them.
        self.min_cpu, self.min_memory, self.min_gpu = minimum
        self.floors = [0] * len(segments)
        self.rotors = [0] * len(segments)  # spread's rotating position, shared by shapes


class _Shape:
    """Per-pass search state of every slice with the same resources and constraints."""

    __slots__ = ("cpu", "dead", "failed", "gpu", "group", "memory", "owned", "pointers", "segments")

    def __init__(self, cpu: int, memory: int, gpu: int, group: _Group) -> None:
        self.cpu = cpu
        self.memory = memory
        self.gpu = gpu
        self.group = group
        # Shared with the group until spread first marks a node that can no longer take this
        # shape as -1 (copy on write: most shapes never need a copy).
        self.segments = list(group.segments)
        self.pointers = [0] * len(self.segments)
        self.dead = [0] * len(self.segments)
        self.owned = [_SHARED] * len(self.segments)
        self.failed: str | None = None


def schedule(snapshot: _model.Snapshot, now: float, *, candidates: int = 4) -> _model.Plan:
    """Place as many pending slices as fit; give every other one a reason.

    Order: higher ``priority`` first across the cluster; among Herds with pending work at the
    same priority, the Herd with the lowest dominant share (DRF: its largest fraction of the
    cluster's cpu, memory or GPUs in use) goes next; within a Herd, older slices first. A slice
    that would exceed its Herd's quota is skipped (later, smaller slices of that Herd may still
    fit). ``now`` is the pass's time; the current policies do not depend on it. ``candidates`` is
    how many fitting nodes spread compares per placement. The result does not depend on the
    order of the snapshot's tuples.
    """
    del now  # part of the contract (time is a parameter); no current rule is time-dependent
    nodes = sorted(snapshot.nodes, key=lambda n: n.name)
    names = [n.name for n in nodes]
    free_cpu = [n.allocatable.cpu - n.used.cpu for n in nodes]
    free_mem = [n.allocatable.memory - n.used.memory for n in nodes]
    free_gpu = [n.allocatable.gpu - n.used.gpu for n in nodes]
    free_slices = [n.allocatable.slices - n.used.slices for n in nodes]
    inv_cpu = [1.0 / n.allocatable.cpu if n.allocatable.cpu > 0 else 0.0 for n in nodes]
    inv_mem = [1.0 / n.allocatable.memory if n.allocatable.memory > 0 else 0.0 for n in nodes]

    live: list[int] = []
    down: dict[str, int] = {}
    for i, n in enumerate(nodes):
        if not n.ready:
            down[_NOT_READY] = down.get(_NOT_READY, 0) + 1
        elif n.unschedulable:
            down[_UNSCHEDULABLE] = down.get(_UNSCHEDULABLE, 0) + 1
        else:
            live.append(i)

    # Binpack visits fuller nodes first; spread rotates over nodes in name order.
    if snapshot.policy == "binpack":
        base_order = sorted(
            live,
            key=lambda i: (
                -(nodes[i].used.cpu * inv_cpu[i] + nodes[i].used.memory * inv_mem[i]),
                i,
            ),
        )
    else:
        base_order = live

    # --- slices: dedupe, order within Herd, shape keys ---------------------------------------
    by_key: dict[_model.SliceKey, _model.PendingSlice] = {}
    for s in snapshot.pending:
        prev = by_key.get(s.key)
        # Duplicate keys should not happen; keep a deterministic one if they do.
        if prev is None or _slice_order(s) < _slice_order(prev):
            by_key[s.key] = s
    queues: dict[str, list[_model.PendingSlice]] = {}
    for s in by_key.values():
        queues.setdefault(s.key.herd, []).append(s)
    for q in queues.values():
        q.sort(key=_slice_order)

    constraint_of: dict[tuple[object, ...], _ConstraintKey] = {}
    slice_ckey: dict[_model.SliceKey, _ConstraintKey] = {}
    minimum: dict[_ConstraintKey, tuple[int, int, int]] = {}
    for s in by_key.values():
        # Keyed by identity first (every object is alive for the whole pass, so ids are unique):
        # hashing nested dataclasses for each of 100k slices would dominate the pass.
        raw = (id(s.node_selector), id(s.affinity), id(s.tolerations), id(s.locality), s.gpu > 0)
        ck = constraint_of.get(raw)
        if ck is None:
            ck = (
                tuple(sorted(s.node_selector.items())),
                s.affinity,
                s.tolerations,
                s.locality,
                s.gpu > 0,
            )
            constraint_of[raw] = ck
        slice_ckey[s.key] = ck
        lo = minimum.get(ck)
        if lo is None:
            minimum[ck] = (s.cpu, s.memory, s.gpu)
        elif s.cpu < lo[0] or s.memory < lo[1] or s.gpu < lo[2]:
            minimum[ck] = (min(lo[0], s.cpu), min(lo[1], s.memory), min(lo[2], s.gpu))

    # --- node classes ----------------------------------------------------------------------
    ckeys = set(slice_ckey.values())
    label_keys = sorted(_referenced_label_keys(ckeys))
    class_of_node: dict[int, int] = {}
    class_reps: list[_model.NodeInfo] = []
    class_index: dict[tuple[object, ...], int] = {}
    for i in live:
        n = nodes[i]
        ckey_n = (
            tuple(n.labels.get(k) for k in label_keys),
            tuple(sorted((t.key, t.value, t.effect) for t in n.taints)),
            n.allocatable.gpu > 0,
        )
        c = class_index.get(ckey_n)
        if c is None:
            c = len(class_reps)
            class_index[ckey_n] = c
            class_reps.append(n)
        class_of_node[i] = c

    groups: dict[_ConstraintKey, _Group] = {}

    def group_for(ck: _ConstraintKey) -> _Group:
        g = groups.get(ck)
        if g is None:
            g = _build_group(ck, class_reps, class_of_node, base_order, names, down, minimum[ck])
            groups[ck] = g
        return g

    shapes: dict[tuple[int, int, int, _ConstraintKey], _Shape] = {}

    # --- Herds: quotas, usage, dominant share ------------------------------------------------
    tot_cpu = sum(nodes[i].allocatable.cpu for i in live)
    tot_mem = sum(nodes[i].allocatable.memory for i in live)
    tot_gpu = sum(nodes[i].allocatable.gpu for i in live)
    icpu = 1.0 / tot_cpu if tot_cpu > 0 else 0.0
    imem = 1.0 / tot_mem if tot_mem > 0 else 0.0
    igpu = 1.0 / tot_gpu if tot_gpu > 0 else 0.0

    quotas = {h.herd: h for h in snapshot.herds}
    herd_names = sorted(queues)
    limits: list[tuple[int, int, int, int]] = []
    usage: list[list[int]] = []
    for name in herd_names:
        hq = quotas.get(name)
        if hq is None:
            limits.append((_model.UNLIMITED,) * 4)
            usage.append([0, 0, 0, 0])
        else:
            limits.append(
                (
                    _model.UNLIMITED if hq.cpu is None else hq.cpu,
                    _model.UNLIMITED if hq.memory is None else hq.memory,
                    _model.UNLIMITED if hq.gpu is None else hq.gpu,
                    _model.UNLIMITED if hq.slices is None else hq.slices,
                )
            )
            usage.append([hq.used.cpu, hq.used.memory, hq.used.gpu, hq.used.slices])

    herd_queues = [queues[name] for name in herd_names]
    positions = [0] * len(herd_names)
    heap: list[tuple[int, float, int]] = []
    for h, q in enumerate(herd_queues):
        u = usage[h]
        share = max(u[0] * icpu, u[1] * imem, u[2] * igpu)
        heap.append((-q[0].priority, share, h))  # h follows sorted names: a stable tiebreak
    heapq.heapify(heap)

    placements: dict[_model.SliceKey, str] = {}
    unplaced: dict[_model.SliceKey, str] = {}
    spread = snapshot.policy == "spread"
    k = max(1, candidates)

    while heap:
        _, share, h = heap[0]
        q = herd_queues[h]
        pos = positions[h]
        s = q[pos]
        positions[h] = pos + 1
        c, m, g = s.cpu, s.memory, s.gpu
        u = usage[h]
        lim = limits[h]
        if u[0] + c > lim[0] or u[1] + m > lim[1] or u[2] + g > lim[2] or u[3] + 1 > lim[3]:
            unplaced[s.key] = _quota_reason(u, lim, c, m, g)
        else:
            ck = slice_ckey[s.key]
            skey = (c, m, g, ck)
            shape = shapes.get(skey)
            if shape is None:
                shape = _Shape(c, m, g, group_for(ck))
                shapes[skey] = shape
            node = -1
            if shape.failed is None:
                if spread:
                    node = _spread_fit(
                        shape, k, free_cpu, free_mem, free_gpu, free_slices, inv_cpu, inv_mem
                    )
                else:
                    node = _first_fit(shape, free_cpu, free_mem, free_gpu, free_slices)
                if node < 0:
                    node, reason = _exact_check(
                        shape, free_cpu, free_mem, free_gpu, free_slices, len(nodes)
                    )
                    if node < 0:
                        shape.failed = reason
            if node < 0:
                assert shape.failed is not None
                unplaced[s.key] = shape.failed
            else:
                free_cpu[node] -= c
                free_mem[node] -= m
                free_gpu[node] -= g
                free_slices[node] -= 1
                placements[s.key] = names[node]
                u[0] += c
                u[1] += m
                u[2] += g
                u[3] += 1
                share = max(u[0] * icpu, u[1] * imem, u[2] * igpu)
        if pos + 1 < len(q):
            heapq.heapreplace(heap, (-q[pos + 1].priority, share, h))
        else:
            heapq.heappop(heap)

    return _model.Plan(placements=placements, unplaced=unplaced)


def _slice_order(s: _model.PendingSlice) -> tuple[int, float, str]:
    return (-s.priority, s.creation, s.key.name)


def _referenced_label_keys(ckeys: Iterable[_ConstraintKey]) -> set[str]:
    keys: set[str] = set()
    for selector, affinity, _, locality, _ in ckeys:
        keys.update(k for k, _ in selector)
        for term in affinity.required:
            keys.update(r.key for r in term)
        for pref in affinity.preferred:
            keys.update(r.key for r in pref.requirements)
        keys.update(k for k, _ in locality.labels)
    return keys


def _build_group(
    ck: _ConstraintKey,
    class_reps: Sequence[_model.NodeInfo],
    class_of_node: Mapping[int, int],
    base_order: Sequence[int],
    names: Sequence[str],
    down: Mapping[str, int],
    minimum: tuple[int, int, int],
) -> _Group:
    selector, affinity, tolerations, locality, needs_gpu = ck
    reasons = dict(down)
    # Per class: the reason it is excluded, or its segment key (preference, soft penalties).
    verdicts = [
        _class_verdict(rep, selector, affinity, tolerations, locality, needs_gpu)
        for rep in class_reps
    ]
    buckets: dict[tuple[int, int, int], list[int]] = {}
    for i in base_order:
        v = verdicts[class_of_node[i]]
        if isinstance(v, str):
            reasons[v] = reasons.get(v, 0) + 1
            continue
        if locality.nodes and names[i] in locality.nodes:
            v = (v[0] - LOCALITY_WEIGHT, v[1], v[2])
        bucket = buckets.get(v)
        if bucket is None:
            buckets[v] = bucket = []
        bucket.append(i)
    segments = [buckets[key] for key in sorted(buckets)]
    return _Group(segments, reasons, minimum)


def _class_verdict(
    rep: _model.NodeInfo,
    selector: tuple[tuple[str, str], ...],
    affinity: _model.NodeAffinity,
    tolerations: tuple[_model.Toleration, ...],
    locality: _model.LocalityHint,
    needs_gpu: bool,
) -> tuple[int, int, int] | str:
    """A reason string if the class is excluded, else its segment key (lower sorts first)."""
    labels = rep.labels
    for k, v in selector:
        if labels.get(k) != v:
            return _SELECTOR
    if not affinity.required_match(labels):
        return _AFFINITY
    prefer_penalty = 0
    for taint in sorted(rep.taints, key=lambda t: (t.key, t.value, t.effect)):
        if any(t.tolerates(taint) for t in tolerations):
            continue
        if taint.effect == "PreferNoSchedule":
            prefer_penalty = 1
        else:
            return f"untolerated taint {taint.key}={taint.value}:{taint.effect}"
    score = sum(p.weight for p in affinity.preferred if p.matches(labels))
    if locality.labels and all(labels.get(k) == v for k, v in locality.labels):
        score += LOCALITY_WEIGHT
    gpu_waste = 1 if (not needs_gpu and rep.allocatable.gpu > 0) else 0
    return (-score, prefer_penalty, gpu_waste)


def _first_fit(
    shape: _Shape,
    free_cpu: list[int],
    free_mem: list[int],
    free_gpu: list[int],
    free_slices: list[int],
) -> int:
    c, m, g = shape.cpu, shape.memory, shape.gpu
    pointers = shape.pointers
    group = shape.group
    floors = group.floors
    lc, lm, lg = group.min_cpu, group.min_memory, group.min_gpu
    for si, seg in enumerate(shape.segments):
        n = len(seg)
        f = floors[si]
        while f < n:
            i = seg[f]
            if free_cpu[i] >= lc and free_mem[i] >= lm and free_gpu[i] >= lg and free_slices[i] > 0:
                break
            f += 1
        floors[si] = f
        p = pointers[si]
        if p < f:
            p = f
        while p < n:
            i = seg[p]
            if free_cpu[i] >= c and free_mem[i] >= m and free_gpu[i] >= g and free_slices[i] > 0:
                pointers[si] = p
                return i
            p += 1
        pointers[si] = p
    return -1


def _spread_fit(
    shape: _Shape,
    k: int,
    free_cpu: list[int],
    free_mem: list[int],
    free_gpu: list[int],
    free_slices: list[int],
    inv_cpu: list[float],
    inv_mem: list[float],
) -> int:
    c, m, g = shape.cpu, shape.memory, shape.gpu
    rotors = shape.group.rotors
    for si, seg in enumerate(shape.segments):
        n = len(seg)
        if n == 0 or shape.dead[si] >= n:
            continue
        # While this shape's list is aligned with the group's, all its shapes share one rotating
        # position, so different shapes keep spreading over different nodes.
        compacted = shape.owned[si] == _COMPACTED
        j = shape.pointers[si] if compacted else rotors[si] % n
        best = -1
        best_score = 0.0
        found = 0
        scanned = 0
        while scanned < n and found < k:
            i = seg[j]
            if i >= 0:
                fc = free_cpu[i] - c
                fm = free_mem[i] - m
                if fc >= 0 and fm >= 0 and free_gpu[i] >= g and free_slices[i] > 0:
                    score = fc * inv_cpu[i] + fm * inv_mem[i]
                    if best < 0 or score > best_score:
                        best = i
                        best_score = score
                    found += 1
                else:
                    if shape.owned[si] == _SHARED:
                        seg = shape.segments[si] = list(seg)
                        shape.owned[si] = _COPIED
                    seg[j] = -1  # capacity only shrinks within a pass: never again
                    shape.dead[si] += 1
            j += 1
            if j == n:
                j = 0
            scanned += 1
        if compacted:
            shape.pointers[si] = j
        else:
            rotors[si] = j
        if shape.dead[si] * 2 > n:
            shape.segments[si] = [i for i in seg if i >= 0]
            shape.owned[si] = _COMPACTED
            shape.dead[si] = 0
            shape.pointers[si] = 0
        if best >= 0:
            return best
    return -1


def _exact_check(
    shape: _Shape,
    free_cpu: list[int],
    free_mem: list[int],
    free_gpu: list[int],
    free_slices: list[int],
    total_nodes: int,
) -> tuple[int, str]:
    """Look at every eligible node: the first that fits (should the shortcuts have missed one),
    or the Kubernetes-style reason why none does."""
    c, m, g = shape.cpu, shape.memory, shape.gpu
    reasons = dict(shape.group.static_reasons)
    for seg in shape.group.segments:
        for i in seg:
            if free_gpu[i] < g:
                r = "insufficient gpu"
            elif free_cpu[i] < c:
                r = "insufficient cpu"
            elif free_mem[i] < m:
                r = "insufficient memory"
            elif free_slices[i] <= 0:
                r = "too many slices"
            else:
                return i, ""
            reasons[r] = reasons.get(r, 0) + 1
    return -1, _nodes_reason(reasons, total_nodes)


def _nodes_reason(reasons: Mapping[str, int], total_nodes: int) -> str:
    if total_nodes == 0:
        return "0/0 nodes available: no nodes in the cluster."
    parts = sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    return f"0/{total_nodes} nodes available: " + ", ".join(f"{n} {r}" for r, n in parts) + "."


def format_cpu(millicores: int) -> str:
    """``3500`` -> ``"3500m"`` (millicores, as quota messages show them)."""
    return f"{millicores}m"


def _quota_reason(
    used: Sequence[int], limit: Sequence[int], cpu: int, memory: int, gpu: int
) -> str:
    parts = []
    if used[0] + cpu > limit[0]:
        parts.append(
            f"cpu {format_cpu(used[0])}/{format_cpu(limit[0])} used, slice needs {format_cpu(cpu)}"
        )
    if used[1] + memory > limit[1]:
        parts.append(
            f"memory {quantity.format_memory(used[1])}/{quantity.format_memory(limit[1])} used, slice needs {quantity.format_memory(memory)}"
        )
    if used[2] + gpu > limit[2]:
        parts.append(f"gpu {used[2]}/{limit[2]} used, slice needs {gpu}")
    if used[3] + 1 > limit[3]:
        parts.append(f"slices {used[3]}/{limit[3]} used, slice needs 1")
    return "herd quota exceeded: " + "; ".join(parts)
