"""The llm step against an OpenAI-compatible server on loopback that fails, throttles and stalls."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from runink.schemas import _openlineage as ol
from runink.sdk import Context, llm
from runink.store import _annotations, _lineage

from .conftest import FakeOpenAI

pytestmark = pytest.mark.integration


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
    tmp_path: Path, openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    endpoint = f"http://127.0.0.1:{openai_server.server_address[1]}/v1"
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
    assert set(openai_server.auth) == {"Bearer sk-test-123"}
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
    before = sum(openai_server.attempts.values())
    assert llm.annotate_dataset(ctx) == {"written": 0, "skipped": 100}
    assert sum(openai_server.attempts.values()) == before
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
    tmp_path: Path, openai_server: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = make_ctx(
        tmp_path, f"http://127.0.0.1:{openai_server.server_address[1]}/nope", monkeypatch
    )
    with pytest.raises(llm.LlmError, match="404"):
        llm.annotate_dataset(ctx)
