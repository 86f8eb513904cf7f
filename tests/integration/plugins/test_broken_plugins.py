"""Issue 4: a crashing plugin does not stop the built-ins (nor the other plugins).

One ``runink up`` subprocess (with its local agent) has three plugins installed by pip: the example
plugin, one whose module raises at import and one whose reconcile raises for every PipelineRun
(it watches the same kind as the built-in run controller, on purpose). A pipeline run of a trivial
slice must still succeed, and ``runink controllers`` must show who is broken.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.privileged, pytest.mark.slow]

PIPELINE = """\
apiVersion: runink.io/v1
kind: Pipeline
metadata:
  name: trivial
spec:
  steps:
  - name: only
    command: ["true"]
    network: none
    resources: {cpu: 100m, memory: 32Mi}
"""


def test_a_pipeline_run_succeeds_beside_broken_plugins(broken_up: Any) -> None:
    up = broken_up
    manifest = up.root / "pipeline.yaml"
    manifest.write_text(PIPELINE)
    applied = up.cli("apply", "-f", str(manifest))
    assert applied.returncode == 0, applied.stderr

    ran = up.cli("run", "pipeline", "trivial", "--name", "r1", "--wait", "--timeout", "60")
    assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n--- up.log:\n{up.output()}"
    run = json.loads(up.cli("get", "run", "r1", "-o", "json").stdout)
    assert run["status"]["phase"] == "Succeeded"

    # The exploding controller saw the same run and failed on it, without harming the run controller.
    deadline = time.monotonic() + 30
    while (rows := up.controllers())["exploding"]["errors"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    exploding = rows["exploding"]
    assert exploding["plugin"] == "boom-in-reconcile"
    assert exploding["errors"] >= 1
    assert "boom_in_reconcile cannot handle r1" in (exploding["lastError"] or "")
    for name in ("runs", "scheduler", "pipelines", "node-lifecycle", "greetings"):
        assert rows[name]["healthy"], rows[name]
    assert rows["runs"]["reconciles"] >= 1


def test_the_plugin_that_fails_at_import_is_reported_and_the_others_load(broken_up: Any) -> None:
    out = broken_up.output()
    assert (
        "warning: plugin boom-at-import failed to load: "
        "import: RuntimeError: boom_at_import is broken on purpose"
    ) in out
    rows = broken_up.controllers()
    assert rows["greetings"]["running"] and rows["exploding"]["running"]


def test_runink_controllers_lists_the_plugin_that_failed_at_import(broken_up: Any) -> None:
    listed = broken_up.cli("controllers", "--url", broken_up.url)
    assert "boom-at-import" in listed.stdout
    assert listed.returncode == 1  # something is unhealthy
