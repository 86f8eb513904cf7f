"""The run controller reads a run's Slices from the shared informer cache, not from the Barn.

Listing the Slices on every pass made an N-way matrix cost O(N^2) (each slice write requeues its
run). These tests pin what that optimisation must not break: a cache that lags behind the
controller's own writes never makes it create a Slice twice, and a big matrix driven through every
built-in controller succeeds without the run controller listing Slices at all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from runink.controllers import _builtin, _informer, _pipelines, _runs, _types, testing

Obj = dict[str, Any]


class CountingClient(testing.InMemoryClient):
    """Counts Slice creates and lists (what the cache saves)."""

    def __init__(self) -> None:
        super().__init__()
        self.slice_creates = 0
        self.slice_lists = 0

    async def create(self, obj: Obj) -> Obj:
        if obj.get("kind") == "Slice":
            self.slice_creates += 1
        return await super().create(obj)

    async def list(self, kind: str, herd: str | None = None, **kw: Any) -> Any:
        if kind == "Slice":
            self.slice_lists += 1
        return await super().list(kind, herd, **kw)


def fanout(n: int) -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": {"name": "fan", "herd": "t"},
        "spec": {
            "steps": [
                {
                    "name": "each",
                    "command": ["true"],
                    "params": [{"name": "i", "type": "int"}],
                    "matrix": {"params": {"i": list(range(n))}},
                    "resources": {"cpu": "1m", "memory": "1Mi"},
                }
            ]
        },
    }


async def succeed_all(client: testing.InMemoryClient, *, bound_only: bool) -> int:
    """A fake agent: every unfinished Slice (bound ones only, if asked) succeeds now."""
    done = 0
    for s in (await client.list("Slice", "t")).items:
        st = s.get("status") or {}
        if st.get("phase") in ("Succeeded", "Failed"):
            continue
        if bound_only and not s["spec"].get("nodeName"):
            continue
        now = _runs.format_time(time.time())
        await client.update_status(
            {**s, "status": {**st, "phase": "Succeeded", "startTime": now, "completionTime": now}}
        )
        done += 1
    return done


async def test_a_stale_cache_never_makes_the_run_controller_create_a_slice_twice() -> None:
    client = CountingClient()
    clock = testing.FakeClock(start=time.time())
    informers = _informer.InformerSet(
        client, lambda kind: _informer.Informer(client, kind, clock=clock, resync_period=None)
    )
    rec = _runs.RunReconciler(client, clock=clock, informers=informers)
    p = await client.create(fanout(5))
    await client.create(_pipelines.make_run(p, name="r1"))
    req = _types.Request("PipelineRun", "t", "r1")

    await rec.reconcile(req)  # snapshots the pipeline
    await rec.reconcile(req)  # creates the five slices
    # The Slice informer has not run at all: its cache shows none of them. Passes in that state
    # must count on what the controller itself wrote.
    await rec.reconcile(req)
    await rec.reconcile(req)
    assert client.slice_creates == 5
    run = await client.get("PipelineRun", "r1", "t")
    assert run["status"]["phase"] == "Running"
    assert len(run["status"]["steps"]["each"]["slices"]) == 5

    inf = informers.for_kind("Slice")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(inf.run())
        await inf.wait_synced()
        assert await succeed_all(client, bound_only=False) == 5
        while inf.last_revision < client.revision:
            await asyncio.sleep(0)
        await rec.reconcile(req)
        task.cancel()
    run = await client.get("PipelineRun", "r1", "t")
    assert run["status"]["phase"] == "Succeeded"
    assert client.slice_creates == 5
    assert client.slice_lists == 2, "the informer's initial list and the fake agent's"


async def test_a_deleted_slice_is_recreated_once_the_cache_has_seen_the_deletion() -> None:
    client = CountingClient()
    clock = testing.FakeClock(start=time.time())
    informers = _informer.InformerSet(
        client, lambda kind: _informer.Informer(client, kind, clock=clock, resync_period=None)
    )
    rec = _runs.RunReconciler(client, clock=clock, informers=informers)
    p = await client.create(fanout(2))
    await client.create(_pipelines.make_run(p, name="r1"))
    req = _types.Request("PipelineRun", "t", "r1")
    inf = informers.for_kind("Slice")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(inf.run())
        await inf.wait_synced()
        await rec.reconcile(req)
        await rec.reconcile(req)
        await client.delete("Slice", "r1-each-0-1", "t")
        while inf.last_revision < client.revision:
            await asyncio.sleep(0)
        await rec.reconcile(req)
        task.cancel()
    assert client.slice_creates == 3, "the deleted index is created again, the other is not"
    names = sorted(s["metadata"]["name"] for s in (await client.list("Slice", "t")).items)
    assert names == ["r1-each-0-1", "r1-each-1-1"]


async def test_a_300_way_matrix_succeeds_without_the_run_controller_listing_slices() -> None:
    client = CountingClient()
    clock = testing.FakeClock(start=time.time())
    env = testing.Environment(client=client, clock=clock)
    env.manager.add(*_builtin.builtin_controllers(env.manager))
    async with env:
        await client.create(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Herd",
                "metadata": {"name": "t"},
                "spec": {"quota": {"slices": 400}},
            }
        )
        res = {"cpu": "64", "memory": "64Gi", "gpu": 0, "slices": 400}
        await client.create(
            {
                "apiVersion": "runink.io/v1",
                "kind": "Node",
                "metadata": {"name": "n1"},
                "spec": {},
                "status": {
                    "capacity": res,
                    "allocatable": res,
                    "heartbeatTime": _runs.format_time(clock.now()),
                    "leaseDurationSeconds": 40,
                    "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
                },
            }
        )
        p = await client.create(fanout(300))
        await client.create(_pipelines.make_run(p, name="r1"))
        agent_lists = 0
        for _ in range(20):
            await env.run_until_idle()
            run = await client.get("PipelineRun", "r1", "t")
            if run["status"].get("phase") == "Succeeded":
                break
            await succeed_all(client, bound_only=True)
            agent_lists += 1
        else:
            raise AssertionError(f"run did not succeed: {run['status'].get('phase')}")
        # The only Slice lists are the informer's and the fake agent's.
        relists = env.manager.informers.for_kind("Slice").relists
        assert client.slice_lists == relists + agent_lists
        assert client.slice_creates == 300
        assert len(run["status"]["steps"]["each"]["slices"]) == 300
