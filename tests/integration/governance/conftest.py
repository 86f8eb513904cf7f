"""Fixtures for the wired governance tests: a `runink up` cluster (no agent) and a fake LLM."""

from __future__ import annotations

import io
import json
import ssl
import threading
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runink.cli import _app, _output, _up


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[_up.Cluster]:
    """API server + governance stores + the lineage HTTPS endpoint; no controllers or agent."""
    async with _up.serve(
        tmp_path / "data",
        port=0,
        config=tmp_path / "config",
        say=lambda _: None,
        with_components=[],
    ) as c:
        yield c


@pytest.fixture
def cli(cluster: _up.Cluster) -> Callable[..., Awaitable[tuple[int, str, str]]]:
    """The real CLI, in-process, against the cluster; returns (exit code, stdout, stderr)."""

    async def run(*argv: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        streams = _output.Streams(Console(file=out, width=200), Console(file=err, width=200))
        code = await _app.amain(["--config", str(cluster.config_path), *argv], streams)
        return code, out.getvalue(), err.getvalue()

    return run


@pytest.fixture
def post(cluster: _up.Cluster) -> Callable[[Any, str | None], tuple[int, Any]]:
    """POST JSON to the cluster's lineage endpoint over HTTPS, trusting the cluster CA
    (blocking: call it through asyncio.to_thread)."""
    ctx = ssl.create_default_context(cadata=cluster.pki.ca.cert_pem.decode())
    ctx.check_hostname = False  # the server certificate names the cluster, not 127.0.0.1
    url = str(cluster.lineage_url)

    def send(body: Any, token: str | None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as e:
            with e:
                return e.code, json.loads(e.read())

    return send


class FakeOpenAI(ThreadingHTTPServer):
    """Chat completions; the first attempt for some records fails with 429, 500 or a stall."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.auth: list[str | None] = []


class _Handler(BaseHTTPRequestHandler):
    server: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        if self.path != "/v1/chat/completions":
            self._reply(404, {"error": {"message": "no such route"}})
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        prompt = body["messages"][0]["content"]
        key = prompt.split("#", 1)[1].split(":", 1)[0]
        with self.server.lock:
            self.server.attempts[key] += 1
            attempt = self.server.attempts[key]
            self.server.auth.append(self.headers.get("Authorization"))
        try:
            if attempt == 1 and int(key) % 10 == 1:
                self._reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
            elif attempt == 1 and int(key) % 10 == 2:
                self._reply(500, {"error": {"message": "boom"}})
            elif attempt == 1 and int(key) % 10 == 3:
                self.server.release.wait(5)  # longer than the client's timeout
                self._reply(200, {"choices": []})
            else:
                content = json.dumps(
                    {
                        "value": "positive" if int(key) % 2 else "negative",
                        "confidence": 0.5 + (int(key) % 50) / 100,
                    }
                )
                self._reply(
                    200,
                    {
                        "id": f"chatcmpl-{key}",
                        "model": body["model"],
                        "system_fingerprint": "fp_test123",
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": content},
                                "finish_reason": "stop",
                            }
                        ],
                    },
                )
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a stalled request: expected

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAI]:
    """A chat-completions server on loopback that throttles, fails and stalls first attempts."""
    srv = FakeOpenAI()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()
        t.join()
