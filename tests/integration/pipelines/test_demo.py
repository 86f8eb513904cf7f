"""The README's first command: `runink demo` runs the demo pipeline end to end and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.privileged]
ROOT = Path(__file__).resolve().parents[3]


def _sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)


def test_readme_opens_with_the_demo_and_the_test_command_that_ci_runs() -> None:
    first, second = _sh_blocks()[:2]
    assert "runink demo" in first
    assert second.strip() == "scripts/test"
    assert "bash scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="slices need root for cgroups and namespaces")
def test_runink_demo_runs_the_pipeline_to_success_and_cleans_up() -> None:
    before = set(Path("/var/tmp").glob("runink-demo-*"))
    proc = subprocess.run(
        [sys.executable, "-m", "runink.cli", "demo", "--timeout", "120"],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for step in ("extract", "transform", "quality", "report", "announce"):
        assert re.search(rf"^{step}\s+Succeeded", out, flags=re.M), f"no progress line for {step}"
    assert "Succeeded in" in out
    assert '"total_revenue"' in out, "the signed report is shown"
    assert "succeeded end to end" in out
    assert set(Path("/var/tmp").glob("runink-demo-*")) == before, "the demo removes its data dir"
