"""``runink demo``: the README's first command. One process, a whole cluster, one pipeline run.

It brings up the embedded single-node cluster (the same ``serve()`` as ``runink up``: Barn on LMDB,
TLS gRPC API, controllers, a local agent) in a fresh data dir, applies ``manifests/demo/`` through
the real API with the real CLI verbs, runs the ``daily-sales`` pipeline with live progress, shows
what happened (``get runs``, ``describe run``, ``logs``, the signed report) and takes everything
down again. Exit code: 0 when the run succeeded.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import runink
from runink import api
from runink.cli import _up
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app

HERD = "demo"
PIPELINE = "daily-sales"


def manifests_dir() -> Path:
    """``manifests/demo`` of this checkout (or of the installed package's data)."""
    root = Path(runink.__file__).resolve().parent
    path = root / "manifests" / "demo"
    if not path.is_dir():
        raise errors.NotFound(f"demo manifests not found at {path}")
    return path


def _data_dir(given: str | None) -> Path:
    return Path(given).expanduser() if given else _fresh_data_dir()


def _read_json(path: str) -> Any:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None


def _fresh_data_dir() -> Path:
    # Not under /tmp: every slice gets a private /tmp, so datasets there would be invisible to it.
    base = Path(os.environ.get("RUNINK_DEMO_BASE", "/var/tmp"))
    path = Path(tempfile.mkdtemp(prefix="runink-demo-", dir=base))
    path.chmod(0o711)  # slices run as ephemeral UIDs and must traverse to their datasets
    return path


async def cmd_demo(ctx: _app.Ctx) -> int:
    from runink.cli import _app

    a = ctx.args
    out = ctx.streams
    data_dir = await asyncio.to_thread(_data_dir, a.data_dir)
    config = data_dir / "config"
    keep = a.keep or bool(a.data_dir)
    if os.geteuid() != 0:
        out.error(
            "the demo's agent isolates each step with cgroups and namespaces, which needs root; "
            "run it as root (e.g. sudo)"
        )
        return 1

    def say(text: str) -> None:
        out.write(f"{text}\n")

    def step(text: str) -> None:
        out.out.rule(f"[bold]{text}")

    async def cli(*argv: str) -> int:
        return await _app.amain([*argv, "--config", str(config)], out)

    step("1. Start an embedded single-node cluster")
    started = time.monotonic()
    try:
        async with _up.serve(data_dir, port=0, config=config, say=say) as cluster:
            say(f"API on 127.0.0.1:{cluster.port} (TLS), Barn and agent state in {data_dir}")
            await _wait_for_node(config, timeout=60)
            say("the local agent has registered its Node and is Ready")
            await cli("get", "nodes")

            step("2. Apply manifests/demo/ (Herd, ServiceAccount, RoleBinding, Secret, Pipeline)")
            if await cli("apply", "-f", str(manifests_dir())) != 0:
                return 1
            await cli("get", "pipelines", "-n", HERD, "-o", "wide")

            step(f"3. Run pipeline {PIPELINE} and follow it")
            run_name = f"{PIPELINE}-{secrets.token_hex(3)}"
            code = await cli(
                "run",
                "pipeline",
                PIPELINE,
                "-n",
                HERD,
                "--name",
                run_name,
                "--wait",
                "--timeout",
                str(a.timeout),
            )

            step("4. What happened")
            await cli("get", "runs", "-n", HERD)
            await cli("get", "slices", "-n", HERD, "-l", f"runink.io/run={run_name}")
            await cli("describe", "run", run_name, "-n", HERD)
            say("")
            say(f"$ runink logs run/{run_name}/report -n {HERD}")
            await cli("logs", f"run/{run_name}/report", "-n", HERD)
            if code == 0:
                await _show_report(ctx, config, run_name)
            took = time.monotonic() - started
            step("Done")
            if code == 0:
                say(f"pipeline {PIPELINE} succeeded end to end in {took:.1f}s")
            else:
                say(f"pipeline {PIPELINE} did not succeed (see above); data kept in {data_dir}")
                keep = True
            return code
    finally:
        if not keep:
            await asyncio.to_thread(shutil.rmtree, data_dir, True)
        else:
            say(f"data dir kept: {data_dir}")


async def _wait_for_node(config: Path, *, timeout: float) -> None:
    async with api.Client.from_config(config) as client:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = (await client.list("Node")).items
            for n in nodes:
                conds = (n.get("status") or {}).get("conditions") or []
                if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds):
                    return
            await asyncio.sleep(0.2)
    raise errors.Unavailable(f"no Ready node after {timeout:.0f}s: the local agent did not start")


async def _show_report(ctx: _app.Ctx, config: Path, run_name: str) -> None:
    async with api.Client.from_config(config) as client:
        run = await client.get("PipelineRun", run_name, HERD)
    results: dict[str, Any] = ((run["status"].get("steps") or {}).get("report") or {}).get(
        "results"
    ) or {}
    path = results.get("report")
    doc = await asyncio.to_thread(_read_json, path) if path else None
    if doc is None:
        return
    ctx.streams.write(f"\nsigned report ({path}):\n")
    ctx.streams.write(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def add_parser(sub: Any) -> None:
    dp = sub.add_parser(
        "demo", help="bring up a cluster, run the demo pipeline end to end, show the result"
    )
    dp.add_argument("--data-dir", help="use (and keep) this data dir instead of a fresh one")
    dp.add_argument("--keep", action="store_true", help="keep the fresh data dir afterwards")
    dp.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the run")
    dp.set_defaults(func=cmd_demo)


__all__ = ["add_parser", "cmd_demo"]
