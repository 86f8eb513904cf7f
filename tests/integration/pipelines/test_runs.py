"""Pipelines end to end through the real API, controllers and agent (slices are real processes)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from runink import api, controllers
from runink.cli import _up

pytestmark = [pytest.mark.integration, pytest.mark.privileged]

Obj = dict[str, Any]


def _step(name: str, command: list[str], *deps: str, **kw: Any) -> Obj:
    return {
        "name": name,
        "command": command,
        "dependsOn": list(deps),
        "network": "none",
        "resources": {"cpu": "100m", "memory": "64Mi"},
        **kw,
    }


async def _setup(
    client: api.Client,
    steps: list[Obj],
    finally_: list[Obj] | None = None,
    quota: Obj | None = None,
) -> Obj:
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Herd",
            "metadata": {"name": "t"},
            "spec": {"quota": quota or {}},
        }
    )
    spec: Obj = {"steps": steps}
    if finally_:
        spec["finally"] = finally_
    return await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Pipeline",
            "metadata": {"name": "p", "herd": "t"},
            "spec": spec,
        }
    )


async def _wait_run(client: api.Client, name: str, timeout: float = 60) -> Obj:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = await client.get("PipelineRun", name, "t")
        if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"):
            return run
        await asyncio.sleep(0.1)
    pytest.fail(
        f"run {name} did not finish: {(await client.get('PipelineRun', name, 't')).get('status')}"
    )


async def _slices(client: api.Client, step: str | None = None) -> list[Obj]:
    sel = "runink.io/run=r1" + (f",runink.io/step={step}" if step else "")
    return (await client.list("Slice", "t", selector=sel)).items


async def test_a_failing_step_is_retried_then_fails_the_run_and_finally_still_runs(
    cluster: tuple[_up.Cluster, api.Client],
) -> None:
    _, client = cluster
    p = await _setup(
        client,
        [
            _step(
                "flaky",
                ["sh", "-c", "echo trying; exit 3"],
                retry={"limit": 2, "backoff": {"initialSeconds": 0.2, "jitter": 0}},
            ),
            _step("never", ["true"], "flaky"),
        ],
        finally_=[_step("cleanup", ["sh", "-c", "echo cleaned"])],
    )
    await client.create(controllers.make_run(p, name="r1"))
    run = await _wait_run(client, "r1")
    assert run["status"]["phase"] == "Failed"
    steps = run["status"]["steps"]
    assert steps["flaky"]["phase"] == "Failed"
    assert steps["flaky"]["attempts"] == 3
    assert "exit code 3" in steps["flaky"]["message"]
    assert steps["never"]["phase"] == "Skipped"
    assert steps["cleanup"]["phase"] == "Succeeded", "finally runs after a failure"
    attempts = sorted(s["spec"]["attempt"] for s in await _slices(client, "flaky"))
    assert attempts == [1, 2, 3]
    assert all(s["status"]["exitCode"] == 3 for s in await _slices(client, "flaky"))


async def test_a_cancelled_run_stops_its_running_slices(
    cluster: tuple[_up.Cluster, api.Client],
) -> None:
    _, client = cluster
    p = await _setup(client, [_step("long", ["sleep", "300"]), _step("after", ["true"], "long")])
    await client.create(controllers.make_run(p, name="r1"))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        sl = await _slices(client, "long")
        if sl and (sl[0].get("status") or {}).get("phase") == "Running":
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the slice never started")
    run = await client.get("PipelineRun", "r1", "t")
    await client.update({**run, "spec": {**run["spec"], "cancelled": True}})
    started = time.monotonic()
    run = await _wait_run(client, "r1", timeout=40)
    assert run["status"]["phase"] == "Cancelled"
    assert time.monotonic() - started < 30, "sleep 300 was stopped, not waited for"
    sl = (await _slices(client, "long"))[0]
    assert sl["status"]["phase"] == "Failed"
    assert sl["status"]["reason"] in ("Cancelled", "Stopped")
    assert run["status"]["steps"]["after"]["phase"] == "Cancelled"


async def test_a_step_over_its_herd_quota_waits_and_runs_once_room_frees(
    cluster: tuple[_up.Cluster, api.Client],
) -> None:
    _, client = cluster
    steps = [
        _step("a", ["sh", "-c", "sleep 2"], resources={"cpu": "500m", "memory": "64Mi"}),
        _step("b", ["sh", "-c", "sleep 1"], resources={"cpu": "500m", "memory": "64Mi"}),
    ]
    p = await _setup(client, steps, quota={"cpu": "600m"})
    await client.create(controllers.make_run(p, name="r1"))
    waited: Obj | None = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and waited is None:
        for s in await _slices(client):
            for c in (s.get("status") or {}).get("conditions") or []:
                if c["type"] == "Scheduled" and c["status"] == "False":
                    waited = c
        await asyncio.sleep(0.05)
    assert waited is not None, "one of the two steps must wait for quota"
    assert "herd quota exceeded" in waited["message"]
    run = await _wait_run(client, "r1")
    assert run["status"]["phase"] == "Succeeded", "it ran once the other step freed the quota"
    a, b = (await _slices(client, "a"))[0], (await _slices(client, "b"))[0]
    first, second = sorted((a, b), key=lambda s: s["status"]["startTime"])
    assert second["status"]["startTime"] >= first["status"]["completionTime"]
