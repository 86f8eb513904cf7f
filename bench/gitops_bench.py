"""GitOps sync of a repository of N manifests beside a plain `runink apply -R` of the same tree.

    .venv/bin/python bench/gitops_bench.py [--objects 1000]

One API server (mTLS, LMDB in a temp dir) runs in a child process; every measurement talks to it
over gRPC. Each measurement writes into its own fresh Herd, so all of them create N Pipelines:

- apply (CLI process): `runink apply -R -f TREE -n HERD` as a subprocess (interpreter start included)
- apply (in-process):  the same CLI code through `cli._app.amain` (no interpreter start)
- gitops first sync:   one `GitSourceReconciler.reconcile` of a GitSource following the repo
                       (git rev-parse + ls-tree + cat-file, validation of every file, N applies)
- gitops new revision: a commit touching one file (re-applies all N with force; N-1 unchanged)
- gitops drift check:  the same revision again (N server-side dry-run applies)

Prints the figures and the ratio sync / apply (target: at most 2x); never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from runink import api, store
from runink.cli import _app, _output, _up
from runink.controllers import _gitops, _types

Obj = dict[str, Any]
PY = sys.executable

PIPELINE = """\
apiVersion: runink.io/v1
kind: Pipeline
metadata:
  name: {name}
  labels:
    app: bench
    shard: "{shard}"
spec:
  params:
  - name: day
    default: "2026-01-01"
  steps:
  - name: extract
    command: [python, -m, extract, --day, "{{{{params.day}}}}"]
    resources: {{cpu: "500m", memory: 256Mi}}
  - name: load
    command: [python, -m, load]
    dependsOn: [{{step: extract}}]
"""


async def serve(data: Path) -> None:
    """Child process: the API server; prints its port, runs until stdin closes."""
    pki = api.ensure_cluster_pki(data / "pki")
    barn = store.open_local(data / "barn")
    server = api.ApiServer(barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server)
    port = await server.start()
    _up.write_client_config(data / "config", pki, port)
    await _up._ensure_default_herd(barn)
    print(port, flush=True)
    await asyncio.to_thread(sys.stdin.read)
    await server.stop(0)
    await barn.close()


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout.strip()


def make_repo(root: Path, n: int) -> Path:
    repo = root / "repo"
    tree = repo / "pipelines"
    tree.mkdir(parents=True)
    for i in range(n):
        (tree / f"p{i:04d}.yaml").write_text(PIPELINE.format(name=f"p{i:04d}", shard=i % 16))
    git(repo, "init", "--quiet", "-b", "main")
    git(repo, "config", "user.email", "bench@example.invalid")
    git(repo, "config", "user.name", "bench")
    git(repo, "add", "-A")
    git(repo, "commit", "--quiet", "-m", "pipelines")
    return repo


def herd(name: str) -> Obj:
    return {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": name}, "spec": {}}


async def run(n: int) -> None:
    with tempfile.TemporaryDirectory(prefix="gitops-bench-") as tmp_s:
        tmp = Path(tmp_s)
        repo = make_repo(tmp, n)
        child = subprocess.Popen(
            [PY, __file__, "--serve", str(tmp / "server")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            child.stdout.readline()
            config = tmp / "server" / "config"
            await measure(n, repo, config)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=30)


async def measure(n: int, repo: Path, config: Path) -> None:
    def apply_args(herd_name: str) -> list[str]:
        return ["apply", "-R", "-f", str(repo / "pipelines"), "-n", herd_name]

    async with api.Client.from_config(config) as client:
        for h in ("apply-cli", "apply-inproc", "gitops"):
            await client.apply(herd(h), "bench")

        t = time.perf_counter()
        proc = subprocess.run(
            [PY, "-m", "runink.cli", "--config", str(config), *apply_args("apply-cli")],
            capture_output=True,
            text=True,
        )
        apply_cli = time.perf_counter() - t
        assert proc.returncode == 0, proc.stderr[-2000:]

        out = io.StringIO()
        streams = _output.Streams(Console(file=out), Console(file=io.StringIO()))
        t = time.perf_counter()
        code = await _app.amain(
            ["--config", str(config), *apply_args("apply-inproc")],
            streams,
        )
        apply_inproc = time.perf_counter() - t
        assert code == 0

        source = {
            "apiVersion": "runink.io/v1",
            "kind": "GitSource",
            "metadata": {"name": "bench", "herd": "gitops"},
            "spec": {"url": str(repo), "path": "pipelines", "prune": True, "selfHeal": True},
        }
        await client.apply(source, "bench")
        rec = _gitops.GitSourceReconciler(client, cache_dir=repo.parent / "cache")
        req = _types.Request("GitSource", "gitops", "bench")

        t = time.perf_counter()
        await rec.reconcile(req)
        first = time.perf_counter() - t
        st = (await client.get("GitSource", "bench", "gitops"))["status"]
        assert st["diffSummary"]["created"] == n, st.get("lastError")

        (repo / "pipelines" / "p0000.yaml").write_text(PIPELINE.format(name="p0000", shard=99))
        git(repo, "commit", "--quiet", "-am", "one change")
        t = time.perf_counter()
        await rec.reconcile(req)
        new_rev = time.perf_counter() - t
        st = (await client.get("GitSource", "bench", "gitops"))["status"]
        assert st["diffSummary"]["updated"] == 1, st

        t = time.perf_counter()
        await rec.reconcile(req)
        drift = time.perf_counter() - t

    count = await count_pipelines(config)
    print(
        f"GitOps bench: {n} Pipeline manifests, one API server (child process), pid {os.getpid()}"
    )
    print(f"  objects per herd: {count}")
    rows = [
        ("runink apply -R (CLI process)", apply_cli),
        ("runink apply -R (in-process amain)", apply_inproc),
        ("gitops first sync", first),
        ("gitops new revision (1 file changed)", new_rev),
        ("gitops drift check (same revision)", drift),
    ]
    for label, secs in rows:
        print(f"  {label:<40} {secs:7.2f} s  {n / secs:8.0f} objects/s")
    print(f"  ratio first sync / apply (CLI process):  x{first / apply_cli:.2f}   (target <= 2)")
    print(f"  ratio first sync / apply (in-process):   x{first / apply_inproc:.2f}")


async def count_pipelines(config: Path) -> dict[str, int]:
    async with api.Client.from_config(config) as client:
        return {
            h: len((await client.list("Pipeline", h)).items)
            for h in ("apply-cli", "apply-inproc", "gitops")
        }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.serve:
        asyncio.run(serve(a.serve))
    else:
        asyncio.run(run(a.objects))


if __name__ == "__main__":
    main()
