"""End-to-end benchmark: N trivial slices of one matrix step, through API, controllers and agent.

An in-process ``runink up`` cluster (``cli._up.serve``: Barn on LMDB, TLS gRPC API, the controller
manager with the built-in controllers, a local agent launching real isolated processes) runs one
PipelineRun whose only step fans out to N slices of ``command: ["true"]`` with ``network: none``.
Through an in-process Barn watch it records when each slice is created, bound (spec.nodeName), started
(status.startTime, written by the agent) and finished, and prints:

- slices started per second, from the first to the last status.startTime;
- creation -> startTime latency p50/p99 (creation = the ADDED event of an in-process Barn watch),
  and run apply -> startTime (the matrix's slices all come from one apply);
- the whole run (PipelineRun created -> phase Succeeded), and a per-stage breakdown (run
  controller creating slices, scheduler binding them, agent starting and finishing them), which
  names the bottleneck;
beside the anchors' published figures (kube-scheduler, Slurm, the Kubernetes pod-startup SLO).
Not a pass/fail test. Needs root (cgroups, namespaces).

    .venv/bin/python bench/e2e_bench.py [--slices 1000] [--timeout 170]
        [--no-agent-fsync] [--tmpdir /dev/shm]   # what-if experiments, not how Runink runs
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runink import api, controllers
from runink.cli import _up

Obj = dict[str, Any]
HERD = "bench"

# Published anchors (docs: research/controlplane.md).
KUBE_SCHEDULER = (100.0, 300.0)  # pods/s, SIG-scalability 5k-node tests (k/k #74041, #108606)
SLURM = 500.0  # simple batch jobs/s sustained (SchedMD high_throughput.shtml)
KUBE_STARTUP_SLO_P99 = 5.0  # s, pod startup latency SLO (stateless pods, images pre-pulled)
ISSUE_FLOOR = 10_000.0  # placements/s: issue 6's only number (the pure scheduler at 5,000 nodes)


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Timeline:
    """Wall-clock times (s since the epoch) per slice name."""

    created: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)  # status.startTime (agent clock)
    done: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    run_created: float = 0.0
    run_done: float = 0.0
    run_phase: str = ""
    slice_events: int = 0  # ADDED/MODIFIED/DELETED of Slices: the Slice writes
    first_revision: int = 0  # the Barn's revision just before the run was created
    last_revision: int = 0  # the revision of the last Slice event seen


async def _watch_slices(client: Any, since: Any, tl: Timeline, n: int) -> None:
    async for ev in client.watch("Slice", HERD, since=since):
        if ev.type == "BOOKMARK":
            continue
        tl.slice_events += 1
        tl.last_revision = ev.revision
        now = time.time()
        name = ev.object["metadata"]["name"]
        tl.created.setdefault(name, now)
        if (ev.object.get("spec") or {}).get("nodeName"):
            tl.bound.setdefault(name, now)
        status = ev.object.get("status") or {}
        if status.get("startTime") and name not in tl.started:
            tl.started[name] = _ts(status["startTime"])
        if status.get("phase") in ("Succeeded", "Failed") and name not in tl.done:
            tl.done[name] = now
            if status["phase"] == "Failed":
                tl.failed[name] = f"{status.get('reason')}: {status.get('message')}"
        if len(tl.done) >= n:
            return


async def _watch_run(client: Any, name: str, since: Any, tl: Timeline) -> None:
    async for ev in client.watch("PipelineRun", HERD, since=since):
        if ev.type == "BOOKMARK" or ev.object["metadata"]["name"] != name:
            continue
        phase = (ev.object.get("status") or {}).get("phase", "")
        if phase in ("Succeeded", "Failed", "Cancelled"):
            tl.run_done, tl.run_phase = time.time(), phase
            return


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _span(times: dict[str, float]) -> tuple[float, float, float]:
    """First, last, and rate (events/s between them)."""
    if not times:
        return 0.0, 0.0, 0.0
    first, last = min(times.values()), max(times.values())
    rate = (len(times) - 1) / (last - first) if len(times) > 1 and last > first else 0.0
    return first, last, rate


def _agent_without_fsync() -> None:
    """What-if experiment (--no-agent-fsync): the agent's state files written without fsync.

    The agent writes each slice's context and state files with an fsync, synchronously on the
    event loop that the API, controllers and Barn share; this measures what that costs.
    """
    from runink.agent import _runtime

    def write(path: Path, data: dict[str, Any]) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)

    _runtime._atomic_write = write


async def bench(n: int, timeout: float, keep: bool, tmpdir: str = "/var/tmp") -> int:
    data_dir = Path(tempfile.mkdtemp(prefix="runink-e2e-bench-", dir=tmpdir))
    data_dir.chmod(0o711)
    tl = Timeline()
    cpu0 = cpu1 = os.times()
    stats: dict[str, tuple[int, int]] = {}
    try:
        async with (
            _up.serve(data_dir, port=0, config=data_dir / "config", say=lambda s: print(s)) as c,
            api.Client.from_config(data_dir / "config") as client,
        ):
            # Wait for the local agent's Node to be Ready, so we time slices, not agent start-up.
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60:
                nodes = (await client.list("Node")).items
                ready = [
                    nd
                    for nd in nodes
                    for cond in (nd.get("status") or {}).get("conditions") or []
                    if cond.get("type") == "Ready" and cond.get("status") == "True"
                ]
                if ready:
                    break
                await asyncio.sleep(0.2)
            else:
                print("no Ready node after 60 s", file=sys.stderr)
                return 1
            await client.create(
                {
                    "apiVersion": "runink.io/v1",
                    "kind": "Herd",
                    "metadata": {"name": HERD},
                    "spec": {"quota": {"slices": n + 10}},
                }
            )
            pipeline = await client.create(
                {
                    "apiVersion": "runink.io/v1",
                    "kind": "Pipeline",
                    "metadata": {"name": "fanout", "herd": HERD},
                    "spec": {
                        "steps": [
                            {
                                "name": "trivial",
                                "command": ["true"],
                                "network": "none",
                                "resources": {"cpu": "1m", "memory": "16Mi"},
                                "params": [{"name": "i", "type": "int"}],
                                "matrix": {"params": {"i": list(range(n))}},
                            }
                        ]
                    },
                }
            )
            since = (await client.list("Slice", HERD)).revision
            cpu0 = os.times()
            async with asyncio.timeout(timeout), asyncio.TaskGroup() as tg:
                # Watch the Barn in-process (no gRPC hop): the least lag behind each write, so
                # "created" is as close as we can see to the commit (creationTimestamp has
                # only second resolution).
                tg.create_task(_watch_slices(c.barn, since, tl, n))
                tg.create_task(_watch_run(c.barn, "r1", since, tl))
                tl.run_created = time.time()
                tl.first_revision = c.barn.revision
                await client.create(controllers.make_run(pipeline, name="r1"))
            cpu1 = os.times()
            if c.manager is not None:
                stats = {s.name: (s.reconciles, s.errors) for s in c.manager.status()}
    except* TimeoutError:
        # except*: the timeout surfaces wrapped in serve()'s TaskGroup's ExceptionGroup.
        print(f"timed out after {timeout:.0f} s; partial figures follow", file=sys.stderr)
        cpu1 = os.times()
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)
    _report(n, tl, stats, cpu0, cpu1)
    return 0 if len(tl.done) == n and not tl.failed else 1


def _report(
    n: int,
    tl: Timeline,
    stats: dict[str, tuple[int, int]],
    cpu0: os.times_result,
    cpu1: os.times_result,
) -> None:
    c_first, c_last, c_rate = _span(tl.created)
    b_first, b_last, b_rate = _span(tl.bound)
    s_first, s_last, s_rate = _span(tl.started)
    d_first, d_last, d_rate = _span(tl.done)
    lat = [tl.started[k] - tl.created[k] for k in tl.started if k in tl.created]
    from_apply = [t - tl.run_created for t in tl.started.values()]
    run_total = (tl.run_done or max(tl.done.values(), default=tl.run_created)) - tl.run_created
    wall = max(run_total, 1e-9)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    child = (cpu1.children_user - cpu0.children_user) + (
        cpu1.children_system - cpu0.children_system
    )

    print(f"\nend to end: {n} slices of `true` (network none), one matrix step, 1 local node")
    print(
        f"  created {len(tl.created)}, bound {len(tl.bound)}, started {len(tl.started)}, ", end=""
    )
    print(f"finished {len(tl.done)} ({len(tl.failed)} failed); run phase {tl.run_phase or '?'}")
    for name, why in list(tl.failed.items())[:3]:
        print(f"  failed: {name}: {why}")
    print("\nstages (first event after the run's creation -> last event; rate over that span):")
    for label, first, last, rate in (
        ("run controller: slices created", c_first, c_last, c_rate),
        ("scheduler: slices bound", b_first, b_last, b_rate),
        ("agent: slices started", s_first, s_last, s_rate),
        ("agent: slices finished", d_first, d_last, d_rate),
    ):
        if first:
            print(
                f"  {label:<32} {first - tl.run_created:7.2f} s -> {last - tl.run_created:7.2f} s"
                f"   {rate:8.1f}/s"
            )
    print(f"\nwhole run: {run_total:.2f} s (PipelineRun created -> {tl.run_phase or 'last slice'})")
    print(f"process CPU: {cpu:.1f} s in {wall:.1f} s wall ({cpu / wall:.0%} of one core)", end="")
    print(f"; reaped children {child:.1f} s")
    writes = max(0, tl.last_revision - tl.first_revision)
    print(
        f"Barn writes up to the last Slice event: {writes} ({writes / n:.1f} per slice), "
        f"of which Slice writes {tl.slice_events} ({tl.slice_events / n:.1f} per slice)"
    )
    if stats:
        print("reconciles: " + ", ".join(f"{k} {r} ({e} err)" for k, (r, e) in stats.items()))

    print("\n                                       Runink      anchor        ratio")
    lo, hi = KUBE_SCHEDULER
    print(
        f"  slices started/s                  {s_rate:9.1f}   kube-scheduler {lo:.0f}-{hi:.0f} pods/s"
        f"   {s_rate / hi:.2f}-{s_rate / lo:.2f}x"
    )
    print(
        f"  slices started/s                  {s_rate:9.1f}   Slurm {SLURM:.0f} jobs/s   ", end=""
    )
    print(f"        {s_rate / SLURM:.2f}x")
    print(
        f"  slices bound/s (e2e, via API)     {b_rate:9.1f}   issue 6 floor {ISSUE_FLOOR:,.0f}/s",
        end="",
    )
    print(f" (pure scheduler)  {b_rate / ISSUE_FLOOR:.3f}x")
    if lat:
        p50, p99 = statistics.median(lat), _pct(lat, 0.99)
        print(f"  creation -> Running p50           {p50 * 1000:8.0f} ms")
        print(
            f"  creation -> Running p99           {p99 * 1000:8.0f} ms   k8s startup SLO p99 "
            f"{KUBE_STARTUP_SLO_P99:.0f} s      {p99 / KUBE_STARTUP_SLO_P99:.2f}x"
        )
        a50, a99 = statistics.median(from_apply), _pct(from_apply, 0.99)
        print(f"  run apply -> Running p50          {a50 * 1000:8.0f} ms")
        print(
            f"  run apply -> Running p99          {a99 * 1000:8.0f} ms   k8s startup SLO p99 "
            f"{KUBE_STARTUP_SLO_P99:.0f} s      {a99 / KUBE_STARTUP_SLO_P99:.2f}x"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--slices", type=int, default=1000, help="matrix size N (default 1000)")
    ap.add_argument("--timeout", type=float, default=170.0, help="give up after this many seconds")
    ap.add_argument("--keep", action="store_true", help="keep the data dir (for inspection)")
    ap.add_argument(
        "--no-agent-fsync",
        action="store_true",
        help="what-if: the agent writes its per-slice state files without fsync",
    )
    ap.add_argument(
        "--tmpdir",
        default="/var/tmp",
        help="where the data dir (Barn, agent state, logs) goes; what-if: /dev/shm (tmpfs)",
    )
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root: slices run in cgroups and namespaces", file=sys.stderr)
        return 2
    if args.no_agent_fsync:
        print("WHAT-IF: agent state files written without fsync (not how Runink runs)")
        _agent_without_fsync()
    return asyncio.run(bench(args.slices, args.timeout, args.keep, args.tmpdir))


if __name__ == "__main__":
    sys.exit(main())
