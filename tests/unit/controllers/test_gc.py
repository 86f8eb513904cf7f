"""The garbage collector, in each propagation mode."""

from __future__ import annotations

import pytest

from runink.controllers import (
    FOREGROUND,
    ORPHAN,
    garbage_collector,
    set_controller_reference,
    testing,
)
from runink.schemas import errors

from ._kit import obj


async def _family(env: testing.Environment) -> dict:  # type: ignore[type-arg]
    owner = await env.client.create(obj("Pipeline", "p"))
    for i in range(3):
        await env.client.create(set_controller_reference(owner, obj("PipelineRun", f"p-{i}")))
    await env.client.create(obj("PipelineRun", "stranger"))
    await env.run_until_idle()
    return owner


async def _names(env: testing.Environment) -> list[str]:
    return sorted(o["metadata"]["name"] for o in (await env.client.list("PipelineRun")).items)


def _gc(client: testing.InMemoryClient) -> list:  # type: ignore[type-arg]
    return garbage_collector(client, ["Pipeline"], ["PipelineRun"])


async def test_background_deletion_collects_the_dependents_after_the_owner() -> None:
    client = testing.InMemoryClient()
    async with testing.Environment(*_gc(client), client=client) as env:
        await _family(env)
        await env.client.delete("Pipeline", "p", "default")
        await env.run_until_idle()
        assert await _names(env) == ["stranger"]


async def test_foreground_deletion_removes_dependents_first_then_the_owner() -> None:
    client = testing.InMemoryClient()
    async with testing.Environment(*_gc(client), client=client) as env:
        owner = await _family(env)
        # One dependent is held by its own finalizer: the owner must wait for it.
        held = await env.client.get("PipelineRun", "p-0", "default")
        held["metadata"]["finalizers"] = ["example.io/cleanup"]
        held = await env.client.update(held)
        owner["metadata"]["finalizers"] = [FOREGROUND]
        await env.client.update(owner)
        await env.client.delete("Pipeline", "p", "default")
        await env.run_until_idle()
        assert await _names(env) == ["p-0", "stranger"]
        still = await env.client.get("Pipeline", "p", "default")
        assert still["metadata"]["deletionTimestamp"], "the owner waits for its last dependent"
        held = await env.client.get("PipelineRun", "p-0", "default")
        await env.client.update({**held, "metadata": {**held["metadata"], "finalizers": []}})
        await env.run_until_idle()
        assert await _names(env) == ["stranger"]
        with pytest.raises(errors.NotFound):
            await env.client.get("Pipeline", "p", "default")


async def test_orphan_deletion_keeps_dependents_and_strips_their_owner_references() -> None:
    client = testing.InMemoryClient()
    async with testing.Environment(*_gc(client), client=client) as env:
        owner = await _family(env)
        owner["metadata"]["finalizers"] = [ORPHAN]
        await env.client.update(owner)
        await env.client.delete("Pipeline", "p", "default")
        await env.run_until_idle()
        with pytest.raises(errors.NotFound):
            await env.client.get("Pipeline", "p", "default")
        assert await _names(env) == ["p-0", "p-1", "p-2", "stranger"]
        for o in (await env.client.list("PipelineRun")).items:
            assert not o["metadata"].get("ownerReferences")
