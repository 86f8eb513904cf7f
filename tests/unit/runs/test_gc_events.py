"""The garbage collector ignores its dependents' status writes, and still collects them.

A run's slices write their status about three times each; when each of those requeued the run's
collector, a 1,000-way matrix cost thousands of reconciles (each a linearizable read).
"""

from __future__ import annotations

from typing import Any

from runink.controllers import _gc, _helpers, testing

Obj = dict[str, Any]


def obj(kind: str, name: str, **extra: Any) -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": kind,
        "metadata": {"name": name, "herd": "t"},
        "spec": {},
        **extra,
    }


async def test_status_writes_of_dependents_do_not_requeue_their_owner_and_deletion_collects() -> (
    None
):
    env = testing.Environment()
    (gc,) = _gc.garbage_collector(
        env.client, owner_kinds=["PipelineRun"], dependent_kinds=["Slice"]
    )
    env.manager.add(gc)
    async with env:
        owner = await env.client.create(obj("PipelineRun", "r1"))
        for i in range(10):
            child = obj("Slice", f"s{i}")
            _helpers.set_controller_reference(owner, child)
            await env.client.create(child)
        await env.run_until_idle()
        before = gc.stats.reconciles
        for s in (await env.client.list("Slice", "t")).items:
            await env.client.update_status({**s, "status": {"phase": "Running"}})
        await env.run_until_idle()
        assert gc.stats.reconciles == before

        await env.client.delete("PipelineRun", "r1", "t")
        await env.run_until_idle()
        assert (await env.client.list("Slice", "t")).items == []
