"""Pipeline verbs: ``runink run pipeline``, ``runink cancel run``, run-aware ``logs``, ``controllers``.

``run --wait`` follows the run through a watch and draws live progress per step: a rich table that
redraws in place on a terminal, one line per step transition when piped. Its exit code is the
run's outcome (0 Succeeded, 1 Failed or Cancelled), so CI can run a pipeline as one command.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table

from runink import controllers, schemas
from runink.cli import _output
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app

Obj = dict[str, Any]
TERMINAL = ("Succeeded", "Failed", "Cancelled")
STYLE = {
    "Succeeded": "green",
    "Failed": "red",
    "Cancelled": "yellow",
    "Running": "cyan",
    "Waiting": "magenta",
    "Skipped": "dim",
    "Pending": "dim",
}


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (numbers, booleans, lists)."""
    if "=" not in text:
        raise errors.Invalid(f"-p {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def _coerce(pipeline: Obj, params: dict[str, Any]) -> dict[str, Any]:
    """Read ``-p`` values as the pipeline declares them (``-p day=7`` for a string param is "7")."""
    declared = {p["name"]: p.get("type", "string") for p in pipeline["spec"].get("params") or []}
    out = {}
    for k, v in params.items():
        if declared.get(k) == "string" and not isinstance(v, str):
            v = json.dumps(v)
        out[k] = v
    return out


def _duration(start: str | None, end: str | None) -> str:
    if not start:
        return ""
    t0 = dt.datetime.fromisoformat(start.replace("Z", "+00:00"))
    t1 = dt.datetime.fromisoformat(end.replace("Z", "+00:00")) if end else dt.datetime.now(dt.UTC)
    secs = max(0, int((t1 - t0).total_seconds()))
    return f"{secs // 60}m{secs % 60:02d}s" if secs >= 60 else f"{secs}s"


def _step_order(run: Obj) -> list[str]:
    spec = (run.get("status") or {}).get("pipelineSpec") or {}
    return [s["name"] for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]]


def progress_table(run: Obj) -> Table:
    st = run.get("status") or {}
    phase = st.get("phase", "Pending")
    title = f"pipelinerun/{run['metadata']['name']}  [{STYLE.get(phase, '')}]{phase}[/]"
    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for col in ("STEP", "PHASE", "ATTEMPTS", "DURATION", "MESSAGE"):
        table.add_column(col)
    steps = st.get("steps") or {}
    for name in _step_order(run) or sorted(steps):
        s = steps.get(name) or {}
        p = s.get("phase", "Pending")
        cell: Any = f"[{STYLE.get(p, '')}]{p}[/]"
        if p == "Running":
            cell = Spinner("dots", text=f"[cyan]{p}[/]")
        table.add_row(
            name,
            cell,
            str(s.get("attempts", 0) or ""),
            _duration(s.get("startTime"), s.get("completionTime")),
            (s.get("message") or "")[:80],
        )
    return table


async def follow_run(ctx: _app.Ctx, herd: str, name: str, timeout: float | None) -> Obj:
    """Watch the run until it ends; draw progress. Returns the final object."""
    client = ctx.client()
    run = await client.get("PipelineRun", name, herd)
    console = ctx.streams.out
    seen: dict[str, str] = {}

    def lines(obj: Obj) -> None:
        st = obj.get("status") or {}
        for step in _step_order(obj):
            s = (st.get("steps") or {}).get(step) or {}
            phase = s.get("phase", "Pending")
            if seen.get(step, "Pending") != phase:
                seen[step] = phase
                extra = f"  ({s['message']})" if s.get("message") else ""
                ctx.streams.write(f"{step:<20} {phase}{extra}\n")

    async def updates(on_update: Callable[[Obj], None]) -> Obj:
        nonlocal run
        since = client.revision or None
        while True:
            try:
                async for ev in client.watch("PipelineRun", herd, since=since):
                    since = ev.revision
                    if ev.type == "BOOKMARK" or ev.object["metadata"]["name"] != name:
                        continue
                    if ev.type == "DELETED":
                        raise errors.NotFound(f"pipelinerun {name} was deleted while running")
                    run = ev.object
                    on_update(run)
                    if (run.get("status") or {}).get("phase") in TERMINAL:
                        return run
            except (errors.Unavailable, errors.Gone):
                # The server restarted or we fell behind: re-read, then watch again.
                await asyncio.sleep(0.5)
                run = await client.get("PipelineRun", name, herd)
                since = client.revision or None
                on_update(run)
                if (run.get("status") or {}).get("phase") in TERMINAL:
                    return run

    if (run.get("status") or {}).get("phase") in TERMINAL:
        lines(run)
        return run
    if console.is_terminal:
        with Live(progress_table(run), console=console, refresh_per_second=8) as live:
            async with asyncio.timeout(timeout):
                return await updates(lambda obj: live.update(progress_table(obj)))
    lines(run)
    async with asyncio.timeout(timeout):
        return await updates(lines)


def summary(run: Obj) -> str:
    st = run.get("status") or {}
    cond: Obj = next((c for c in st.get("conditions") or [] if c.get("type") == "Succeeded"), {})
    took = _duration(st.get("startTime"), st.get("completionTime"))
    msg = cond.get("message") or ""
    return f"pipelinerun/{run['metadata']['name']} {st.get('phase')} in {took}" + (
        f": {msg}" if msg and st.get("phase") != "Succeeded" else ""
    )


async def cmd_run(ctx: _app.Ctx) -> int:
    a = ctx.args
    info = schemas.lookup(a.kind)
    if info.kind != "Pipeline":
        raise errors.Invalid(f"runink run takes a pipeline, not {info.kind}")
    herd = ctx.herd
    client = ctx.client()
    pipeline = await client.get("Pipeline", a.name, herd)
    params = _coerce(pipeline, dict(parse_param(p) for p in a.param or []))
    run = controllers.make_run(
        pipeline, params=params, name=a.run_name, service_account=a.service_account
    )
    created = await client.create(run)
    name = created["metadata"]["name"]
    ctx.streams.write(f"pipelinerun/{name} created\n")
    if not a.wait:
        return 0
    final = await follow_run(ctx, herd, name, a.timeout)
    ctx.streams.write(summary(final) + "\n")
    return 0 if final["status"]["phase"] == "Succeeded" else 1


async def cmd_cancel(ctx: _app.Ctx) -> int:
    a = ctx.args
    info = schemas.lookup(a.kind)
    if info.kind != "PipelineRun":
        raise errors.Invalid(f"runink cancel takes a run, not {info.kind}")
    client = ctx.client()
    for _ in range(5):
        run = await client.get("PipelineRun", a.name, ctx.herd)
        if (run.get("status") or {}).get("phase") in TERMINAL:
            ctx.streams.write(f"pipelinerun/{a.name} already {run['status']['phase']}\n")
            return 0
        try:
            await client.update({**run, "spec": {**run["spec"], "cancelled": True}})
            break
        except errors.Conflict:
            continue
    ctx.streams.write(f"pipelinerun/{a.name} cancelling\n")
    if a.wait:
        final = await follow_run(ctx, ctx.herd, a.name, a.timeout)
        ctx.streams.write(summary(final) + "\n")
    return 0


async def slices_for(ctx: _app.Ctx, target: str) -> list[str]:
    """``run/NAME[/STEP]`` -> the slices of that run (or step), in step order; else the slice itself."""
    if not target.startswith(("run/", "pipelinerun/", "runs/")):
        return [target]
    parts = target.split("/")
    run = await ctx.client().get("PipelineRun", parts[1], ctx.herd)
    steps = (run.get("status") or {}).get("steps") or {}
    wanted = [parts[2]] if len(parts) > 2 else _step_order(run)
    if len(parts) > 2 and parts[2] not in steps and parts[2] not in _step_order(run):
        raise errors.NotFound(
            f"run {parts[1]} has no step {parts[2]!r} (steps: {', '.join(_step_order(run))})"
        )
    return [s for step in wanted for s in (steps.get(step) or {}).get("slices") or []]


async def cmd_logs(ctx: _app.Ctx) -> int:
    a = ctx.args
    names = await slices_for(ctx, a.slice)
    if not names:
        raise errors.NotFound(f"{a.slice} has no slices yet")
    client = ctx.client()
    for name in names:
        if len(names) > 1:
            ctx.streams.write(f"==> {name} <==\n")
        async for chunk in client.logs(ctx.herd, name, follow=a.follow, tail=a.tail):
            ctx.streams.write(chunk.decode(errors="replace"))
    return 0


async def cmd_controllers(ctx: _app.Ctx) -> int:
    a = ctx.args
    url = a.url
    if not url:
        server = ctx.config().context(a.context).server
        host, _, port = server.rpartition(":")
        url = f"http://{host or '127.0.0.1'}:{int(port) + 1}"
    try:
        raw = await asyncio.to_thread(_fetch, f"{url.rstrip('/')}/controllers")
    except (urllib.error.URLError, OSError) as e:
        raise errors.Unavailable(
            f"cannot reach the controller manager at {url}: {e} (is `runink up` running? use --url)"
        ) from None
    rows: list[Obj] = json.loads(raw)
    if a.output == "json":
        ctx.streams.write(json.dumps(rows, indent=2) + "\n")
        return 0
    headers = [
        "NAME",
        "KIND",
        "PLUGIN",
        "HEALTHY",
        "RUNNING",
        "RECONCILES",
        "ERRORS",
        "QUEUE",
        "LAST ERROR",
    ]
    table = [
        [
            r["name"],
            r["kind"],
            r["plugin"],
            "yes" if r["healthy"] else "NO",
            "yes" if r["running"] else "no",
            str(r["reconciles"]),
            str(r["errors"]),
            str(r["queueDepth"]),
            (r.get("lastError") or "")[:60],
        ]
        for r in rows
    ]
    _output.print_table(ctx.streams, headers, table)
    return 0 if all(r["healthy"] for r in rows) else 1


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        body: bytes = resp.read()
        return body


def add_parsers(sub: Any) -> None:
    rp = sub.add_parser(
        "run", help="start a pipeline run (--wait: follow it, exit with its outcome)"
    )
    rp.add_argument("kind", help="pipeline")
    rp.add_argument("name")
    rp.add_argument("-p", "--param", action="append", help="key=value (repeatable)")
    rp.add_argument("--name", dest="run_name", help="name of the run (default: PIPELINE-xxxxxx)")
    rp.add_argument("--service-account")
    rp.add_argument("--wait", action="store_true", help="follow the run and exit with its outcome")
    rp.add_argument(
        "--timeout", type=float, default=None, help="seconds to wait (default: forever)"
    )
    rp.set_defaults(func=cmd_run)

    cp = sub.add_parser("cancel", help="cancel a pipeline run: its running slices are stopped")
    cp.add_argument("kind", help="run")
    cp.add_argument("name")
    cp.add_argument("--wait", action="store_true")
    cp.add_argument("--timeout", type=float, default=60.0)
    cp.set_defaults(func=cmd_cancel)

    lp = sub.add_parser("logs", help="print logs of a slice, or of run/RUN[/STEP]")
    lp.add_argument("slice", help="SLICE, run/RUN or run/RUN/STEP")
    lp.add_argument("-f", "--follow", action="store_true")
    lp.add_argument("--tail", type=int, default=None)
    lp.set_defaults(func=cmd_logs)

    kp = sub.add_parser(
        "controllers", help="list the controllers `runink up` runs, with their health"
    )
    kp.add_argument("--url", help="the controller manager (default: API port + 1)")
    kp.add_argument("-o", "--output", choices=["table", "json"], default="table")
    kp.set_defaults(func=cmd_controllers)


__all__ = ["add_parsers", "follow_run", "parse_param", "progress_table", "summary"]
