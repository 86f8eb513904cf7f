"""The llm step against an OpenAI-compatible server on loopback that fails, throttles and stalls."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from runink.schemas import _openlineage as ol
from runink.sdk import Context, llm
from runink.store import _annotations, _lineage

pytestmark = pytest.mark.integration


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
def fake_openai() -> Iterator[FakeOpenAI]:
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


def make_ctx(tmp_path: Path, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Context:
    data = tmp_path / "reviews.csv"
    data.write_text("id,text\n" + "".join(f"{i},review number {i}\n" for i in range(100)))
    wd = tmp_path / "work"
    wd.mkdir(exist_ok=True)
    secrets = tmp_path / "secrets"
    secrets.mkdir(exist_ok=True)
    (secrets / "openai-key").write_text("sk-test-123\n")
    monkeypatch.setenv("RUNINK_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("RUNINK_SERVICE_ACCOUNT", "system:serviceaccount:demo:annotator")
    monkeypatch.setenv("RUNINK_HERD", "demo")
    monkeypatch.setenv("RUNINK_SLICE", "nightly-7-annotate")
    params = {
        "model": "llama3-8b",
        "endpoint": endpoint,
        "api_key_secret": "openai-key",
        "prompt": "Sentiment of record #{key}: {value}",
        "field": "text",
        "annotation_type": "sentiment",
        "batch_size": 16,
        "concurrency": 4,
        "retries": 3,
        "timeout": 0.5,
        "backoff": 0.01,
        "temperature": 0,
    }
    (wd / "context.json").write_text(
        json.dumps(
            {
                "params": params,
                "inputs": {"reviews": str(data)},
                "outputs": {"review-sentiment": str(tmp_path / "out" / "annotations.jsonl")},
            }
        )
    )
    return Context(work_dir=wd)


def test_100_rows_give_100_annotations_despite_429_500_and_timeouts(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{fake_openai.server_address[1]}/v1"
    ctx = make_ctx(tmp_path, endpoint, monkeypatch)
    started = time.monotonic()
    assert llm.annotate_dataset(ctx) == {"written": 100, "skipped": 0}
    assert time.monotonic() - started < 30
    out = tmp_path / "out" / "annotations.jsonl"
    anns = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(anns) == 100
    assert len({a["metadata"]["name"] for a in anns}) == 100
    assert {a["spec"]["annotatedDataRef"]["recordKey"] for a in anns} == {
        str(i) for i in range(100)
    }
    # 30 first attempts failed (429, 500, stall), each retried once.
    results = json.loads((ctx.work_dir / "results.json").read_text())
    assert results["llm"]["retries"] == 30
    assert results["llm"]["requests"] == 130
    assert set(fake_openai.auth) == {"Bearer sk-test-123"}
    a = next(x for x in anns if x["spec"]["annotatedDataRef"]["recordKey"] == "17")
    spec = a["spec"]
    assert spec["annotationValue"] == "positive" and spec["confidenceScore"] == 0.67
    assert spec["sourceModel"] == "llama3-8b"
    assert spec["annotatedDataRef"]["dataset"] == "reviews"
    assert spec["annotatedDataRef"]["version"].startswith("sha256:")
    prov = spec["provenance"]
    assert prov["modelDigest"] == "fp_test123"
    assert prov["modelParams"] == {"temperature": 0.0}
    assert prov["reviewState"] == "suggested"
    assert prov["producer"] == "system:serviceaccount:demo:annotator"
    assert prov["promptHash"].startswith("sha256:") and prov["inputHash"].startswith("sha256:")
    assert spec["promptReference"].startswith("sha256:")

    # A re-run (e.g. the slice retried) asks nothing and writes nothing.
    before = sum(fake_openai.attempts.values())
    assert llm.annotate_dataset(ctx) == {"written": 0, "skipped": 100}
    assert sum(fake_openai.attempts.values()) == before
    assert len(out.read_text().splitlines()) == 100

    # Stored and queried by type, model and confidence.
    store = _annotations.open_annotation_store(tmp_path / "ann", sync=False)
    try:
        assert store.put_many(anns).written == 100
        assert store.put_many(anns).written == 0
        page = store.query(annotation_type="sentiment", source_model="llama3-8b", count=True)
        assert page.count == 100
        confident = store.query(annotation_type="sentiment", min_confidence=0.95, count=True)
        assert confident.count == 10  # keys whose key % 50 is 45..49
    finally:
        store.close()

    # The lineage event: reviews -> the llm step -> review-sentiment, with column lineage.
    lin = _lineage.open_lineage_store(tmp_path / "lin", sync=False)
    try:
        ev = results["lineage"]
        lin.ingest(ol.parse_run_event(ev), ev)
        graph = lin.lineage("dataset:runink://demo:review-sentiment", direction="upstream")
        assert {n["id"] for n in graph["graph"]} == {
            "dataset:runink://demo:reviews",
            "job:runink://demo:nightly-7-annotate",
            "dataset:runink://demo:review-sentiment",
        }
        col = lin.lineage(
            "datasetField:runink://demo:review-sentiment:annotationValue", direction="upstream"
        )
        assert "datasetField:runink://demo:reviews:text" in {n["id"] for n in col["graph"]}
    finally:
        lin.close()


def test_a_permanent_client_error_is_not_retried(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(tmp_path, f"http://127.0.0.1:{fake_openai.server_address[1]}/nope", monkeypatch)
    with pytest.raises(llm.LlmError, match="404"):
        llm.annotate_dataset(ctx)
