"""Controller runtime benchmark: reconciles/s through the queue, and write -> reconcile-start latency.

Prints our figure beside an anchor measured in the same run, and the ratio (not a pass/fail test):
- throughput: N objects reconciled by a no-op reconciler through informer + work queue + workers,
  against a bare asyncio.Queue handing the same N keys to the same no-op (Python's floor);
- latency: update an object in the in-process store, time until its reconcile starts, against the
  store's own write -> watch-event latency (the floor the informer sits on).

    .venv/bin/python bench/controller_bench.py [--objects 20000] [--writes 2000] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from runink import store
from runink.controllers import Controller, Manager, Request, Result, testing


def obj(name: str, n: int = 0) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "runink.io/v1",
        "kind": "G",
        "metadata": {"name": name, "herd": "b"},
        "spec": {"n": n},
    }


class NoOp:
    def __init__(self, target: int) -> None:
        self.count = 0
        self.target = target
        self.done = asyncio.Event()
        self.started: dict[str, float] = {}
        self.wake = asyncio.Event()

    async def reconcile(self, request: Request) -> Result:
        self.count += 1
        self.started[request.name] = time.perf_counter()
        self.wake.set()
        if self.count >= self.target:
            self.done.set()
        return Result()


async def anchor_queue(n: int, workers: int) -> float:
    q: asyncio.Queue[str] = asyncio.Queue()
    noop = NoOp(n)
    for i in range(n):
        q.put_nowait(f"o{i}")
    t0 = time.perf_counter()

    async def worker() -> None:
        while not q.empty():
            await noop.reconcile(Request("G", "b", q.get_nowait()))
            await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        for _ in range(workers):
            tg.create_task(worker())
    return n / (time.perf_counter() - t0)


async def throughput(n: int, workers: int) -> float:
    client = testing.InMemoryClient()
    for i in range(n):
        await client.create(obj(f"o{i}"))
    noop = NoOp(n)
    c = Controller.builder("bench").for_kind("G").max_concurrent(workers).build(noop)
    m = Manager(client, resync_period=None)
    m.add(c)
    async with asyncio.TaskGroup() as tg:
        t0 = time.perf_counter()
        tg.create_task(m.run())
        await noop.done.wait()
        rate = n / (time.perf_counter() - t0)
        m.stop()
    await client.close()
    return rate


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


async def anchor_watch_latency(writes: int) -> list[float]:
    barn = store.open_memory()
    o = await barn.create(obj("x"))
    lat: list[float] = []
    stream = barn.watch("G", since=barn.revision)
    it = aiter(stream)
    for i in range(writes):
        t0 = time.perf_counter()
        o = await barn.update({**o, "spec": {"n": i + 1}})
        await anext(it)
        lat.append(time.perf_counter() - t0)
    await stream.aclose()  # type: ignore[attr-defined]
    await barn.close()
    return lat


async def latency(writes: int) -> list[float]:
    client = testing.InMemoryClient()
    o = await client.create(obj("x"))
    noop = NoOp(10**12)
    c = Controller.builder("lat").for_kind("G").build(noop)
    m = Manager(client, resync_period=None)
    m.add(c)
    lat: list[float] = []
    async with asyncio.TaskGroup() as tg:
        tg.create_task(m.run())
        while noop.count < 1:
            await asyncio.sleep(0.001)
        for i in range(writes):
            noop.wake.clear()
            t0 = time.perf_counter()
            o = await client.update({**o, "spec": {"n": i + 1}})
            await noop.wake.wait()
            lat.append(noop.started["x"] - t0)
        m.stop()
    await client.close()
    return lat


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--objects", type=int, default=20000)
    ap.add_argument("--writes", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=4)
    a = ap.parse_args()
    ours = await throughput(a.objects, a.workers)
    anchor = await anchor_queue(a.objects, a.workers)
    print(f"reconciles/s (no-op, {a.objects} objects, {a.workers} workers): runink {ours:,.0f}  "
          f"anchor bare asyncio.Queue {anchor:,.0f}  ratio {ours / anchor:.2f}")  # fmt: skip
    lat = await latency(a.writes)
    base = await anchor_watch_latency(a.writes)
    for p in (50, 99):
        ours_p, base_p = pct(lat, p) * 1e3, pct(base, p) * 1e3
        print(f"write -> reconcile start p{p}: runink {ours_p:.3f} ms  anchor store write -> watch "
              f"event {base_p:.3f} ms  ratio {ours_p / base_p:.2f}")  # fmt: skip
    print(f"(mean {statistics.mean(lat) * 1e3:.3f} ms over {len(lat)} writes)")


if __name__ == "__main__":
    asyncio.run(main())
