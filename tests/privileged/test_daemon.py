"""The agent daemon against the in-memory Barn: registration, a slice run to completion, cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from runink import store
from runink.agent import _daemon, _runtime

pytestmark = pytest.mark.privileged


def slice_obj(name: str, command: list[str], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Slice",
        "metadata": {"name": name, "herd": "team"},
        "spec": {
            "pipeline": "p",
            "run": "r",
            "step": "s",
            "command": command,
            "nodeName": "node-a",
            "network": "none",
            "resources": {"cpu": "500m", "memory": "64Mi"},
            **spec,
        },
    }


async def until(barn: Any, name: str, ok: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            obj = await barn.get("Slice", name, "team")
            if ok(obj.get("status") or {}):
                return dict(obj)
            await asyncio.sleep(0.02)


async def test_agent_registers_runs_and_cancels(runtime: _runtime.SliceRuntime) -> None:
    barn = store.open_memory()
    cfg = _daemon.AgentConfig("node-a", labels={"zone": "z1"}, heartbeat_interval=0.05)
    agent = _daemon.Agent(barn, runtime, cfg)
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(agent.run())
            await barn.create(slice_obj("ok", ["sh", "-c", "echo hi; exit 0"]))
            await barn.create(slice_obj("bad", ["sh", "-c", "exit 7"]))
            await barn.create(slice_obj("other-node", ["true"], nodeName="node-b"))
            await barn.create(slice_obj("long", ["sleep", "60"]))
            ok = await until(barn, "ok", lambda s: s.get("phase") == "Succeeded")
            assert ok["status"]["exitCode"] == 0 and ok["status"]["completionTime"]
            bad = await until(barn, "bad", lambda s: s.get("phase") == "Failed")
            assert bad["status"]["exitCode"] == 7 and bad["status"]["reason"] == "Error"
            await until(barn, "long", lambda s: s.get("phase") == "Running")
            long = await barn.get("Slice", "long", "team")
            long["spec"]["cancelled"] = True
            await barn.update(long)
            done = await until(barn, "long", lambda s: s.get("phase") == "Failed")
            assert done["status"]["reason"] == "Cancelled"
            other = await barn.get("Slice", "other-node", "team")
            assert not other.get("status")
            node = await barn.get("Node", "node-a")
            first_beat = node["status"]["heartbeatTime"]
            assert node["metadata"]["labels"]["zone"] == "z1"
            assert int(node["status"]["capacity"]["gpu"]) == 0
            async with asyncio.timeout(10):
                while (await barn.get("Node", "node-a"))["status"]["heartbeatTime"] == first_beat:
                    await asyncio.sleep(0.02)
            task.cancel()
    finally:
        await barn.close()
