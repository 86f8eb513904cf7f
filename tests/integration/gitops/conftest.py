"""A real API server (mTLS, LMDB Barn in a temp dir), the GitOps controller in a Manager over the
gRPC client, and real git repositories made by the tests (copied from tests/integration/cli)."""

from __future__ import annotations

import asyncio
import io
import subprocess
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runink import api, controllers, store
from runink.cli import _app, _output, _up
from runink.controllers import _gitops

Obj = dict[str, Any]


@dataclass
class Result:
    code: int
    out: str
    err: str


class Repo:
    """A git repository in a temp dir; the test commits to it like a person would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "--quiet", "-b", "main")
        self.git("config", "user.email", "test@example.invalid")
        self.git("config", "user.name", "test")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=self.path, check=True, capture_output=True, text=True
        ).stdout.strip()

    def write(self, rel: str, text: str) -> None:
        f = self.path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))

    def remove(self, rel: str) -> None:
        (self.path / rel).unlink()

    def commit(self, message: str = "change") -> str:
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        return self.git("rev-parse", "HEAD")


@dataclass
class Env:
    tmp: Path
    config: Path
    client: api.Client
    manager: controllers.Manager
    gitops: _gitops.GitOps
    last_status: Any = None

    async def run(self, *argv: str) -> Result:
        out, err = io.StringIO(), io.StringIO()
        s = _output.Streams(Console(file=out, width=200), Console(file=err, width=200))
        code = await _app.amain(["--config", str(self.config), *argv], s)
        return Result(code, out.getvalue(), err.getvalue())

    async def source(self, name: str, herd: str | None = "default") -> Obj:
        return await self.client.get("GitSource", name, herd)

    async def wait_for(self, check: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
        """Await ``check()`` (a coroutine returning a truthy value when done) until it holds."""
        last: Any = None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    last = await check()

                    if last:
                        return last
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(
                f"timed out waiting for {what}; last: {last!r}; status: {self.last_status}"
            ) from None


def pipeline(name: str, *, herd: str | None = None, app: str = "x") -> str:
    herd_line = f"\n  herd: {herd}" if herd else ""
    return (
        "apiVersion: runink.io/v1\nkind: Pipeline\nmetadata:\n"
        f"  name: {name}{herd_line}\n  labels:\n    app: {app}\n"
        "spec:\n  steps:\n  - name: hello\n    command: [echo, hi]\n"
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    server = api.ApiServer(
        barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server, bookmark_interval=0.5
    )
    port = await server.start()
    config = _up.write_client_config(tmp_path / "config", pki, port)
    await _up._ensure_default_herd(barn)
    client = api.Client.from_config(config)
    manager = controllers.Manager(client, resync_period=None)
    ops = _gitops.GitOps(client, recorder=manager.recorder, cache_dir=tmp_path / "cache")
    manager.add(ops.controller)

    async def main() -> None:
        async with asyncio.TaskGroup() as tg:
            watches = tg.create_task(ops.run_watches())
            await manager.run()
            watches.cancel()

    runner = asyncio.create_task(main())  # owned here: awaited below, also on failure
    try:
        await manager.wait_started()
        yield Env(tmp_path, config, client, manager, ops)
    finally:
        manager.stop()
        try:
            async with asyncio.timeout(15):
                await runner
        finally:
            await client.close()
            await server.stop(0)
            await barn.close()
