"""A real Prometheus (Debian package `prometheus`) scrapes the agent and sees per-slice series.

Skipped when the prometheus/promtool binaries are absent (`apt-get install -y prometheus`).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from runink.agent import _logs, _metrics, _runtime

pytestmark = pytest.mark.privileged
PROMETHEUS, PROMTOOL = shutil.which("prometheus"), shutil.which("promtool")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def query(port: int, q: str) -> list[dict[str, object]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": q})
    with urllib.request.urlopen(url, timeout=5) as r:
        return list(json.load(r)["data"]["result"])


@pytest.mark.skipif(not (PROMETHEUS and PROMTOOL), reason="Debian package prometheus not installed")
async def test_prometheus_scrapes_per_slice_series(
    runtime: _runtime.SliceRuntime, shared_dir: Path
) -> None:
    assert PROMETHEUS and PROMTOOL
    go = shared_dir / "go"
    (shared_dir / "pmstep.py").write_text(
        "import os, time\n"
        "def run(ctx):\n"
        "    ctx.metric('rows_total', 42)\n"
        "    print('published', flush=True)\n"
        f"    while not os.path.exists({str(go)!r}):\n"
        "        time.sleep(0.05)\n"
    )
    s = _runtime.SliceSpec(
        name="pm",
        herd="team",
        uid=uuid.uuid4().hex,
        python="pmstep:run",
        env={"PYTHONPATH": str(shared_dir)},
    )
    server = _metrics.serve(_metrics.make_registry(runtime), 0)
    agent_port = server.server_address[1]
    prom: subprocess.Popen[bytes] | None = None
    try:
        await runtime.start(s)
        async with asyncio.timeout(20):
            while not any("published" in ln for ln in _logs.tail(runtime.log_dir(s.id))):
                await asyncio.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{agent_port}/metrics", timeout=5) as r:
            exposition = r.read()
        assert b'runink_step_rows_total{herd="team",slice="pm"} 42.0' in exposition
        lint = subprocess.run(
            [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30
        )
        assert lint.returncode == 0 and not lint.stdout.strip(), lint.stdout + lint.stderr

        prom_port = free_port()
        (shared_dir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s}\n"
            "scrape_configs:\n"
            f"  - job_name: agent\n    static_configs: [{{targets: ['127.0.0.1:{agent_port}']}}]\n"
        )
        prom = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={shared_dir / 'prometheus.yml'}",
                f"--storage.tsdb.path={shared_dir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        found: list[dict[str, object]] = []
        async with asyncio.timeout(60):
            while not found:
                await asyncio.sleep(0.5)
                try:
                    found = await asyncio.to_thread(
                        query, prom_port, 'runink_step_rows_total{slice="pm"}'
                    )
                except OSError:
                    continue  # not listening yet
        assert found[0]["value"][1] == "42"  # type: ignore[index]
        mem = await asyncio.to_thread(query, prom_port, 'runink_slice_memory_bytes{slice="pm"}')
        assert mem and float(mem[0]["value"][1]) > 0  # type: ignore[index]
    finally:
        go.touch()
        if prom is not None:
            prom.kill()
            prom.wait()
        server.shutdown()
        server.server_close()
