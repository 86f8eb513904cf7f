from __future__ import annotations

from runink.controllers import Controller, testing

from ._kit import Recorder, obj


async def test_a_created_object_is_reconciled() -> None:
    rec = Recorder()
    c = Controller.builder("greet").for_kind("Greeting").build(rec)
    async with testing.Environment(c) as env:
        rec.client = env.client
        await env.client.create(obj("Greeting", "hi", text="x"))
        await env.run_until_idle()
        assert [str(r) for r in rec.calls] == ["Greeting/default/hi"]
