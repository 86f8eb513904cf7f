"""The controller pipeline end to end over the in-memory store and a fake clock."""

from __future__ import annotations

import asyncio
import itertools

from runink.controllers import (
    Controller,
    Request,
    Result,
    StaticLeadership,
    TerminalError,
    generation_changed,
    labels_match,
    set_controller_reference,
    testing,
)

from ._kit import Recorder, obj


async def test_1000_quick_changes_cause_few_reconciles_and_the_last_state_is_reconciled() -> None:
    rec = Recorder()
    c = Controller.builder("c").for_kind("Greeting").build(rec)
    async with testing.Environment(c) as env:
        rec.client = env.client
        cur = await env.client.create(obj("Greeting", "hi", n=0))
        await env.run_until_idle()
        rec.calls.clear()
        rec.seen.clear()
        for i in range(1, 1001):
            cur = await env.client.update({**cur, "spec": {"n": i}})
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the reconciler run now and then, as in real life
        await env.run_until_idle()
        assert 1 <= len(rec.calls) < 100
        assert rec.seen[-1]["spec"]["n"] == 1000


async def test_a_failing_reconcile_backs_off_exponentially_and_recovers() -> None:
    rec = Recorder()
    rec.fail = RuntimeError("backend down")
    c = Controller.builder("c").for_kind("Greeting").build(rec)
    async with testing.Environment(c) as env:
        await env.client.create(obj("Greeting", "hi"))
        times: list[float] = []
        orig = rec.reconcile

        async def timed(request: Request) -> Result:
            times.append(env.clock.now())
            return await orig(request)

        rec.reconcile = timed  # type: ignore[method-assign]
        await env.run_until_idle(advance=0.3)
        gaps = [round(b - a, 4) for a, b in itertools.pairwise(times)]
        assert gaps[:5] == [0.005, 0.01, 0.02, 0.04, 0.08]
        rec.fail = None
        await env.run_until_idle(advance=10)
        attempts = len(times)
        await env.run_until_idle(advance=100)
        assert len(times) == attempts, "after a success the key is forgotten: no more retries"
        st = env.manager.status()[0]
        assert st.errors == attempts - 1 and st.last_error is not None


async def test_a_terminal_error_is_not_retried_but_a_new_change_is_reconciled() -> None:
    rec = Recorder()
    rec.fail = TerminalError("spec.text must not be empty")
    c = Controller.builder("c").for_kind("Greeting").build(rec)
    async with testing.Environment(c) as env:
        o = await env.client.create(obj("Greeting", "hi"))
        await env.run_until_idle(advance=3600)
        assert len(rec.calls) == 1
        events = (await env.client.list("Event", "default")).items
        assert [e["spec"]["reason"] for e in events] == ["ReconcileTerminalError"]
        rec.fail = None
        await env.client.update({**o, "spec": {"text": "fixed"}})
        await env.run_until_idle()
        assert len(rec.calls) == 2


async def test_requeue_after_schedules_the_next_reconcile() -> None:
    class Poller:
        calls = 0

        async def reconcile(self, request: Request) -> Result:
            self.calls += 1
            return Result(requeue_after=60)

    p = Poller()
    async with testing.Environment(Controller.builder("p").for_kind("G").build(p)) as env:
        await env.client.create(obj("G", "x"))
        await env.run_until_idle(advance=59)
        assert p.calls == 1
        await env.run_until_idle(advance=1)
        assert p.calls == 2


async def test_a_change_to_an_owned_child_requeues_its_owner() -> None:
    rec = Recorder()
    c = Controller.builder("runs").for_kind("Pipeline").owns("PipelineRun").build(rec)
    async with testing.Environment(c) as env:
        owner = await env.client.create(obj("Pipeline", "p"))
        await env.client.create(obj("PipelineRun", "unowned"))
        await env.run_until_idle()
        rec.calls.clear()
        child = set_controller_reference(owner, obj("PipelineRun", "p-1"))
        await env.client.create(child)
        await env.run_until_idle()
        assert rec.calls == [Request("Pipeline", "default", "p")]


async def test_predicates_filter_status_only_changes_and_unselected_objects() -> None:
    rec = Recorder()
    c = (
        Controller.builder("c")
        .for_kind("G")
        .with_predicates(generation_changed, labels_match("team=a"))
        .build(rec)
    )
    async with testing.Environment(c) as env:
        a = obj("G", "a")
        a["metadata"]["labels"] = {"team": "a"}
        a = await env.client.create(a)
        await env.client.create(obj("G", "b"))
        await env.run_until_idle()
        assert [r.name for r in rec.calls] == ["a"]
        a = await env.client.update_status({**a, "status": {"ok": True}})
        await env.run_until_idle()
        assert len(rec.calls) == 1, "a status write does not move generation"
        await env.client.update({**a, "spec": {"v": 2}})
        await env.run_until_idle()
        assert len(rec.calls) == 2


async def test_leader_only_controllers_run_only_while_leading() -> None:
    rec = Recorder()
    follower_rec = Recorder()
    election = StaticLeadership(leading=False)
    leader_only = Controller.builder("lo").for_kind("G").build(rec)
    everywhere = Controller.builder("all").for_kind("G").leader_only(False).build(follower_rec)
    async with testing.Environment(leader_only, everywhere, election=election) as env:
        await env.client.create(obj("G", "a"))
        await env.run_until_idle()
        assert rec.calls == [] and len(follower_rec.calls) == 1
        election.set(True)
        await env.run_until_idle()
        assert len(rec.calls) == 1, "on gaining leadership the controller reconciles the cache"
        election.set(False)
        while env.manager.status()[0].running:
            await asyncio.sleep(0)
        await env.client.create(obj("G", "b"))
        await env.run_until_idle()
        assert len(rec.calls) == 1
        assert len(follower_rec.calls) == 2
