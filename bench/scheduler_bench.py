"""Placements per second of the pure scheduler, beside published anchors (not a pass/fail test).

Generates a cluster of Node, Slice and Herd objects as the Barn stores them (zones, three machine
types, GPU nodes tainted, ~5 % NotReady, ~1 % cordoned; 50 Herds with quotas, a few step shapes per
Herd, some with node selectors, affinity, locality hints or GPUs), converts them with
``snapshot_from_objects`` and times ``schedule``. Anchors (published, not run here): kube-scheduler
~100-300 pods/s at 5,000 nodes, Nomad C1M ~3,750 placements/s.

    .venv/bin/python bench/scheduler_bench.py            # 500 x 10k and 5,000 x 100k, both policies
    .venv/bin/python bench/scheduler_bench.py --quick    # 500 x 10k only
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from runink.controllers import scheduling

KUBE_SCHEDULER = 300.0  # pods/s, the top of the published 100-300 range
NOMAD_C1M = 3750.0  # placements/s (1M containers on 5,000 hosts in < 5 min)

_MACHINES = [  # (cpu, memory, gpu, weight)
    ("8", "32Gi", 0, 5),
    ("16", "64Gi", 0, 4),
    ("32", "128Gi", 4, 1),
]
_ZONES = ["a", "b", "c"]


def make_objects(
    n_nodes: int, n_slices: int, n_herds: int, *, seed: int, distinct_shapes: bool = False
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    nodes = []
    for i in range(n_nodes):
        cpu, mem, gpu, _ = rng.choices(_MACHINES, weights=[m[3] for m in _MACHINES])[0]
        zone = rng.choice(_ZONES)
        ready = rng.random() > 0.05
        nodes.append(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Node",
                "metadata": {
                    "name": f"node-{i:05d}",
                    "labels": {"zone": zone, "disk": rng.choice(["ssd", "hdd"])},
                },
                "spec": {
                    "unschedulable": rng.random() < 0.01,
                    "taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]
                    if gpu
                    else [],
                },
                "status": {
                    "allocatable": {"cpu": cpu, "memory": mem, "gpu": gpu, "slices": 110},
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                },
            }
        )
    herds = []
    per_herd = n_slices // n_herds
    step_shapes: dict[int, list[dict[str, Any]]] = {}
    for h in range(n_herds):
        # Quotas: most Herds can run ~90 % of their work, a fifth of them only about half.
        tight = h % 5 == 0
        herds.append(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Herd",
                "metadata": {"name": f"herd-{h:02d}"},
                "spec": {
                    "quota": {
                        "cpu": f"{int(per_herd * 0.55 * (0.5 if tight else 0.9) * 1000)}m",
                        "memory": f"{int(per_herd * 1.2 * (0.5 if tight else 0.95))}Gi",
                        "gpu": 40,
                        "slices": per_herd,
                    }
                },
            }
        )
        shapes = []
        for step in range(4):
            spec: dict[str, Any] = {
                "resources": {
                    "cpu": rng.choice(["250m", "500m", "500m", "1"]),
                    "memory": rng.choice(["256Mi", "512Mi", "1Gi", "2Gi"]),
                }
            }
            r = rng.random()
            if r < 0.15:
                spec["nodeSelector"] = {"zone": rng.choice(_ZONES)}
            elif r < 0.25:
                spec["affinity"] = {
                    "required": [{"key": "disk", "operator": "In", "values": ["ssd"]}],
                    "preferred": [
                        {
                            "weight": 50,
                            "matchExpressions": [
                                {"key": "zone", "operator": "In", "values": [rng.choice(_ZONES)]}
                            ],
                        }
                    ],
                }
            elif r < 0.35:
                spec["locality"] = {"labels": {"zone": rng.choice(_ZONES)}}
            elif r < 0.38:
                spec["resources"]["gpu"] = 1
                spec["tolerations"] = [{"key": "gpu", "operator": "Exists"}]
            spec["priority"] = step % 2
            shapes.append(spec)
        step_shapes[h] = shapes
    slices = []
    for n in range(n_slices):
        h = n % n_herds
        spec = dict(rng.choice(step_shapes[h]))
        if distinct_shapes:
            spec["resources"] = dict(spec["resources"], cpu=f"{rng.randint(100, 1000)}m")
        slices.append(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Slice",
                "metadata": {
                    "name": f"slice-{n:06d}",
                    "herd": f"herd-{h:02d}",
                    "creationTimestamp": 1_700_000_000 + n * 0.001,
                },
                "spec": spec,
                "status": {"phase": "Pending"},
            }
        )
    rng.shuffle(slices)
    return nodes, slices, herds


def utilisation_std(snapshot: scheduling.Snapshot, plan: scheduling.Plan) -> float:
    cpu_by_key = {s.key: s.cpu for s in snapshot.pending}
    used = {n.name: n.used.cpu for n in snapshot.nodes if n.ready and not n.unschedulable}
    alloc = {n.name: n.allocatable.cpu for n in snapshot.nodes}
    for key, node in plan.placements.items():
        used[node] += cpu_by_key[key]
    return statistics.pstdev(used[n] / alloc[n] for n in used)


def run_case(
    n_nodes: int, n_slices: int, n_herds: int, policy: scheduling.Policy, repeats: int, **kw: Any
) -> None:
    nodes, slices, herds = make_objects(n_nodes, n_slices, n_herds, seed=42, **kw)
    conv_times, sched_times = [], []
    plan = None
    snap = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        snap = scheduling.snapshot_from_objects(nodes, slices, herds, now=0.0, policy=policy)
        t1 = time.perf_counter()
        plan = scheduling.schedule(snap, now=0.0)
        t2 = time.perf_counter()
        conv_times.append(t1 - t0)
        sched_times.append(t2 - t1)
    assert plan is not None and snap is not None
    placed = len(plan.placements)
    quota = sum(1 for r in plan.unplaced.values() if r.startswith("herd quota"))
    sched = statistics.median(sched_times)
    conv = statistics.median(conv_times)
    rate = placed / sched
    rate_all = placed / (sched + conv)
    shape = " distinct-shapes" if kw.get("distinct_shapes") else ""
    print(
        f"{n_nodes:>5} nodes x {n_slices:>6} slices, {n_herds} herds, {policy:<7}{shape}: "
        f"placed {placed} (quota-blocked {quota}, no node {len(plan.unplaced) - quota}), "
        f"cpu-utilisation std {utilisation_std(snap, plan):.3f}"
    )
    print(
        f"    schedule() {sched * 1000:8.1f} ms -> {rate:>9,.0f} placements/s | "
        f"incl. snapshot_from_objects ({conv * 1000:.0f} ms) {rate_all:>9,.0f}/s"
    )
    print(
        f"    ratio vs kube-scheduler {KUBE_SCHEDULER:.0f}/s: x{rate / KUBE_SCHEDULER:,.0f} "
        f"(x{rate_all / KUBE_SCHEDULER:,.0f} incl. conversion); "
        f"vs Nomad C1M {NOMAD_C1M:,.0f}/s: x{rate / NOMAD_C1M:,.1f} (x{rate_all / NOMAD_C1M:,.1f})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 x 10k only")
    ap.add_argument("--repeats", type=int, default=3, help="median of this many passes")
    args = ap.parse_args()
    cases = [(500, 10_000, 50)] if args.quick else [(500, 10_000, 50), (5_000, 100_000, 50)]
    for n_nodes, n_slices, n_herds in cases:
        for policy in ("binpack", "spread"):
            run_case(n_nodes, n_slices, n_herds, policy, args.repeats)
    if not args.quick:
        run_case(5_000, 100_000, 50, "binpack", args.repeats, distinct_shapes=True)
        run_case(5_000, 100_000, 50, "spread", args.repeats, distinct_shapes=True)


if __name__ == "__main__":
    main()
