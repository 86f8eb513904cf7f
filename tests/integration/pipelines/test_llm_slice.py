"""The built-in `llm:` step in a real slice: 100 records, 100 annotations with provenance, through
429s and 500s from an OpenAI-compatible server on loopback, queryable by type, model, confidence."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from runink import api, controllers
from runink.cli import _up

pytestmark = [pytest.mark.integration, pytest.mark.privileged]


class _Chat(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        key = text.split("#", 1)[1].split(":", 1)[0]
        with self.server.lock:
            self.server.attempts[key] += 1
            first = self.server.attempts[key] == 1
            self.server.auth.add(self.headers.get("Authorization", ""))
        if first and int(key) % 7 == 1:
            return self._reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        if first and int(key) % 7 == 2:
            return self._reply(500, {"error": {"message": "boom"}})
        answer = {
            "value": "positive" if int(key) % 2 else "negative",
            "confidence": 0.5 + int(key) / 250,
        }
        content = json.dumps(answer)
        self._reply(
            200,
            {
                "id": f"c{key}",
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
            },
        )

    def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Chat)
        self.attempts: Counter[str] = Counter()
        self.lock = threading.Lock()
        self.auth: set[str] = set()


@pytest.fixture
def llm_server() -> Iterator[_Server]:
    srv = _Server()
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


async def test_an_llm_step_annotates_100_records_in_a_slice(
    cluster: tuple[_up.Cluster, api.Client], llm_server: _Server
) -> None:
    c, client = cluster
    inputs = c.data_dir / "inputs"
    inputs.mkdir(mode=0o755)
    rows = ["id,review"] + [f"{i},review number {i}" for i in range(100)]
    (inputs / "reviews.csv").write_text("\n".join(rows) + "\n")
    (inputs / "reviews.csv").chmod(0o644)
    port = llm_server.server_address[1]
    await client.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "t"}, "spec": {}}
    )
    await client.create(
        {"apiVersion": "runink.io/v1", "kind": "Secret", "metadata": {"name": "llm", "herd": "t"},
         "spec": {"stringData": {"token": "sk-test-123"}}}
    )  # fmt: skip
    step = {
        "name": "label",
        "llm": {
            "model": "tiny-1",
            "endpoint": f"http://127.0.0.1:{port}/v1",
            "apiKey": {"secret": "llm", "key": "token"},
            "prompt": "Sentiment of review #{key}: {value}",
            "field": "review",
            "keyField": "id",
            "annotationType": "sentiment",
            "batchSize": 25,
            "concurrency": 4,
            "retries": 3,
            "timeoutSeconds": 5,
        },
        "inputs": [{"name": "reviews", "uri": f"file://{inputs / 'reviews.csv'}"}],
        "outputs": [{"name": "review-annotations"}],
        "network": "host",  # the test's model server listens on the host's loopback
        "resources": {"cpu": "500m", "memory": "256Mi"},
    }
    p = await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Pipeline",
            "metadata": {"name": "p", "herd": "t"},
            "spec": {"steps": [step]},
        }
    )
    await client.create(controllers.make_run(p, name="r1"))
    deadline = time.monotonic() + 90
    while True:
        run = await client.get("PipelineRun", "r1", "t")
        if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            break
        assert time.monotonic() < deadline, run.get("status")
        await asyncio.sleep(0.2)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    assert llm_server.auth == {"Bearer sk-test-123"}, "the key came from the Secret"
    assert any(n > 1 for n in llm_server.attempts.values()), "429s and 500s were retried"

    page: dict[str, Any] = {}
    while time.monotonic() < deadline:  # loaded when the step's COMPLETE event is ingested
        page = await client.query_annotations(
            type="sentiment", model="tiny-1", herd="t", limit=200, count=True
        )
        if page.get("count") == 100:
            break
        await asyncio.sleep(0.2)
    assert page["count"] == 100, "exactly one annotation per record, no duplicates"
    ann = page["items"][0]
    spec = ann.get("spec", ann)
    assert spec["sourceModel"] == "tiny-1"
    assert spec["provenance"]["reviewState"] == "suggested"
    assert spec["provenance"]["promptHash"]
    confident = await client.query_annotations(
        type="sentiment", model="tiny-1", min_confidence=0.8, herd="t", limit=200, count=True
    )
    assert 0 < confident["count"] < 100
