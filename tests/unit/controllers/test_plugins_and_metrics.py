"""Plugin isolation, and the manager's /metrics, /healthz and /readyz (checked by promtool)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import shutil
import subprocess
import sys
import types

import pytest

from runink.controllers import Controller, Request, Result, list_controllers, load_plugins, testing

from ._kit import Recorder, obj


class Crashing:
    async def reconcile(self, request: Request) -> Result:
        raise ZeroDivisionError("plugin bug")


def _provide(ctx: object) -> list[Controller]:
    return [Controller.builder("crashy").for_kind("G").build(Crashing())]


@pytest.fixture
def plugin_module() -> types.ModuleType:
    mod = types.ModuleType("fake_runink_plugin")
    mod.provide = _provide  # type: ignore[attr-defined]
    sys.modules["fake_runink_plugin"] = mod
    yield mod  # type: ignore[misc]
    del sys.modules["fake_runink_plugin"]


def _ep(name: str, value: str) -> importlib.metadata.EntryPoint:
    return importlib.metadata.EntryPoint(name, value, "runink.controllers")


async def test_a_plugin_failing_at_import_or_in_reconcile_does_not_stop_the_others(
    plugin_module: types.ModuleType,
) -> None:
    client = testing.InMemoryClient()
    infos = load_plugins(
        client,
        entry_points=[
            _ep("broken", "no_such_module_xyz:controllers"),
            _ep("crashy", "fake_runink_plugin:provide"),
        ],
    )
    assert [(i.name, i.ok) for i in infos] == [("broken", False), ("crashy", True)]
    assert "ModuleNotFoundError" in (infos[0].error or "")
    builtin = Recorder()
    env = testing.Environment(
        Controller.builder("builtin").for_kind("G").build(builtin), client=client
    )
    env.manager.add(*infos[1].controllers, plugin="crashy")
    async with env:
        await client.create(obj("G", "a"))
        await env.run_until_idle(advance=5)
        assert len(builtin.calls) == 1
        rows = {r["name"]: r for r in list_controllers(env.manager)}
        assert rows["crashy"]["plugin"] == "crashy" and rows["crashy"]["errors"] >= 2
        assert "ZeroDivisionError" in rows["crashy"]["lastError"]
        assert rows["builtin"]["healthy"] and rows["builtin"]["errors"] == 0
        events = (await client.list("Event", "default")).items
        assert any(
            e["spec"]["reason"] == "ReconcileError" and e["spec"]["count"] >= 2 for e in events
        )


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_metrics_endpoint_serves_controller_runtime_names_and_passes_promtool() -> None:
    rec = Recorder()
    rec.fail = RuntimeError("once")
    c = Controller.builder("greet").for_kind("G").build(rec)
    async with testing.Environment(c, http_port=0) as env:
        await env.client.create(obj("G", "a"))
        await env.run_until_idle(advance=0.001)
        rec.fail = None
        await env.run_until_idle(advance=1)
        port = env.manager.http_port
        assert port
        assert await _http_get(port, "/readyz") == (200, b"ok\n")
        assert (await _http_get(port, "/healthz"))[0] == 200
        status, body = await _http_get(port, "/metrics")
    assert status == 200
    text = body.decode()
    for line in (
        'controller_runtime_reconcile_total{controller="greet",result="error"} 1.0',
        'controller_runtime_reconcile_total{controller="greet",result="success"} 1.0',
        'controller_runtime_reconcile_errors_total{controller="greet"} 1.0',
        'workqueue_retries_total{name="greet"} 1.0',
        'controller_runtime_max_concurrent_reconciles{controller="greet"} 1.0',
    ):
        assert line in text
    for name in ("controller_runtime_reconcile_time_seconds_bucket", "workqueue_depth",
                 "workqueue_adds_total", "workqueue_queue_duration_seconds_bucket",
                 "workqueue_work_duration_seconds_bucket"):  # fmt: skip
        assert name in text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()
    assert proc.stdout.strip() == b"" and proc.stderr.strip() == b"", "promtool found problems"
