"""The example plugin, tested with runink.controllers.testing: no server, no real time."""

from __future__ import annotations

import runink_example_plugin as plugin

from runink import schemas
from runink.controllers import PluginContext, testing


def greeting(name: str, who: str, excited: bool = False) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "example.runink.io/v1",
        "kind": "Greeting",
        "metadata": {"name": name, "herd": "default"},
        "spec": {"name": who, "excited": excited},
    }


async def test_the_controller_writes_the_reply_and_follows_spec_changes() -> None:
    client = testing.InMemoryClient()
    async with testing.Environment(
        *plugin.controllers(PluginContext(client)), client=client
    ) as env:
        g = await env.client.create(greeting("hi", "Ada"))
        await env.run_until_idle()
        g = await env.client.get("Greeting", "hi", "default")
        assert g["status"]["reply"] == "Hello, Ada."
        assert g["status"]["conditions"][0]["status"] == "True"
        await env.client.update({**g, "spec": {"name": "Ada", "excited": True}})
        await env.run_until_idle()
        g = await env.client.get("Greeting", "hi", "default")
        assert g["status"]["reply"] == "Hello, Ada!"
        assert g["status"]["observedGeneration"] == g["metadata"]["generation"]
        plugin.Greeting.model_validate(g)


async def test_an_empty_name_is_a_terminal_error_and_is_not_retried() -> None:
    client = testing.InMemoryClient()
    async with testing.Environment(
        *plugin.controllers(PluginContext(client)), client=client
    ) as env:
        await env.client.create(greeting("nobody", ""))
        await env.run_until_idle(advance=600)
        status = env.manager.status()[0]
        assert status.errors == 1 and "nobody to greet" in (status.last_error or "")


def test_the_kind_is_registered_for_the_api_and_cli() -> None:
    info = schemas.lookup("gr")
    assert info.kind == "Greeting" and info.plural == "greetings"
