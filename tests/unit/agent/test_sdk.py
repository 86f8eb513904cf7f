"""runink.sdk: the Context a step sees, and the ``module:function`` entry point."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from runink.sdk import Context, _entry


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "context.json").write_text(
        json.dumps(
            {
                "params": {"n": 2},
                "inputs": {"raw": "/data/raw.csv"},
                "outputs": {"clean": "/data/clean.parquet"},
                "secret_env": {"DB_PASSWORD": "db"},
            }
        )
    )
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_bytes(b"t0k")
    monkeypatch.setenv("RUNINK_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("RUNINK_SECRETS_DIR", str(secrets))
    monkeypatch.setenv("DB_PASSWORD", "pw")
    return tmp_path


def test_context_reads_params_datasets_and_secrets(work: Path) -> None:
    ctx = Context()
    assert ctx.params["n"] == 2
    assert ctx.inputs["raw"] == "/data/raw.csv" and ctx.outputs["clean"].endswith(".parquet")
    assert ctx.secret("token") == b"t0k"
    assert ctx.secret("db") == b"pw"
    with pytest.raises(KeyError, match="not available"):
        ctx.secret("other")


def test_results_and_metrics_land_in_the_work_dir(work: Path) -> None:
    ctx = Context()
    ctx.set_result("rows", 10)
    ctx.metric("rows_total", 10)
    ctx.set_result("ok", True)
    assert json.loads((work / "results.json").read_text()) == {"rows": 10, "ok": True}
    assert json.loads((work / "metrics.json").read_text()) == {"rows_total": 10.0}
    with pytest.raises(ValueError, match="exceed"):
        ctx.set_result("huge", "x" * 70_000)
    assert "huge" not in json.loads((work / "results.json").read_text())


def test_entry_calls_function_and_stores_return(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mod = tmp_path / "stepmod_ok.py"
    mod.write_text("def run(ctx):\n    return ctx.params['n'] * 21\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _entry.main(["stepmod_ok:run"]) == 0
    assert json.loads((work / "results.json").read_text()) == {"return": 42}
    sys.modules.pop("stepmod_ok", None)


def test_entry_exit_codes(
    work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "stepmod_bad.py").write_text("def run(ctx):\n    raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert _entry.main(["stepmod_bad:run"]) == 1
    assert "RuntimeError: boom" in capsys.readouterr().err
    assert _entry.main(["stepmod_bad:missing"]) == 2
    assert _entry.main(["no-colon"]) == 2
    sys.modules.pop("stepmod_bad", None)


def test_secret_by_key_when_the_file_sits_under_its_secret(work: Path) -> None:
    secrets = work / "secrets"
    (secrets / "report-signing").mkdir()
    (secrets / "report-signing" / "hmac-key").write_bytes(b"k")
    assert Context().secret("hmac-key") == b"k"
    assert Context().secret("report-signing/hmac-key") == b"k"
    (secrets / "other").mkdir()
    (secrets / "other" / "hmac-key").write_bytes(b"j")
    with pytest.raises(KeyError, match="ambiguous"):
        Context().secret("hmac-key")
