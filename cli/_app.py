"""The ``runink`` command: argument parsing and the kubectl-like verbs, over the typed API client.

``main(argv, streams)`` returns the exit code and writes only to ``streams``, so tests run the real
CLI in-process and read its output as strings. Exit codes: 0 success, 1 a failure reported by the
server or found in the input (the reason goes to stderr), 2 usage errors; ``diff`` exits 1 when
there are differences and 2 or more on errors, as kubectl's.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import difflib
import importlib.metadata
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import runink
from runink import api, schemas
from runink.cli import _jsonpath, _manifests, _output
from runink.schemas import errors

Obj = dict[str, Any]
INVENTORY_LABEL = "runink.io/inventory"
APPLY_CONCURRENCY = 16
VOLATILE = ("uid", "resourceVersion", "generation", "creationTimestamp", "managedFields")


class Ctx:
    """What every command gets: parsed args, output streams and a lazily opened client."""

    def __init__(self, args: argparse.Namespace, streams: _output.Streams) -> None:
        self.args = args
        self.streams = streams
        self._client: api.Client | None = None

    @property
    def config_path(self) -> Path | None:
        return Path(self.args.config) if self.args.config else None

    def config(self) -> api.ClientConfig:
        return api.load_config(self.config_path)

    def client(self) -> api.Client:
        if self._client is None:
            # from_config renews an expiring OIDC ID token (and saves it) before connecting.
            self._client = api.Client.from_config(
                self.config_path,
                self.args.context,
                field_manager=getattr(self.args, "field_manager", None) or "runink-cli",
            )
        return self._client

    @property
    def herd(self) -> str:
        if self.args.herd:
            return str(self.args.herd)
        try:
            return self.config().context(self.args.context).herd or "default"
        except errors.RuninkError:
            return "default"

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()


def _split_targets(kind_arg: str, names: list[str]) -> tuple[schemas.KindInfo, list[str]]:
    if "/" in kind_arg:
        kind, name = kind_arg.split("/", 1)
        return schemas.lookup(kind), [name, *names]
    return schemas.lookup(kind_arg), names


def _scope(ctx: Ctx, info: schemas.KindInfo) -> str | None:
    if not info.namespaced or getattr(ctx.args, "all_herds", False):
        return None
    return ctx.herd


# -- apply ------------------------------------------------------------------------------------


def _overlay(live: Obj, intent: Obj) -> Obj:
    """Client-side apply: the manifest's spec/labels/annotations over the live object."""
    merged = copy.deepcopy(live)
    for key, value in intent.items():
        if key not in ("metadata", "status", "apiVersion", "kind"):
            merged[key] = copy.deepcopy(value)
    meta = intent.get("metadata") or {}
    for key in ("labels", "annotations", "finalizers", "ownerReferences"):
        if key in meta:
            merged["metadata"][key] = copy.deepcopy(meta[key])
    return merged


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def _comparable(obj: Obj) -> Obj:
    out: Obj = _sorted(obj)
    out.pop("status", None)
    meta = out.get("metadata") or {}
    for key in VOLATILE:
        meta.pop(key, None)
    return out


async def _apply_one(ctx: Ctx, item: _manifests.Item) -> str:
    a = ctx.args
    client = ctx.client()
    obj = item.obj
    server_dry = a.dry_run == "server"
    if a.server_side:
        before: Obj | None
        try:
            before = await client.get(
                item.info.kind, obj["metadata"]["name"], obj["metadata"].get("herd")
            )
        except errors.NotFound:
            before = None
        after = await client.apply(
            obj, a.field_manager or "runink-cli", force=a.force_conflicts, dry_run=server_dry
        )
        if before is None:
            return "created"
        return "unchanged" if _comparable(before) == _comparable(after) else "serverside-applied"
    # Client-side apply: read, overlay, compare-and-swap; a Conflict means someone wrote in
    # between, and re-reading then re-overlaying our manifest is safe, so retry.
    for _ in range(5):
        try:
            live = await client.get(
                item.info.kind, obj["metadata"]["name"], obj["metadata"].get("herd")
            )
        except errors.NotFound:
            try:
                await client.create(obj, dry_run=server_dry)
            except errors.AlreadyExists:
                continue
            return "created"
        merged = _overlay(live, obj)
        result = await client.update(merged, dry_run=server_dry)
        return "unchanged" if _comparable(result) == _comparable(live) else "configured"
    raise errors.Conflict(f"{_output.name_of(obj)} kept changing while applying; try again")


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first RuninkError of a failed batch, reported like a sequential failure would be."""
    runink_errors = group.subgroup(errors.RuninkError)
    if runink_errors is None or runink_errors.split(errors.RuninkError)[1] is not None:
        return group
    leaf: BaseException = runink_errors
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def cmd_apply(ctx: Ctx) -> int:
    a = ctx.args
    items = _manifests.load(a.filename, recursive=a.recursive, herd=ctx.herd)
    if a.prune and not a.inventory:
        raise errors.Invalid("--prune needs --inventory NAME (the apply set to prune within)")
    if a.inventory:
        for item in items:
            item.obj["metadata"].setdefault("labels", {})[INVENTORY_LABEL] = a.inventory
    suffix = {"client": " (dry run)", "server": " (server dry run)"}.get(a.dry_run or "", "")
    # Cluster-scoped objects (Herds) first, then the rest with bounded concurrency: one round
    # trip per object dominates, and objects are independent once their herd exists.
    gate = asyncio.Semaphore(APPLY_CONCURRENCY)

    async def one(item: _manifests.Item) -> str:
        if a.dry_run == "client":
            return "configured"
        async with gate:
            return await _apply_one(ctx, item)

    first = [i for i in items if not i.info.namespaced]
    rest = [i for i in items if i.info.namespaced]
    for batch in (first, rest):
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(one(i)) for i in batch]
        except BaseExceptionGroup as group:
            raise _first_error(group) from None
        for item, task in zip(batch, tasks, strict=True):
            ctx.streams.write(f"{_output.name_of(item.obj)} {task.result()}{suffix}\n")
    if a.prune:
        keep = {
            (i.info.kind, i.obj["metadata"].get("herd"), i.obj["metadata"]["name"]) for i in items
        }
        for info in schemas.all_kinds():
            listed = await ctx.client().list(
                info.kind, None, selector=f"{INVENTORY_LABEL}={a.inventory}"
            )
            for obj in listed.items:
                meta = obj["metadata"]
                if (info.kind, meta.get("herd"), meta["name"]) in keep:
                    continue
                if a.dry_run != "client":
                    await ctx.client().delete(
                        info.kind, meta["name"], meta.get("herd"), dry_run=a.dry_run == "server"
                    )
                ctx.streams.write(f"{_output.name_of(obj)} pruned{suffix}\n")
    return 0


# -- get --------------------------------------------------------------------------------------


async def _fetch(ctx: Ctx, info: schemas.KindInfo, names: list[str]) -> list[Obj]:
    client = ctx.client()
    herd = _scope(ctx, info)
    if names:
        return [await client.get(info.kind, n, herd if info.namespaced else None) for n in names]
    items: list[Obj] = []
    token: str | None = None
    while True:
        page = await client.list(
            info.kind, herd, selector=ctx.args.selector, limit=500, continue_token=token
        )
        items.extend(page.items)
        token = page.continue_token
        if not token:
            return items


def _print(
    ctx: Ctx, info: schemas.KindInfo, objs: list[Obj], *, single: bool, header: bool = True
) -> None:
    a = ctx.args
    output = a.output or "table"
    if output in ("table", "wide"):
        headers, rows = _output.rows_for(
            info, objs, wide=output == "wide", all_herds=a.all_herds, show_labels=a.show_labels
        )
        if header:
            _output.print_table(ctx.streams, headers, rows)
        else:
            ctx.streams.write(_output.plain_table(headers, rows, header=False))
        return
    ctx.streams.write(_output.render(objs, output, single=single))


async def cmd_get(ctx: Ctx) -> int:
    a = ctx.args
    info, names = _split_targets(a.kind, a.names)
    objs = await _fetch(ctx, info, names)
    if not objs and not a.watch and (a.output or "table") in ("table", "wide"):
        where = "" if (a.all_herds or not info.namespaced) else f" in herd {ctx.herd}"
        ctx.streams.err.file.write(f"No resources found{where}.\n")
    elif objs or (a.output or "table") not in ("table", "wide"):
        _print(ctx, info, objs, single=bool(names) and len(names) == 1)
    if a.watch:
        await _watch(ctx, info, names, objs)
    return 0


async def _watch(ctx: Ctx, info: schemas.KindInfo, names: list[str], initial: list[Obj]) -> None:
    """Print a line per change, resuming after a dropped connection from the last revision seen.

    A restart of the server closes the stream (Unavailable): we reconnect with ``since`` = the
    newest revision printed or bookmarked, so nothing is lost or printed twice; ``Gone`` (history
    compacted) re-lists instead.
    """
    client = ctx.client()
    herd = _scope(ctx, info)
    since = client.revision
    delay = 0.2
    while True:
        try:
            async for ev in client.watch(
                info.kind, herd, since=since, selector=ctx.args.selector, bookmark_interval=1.0
            ):
                since = ev.revision
                delay = 0.2
                if ev.type == "BOOKMARK":
                    continue
                if names and ev.object["metadata"]["name"] not in names:
                    continue
                _print(ctx, info, [ev.object], single=True, header=False)
        except errors.Unavailable:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        except errors.Gone:
            page = await client.list(info.kind, herd, selector=ctx.args.selector)
            _print(ctx, info, page.items, single=False, header=False)
            since = page.revision


# -- describe ---------------------------------------------------------------------------------


async def cmd_describe(ctx: Ctx) -> int:
    info, names = _split_targets(ctx.args.kind, ctx.args.names)
    objs = await _fetch(ctx, info, names)
    out = [await _describe(ctx, info, obj) for obj in objs]
    ctx.streams.write("\n\n".join(out))
    return 0


async def _describe(ctx: Ctx, info: schemas.KindInfo, obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    lines = [
        f"Name:         {meta.get('name')}",
        *([f"Herd:         {meta.get('herd')}"] if meta.get("herd") else []),
        f"Kind:         {info.kind}",
        f"API Version:  {obj.get('apiVersion')}",
        "Labels:       "
        + (", ".join(f"{k}={v}" for k, v in (meta.get("labels") or {}).items()) or "<none>"),
        "Annotations:  "
        + (", ".join(f"{k}={v}" for k, v in (meta.get("annotations") or {}).items()) or "<none>"),
        f"Created:      {meta.get('creationTimestamp')} ({_output.age(meta.get('creationTimestamp'))} ago)",
        f"Generation:   {meta.get('generation')}    Resource Version: {meta.get('resourceVersion')}",
    ]
    if meta.get("deletionTimestamp"):
        lines.append(
            f"Deleting:     since {meta['deletionTimestamp']} (finalizers: {meta.get('finalizers')})"
        )
    owners = meta.get("ownerReferences") or []
    lines.append(
        "Owners:       " + (", ".join(f"{o['kind']}/{o['name']}" for o in owners) or "<none>")
    )
    # A run's status carries a snapshot of its pipeline and per-step detail: show the steps as a
    # table instead of pages of YAML (the full object is one `-o yaml` away).
    hidden = (
        {"conditions", "pipelineSpec", "steps"} if info.kind == "PipelineRun" else {"conditions"}
    )
    for section in ("spec", "status"):
        if obj.get(section):
            body = {k: v for k, v in obj[section].items() if k not in hidden}
            if body:
                lines.append(f"{section.capitalize()}:")
                lines += ["  " + ln for ln in schemas.dump_yaml(body).rstrip().splitlines()]
    if info.kind == "PipelineRun":
        lines += _run_steps(obj)
    conditions = (obj.get("status") or {}).get("conditions") or []
    lines.append("Conditions:")
    if conditions:
        rows = [
            [str(c.get(k, "")) for k in ("type", "status", "reason", "message")] for c in conditions
        ]
        lines += [
            "  " + ln
            for ln in _output.plain_table(
                ["TYPE", "STATUS", "REASON", "MESSAGE"], rows
            ).splitlines()
        ]
    else:
        lines.append("  <none>")
    lines.append("Events:")
    events: list[Obj] = []
    if meta.get("herd"):
        listed = await ctx.client().list("Event", meta["herd"])
        for ev in listed.items:
            ref = (ev.get("spec") or {}).get("involvedObject") or {}
            if ref.get("kind") == info.kind and ref.get("name") == meta.get("name"):
                events.append(ev)
    if events:
        events.sort(key=lambda e: str(e["spec"].get("lastTimestamp") or ""))
        rows = [
            [
                str(e["spec"].get("type", "")),
                str(e["spec"].get("reason", "")),
                _output.age(e["spec"].get("lastTimestamp")),
                str(e["spec"].get("source") or ""),
                str(e["spec"].get("message", "")),
            ]
            for e in events
        ]
        lines += [
            "  " + ln
            for ln in _output.plain_table(
                ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"], rows
            ).splitlines()
        ]
    else:
        lines.append("  <none>")
    return "\n".join(lines) + "\n"


def _run_steps(run: Obj) -> list[str]:
    st = run.get("status") or {}
    spec = st.get("pipelineSpec") or {}
    order = [s["name"] for s in [*(spec.get("steps") or []), *(spec.get("finally") or [])]]
    steps = st.get("steps") or {}
    rows = []
    for name in order or sorted(steps):
        s = steps.get(name) or {}
        results = ", ".join(f"{k}={v}" for k, v in (s.get("results") or {}).items())
        rows.append(
            [
                name,
                str(s.get("phase", "Pending")),
                str(s.get("attempts", 0)),
                str(len(s.get("slices") or [])),
                results[:40],
                str(s.get("message") or "")[:70],
            ]
        )
    table = _output.plain_table(["STEP", "PHASE", "ATTEMPTS", "SLICES", "RESULTS", "MESSAGE"], rows)
    return ["Steps:", *("  " + ln for ln in table.splitlines())]


# -- delete -----------------------------------------------------------------------------------


async def cmd_delete(ctx: Ctx) -> int:
    a = ctx.args
    client = ctx.client()
    targets: list[tuple[schemas.KindInfo, str, str | None]] = []
    if a.filename:
        items = _manifests.load(a.filename, recursive=a.recursive, herd=ctx.herd)
        targets += [
            (i.info, i.obj["metadata"]["name"], i.obj["metadata"].get("herd")) for i in items
        ]
    elif a.kind:
        info, names = _split_targets(a.kind, a.names)
        if not names and not a.selector and not a.all:
            raise errors.Invalid("name which objects to delete: NAME..., -l SELECTOR or --all")
        if names:
            targets += [(info, n, _scope(ctx, info)) for n in names]
        else:
            for obj in await _fetch(ctx, info, []):
                targets.append((info, obj["metadata"]["name"], obj["metadata"].get("herd")))
    else:
        raise errors.Invalid("delete needs -f FILE or KIND [NAME...]")
    # Dependents before owners does not matter here: the garbage collector follows ownerReferences.
    for info, name, herd in reversed(targets):
        try:
            await client.delete(
                info.kind, name, herd, propagation=a.cascade, dry_run=a.dry_run == "server"
            )
        except errors.NotFound:
            if a.ignore_not_found:
                continue
            raise
        ctx.streams.write(f"{info.singular}/{name} deleted\n")
        if a.wait and a.dry_run != "server":
            await _wait_gone(client, info, name, herd, a.timeout)
    return 0


async def _wait_gone(
    client: api.Client, info: schemas.KindInfo, name: str, herd: str | None, timeout: float
) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                await client.get(info.kind, name, herd)
            except errors.NotFound:
                return
            await asyncio.sleep(0.2)


# -- diff -------------------------------------------------------------------------------------


async def cmd_diff(ctx: Ctx) -> int:
    a = ctx.args
    client = ctx.client()
    changed = False
    items = _manifests.load(a.filename, recursive=a.recursive, herd=ctx.herd)
    new_herds = {i.obj["metadata"]["name"] for i in items if i.info.kind == "Herd"}
    for item in items:
        meta = item.obj["metadata"]
        try:
            live: Obj | None = await client.get(item.info.kind, meta["name"], meta.get("herd"))
        except errors.NotFound:
            live = None
        merged = item.obj if live is None else _overlay(live, item.obj)
        if live is None:
            try:
                would = await client.create(merged, dry_run=True)
            except errors.NotFound as e:
                # Its herd is created by this same set of manifests: the server cannot admit it
                # yet, so show the locally validated object.
                if e.details.get("herd") not in new_herds:
                    raise
                would = schemas.validate(merged)
        else:
            would = await client.update(merged, dry_run=True)
        old = schemas.dump_yaml(_comparable(live)).splitlines(keepends=True) if live else []
        new = schemas.dump_yaml(_comparable(would)).splitlines(keepends=True)
        name = _output.name_of(item.obj)
        diff = list(difflib.unified_diff(old, new, f"live/{name}", f"merged/{name}"))
        if diff:
            changed = True
            ctx.streams.write("".join(diff))
    return 1 if changed else 0


# -- explain, wait, api-resources, version ----------------------------------------------------


async def cmd_explain(ctx: Ctx) -> int:
    ctx.streams.write(schemas.explain(ctx.args.path).rstrip("\n") + "\n")
    return 0


def _condition_met(obj: Obj, spec: str) -> bool:
    name, _, want = spec.partition("=")
    want = want or "True"
    for c in (obj.get("status") or {}).get("conditions") or []:
        if str(c.get("type", "")).lower() == name.lower():
            return str(c.get("status", "")).lower() == want.lower()
    return False


def _jsonpath_met(obj: Obj, spec: str) -> bool:
    expr, sep, want = spec.rpartition("=") if "=" in spec.strip("{}") else (spec, "", "")
    if not sep:
        return bool(_jsonpath.find(obj, spec.strip("{}")))
    values = _jsonpath.find(obj, expr.strip().strip("{}"))
    return any(str(v) == want for v in values)


async def cmd_wait(ctx: Ctx) -> int:
    a = ctx.args
    info, names = _split_targets(a.kind, a.names)
    client = ctx.client()
    herd = _scope(ctx, info)
    cond = a.wait_for
    deadline = time.monotonic() + a.timeout
    for name in names or [o["metadata"]["name"] for o in await _fetch(ctx, info, [])]:
        while True:
            try:
                obj = await client.get(info.kind, name, herd)
                if cond.startswith("condition="):
                    met = _condition_met(obj, cond[len("condition=") :])
                elif cond.startswith("jsonpath="):
                    met = _jsonpath_met(obj, cond[len("jsonpath=") :])
                elif cond == "delete":
                    met = False
                else:
                    raise errors.Invalid(
                        f"unknown --for={cond}: use condition=X, jsonpath=EXPR=VALUE or delete"
                    )
            except errors.NotFound:
                if cond != "delete":
                    raise
                met = True
            if met:
                ctx.streams.write(f"{info.singular}/{name} condition met\n")
                break
            if time.monotonic() >= deadline:
                ctx.streams.error(f"timed out waiting for {cond} on {info.singular}/{name}")
                return 1
            await asyncio.sleep(0.2)
    return 0


async def cmd_api_resources(ctx: Ctx) -> int:
    rows = [
        [i.plural, ",".join(i.short_names), i.api_version, str(i.namespaced).lower(), i.kind]
        for i in sorted(schemas.all_kinds(), key=lambda i: i.plural)
    ]
    _output.print_table(
        ctx.streams, ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"], rows
    )
    return 0


async def cmd_version(ctx: Ctx) -> int:
    ctx.streams.write(f"Client Version: {runink.__version__}\n")
    if not ctx.args.client:
        v = await ctx.client().version()
        ctx.streams.write(f"Server Version: {v.get('version')} (revision {v.get('revision')})\n")
    return 0


async def cmd_whoami(ctx: Ctx) -> int:
    me = await ctx.client().whoami()
    if ctx.args.output in ("json", "yaml"):
        ctx.streams.write(_output.render([me], ctx.args.output, single=True))
        return 0
    ctx.streams.write(
        f"{me['user']} (groups: {', '.join(me['groups']) or '<none>'}; via {me['method']})\n"
    )
    return 0


async def cmd_config(ctx: Ctx) -> int:
    a = ctx.args
    config = ctx.config()
    if a.config_cmd == "view":
        ctx.streams.write(config.dumps(redact=not a.raw))
    elif a.config_cmd == "use-context":
        config.use_context(a.name).save(config.path)
        ctx.streams.write(f"Switched to context {a.name!r}.\n")
    elif a.config_cmd == "set-herd":
        config.set_herd(a.herd_name, a.context).save(config.path)
        ctx.streams.write(f"Default herd set to {a.herd_name!r}.\n")
    elif a.config_cmd == "get-contexts":
        rows = [
            ["*" if n == config.current_context else "", n, c.server, c.herd or ""]
            for n, c in config.contexts.items()
        ]
        _output.print_table(ctx.streams, ["CURRENT", "NAME", "SERVER", "HERD"], rows)
    return 0


COMMANDS = [
    "api-resources",
    "apply",
    "completion",
    "config",
    "delete",
    "describe",
    "diff",
    "explain",
    "get",
    "logs",
    "up",
    "version",
    "wait",
    "whoami",
]


async def cmd_completion(ctx: Ctx) -> int:
    kinds = sorted({n for i in schemas.all_kinds() for n in (i.plural, i.singular, *i.short_names)})
    words, kind_words = " ".join(COMMANDS), " ".join(kinds)
    if ctx.args.shell == "bash":
        ctx.streams.write(
            "_runink() {\n"
            '  local cur="${COMP_WORDS[COMP_CWORD]}"\n'
            f'  if [ "$COMP_CWORD" -eq 1 ]; then COMPREPLY=($(compgen -W "{words}" -- "$cur"));\n'
            f'  else COMPREPLY=($(compgen -W "{kind_words}" -- "$cur")); fi\n'
            "}\ncomplete -F _runink runink\n"
        )
    else:
        ctx.streams.write(
            "#compdef runink\n_runink() {\n"
            f"  if (( CURRENT == 2 )); then compadd {words};\n"
            f"  else compadd {kind_words}; fi\n"
            "}\ncompdef _runink runink\n"
        )
    return 0


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    # Global flags are accepted before and after the verb (`runink describe pl x -n finance`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="client config file (default: $RUNINK_CONFIG or ~/.runink/config)",
    )
    common.add_argument("--context", default=argparse.SUPPRESS, help="context to use")
    common.add_argument(
        "-n", "--herd", default=argparse.SUPPRESS, help="herd (namespace) for herd-scoped kinds"
    )
    p = argparse.ArgumentParser(prog="runink", description="Runink: declarative data pipelines.")
    p.add_argument(
        "--config", help="client config file (default: $RUNINK_CONFIG or ~/.runink/config)"
    )
    p.add_argument("--context", help="context to use instead of current-context")
    p.add_argument("-n", "--herd", help="herd (namespace) for herd-scoped kinds")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser = sub.add_parser

    def _add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return add_parser(name, parents=[common], **kw)

    sub.add_parser = _add  # type: ignore[method-assign]

    def files(sp: argparse.ArgumentParser, required: bool) -> None:
        sp.add_argument(
            "-f", "--filename", action="append", required=required, help="file, directory or -"
        )
        sp.add_argument("-R", "--recursive", action="store_true", help="recurse into directories")

    ap = sub.add_parser("apply", help="create or update objects from manifests")
    files(ap, True)
    ap.add_argument(
        "--dry-run", choices=["none", "client", "server"], default=None, nargs="?", const="client"
    )
    ap.add_argument(
        "--server-side", action="store_true", help="server-side apply with field ownership"
    )
    ap.add_argument("--field-manager", default=None)
    ap.add_argument("--force-conflicts", action="store_true")
    ap.add_argument(
        "--prune", action="store_true", help="delete objects of --inventory not in the manifests"
    )
    ap.add_argument("--inventory", help="name of the apply set (label runink.io/inventory)")
    ap.set_defaults(func=cmd_apply)

    def listing(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("kind")
        sp.add_argument("names", nargs="*")
        sp.add_argument("-l", "--selector")
        sp.add_argument("-A", "--all-herds", action="store_true")

    gp = sub.add_parser("get", help="list or show objects")
    listing(gp)
    gp.add_argument("-o", "--output")
    gp.add_argument("-w", "--watch", action="store_true")
    gp.add_argument("--show-labels", action="store_true")
    gp.set_defaults(func=cmd_get)

    dp = sub.add_parser("describe", help="show an object with its conditions, owners and events")
    listing(dp)
    dp.set_defaults(func=cmd_describe)

    xp = sub.add_parser("delete", help="delete objects")
    xp.add_argument("kind", nargs="?")
    xp.add_argument("names", nargs="*")
    files(xp, False)
    xp.add_argument("-l", "--selector")
    xp.add_argument("-A", "--all-herds", action="store_true")
    xp.add_argument("--all", action="store_true")
    xp.add_argument(
        "--cascade", choices=["background", "foreground", "orphan"], default="background"
    )
    xp.add_argument("--wait", action="store_true")
    xp.add_argument("--timeout", type=float, default=60.0)
    xp.add_argument("--dry-run", choices=["none", "server"], default=None)
    xp.add_argument("--ignore-not-found", action="store_true")
    xp.set_defaults(func=cmd_delete)

    fp = sub.add_parser(
        "diff", help="diff manifests against the live objects (exit 1 if different)"
    )
    files(fp, True)
    fp.set_defaults(func=cmd_diff)

    ep = sub.add_parser("explain", help="document a kind or field, e.g. pipeline.spec.steps")
    ep.add_argument("path")
    ep.set_defaults(func=cmd_explain)

    wp = sub.add_parser("wait", help="wait for a condition, a jsonpath value or deletion")
    listing(wp)
    wp.add_argument("--for", dest="wait_for", required=True)
    wp.add_argument("--timeout", type=float, default=30.0)
    wp.set_defaults(func=cmd_wait)

    sub.add_parser("api-resources", help="list the kinds").set_defaults(func=cmd_api_resources)
    vp = sub.add_parser("version", help="client and server versions")
    vp.add_argument("--client", action="store_true")
    vp.set_defaults(func=cmd_version)
    wp = sub.add_parser("whoami", help="who the server thinks you are")
    wp.add_argument("-o", "--output", choices=["json", "yaml"], help="the whole answer")
    wp.set_defaults(func=cmd_whoami)

    cp = sub.add_parser("config", help="view or change the client config")
    csub = cp.add_subparsers(dest="config_cmd", required=True)
    cv = csub.add_parser("view")
    cv.add_argument("--raw", action="store_true", help="show keys and certificates")
    cu = csub.add_parser("use-context")
    cu.add_argument("name")
    cs = csub.add_parser("set-herd")
    cs.add_argument("herd_name")
    csub.add_parser("get-contexts")
    cp.set_defaults(func=cmd_config)

    op = sub.add_parser("completion", help="shell completion script")
    op.add_argument("shell", choices=["bash", "zsh"])
    op.set_defaults(func=cmd_completion)

    from runink.cli import _auth, _demo, _runs, _up  # the composition root adds its own flags

    _runs.add_parsers(sub)
    from runink.cli import _lineage

    _lineage.add_parsers(sub)  # lineage, annotations, datasets search
    _auth.add_parsers(sub)
    from runink.cli import _agent

    _agent.add_parser(sub)
    from runink.cli import _cluster

    sp = sub.add_parser("server", help="run one control-plane replica (Raft + API + controllers)")
    _server_args(sp)
    sp.set_defaults(func=cmd_server)
    clp = sub.add_parser(
        "cluster", help="init, join, status or remove members of a replicated cluster"
    )
    clsub = clp.add_subparsers(dest="cluster_cmd", required=True)
    for verb in ("init", "join"):
        cp_ = clsub.add_parser(verb, help=f"{verb} a cluster and run this replica")
        if verb == "join":
            cp_.add_argument("join", metavar="ADDRESS", help="Raft address of a member")
        _server_args(cp_)
        cp_.set_defaults(func=cmd_server, init=verb == "init")
    for verb in ("status", "remove"):
        cp_ = clsub.add_parser(verb, help=f"{verb} (members, leader, term, indexes, lag)")
        if verb == "remove":
            cp_.add_argument("address", help="Raft address of the member to remove")
        cp_.add_argument("--data-dir", required=True, help="a replica's data dir (for its secret)")
        cp_.add_argument("--raft-addr", help="the replica to ask (default: from the data dir)")
        cp_.add_argument("--token", help="the cluster secret (default: from the data dir)")
        cp_.add_argument("-o", "--output", choices=["table", "json"], default="table")
        cp_.set_defaults(func=cmd_cluster_admin)
    del _cluster
    gp = sub.add_parser("gitops", help="status, sync, suspend, resume or diff a GitSource")
    gp.add_argument("action", choices=["status", "sync", "suspend", "resume", "diff"])
    gp.add_argument("source")
    gp.set_defaults(func=cmd_gitops)
    _up.add_parser(sub)
    _demo.add_parser(sub)
    return p


def _server_args(sp: argparse.ArgumentParser) -> None:
    sp.add_argument("--data-dir", required=True)
    sp.add_argument("--raft-addr", required=True, help="host:port this replica's Raft listens on")
    sp.add_argument("--peers", default="", help="the other members' Raft addresses, a,b")
    sp.add_argument("--port", type=int, default=0, help="API port (0: any free port)")
    sp.add_argument(
        "--token", help="the cluster secret (joining members; visible in ps: prefer --token-file)"
    )
    sp.add_argument("--token-file", help="a file holding the cluster secret (joining members)")
    sp.add_argument("--pki-dir")
    sp.add_argument("--shared-dir")
    sp.add_argument("--controller-port", type=int)
    sp.add_argument("--no-controllers", action="store_true")
    sp.add_argument("--ready-file", help=argparse.SUPPRESS)
    sp.set_defaults(init=False, join=None)


async def cmd_server(ctx: Ctx) -> int:
    from runink.cli import _cluster

    def say(text: str) -> None:
        ctx.streams.write(text + "\n")

    return await _cluster.server(ctx.args, say)


async def cmd_cluster_admin(ctx: Ctx) -> int:
    from runink.cli import _cluster

    def say(text: str) -> None:
        ctx.streams.write(text + "\n")

    fn = _cluster.status if ctx.args.cluster_cmd == "status" else _cluster.remove
    return await asyncio.to_thread(fn, ctx.args, say)


async def cmd_gitops(ctx: Ctx) -> int:
    from runink.cli import _gitops

    action = getattr(_gitops, ctx.args.action)
    code: int = await action(ctx.client(), ctx.args.source, ctx.herd, ctx.streams)
    return code


def _report(streams: _output.Streams, err: errors.RuninkError) -> None:
    if isinstance(err, errors.Invalid) and err.errors:
        headline = err.message.split("\n", 1)[0]
        streams.error(f"{headline} ({err.reason})")
        for fe in err.errors:
            streams.err.file.write(f"  {fe}\n")
        streams.err.file.flush()
        return
    extra = ""
    if isinstance(err, errors.Conflict) and err.details.get("currentResourceVersion"):
        extra = f" [current resourceVersion {err.details['currentResourceVersion']}]"
    streams.error(f"{err.message}{extra} ({err.reason})")


def _load_plugin_kinds(streams: _output.Streams) -> None:
    """Import every installed plugin so its kinds are known to get, describe, explain and apply
    (importing a plugin registers its kinds); a broken plugin is a warning, not a failure."""
    for ep in importlib.metadata.entry_points(group="runink.controllers"):
        try:
            ep.load()
        except Exception as e:  # noqa: BLE001 - a broken plugin must not break the CLI
            streams.err.file.write(f"warning: plugin {ep.name} failed to load: {e}\n")


async def amain(argv: list[str], streams: _output.Streams | None = None) -> int:
    """Run one command; returns its exit code (usage errors raise SystemExit(2) from argparse)."""
    streams = streams or _output.Streams.default()
    _load_plugin_kinds(streams)
    parser = build_parser()
    # kubectl takes flags anywhere: `describe slice -n demo NAME`. argparse stops filling a
    # positional list at the first flag, so names that follow flags are collected here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        # Global flags after a nested verb (`secret reveal db -n finance`): nested subparsers do
        # not inherit them, so pick them out here.
        glob = argparse.ArgumentParser(add_help=False)
        glob.add_argument("--config")
        glob.add_argument("--context")
        glob.add_argument("-n", "--herd")
        found, extra = glob.parse_known_args(extra)
        for key, value in vars(found).items():
            if value is not None:
                setattr(args, key, value)
    if extra:
        stray = [e for e in extra if e.startswith("-")]
        if stray or not isinstance(getattr(args, "names", None), list):
            parser.parse_args(argv)  # reports the unknown arguments the usual way (exit 2)
        args.names.extend(extra)
    ctx = Ctx(args, streams)
    func: Callable[[Ctx], Awaitable[int]] = args.func
    try:
        return await func(ctx)
    except errors.RuninkError as e:
        _report(streams, e)
        diffing = args.command == "diff" or (
            args.command == "gitops" and getattr(args, "action", "") == "diff"
        )
        return 2 if diffing else 1
    except TimeoutError:
        streams.error("timed out")
        return 1
    except OSError as e:
        streams.error(str(e))
        return 1
    finally:
        await ctx.close()


def main(argv: list[str] | None = None, streams: _output.Streams | None = None) -> int:
    import sys

    try:
        return asyncio.run(amain(list(sys.argv[1:] if argv is None else argv), streams))
    except KeyboardInterrupt:
        return 130
    except SystemExit as e:
        return int(e.code) if isinstance(e.code, int) else 2


__all__ = ["amain", "build_parser", "main"]
