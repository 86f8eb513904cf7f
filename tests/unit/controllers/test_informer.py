"""Informers: a silently stalled watch is detected and resumed; Gone leads to a re-list."""

from __future__ import annotations

import asyncio

from runink.controllers import Informer, testing

from ._kit import obj


async def _start(
    client: testing.InMemoryClient, clock: testing.FakeClock, tg: asyncio.TaskGroup
) -> tuple[Informer, asyncio.Task[None]]:
    inf = Informer(client, "G", clock=clock, resync_period=None, stall_timeout=30)
    inf.add_indexer("node", lambda o: [o["spec"]["node"]] if "node" in o["spec"] else [])
    task = tg.create_task(inf.run())
    await inf.wait_synced()
    return inf, task


async def _until(cond: object) -> None:
    for _ in range(10_000):
        if callable(cond) and cond():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


async def test_a_watch_stalled_on_the_server_side_is_detected_and_resumed() -> None:
    client, clock = testing.InMemoryClient(), testing.FakeClock()
    try:
        async with asyncio.TaskGroup() as tg:
            inf, task = await _start(client, clock, tg)
            await _until(lambda: client.open_watches == 1)
            assert client.stall_watches() == 1
            await client.create(obj("G", "late", node="n1"))
            for _ in range(100):
                await asyncio.sleep(0)
            assert inf.get("late", "default") is None, "the stalled stream delivered nothing"
            clock.advance(31)  # past stall_timeout: the watchdog fires
            await _until(lambda: inf.get("late", "default") is not None)
            assert inf.restarts.get("stalled") == 1
            assert [o["metadata"]["name"] for o in inf.by_index("node", "n1")] == ["late"]
            task.cancel()
    finally:
        await client.close()


async def test_gone_leads_to_a_relist_and_no_object_is_missed() -> None:
    client, clock = testing.InMemoryClient(), testing.FakeClock()
    seen: dict[str, str] = {}

    def handler(old: dict | None, new: dict | None) -> None:  # type: ignore[type-arg]
        o = new if new is not None else old
        assert o is not None
        seen[o["metadata"]["name"]] = "deleted" if new is None else "present"

    try:
        await client.create(obj("G", "doomed"))
        await client.create(obj("G", "kept"))
        async with asyncio.TaskGroup() as tg:
            inf, task = await _start(client, clock, tg)
            inf.add_handler(handler)
            await _until(lambda: client.open_watches == 1)
            client.stall_watches()
            # While the watch is dead: changes, then the history is compacted away.
            await client.delete("G", "doomed", "default")
            for i in range(5):
                await client.create(obj("G", f"new-{i}"))
            await client.compact(client.revision)
            clock.advance(31)
            await _until(lambda: inf.relists == 2)
            await _until(lambda: len(inf.items()) == 6)
            assert inf.restarts.get("gone") == 1
            assert seen["doomed"] == "deleted", "the deletion missed during the outage is delivered"
            assert {k for k, v in seen.items() if v == "present"} == {"kept"} | {
                f"new-{i}" for i in range(5)
            }
            # And the resumed watch is live again.
            await client.create(obj("G", "after"))
            await _until(lambda: inf.get("after", "default") is not None)
            task.cancel()
    finally:
        await client.close()
