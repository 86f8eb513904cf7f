"""The real CLI (in-process) against a real mTLS API server: what a user sees and what gets stored."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path

import pytest

from runink.cli import _app
from runink.schemas import errors

from .conftest import streams, until

pytestmark = pytest.mark.integration

HERD = """\
apiVersion: runink.io/v1
kind: Herd
metadata:
  name: {name}
spec: {{}}
"""

PIPELINE = """\
apiVersion: runink.io/v1
kind: Pipeline
metadata:
  name: {name}
  herd: {herd}
  labels:
    app: {app}
spec:
  steps:
  - name: hello
    command: [echo, hi]
"""


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


async def test_apply_then_get_jsonpath_and_table(runink, tmp_path):
    f = write(
        tmp_path / "m.yaml",
        HERD.format(name="team") + "---\n" + PIPELINE.format(name="p1", herd="team", app="x"),
    )
    r = await runink("apply", "-f", str(f))
    assert r.code == 0, r.err
    assert "herd/team created" in r.out and "pipeline/p1 created" in r.out

    r = await runink("get", "pipelines", "-n", "team", "-o", "jsonpath={.items[*].metadata.name}")
    assert (r.code, r.out) == (0, "p1")
    r = await runink("get", "pl", "p1", "-n", "team", "-o", "jsonpath={.metadata.labels.app}")
    assert r.out == "x"
    r = await runink("get", "pipelines", "-A", "-o", "wide")
    assert r.out.splitlines()[0].split()[:3] == ["HERD", "NAME", "STEPS"]
    assert r.out.splitlines()[1].split()[:3] == ["team", "p1", "1"]

    r = await runink("apply", "-f", str(f))
    assert "pipeline/p1 unchanged" in r.out


async def test_diff_exit_codes(runink, tmp_path):
    f = write(
        tmp_path / "m.yaml",
        HERD.format(name="team") + "---\n" + PIPELINE.format(name="p1", herd="team", app="x"),
    )
    r = await runink("diff", "-f", str(f))
    assert r.code == 1 and "+++ merged/pipeline/p1" in r.out  # not there yet
    assert (await runink("apply", "-f", str(f))).code == 0
    r = await runink("diff", "-f", str(f))
    assert (r.code, r.out) == (0, "")
    write(f, HERD.format(name="team") + "---\n" + PIPELINE.format(name="p1", herd="team", app="y"))
    r = await runink("diff", "-f", str(f))
    assert r.code == 1 and "-    app: x" in r.out and "+    app: y" in r.out
    write(tmp_path / "broken.yaml", "kind: [")
    r = await runink("diff", "-f", str(tmp_path / "broken.yaml"))
    assert r.code > 1 and "broken.yaml" in r.err


async def test_explain_prints_field_docs(runink):
    r = await runink("explain", "pipeline.spec.steps")
    assert r.code == 0
    assert "KIND:       Pipeline" in r.out and "FIELD: steps" in r.out


async def test_server_dry_run_stores_nothing(runink, cluster, tmp_path):
    f = write(tmp_path / "m.yaml", PIPELINE.format(name="dry", herd="default", app="x"))
    r = await runink("apply", "-f", str(f), "--dry-run=server")
    assert r.code == 0 and "pipeline/dry created (server dry run)" in r.out
    with pytest.raises(errors.NotFound):
        await cluster.barn.get("Pipeline", "dry", "default")


async def test_server_dry_run_still_validates(runink, tmp_path):
    # Herd "nope" does not exist: admission runs on a dry run too.
    f = write(tmp_path / "m.yaml", PIPELINE.format(name="dry", herd="nope", app="x"))
    r = await runink("apply", "-f", str(f), "--dry-run=server")
    assert r.code == 1 and "herd 'nope' does not exist" in r.err


async def test_prune_deletes_only_this_inventory(runink, cluster, tmp_path):
    a = write(
        tmp_path / "a.yaml",
        PIPELINE.format(name="a1", herd="default", app="a")
        + "---\n"
        + PIPELINE.format(name="a2", herd="default", app="a"),
    )
    b = write(tmp_path / "b.yaml", PIPELINE.format(name="b1", herd="default", app="b"))
    loose = write(tmp_path / "loose.yaml", PIPELINE.format(name="loose", herd="default", app="c"))
    assert (await runink("apply", "-f", str(a), "--inventory", "set-a")).code == 0
    assert (await runink("apply", "-f", str(b), "--inventory", "set-b")).code == 0
    assert (await runink("apply", "-f", str(loose))).code == 0

    write(a, PIPELINE.format(name="a1", herd="default", app="a"))  # a2 removed from set-a
    r = await runink("apply", "-f", str(a), "--inventory", "set-a", "--prune")
    assert r.code == 0 and "pipeline/a2 pruned" in r.out
    names = {o["metadata"]["name"] for o in (await cluster.barn.list("Pipeline", "default")).items}
    assert names == {"a1", "b1", "loose"}


async def test_broken_manifest_names_file_line_field_and_stores_nothing(runink, cluster, tmp_path):
    f = write(
        tmp_path / "bad.yaml",
        HERD.format(name="fresh")
        + "---\n"
        + PIPELINE.format(name="p", herd="fresh", app="x").replace(
            "  steps:", "  stepz: 1\n  steps:"
        ),
    )
    r = await runink("apply", "-f", str(f))
    assert r.code == 1
    assert "bad.yaml" in r.err and "line 15" in r.err and "spec.stepz" in r.err
    with pytest.raises(errors.NotFound):
        await cluster.barn.get("Herd", "fresh")


async def test_misspelt_kind_and_broken_yaml_refused(runink, tmp_path):
    f = write(tmp_path / "k.yaml", HERD.format(name="h").replace("kind: Herd", "kind: Hurd"))
    r = await runink("apply", "-f", str(f))
    assert r.code == 1 and "k.yaml" in r.err and "kind" in r.err
    g = write(tmp_path / "y.yaml", "apiVersion: runink.io/v1\nkind: Herd\nmetadata: {name: [\n")
    r = await runink("apply", "-f", str(g))
    assert r.code == 1 and "y.yaml" in r.err and "line" in r.err


async def test_concurrent_updates_from_one_stale_version(cluster, runink, tmp_path):
    f = write(tmp_path / "m.yaml", PIPELINE.format(name="p", herd="default", app="x"))
    await runink("apply", "-f", str(f))
    async with cluster.client() as c1, cluster.client() as c2:
        base = await c1.get("Pipeline", "p", "default")
        one, two = (dict(base, metadata=dict(base["metadata"], labels={"app": v})) for v in "yz")
        results = await asyncio.gather(c1.update(one), c2.update(two), return_exceptions=True)
    wins = [r for r in results if isinstance(r, dict)]
    losses = [r for r in results if isinstance(r, errors.Conflict)]
    assert len(wins) == 1 and len(losses) == 1
    assert losses[0].details["currentResourceVersion"] == wins[0]["metadata"]["resourceVersion"]
    assert wins[0]["metadata"]["resourceVersion"] in losses[0].message


async def test_get_watch_survives_server_restart(cluster, runink, tmp_path):
    s, out, _ = streams()
    watch = asyncio.create_task(
        _app.amain(["--config", str(cluster.config), "get", "pipelines", "-n", "default", "-w"], s)
    )
    try:
        await until(lambda: not watch.done() and cluster.server.port > 0)
        await asyncio.sleep(0)  # let the watcher issue its list
        f = write(tmp_path / "m.yaml", PIPELINE.format(name="before", herd="default", app="x"))
        await runink("apply", "-f", str(f))
        await until(lambda: "before" in out.getvalue())
        await cluster.restart()
        write(f, PIPELINE.format(name="after", herd="default", app="x"))
        await runink("apply", "-f", str(f))
        await until(lambda: "after" in out.getvalue(), timeout=15)
        lines = [ln.split()[0] for ln in out.getvalue().splitlines() if ln.strip()]
        assert lines.count("before") == 1 and lines.count("after") == 1
    finally:
        watch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await watch
