"""The demo pipeline on a whole `runink up` (agent included): its lineage, and a blocking failure.

After a successful run `runink lineage` shows the demo's datasets and steps with the column
lineage transform reports; a run with ``-p min_rows=1000`` fails the quality check, skips the
report, and `runink describe run` names the check and the counts.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from rich.console import Console

from runink import api
from runink.cli import _app, _demo, _output, _up

pytestmark = [
    pytest.mark.integration,
    pytest.mark.privileged,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="slices need root for cgroups and namespaces"),
]


@pytest.fixture
async def up() -> AsyncIterator[_up.Cluster]:
    # Not under /tmp: slices have a private /tmp and could not reach their datasets there.
    data = Path(tempfile.mkdtemp(prefix="runink-gov-test-", dir="/var/tmp"))
    data.chmod(0o711)  # slices (other UIDs) traverse it to their datasets
    try:
        async with _up.serve(data, port=0, config=data / "config", say=lambda _: None) as c:
            await _demo._wait_for_node(c.config_path, timeout=60)
            yield c
    finally:
        shutil.rmtree(data, ignore_errors=True)


async def runink(cluster: _up.Cluster, *argv: str) -> tuple[int, str]:
    out = io.StringIO()
    streams = _output.Streams(Console(file=out, width=300), Console(file=out, width=300))
    code = await _app.amain([*argv, "--config", str(cluster.config_path)], streams)
    return code, out.getvalue()


@pytest.mark.timeout(300)
async def test_demo_lineage_and_a_blocking_quality_failure(up: _up.Cluster) -> None:
    code, out = await runink(up, "apply", "-f", str(_demo.manifests_dir()))
    assert code == 0, out
    code, out = await runink(
        up, "run", "pipeline", "daily-sales", "-n", "demo", "--name", "ok-1", "--wait",
        "--timeout", "120",
    )  # fmt: skip
    assert code == 0, out

    code, out = await runink(
        up, "lineage", "dataset:runink://demo/raw-sales", "--downstream", "-o", "json"
    )
    assert code == 0, out
    graph = {n["id"]: n for n in json.loads(out)["graph"]}
    for job in ("transform", "quality"):
        assert f"job:runink://demo:daily-sales.{job}" in graph
    assert "dataset:runink://demo:sales-report" in graph, "report's output, two hops down"
    assert graph["job:runink://demo:daily-sales.report"]["data"]["latestRun"]["state"] == "COMPLETE"
    raw = graph["dataset:runink://demo:raw-sales"]["data"]
    assert {"name": "quantity", "type": "int64", "description": None} in raw["fields"]

    code, out = await runink(
        up, "lineage", "datasetField:runink://demo:regional-sales:revenue", "--upstream"
    )
    assert code == 0, out
    assert "raw-sales.quantity" in out and "raw-sales.unit_price" in out

    code, out = await runink(up, "datasets", "search", "--field", "revenue", "-n", "demo")
    assert code == 0 and "regional-sales" in out and "raw-sales" not in out

    code, out = await runink(
        up, "run", "pipeline", "daily-sales", "-n", "demo", "--name", "short-1", "-p",
        "min_rows=1000", "--wait", "--timeout", "120",
    )  # fmt: skip
    assert code != 0
    async with api.Client.from_config(up.config_path) as c:
        run = await c.get("PipelineRun", "short-1", "demo")
    steps = run["status"]["steps"]
    assert steps["quality"]["phase"] == "Failed"
    assert steps["report"]["phase"] == "Skipped"
    why = "row_count: 240 rows, expected at least 1000"
    assert why in steps["quality"]["message"]
    assert why in steps["report"]["message"]
    code, out = await runink(up, "describe", "run", "short-1", "-n", "demo")
    assert why in out
