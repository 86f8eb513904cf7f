"""``runink gitops status|sync|suspend|resume|diff SOURCE`` and the ``runink up --gitops PATH`` hook.

Each verb is a function of an :class:`ApplyClient`-shaped client (the gRPC ``runink.api.Client``)
and the output streams, returning the exit code; cli/_app.py parses the arguments and calls them.
``diff`` exits as ``runink diff``: 0 in sync, 1 differences, 2 or more on errors. The up hook runs
the GitOps controller in its own Manager against a GitSource named ``local`` that follows PATH.
"""

from __future__ import annotations

import datetime
import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runink import schemas
from runink.cli import _output
from runink.controllers import _gitops
from runink.schemas import errors

if TYPE_CHECKING:
    pass

Obj = dict[str, Any]
CLI_MANAGER = "runink-gitops-cli"
"""Field manager of the suspend/sync edits: separate from ``runink-cli`` so that applying only
``spec.suspend`` never drops fields another ``runink apply`` wrote."""
UP_SOURCE = "local"


def _cond(obj: Obj, type_: str) -> Obj:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_),
        {},
    )


async def status(
    client: _gitops.ApplyClient, name: str, herd: str, streams: _output.Streams
) -> int:
    """A summary table, then the objects the last sync or drift check touched, then the error."""
    src = await client.get(_gitops.KIND, name, herd)
    st = src.get("status") or {}
    ready, stalled = _cond(src, "Ready"), _cond(src, "Stalled")
    spec = src.get("spec") or {}
    _output.print_table(
        streams,
        ["NAME", "READY", "REASON", "REVISION", "SUSPENDED", "OBJECTS", "LAST SYNC"],
        [
            [
                name,
                str(ready.get("status", "Unknown")),
                str(ready.get("reason") or stalled.get("reason") or ""),
                str(st.get("syncedRevision") or "-")[:12],
                "yes" if spec.get("suspend") else "no",
                str(len(st.get("inventory") or [])),
                _output.age(st.get("lastSyncTime")),
            ]
        ],
    )
    rows = st.get("objects") or []
    if rows:
        streams.write("\n")
        _output.print_table(
            streams,
            ["ACTION", "OBJECT", "FIELDS"],
            [
                [
                    str(r.get("action")),
                    f"{str(r.get('kind')).lower()}/{r.get('name')}"
                    + (f" -n {r['herd']}" if r.get("herd") else ""),
                    ", ".join(r.get("fields") or []),
                ]
                for r in rows
            ],
        )
    if st.get("lastError"):
        streams.write(f"\nlast error:\n{st['lastError']}\n")
    return 0 if ready.get("status") == "True" else 1


async def _patch(client: _gitops.ApplyClient, name: str, herd: str, patch: Obj) -> Obj:
    # Exists first, so a typo is NotFound rather than an apply that creates a broken object.
    await client.get(_gitops.KIND, name, herd)
    intent = {
        "apiVersion": schemas.API_VERSION,
        "kind": _gitops.KIND,
        "metadata": {"name": name, "herd": herd, **patch.get("metadata", {})},
    }
    if "spec" in patch:
        intent["spec"] = patch["spec"]
    return await client.apply(intent, CLI_MANAGER, force=True)


async def sync(client: _gitops.ApplyClient, name: str, herd: str, streams: _output.Streams) -> int:
    """Ask for a reconcile now (read Git, apply a new revision or check drift)."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    await _patch(client, name, herd, {"metadata": {"annotations": {_gitops.SYNC_ANNOTATION: now}}})
    streams.write(f"gitsource/{name} sync requested\n")
    return 0


async def suspend(
    client: _gitops.ApplyClient, name: str, herd: str, streams: _output.Streams
) -> int:
    await _patch(client, name, herd, {"spec": {"suspend": True}})
    streams.write(f"gitsource/{name} suspended\n")
    return 0


async def resume(
    client: _gitops.ApplyClient, name: str, herd: str, streams: _output.Streams
) -> int:
    await _patch(client, name, herd, {"spec": {"suspend": False}})
    streams.write(f"gitsource/{name} resumed\n")
    return 0


def _owned_yaml(obj: Obj | None) -> list[str]:
    if obj is None:
        return []
    meta = obj.get("metadata") or {}
    view = {
        "metadata": {k: meta[k] for k in ("labels", "annotations") if meta.get(k)},
        "spec": obj.get("spec"),
    }
    return schemas.dump_yaml(_sorted(view)).splitlines(keepends=True)


def _sorted(value: Any) -> Any:
    # The server may return keys in another order than the dry run: compare content, not order.
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


async def diff(
    client: _gitops.ApplyClient,
    name: str,
    herd: str,
    streams: _output.Streams,
    *,
    cache_dir: Path | None = None,
) -> int:
    """What a sync of the revision the source follows now would change: a unified diff per object
    (server-side dry-run apply), and the objects a prune would delete. Reads the repository from
    this machine (the GitSource's url must be reachable here)."""
    src = await client.get(_gitops.KIND, name, herd)
    reconciler = _gitops.GitSourceReconciler(client, cache_dir=cache_dir)
    revision, desired = await reconciler.read_desired(src)
    manager = _gitops.field_manager(src)
    changed = False
    for d in desired:
        kind, obj_herd, obj_name = d.key
        try:
            live: Obj | None = await client.get(kind, obj_name, obj_herd)
        except errors.NotFound:
            live = None
        if d.sealed:
            if live is None:
                changed = True
                streams.write(f"+ {kind.lower()}/{obj_name} (sealed; created)\n")
            continue
        try:
            would = await client.apply(d.obj, manager, force=True, dry_run=True)
        except errors.NotFound:
            if live is not None:
                raise
            would = d.obj  # its Herd comes from the same revision: show the manifest as written
        label = f"{kind.lower()}/{obj_name}"
        lines = list(
            difflib.unified_diff(
                _owned_yaml(live),
                _owned_yaml(would),
                f"live/{label}",
                f"git@{revision[:12]}/{label}",
            )
        )
        if lines:
            changed = True
            streams.write("".join(lines))
    if (src.get("spec") or {}).get("prune"):
        wanted = {d.key for d in desired}
        for key in _gitops.inventory_keys(src.get("status") or {}):
            if key not in wanted:
                changed = True
                where = f" -n {key[1]}" if key[1] else ""
                streams.write(f"- {key[0].lower()}/{key[2]}{where} (pruned)\n")
    return 1 if changed else 0


def source_for_path(path: Path, *, herd: str = "default") -> Obj:
    """The GitSource ``runink up --gitops PATH`` creates: a platform repository (clusterWide),
    pruning, self-healing, following the checked-out branch."""
    repo = path.resolve()
    return {
        "apiVersion": schemas.API_VERSION,
        "kind": _gitops.KIND,
        "metadata": {"name": UP_SOURCE, "herd": herd},
        "spec": {
            "url": str(repo),
            "ref": {"branch": _current_branch(repo)},
            "intervalSeconds": 60,
            "prune": True,
            "selfHeal": True,
            "clusterWide": True,
        },
    }


def _current_branch(repo: Path) -> str:
    head = repo / ".git" / "HEAD"
    try:
        text = head.read_text().strip()
    except OSError:
        return "main"
    prefix = "ref: refs/heads/"
    return text[len(prefix) :] if text.startswith(prefix) else "main"


__all__ = [
    "CLI_MANAGER",
    "diff",
    "resume",
    "source_for_path",
    "status",
    "suspend",
    "sync",
]
