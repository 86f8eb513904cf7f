"""mTLS refusal of strangers, and `runink up` keeping every object across a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runink import api, store
from runink.schemas import errors

pytestmark = pytest.mark.integration


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[api.ClusterPKI, int]]:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_memory()
    srv = api.ApiServer(barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server)
    port = await srv.start()
    try:
        yield pki, port
    finally:
        await srv.stop(0)
        await barn.close()


async def test_admin_certificate_is_the_identity(server):
    pki, port = server
    async with api.Client(
        f"127.0.0.1:{port}",
        ca_pem=pki.ca.cert_pem,
        cert_pem=pki.admin.cert_pem,
        key_pem=pki.admin.key_pem,
    ) as c:
        me = await c.whoami()
    assert me == {"user": "admin", "groups": ["system:masters"], "method": "x509"}


async def test_client_without_the_ca_is_refused(server):
    pki, port = server
    async with api.Client(
        f"127.0.0.1:{port}",
        ca_pem=None,
        cert_pem=pki.admin.cert_pem,
        key_pem=pki.admin.key_pem,
        timeout=5,
    ) as c:
        with pytest.raises(errors.Unavailable):
            await c.list("herds")


async def test_certificate_from_another_ca_is_refused(server):
    pki, port = server
    foreign_ca = api._tls.create_ca("someone-else")
    stranger = api.issue(foreign_ca, "admin", organizations=("system:masters",))
    async with api.Client(
        f"127.0.0.1:{port}",
        ca_pem=pki.ca.cert_pem,
        cert_pem=stranger.cert_pem,
        key_pem=stranger.key_pem,
        timeout=5,
    ) as c:
        with pytest.raises(errors.Unavailable):
            await c.list("herds")


async def test_client_without_certificate_is_refused(server):
    pki, port = server
    async with api.Client(f"127.0.0.1:{port}", ca_pem=pki.ca.cert_pem, timeout=5) as c:
        with pytest.raises(errors.Unavailable):
            await c.list("herds")


def _start_up(tmp: Path) -> tuple[subprocess.Popen[bytes], Path]:
    ready = tmp / "ready"
    ready.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runink.cli",
            "--config",
            str(tmp / "config"),
            "up",
            "--data-dir",
            str(tmp / "data"),
            "--port",
            "0",
            "--ready-file",
            str(ready),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    return proc, ready


def _wait_ready(proc: subprocess.Popen[bytes], ready: Path) -> None:
    import time

    deadline = time.monotonic() + 30
    while not (ready.exists() and ready.read_text().strip()):
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        assert time.monotonic() < deadline, "runink up did not become ready"
        time.sleep(0.05)


def _stop(proc: subprocess.Popen[bytes]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode()


def _cli(tmp: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "runink.cli", "--config", str(tmp / "config"), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "NO_COLOR": "1"},
    )


@pytest.mark.slow
def test_up_restart_keeps_objects_and_refuses_a_second_instance(tmp_path):
    manifest = tmp_path / "h.yaml"
    manifest.write_text("apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: kept\nspec: {}\n")
    proc, ready = _start_up(tmp_path)
    try:
        _wait_ready(proc, ready)
        assert _cli(tmp_path, "apply", "-f", str(manifest)).returncode == 0
        second, _ = _start_up(tmp_path)
        out = _stop(second) if second.wait(timeout=30) is not None else ""
        assert second.returncode == 1 and "is in use by another runink up" in out
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "shutting down" in out

    proc, ready = _start_up(tmp_path)
    try:
        _wait_ready(proc, ready)
        r = _cli(tmp_path, "get", "herds", "-o", "name")
        assert r.returncode == 0, r.stderr
        assert r.stdout.split() == ["herd/default", "herd/kept"]
    finally:
        _stop(proc)
