"""Work-queue semantics: dedup, one worker per key, backoff (fake clock), delayed adds, shutdown."""

from __future__ import annotations

import asyncio
import random

import pytest

from runink.controllers import QueueShutDown, RateLimiter, WorkQueue, testing


async def test_a_key_added_many_times_while_waiting_is_handed_out_once() -> None:
    q: WorkQueue[str] = WorkQueue("t", clock=testing.FakeClock())
    for _ in range(1000):
        q.add("a")
    q.add("b")
    assert len(q) == 2
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_a_key_readded_while_processing_is_processed_again_after_done() -> None:
    q: WorkQueue[str] = WorkQueue("t", clock=testing.FakeClock())
    q.add("a")
    key = await q.get()
    q.add("a")  # changed while being reconciled
    assert len(q) == 0, "must not be handed to a second worker while the first holds it"
    q.done(key)
    assert len(q) == 1
    assert await q.get() == "a"


async def test_under_load_no_key_is_processed_by_two_workers_at_once() -> None:
    q: WorkQueue[int] = WorkQueue("t", clock=testing.FakeClock())
    active: set[int] = set()
    overlaps: list[int] = []
    processed = 0
    rng = random.Random(7)

    async def worker() -> None:
        nonlocal processed
        while True:
            try:
                key = await q.get()
            except QueueShutDown:
                return
            if key in active:
                overlaps.append(key)
            active.add(key)
            for _ in range(rng.randint(0, 3)):
                await asyncio.sleep(0)  # interleave with producers and other workers
            active.discard(key)
            processed += 1
            q.done(key)

    async def producer() -> None:
        for _ in range(2000):
            q.add(rng.randrange(10))
            if rng.random() < 0.5:
                await asyncio.sleep(0)

    async with asyncio.TaskGroup() as tg:
        workers = [tg.create_task(worker()) for _ in range(8)]
        await producer()
        while len(q) or q.processing:
            await asyncio.sleep(0)
        q.shut_down()
        del workers
    assert overlaps == []
    assert 10 <= processed < 2000  # dedup collapsed most adds


async def test_per_key_backoff_doubles_from_5ms_and_caps_at_1000s() -> None:
    clock = testing.FakeClock()
    limiter: RateLimiter[str] = RateLimiter(clock, qps=1e9, burst=10**9)
    delays = [limiter.when("a") for _ in range(20)]
    assert delays[:4] == [0.005, 0.01, 0.02, 0.04]
    assert delays[-1] == 1000.0
    assert limiter.when("b") == 0.005, "backoff is per key"
    limiter.forget("a")
    assert limiter.when("a") == 0.005


async def test_the_overall_token_bucket_spaces_out_a_burst_of_distinct_keys() -> None:
    clock = testing.FakeClock()
    limiter: RateLimiter[int] = RateLimiter(clock, qps=10, burst=100)
    delays = [limiter.when(i) for i in range(110)]
    assert max(delays[:100]) == 0.005  # within the burst: only the per-key delay
    assert delays[100] == pytest.approx(0.1)  # the 101st waits for a token at 10 qps
    assert delays[109] == pytest.approx(1.0)


async def test_delayed_add_fires_when_the_clock_reaches_it_and_earliest_wins() -> None:
    clock = testing.FakeClock()
    q: WorkQueue[str] = WorkQueue("t", clock=clock)
    q.add_after("a", 10)
    q.add_after("a", 3)  # earlier: replaces
    q.add_after("a", 7)  # later: ignored
    clock.advance(2.9)
    assert len(q) == 0
    clock.advance(0.1)
    assert len(q) == 1
    clock.advance(100)
    assert len(q) == 1, "the cancelled and ignored delays never fire"


async def test_shutdown_lets_work_in_flight_finish_and_then_stops_workers() -> None:
    q: WorkQueue[str] = WorkQueue("t", clock=testing.FakeClock())
    q.add("a")
    key = await q.get()
    q.shut_down()
    q.add("b")  # refused after shutdown
    async with asyncio.TaskGroup() as tg:
        drained = tg.create_task(q.wait_drained())
        await asyncio.sleep(0)
        assert not drained.done(), "a reconcile is still in flight"
        q.done(key)
    with pytest.raises(QueueShutDown):
        await q.get()
