"""The built-in controllers together, over the in-memory Barn with a fake clock and a fake agent.

The fake agent stands in for the Runi Agent (tested for real in tests/privileged and end to end in
tests/integration): it finishes every Slice bound to its node with an outcome the test chooses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from runink.controllers import _builtin, _runs, testing

Obj = dict[str, Any]
Outcome = Callable[[Obj], tuple[str, dict[str, Any]]]


def _meta(name: str, herd: str | None = None) -> Obj:
    m: Obj = {"name": name}
    if herd:
        m["herd"] = herd
    return m


def herd(name: str, **quota: Any) -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Herd",
        "metadata": _meta(name),
        "spec": {"quota": quota},
    }


def node(name: str, now: float, cpu: str = "4", memory: str = "8Gi") -> Obj:
    res = {"cpu": cpu, "memory": memory, "gpu": 0, "slices": 100}
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Node",
        "metadata": _meta(name),
        "spec": {},
        "status": {
            "capacity": res,
            "allocatable": res,
            "heartbeatTime": _runs.format_time(now),
            "leaseDurationSeconds": 40,
            "conditions": [{"type": "Ready", "status": "True", "reason": "AgentReady"}],
        },
    }


def pipeline(name: str, steps: list[Obj], finally_: list[Obj] | None = None, **spec: Any) -> Obj:
    s: Obj = {"steps": steps, **spec}
    if finally_:
        s["finally"] = finally_
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Pipeline",
        "metadata": _meta(name, "t"),
        "spec": s,
    }


def step(name: str, *deps: str, **kw: Any) -> Obj:
    return {
        "name": name,
        "command": ["true"],
        "dependsOn": list(deps),
        "resources": {"cpu": "500m", "memory": "128Mi"},
        **kw,
    }


async def finish_bound(env: testing.Environment, outcome: Outcome) -> list[str]:
    """The fake agent: every bound, unfinished Slice ends now with ``outcome(slice)``."""
    done = []
    for s in (await env.client.list("Slice", "t")).items:
        st = s.get("status") or {}
        if not s["spec"].get("nodeName") or st.get("phase") in ("Succeeded", "Failed"):
            continue
        phase, results = outcome(s)
        now = _runs.format_time(env.clock.now())
        reason = (
            "Cancelled"
            if s["spec"].get("cancelled")
            else ("Completed" if phase == "Succeeded" else "Error")
        )
        await env.client.update_status(
            {
                **s,
                "status": {
                    **st,
                    "phase": "Failed" if s["spec"].get("cancelled") else phase,
                    "reason": reason,
                    "startTime": now,
                    "completionTime": now,
                    "results": {k: str(v) for k, v in results.items()},
                },
            }
        )
        done.append(s["spec"]["step"])
    return done


async def drive(
    env: testing.Environment, run: str, outcome: Outcome, rounds: int = 60
) -> tuple[Obj, list[str]]:
    order: list[str] = []
    for _ in range(rounds):
        await env.run_until_idle()
        r = await env.client.get("PipelineRun", run, "t")
        if (r.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Cancelled"):
            return r, order
        order += await finish_bound(env, outcome)
        await env.run_until_idle(advance=1.0)
    pytest.fail(
        f"run {run} did not finish: {(await env.client.get('PipelineRun', run, 't')).get('status')}"
    )


def succeed(_: Obj) -> tuple[str, dict[str, Any]]:
    return "Succeeded", {}


@pytest.fixture
async def env():
    clock = testing.FakeClock(start=time.time())
    e = testing.Environment(clock=clock)
    e.manager.add(*_builtin.builtin_controllers(e.manager, node_grace_period=5))
    async with e:
        await e.client.create(herd("t"))
        await e.client.create(node("n1", clock.now()))
        yield e


async def start(env: testing.Environment, p: Obj, **params: Any) -> str:
    from runink.controllers import _pipelines

    created = await env.client.create(p)
    run = _pipelines.make_run(created, params=params, name="r1")
    await env.client.create(run)
    return "r1"


async def test_a_dag_runs_in_order_results_flow_and_the_run_succeeds(
    env: testing.Environment,
) -> None:
    p = pipeline(
        "etl",
        [
            step("extract", results=["rows"]),
            step(
                "transform",
                "extract",
                params=[
                    {"name": "rows", "type": "string", "default": "$(steps.extract.results.rows)"}
                ],
            ),
            step("load", "transform"),
        ],
    )
    run = await start(env, p)

    def outcome(s: Obj) -> tuple[str, dict[str, Any]]:
        if s["spec"]["step"] == "transform":
            assert s["spec"]["params"] == {"rows": 7}, "a result flows into a later step's params"
        return "Succeeded", ({"rows": 7} if s["spec"]["step"] == "extract" else {})

    r, order = await drive(env, run, outcome)
    assert r["status"]["phase"] == "Succeeded"
    assert order == ["extract", "transform", "load"]
    assert {k: v["phase"] for k, v in r["status"]["steps"].items()} == dict.fromkeys(
        order, "Succeeded"
    )
    events = [e["spec"]["reason"] for e in (await env.client.list("Event", "t")).items]
    assert "RunSucceeded" in events
    assert "StepStarted" in events


async def test_a_failing_step_is_retried_then_fails_the_run_and_finally_runs(
    env: testing.Environment,
) -> None:
    p = pipeline(
        "flaky",
        [
            step(
                "bad",
                retry={"limit": 2, "backoff": {"initialSeconds": 1, "maxSeconds": 2, "jitter": 0}},
            ),
            step("after", "bad"),
        ],
        finally_=[step("cleanup")],
    )
    run = await start(env, p)
    r, order = await drive(
        env, run, lambda s: ("Failed", {}) if s["spec"]["step"] == "bad" else ("Succeeded", {})
    )
    assert r["status"]["phase"] == "Failed"
    assert order == ["bad", "bad", "bad", "cleanup"], "3 attempts, then the finally step"
    assert r["status"]["steps"]["after"]["phase"] == "Skipped"
    assert r["status"]["steps"]["bad"]["attempts"] == 3
    cond = next(c for c in r["status"]["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "False"
    assert "bad" in cond["message"]


async def test_a_step_over_its_herd_quota_waits_until_room_frees(env: testing.Environment) -> None:
    await env.client.update(
        {**(await env.client.get("Herd", "t")), "spec": {"quota": {"cpu": "1"}}}
    )
    p = pipeline("wide", [step("a", matrix={"params": {"i": [1, 2, 3]}})])
    run = await start(env, p)
    await env.run_until_idle()
    slices = (await env.client.list("Slice", "t")).items
    bound = [s for s in slices if s["spec"].get("nodeName")]
    waiting = [s for s in slices if not s["spec"].get("nodeName")]
    assert len(bound) == 2, "2 x 500m fit a 1-cpu quota"
    assert len(waiting) == 1
    cond = next(c for c in waiting[0]["status"]["conditions"] if c["type"] == "Scheduled")
    assert cond["status"] == "False"
    assert "quota" in cond["message"]
    herd_status = (await env.client.get("Herd", "t"))["status"]
    assert herd_status["usage"]["cpu"] in ("1", "1000m")
    r, _ = await drive(env, run, succeed)
    assert r["status"]["phase"] == "Succeeded"


async def test_cancel_stops_running_slices(env: testing.Environment) -> None:
    run = await start(env, pipeline("long", [step("a"), step("b", "a")]))
    await env.run_until_idle()
    r = await env.client.get("PipelineRun", run, "t")
    await env.client.update({**r, "spec": {**r["spec"], "cancelled": True}})
    await env.run_until_idle()
    a = (await env.client.list("Slice", "t")).items[0]
    assert a["spec"]["cancelled"] is True, "the running slice is asked to stop"
    r, _ = await drive(env, run, succeed)
    assert r["status"]["phase"] == "Cancelled"
    assert r["status"]["steps"]["b"]["phase"] == "Cancelled"


async def test_a_lost_node_fails_its_slices_and_they_are_retried_elsewhere(
    env: testing.Environment,
) -> None:
    run = await start(
        env,
        pipeline(
            "p", [step("a", retry={"limit": 1, "backoff": {"initialSeconds": 1, "jitter": 0}})]
        ),
    )
    await env.run_until_idle()
    first = (await env.client.list("Slice", "t")).items[0]
    assert first["spec"]["nodeName"] == "n1"
    await env.client.create(node("n2", env.clock.now() + 120))  # n2 keeps heartbeating
    await env.run_until_idle(advance=60)  # n1's lease (40 s) expires, then the 5 s grace
    await env.run_until_idle(advance=10)
    n1 = await env.client.get("Node", "n1")
    assert next(c for c in n1["status"]["conditions"] if c["type"] == "Ready")["status"] == "False"
    first = await env.client.get("Slice", first["metadata"]["name"], "t")
    assert first["status"]["phase"] == "Failed"
    assert first["status"]["reason"] == "NodeLost"
    await env.run_until_idle(advance=5)
    second = [s for s in (await env.client.list("Slice", "t")).items if s["spec"]["attempt"] == 2]
    assert [s["spec"]["nodeName"] for s in second] == ["n2"]
    r, _ = await drive(env, run, succeed)
    assert r["status"]["phase"] == "Succeeded"


async def test_cron_schedule_creates_runs_and_forbid_skips_overlaps(
    env: testing.Environment,
) -> None:
    # A node whose lease outlives the test, so the first run stays active.
    n1 = await env.client.get("Node", "n1")
    n1["status"]["heartbeatTime"] = _runs.format_time(env.clock.now() + 3600)
    await env.client.update_status(n1)
    p = pipeline(
        "nightly", [step("a")], schedule={"cron": "*/5 * * * *", "concurrencyPolicy": "Forbid"}
    )
    await env.client.create(p)
    await env.run_until_idle(advance=301)
    runs = (await env.client.list("PipelineRun", "t")).items
    assert len(runs) == 1
    await env.run_until_idle(advance=300)  # still running: Forbid skips this firing
    assert len((await env.client.list("PipelineRun", "t")).items) == 1
    events = [e["spec"]["reason"] for e in (await env.client.list("Event", "t")).items]
    assert "SkippedSchedule" in events
