"""A real API server (mTLS, LMDB Barn in a temp dir) on 127.0.0.1 port 0 and an in-process CLI."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from rich.console import Console

from runink import api, store
from runink.cli import _app, _output, _up


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Cluster:
    tmp: Path
    pki: api.ClusterPKI
    barn: store.LocalBarn
    server: api.ApiServer
    config: Path
    port: int = 0
    extra: list[object] = field(default_factory=list)

    async def restart(self) -> None:
        """Stop the server and the Barn, reopen the LMDB files, serve again on the same port."""
        await self.server.stop(0)
        await self.barn.close()
        self.barn = store.open_local(self.tmp / "barn")
        self.server = api.ApiServer(
            self.barn, ca_pem=self.pki.ca.cert_pem, server_pair=self.pki.server, port=self.port
        )
        await self.server.start()

    def client(self) -> api.Client:
        return api.Client.from_config(self.config)


def streams() -> tuple[_output.Streams, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return (
        _output.Streams(Console(file=out, width=200), Console(file=err, width=200)),
        out,
        err,
    )


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Cluster]:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    server = api.ApiServer(
        barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server, bookmark_interval=0.5
    )
    port = await server.start()
    config = _up.write_client_config(tmp_path / "config", pki, port)
    await _up._ensure_default_herd(barn)
    c = Cluster(tmp_path, pki, barn, server, config, port)
    try:
        yield c
    finally:
        await c.server.stop(0)
        await c.barn.close()


@pytest.fixture
def runink(cluster: Cluster) -> Callable[..., asyncio.Future[Result]]:
    async def run(*argv: str, stdin: str | None = None) -> Result:
        s, out, err = streams()
        code = await _app.amain(["--config", str(cluster.config), *argv], s)
        return Result(code, out.getvalue(), err.getvalue())

    return run  # type: ignore[return-value]


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a cheap predicate (output seen) until true; fail after ``timeout``."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)
