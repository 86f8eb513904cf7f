"""Lineage query latency and annotation write/query figures, beside the issue's 100 ms p99 target.

Lineage: a generated DAG of 100,000 nodes (jobs that each read two recent datasets and write one),
ingested as OpenLineage COMPLETE events; then queries from random datasets at depths 1, 5 and 20,
upstream, downstream and both (Marquez's default), p50/p99 including node details.
Annotations: N annotations (10 types, 5 models, 100 datasets) written in batches of 10,000; then
filtered first pages (limit 100) with an exact count. Marquez is not installable here: the
anchor is the target from issue 9 (100 ms p99) and the ratio is target / ours (>1 = inside it).

    .venv/bin/python bench/governance_bench.py            # 200,000 annotations (~1 minute)
    .venv/bin/python bench/governance_bench.py --full     # 1,000,000 annotations
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runink.schemas import _openlineage as ol
from runink.store import _annotations, _lineage

TARGET_MS = 100.0


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def show(what: str, samples_ms: list[float], extra: str = "") -> None:
    p50, p99 = pct(samples_ms, 50), pct(samples_ms, 99)
    print(
        f"{what:<44} p50 {p50:8.2f} ms  p99 {p99:8.2f} ms   target p99 {TARGET_MS:.0f} ms"
        f"   ratio {TARGET_MS / p99:7.1f}  {extra}"
    )


def timed(
    fn: Callable[[], Any], n: int, keep: Callable[[Any], Any]
) -> tuple[list[float], list[Any]]:
    """Latencies of n calls, and ``keep(result)`` of each (not the results: holding them all
    would grow the heap and bill the benchmark's own garbage to the store's queries)."""
    gc.collect()
    out, res = [], []
    for _ in range(n):
        t = time.perf_counter()
        r = fn()
        out.append((time.perf_counter() - t) * 1000)
        res.append(keep(r))
        del r
    return out, res


def lineage_bench(root: Path, nodes: int, seed: int) -> None:
    rng = random.Random(seed)
    seeds = 100
    jobs = (nodes - seeds) // 2
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    store = _lineage.open_lineage_store(root / "lineage", sync=False)

    def ev(i: int) -> tuple[ol.RunEvent, dict[str, Any]]:
        out = seeds + i
        window = range(max(0, out - 1000), out)
        ins = sorted(set(rng.sample(window, min(2, len(window)))))
        raw = {
            "eventType": "COMPLETE",
            "eventTime": (t0 + dt.timedelta(seconds=i)).isoformat(),
            "producer": "bench",
            "run": {"runId": str(uuid.UUID(int=rng.getrandbits(128), version=4))},
            "job": {"namespace": "runink://bench/h", "name": f"job{i}"},
            "inputs": [{"namespace": "s3://lake", "name": f"ds{d}"} for d in ins],
            "outputs": [
                {
                    "namespace": "s3://lake",
                    "name": f"ds{out}",
                    "facets": {"schema": {"fields": [{"name": "id", "type": "int"}]}},
                }
            ],
        }
        return ol.parse_run_event(raw), raw

    start = time.perf_counter()
    for b in range(0, jobs, 5000):
        store.ingest_many(ev(i) for i in range(b, min(jobs, b + 5000)))
    took = time.perf_counter() - start
    print(
        f"lineage: ingested {jobs:,} COMPLETE events -> {store.stats()['nodes']:,} nodes, "
        f"{store.stats()['edges']:,} edges in {took:.1f}s ({jobs / took:,.0f} events/s)"
    )
    store.close()
    start = time.perf_counter()
    store = _lineage.open_lineage_store(root / "lineage", sync=False)
    print(f"lineage: reopen with adjacency rebuild {time.perf_counter() - start:.2f}s")
    for depth, n in ((1, 300), (5, 300), (20, 30)):
        for direction in ("upstream", "downstream", "both"):
            if depth == 20 and direction == "both":
                n = 10  # covers most of the graph: seconds per query
            ms, res = timed(
                lambda d=depth, dr=direction: store.lineage(
                    f"dataset:s3://lake:ds{seeds + rng.randrange(jobs)}", direction=dr, depth=d
                ),
                n,
                lambda g: len(g["graph"]),
            )
            sizes = res
            show(
                f"lineage depth {depth:>2} {direction:<10} (n={n})",
                ms,
                f"nodes/answer mean {statistics.mean(sizes):,.0f} max {max(sizes):,}",
            )
    store.close()


def annotations_bench(root: Path, count: int, seed: int) -> None:
    rng = random.Random(seed)
    store = _annotations.open_annotation_store(root / "annotations", sync=False)
    types = [f"type{i}" for i in range(10)]
    models = [f"model{i}" for i in range(5)]
    t0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)

    def ann(i: int) -> dict[str, Any]:
        return {
            "metadata": {"name": f"ann-{i:012x}", "herd": "bench"},
            "spec": {
                "annotationType": types[i % 10],
                "annotationValue": "positive",
                "sourceModel": models[(i // 10) % 5],
                "confidenceScore": rng.random(),
                "timestamp": (t0 + dt.timedelta(seconds=i)).isoformat(),
                "annotatedDataRef": {
                    "dataset": f"ds{i % 100}",
                    "version": "v1",
                    "field": "text",
                    "recordKey": str(i),
                },
                "provenance": {"producer": "sa:bench", "promptHash": "sha256:abc"},
            },
        }

    batch = 10_000
    start = time.perf_counter()
    for b in range(0, count, batch):
        store.put_many([ann(i) for i in range(b, min(count, b + batch))])
    took = time.perf_counter() - start
    print(
        f"annotations: wrote {count:,} in batches of {batch:,} in {took:.1f}s "
        f"({count / took:,.0f}/s, incl. validation)"
    )
    start = time.perf_counter()
    res = store.put_many([ann(i) for i in range(batch)])
    print(
        f"annotations: retried batch of {batch:,}: {res.skipped:,} skipped, {res.written} written "
        f"in {(time.perf_counter() - start) * 1000:.0f} ms"
    )
    cases: list[tuple[str, Callable[[], Any]]] = [
        (
            "type+model, first 100 + count",
            lambda: store.query(
                annotation_type=rng.choice(types),
                source_model=rng.choice(models),
                limit=100,
                count=True,
            ),
        ),
        (
            "model, first 100 + count",
            lambda: store.query(source_model=rng.choice(models), limit=100, count=True),
        ),
        (
            "type+model+confidence>=0.9, first 100",
            lambda: store.query(
                annotation_type=rng.choice(types),
                source_model=rng.choice(models),
                min_confidence=0.9,
                limit=100,
            ),
        ),
        (
            "type+model, 1-hour window, 100 + count",
            lambda: store.query(
                annotation_type=rng.choice(types),
                source_model=rng.choice(models),
                since=(w := t0 + dt.timedelta(seconds=rng.randrange(count))),
                until=w + dt.timedelta(hours=1),
                limit=100,
                count=True,
            ),
        ),
        (
            "dataset+record key",
            lambda: store.query(
                data_ref={
                    "dataset": "ds7",
                    "record_key": str(7 + 100 * rng.randrange(count // 100)),
                },
                limit=1,
            ),
        ),
        (
            "review state, first 100 + count",
            lambda: store.query(review_state="suggested", limit=100, count=True),
        ),
    ]
    for name, fn in cases:
        ms, res = timed(fn, 200, lambda r: (r.count, len(r.items)))
        counts = [c for c, _ in res if c is not None]
        extra = (
            f"count median {statistics.median(counts):,.0f}"
            if counts
            else f"items median {statistics.median(i for _, i in res):,.0f}"
        )
        show(f"annotations {name}", ms, extra)
    store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="1,000,000 annotations")
    ap.add_argument("--annotations", type=int, default=None)
    ap.add_argument("--nodes", type=int, default=100_000)
    ap.add_argument("--skip-lineage", action="store_true")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    count = args.annotations or (1_000_000 if args.full else 200_000)
    root = Path(tempfile.mkdtemp(prefix="runink-governance-bench-"))
    try:
        if not args.skip_lineage:
            lineage_bench(root, args.nodes, args.seed)
        annotations_bench(root, count, args.seed)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
