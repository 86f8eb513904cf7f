"""GitOps: the controller that keeps the cluster equal to a path in a Git repository (kind GitSource).

    repo .git (watchfiles) ──┐                         ┌─> validate EVERY manifest (file, line)
    interval + jitter ───────┼─> queue ─> reconcile ───┼─> check target Herds (all or nothing)
    GitSource spec/annotation┘     (one GitSource)      ├─> new revision: server-side apply, force,
                                                        │   field manager "gitops:<name>"; prune
                                                        └─> same revision: dry-run apply diff = drift;
                                                            selfHeal re-applies, else only reported

The reconciler reads the tree *at the commit* with the real ``git`` (controllers/_git.py) and talks
to the cluster through :class:`ApplyClient`, a Protocol the gRPC client satisfies. The repository
watcher (:class:`RepoWatcher`) owns one watchfiles task per watched repository in its own TaskGroup
and only enqueues Requests; the composition root runs :meth:`GitOps.run_watches` beside the Manager.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Protocol

import watchfiles

from runink import schemas
from runink.controllers import _client, _controller, _git, _helpers, _types
from runink.schemas import errors

log = logging.getLogger("runink.controllers.gitops")

Obj = dict[str, Any]
Key = tuple[str, str | None, str]
"""(kind, herd, name) of one object."""

KIND = "GitSource"
MANAGER_PREFIX = "gitops:"
SYNC_ANNOTATION = "runink.io/sync-requested-at"
"""Changing this annotation (``runink gitops sync``) asks for a reconcile now."""
SEALED_KIND = "SealedSecret"
DEPENDENCY_POLL = 2.0
"""Seconds between checks of a dependency that is not Ready yet."""
GIT_RETRY = 5.0
"""Seconds before reading a repository again after git failed (no such ref yet, fetch failed)."""
MAX_OBJECT_ROWS = 100
"""status.objects lists at most this many non-unchanged objects (status stays small)."""

Action = Literal["created", "configured", "unchanged", "pruned", "drifted", "healed"]


class ApplyClient(_client.Client, Protocol):
    """What the GitOps controller needs from the cluster: the Barn-shaped client plus server-side
    apply; ``runink.api.Client`` satisfies it.

    ``apply`` is server-side apply with field ownership; ``dry_run`` returns the object the server
    would store. Errors are ``runink.schemas.errors``.
    """

    async def apply(
        self, obj: Obj, manager: str | None = None, *, force: bool = False, dry_run: bool = False
    ) -> Obj: ...


class Recorder(Protocol):
    """Where Events go (``runink.controllers.EventRecorder`` satisfies it)."""

    async def record(
        self, obj: Obj, type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> Obj: ...


# -- pure part: manifests -> desired objects ----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Desired:
    """One object from the repository, as written (intent, not defaulted), herd filled in."""

    key: Key
    obj: Obj
    file: str
    namespaced: bool
    sealed: bool = False


def _sealed_problems(data: Obj) -> list[str]:
    meta = data.get("metadata") or {}
    spec = data.get("spec") or {}
    out = [f"metadata.{k}: required" for k in ("name", "herd") if not meta.get(k)]
    out += [
        f"spec.{k}: required"
        for k in ("algorithm", "encryptedKey", "nonce", "ciphertext")
        if not spec.get(k)
    ]
    return out


def desired_objects(files: Iterable[_git.File], *, default_herd: str) -> list[Desired]:
    """Parse and validate every manifest; one ``Invalid`` lists every problem of every file.

    ``SealedSecret`` documents (``runink seal``) are checked for shape only and passed through
    unchanged: the API server opens them. A (kind, herd, name) defined twice is an error.
    """
    problems: list[errors.FieldError] = []
    out: list[Desired] = []
    seen: dict[Key, str] = {}
    for f in files:
        docs: list[schemas.Document] = []
        # Loading the YAML is most of the cost of a sync: a second load only for the rare files
        # that hold a SealedSecret (parse_manifests would refuse its unregistered kind).
        if SEALED_KIND.encode() in f.data:
            try:
                docs = schemas.load_documents(f.data, f.path)
            except errors.Invalid as e:
                problems.extend(e.errors or [errors.FieldError("", e.message, file=f.path)])
                continue
        sealed_docs = {d.index for d in docs if d.data.get("kind") == SEALED_KIND}
        if sealed_docs:
            for d in docs:
                if d.index in sealed_docs:
                    problems.extend(
                        errors.FieldError(
                            p.split(":")[0], "required", file=f.path, document=d.index, line=d.line
                        )
                        for p in _sealed_problems(d.data)
                    )
        try:
            manifests = (
                schemas.parse_manifests(f.data, f.path)
                if not sealed_docs
                else _parse_unsealed(f, [d for d in docs if d.index not in sealed_docs])
            )
        except errors.Invalid as e:
            problems.extend(e.errors or [errors.FieldError("", e.message, file=f.path)])
            continue
        items: list[tuple[Obj, bool, bool]] = [
            (dict(m.document.data), m.info.namespaced, False) for m in manifests
        ]
        items += [(dict(d.data), True, True) for d in docs if d.index in sealed_docs]
        for data, namespaced, sealed in items:
            meta = dict(data.get("metadata") or {})
            if namespaced and not meta.get("herd"):
                meta["herd"] = default_herd
            data["metadata"] = meta
            # The server stores an opened SealedSecret as a Secret: track it under that kind.
            kind = "Secret" if sealed else str(data["kind"])
            key: Key = (kind, meta.get("herd") if namespaced else None, str(meta["name"]))
            if key in seen:
                problems.append(
                    errors.FieldError(
                        "metadata.name",
                        f"{_show(key)} is also defined in {seen[key]}",
                        file=f.path,
                    )
                )
                continue
            seen[key] = f.path
            out.append(Desired(key, data, f.path, namespaced, sealed))
    if problems:
        raise errors.Invalid(
            "invalid manifests; nothing of this revision was applied", errors=problems
        )
    # Cluster-scoped objects (Herds first) before the objects that live in them.
    out.sort(key=lambda d: (d.namespaced, d.key[0] != "Herd", d.key))
    return out


def _parse_unsealed(f: _git.File, docs: list[schemas.Document]) -> list[schemas.Manifest]:
    """Validate the regular documents of a file that also holds SealedSecrets (line numbers kept:
    each document is validated through ``parse_manifests`` errors mapped back to the file)."""
    problems: list[errors.FieldError] = []
    out: list[schemas.Manifest] = []
    for d in docs:
        try:
            info = schemas.lookup(str(d.data.get("kind", "")))
            obj = schemas.validate(d.data)
        except errors.RuninkError as e:
            fes = e.errors if isinstance(e, errors.Invalid) and e.errors else []
            if not fes:
                problems.append(
                    errors.FieldError("kind", e.message, file=f.path, document=d.index, line=d.line)
                )
            for fe in fes:
                path = tuple(p for p in fe.path.replace("[", ".").replace("]", "").split(".") if p)
                problems.append(
                    dataclasses.replace(
                        fe, file=f.path, document=d.index, line=d.line_of(_path_keys(path))
                    )
                )
            continue
        out.append(schemas.Manifest(document=d, info=info, obj=obj))
    if problems:
        raise errors.Invalid(f"invalid manifest {f.path}", errors=problems)
    return out


def _path_keys(path: tuple[str, ...]) -> tuple[str | int, ...]:
    return tuple(int(p) if p.isdigit() else p for p in path)


def allowed_herds(source: Obj) -> set[str] | None:
    """The Herds a GitSource may write into; ``None`` means every Herd.

    targetHerds when set; else the source's own Herd; a ``clusterWide`` source without
    targetHerds (or one without a herd) may write into every Herd."""
    meta = source.get("metadata") or {}
    spec = source.get("spec") or {}
    targets = set(spec.get("targetHerds") or [])
    if targets:
        return targets
    if spec.get("clusterWide") or not meta.get("herd"):
        return None
    return {str(meta["herd"])}


def check_targets(source: Obj, desired: Iterable[Desired]) -> None:
    """``Forbidden`` naming every object outside the allowed Herds (the whole revision fails).

    Cluster-scoped objects (Herds, ClusterRoles, ...) need ``spec.clusterWide``."""
    spec = source.get("spec") or {}
    cluster_ok = bool(spec.get("clusterWide")) or not (source.get("metadata") or {}).get("herd")
    allowed = allowed_herds(source)
    bad: list[str] = []
    for d in desired:
        if not d.namespaced:
            if not cluster_ok:
                bad.append(f"{_show(d.key)} ({d.file}) is cluster-scoped (needs spec.clusterWide)")
        elif allowed is not None and d.key[1] not in allowed:
            bad.append(f"{_show(d.key)} ({d.file}) is in herd {d.key[1]!r}")
    if bad:
        where = ", ".join(sorted(allowed)) if allowed is not None else "any herd"
        raise errors.Forbidden(
            f"GitSource {_source_name(source)} may only write into {where}: "
            + "; ".join(bad)
            + ". Nothing of this revision was applied; move the objects or add the herd to "
            "spec.targetHerds",
            details={"objects": bad},
        )


def default_herd(source: Obj) -> str:
    herd = (source.get("metadata") or {}).get("herd")
    if herd:
        return str(herd)
    targets = (source.get("spec") or {}).get("targetHerds") or []
    return str(targets[0]) if targets else "default"


def _leaves(value: Any, prefix: tuple[str, ...], out: dict[tuple[str, ...], Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(v, (*prefix, str(k)), out)
    else:
        out[prefix] = value


def _owned(obj: Obj | None) -> dict[tuple[str, ...], Any]:
    """The fields field managers own (spec, labels, annotations) as leaf paths."""
    out: dict[tuple[str, ...], Any] = {}
    if obj is None:
        return out
    meta = obj.get("metadata") or {}
    for root, value in (
        (("spec",), obj.get("spec")),
        (("metadata", "labels"), meta.get("labels")),
        (("metadata", "annotations"), meta.get("annotations")),
    ):
        if value not in (None, {}):
            _leaves(value, root, out)
    return out


def changed_fields(before: Obj | None, after: Obj) -> list[str]:
    """Dotted paths whose value differs between two versions of an object (empty: in sync)."""
    a, b = _owned(before), _owned(after)
    return sorted(".".join(p) for p in set(a) | set(b) if a.get(p, _MISSING) != b.get(p, _MISSING))


_MISSING = object()


def _show(key: Key) -> str:
    kind, herd, name = key
    return f"{kind.lower()}/{name}" + (f" in herd {herd}" if herd else "")


def _source_name(source: Obj) -> str:
    meta = source.get("metadata") or {}
    return f"{meta.get('herd')}/{meta.get('name')}" if meta.get("herd") else str(meta.get("name"))


def field_manager(source: Obj) -> str:
    return MANAGER_PREFIX + str((source.get("metadata") or {}).get("name"))


def applied_as(source: Obj) -> str:
    """The identity a source applies as: its service account, else the controller's own.

    Recorded in status; the API server does not impersonate it yet (the security work wires it)."""
    sa = (source.get("spec") or {}).get("serviceAccount")
    herd = (source.get("metadata") or {}).get("herd") or default_herd(source)
    return f"system:serviceaccount:{herd}:{sa}" if sa else "system:controller:gitops"


def sync_wanted(old: Obj | None, new: Obj | None) -> bool:
    """Primary-kind predicate: spec changes and ``runink gitops sync`` requests, not status writes
    (the controller's own status writes must not loop back into a reconcile)."""
    if _controller.generation_changed(old, new):
        return True

    def requested(o: Obj | None) -> Any:
        return (((o or {}).get("metadata") or {}).get("annotations") or {}).get(SYNC_ANNOTATION)

    return bool(requested(old) != requested(new))


def inventory_keys(status: Obj) -> list[Key]:
    return [(str(e["kind"]), e.get("herd"), str(e["name"])) for e in status.get("inventory") or []]


# -- the reconciler ------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Outcome:
    key: Key
    action: Action
    fields: list[str]
    error: errors.RuninkError | None = None


class SyncError(Exception):
    """A sync that failed: what goes in status (``stalled``: retrying the same input cannot help)."""

    def __init__(self, reason: str, message: str, *, stalled: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.stalled = stalled


class GitSourceReconciler:
    """Reconciles one GitSource: resolve the ref, read and validate, apply or check drift, prune.

    Level-triggered: every call re-reads Git and the cluster. A new revision (or spec generation,
    or a previously failed sync) is *applied*; otherwise the call is a drift check with a
    server-side dry-run apply, reverted only with selfHeal.
    """

    def __init__(
        self,
        client: ApplyClient,
        *,
        recorder: Recorder | None = None,
        watcher: RepoWatcher | None = None,
        cache_dir: Path | None = None,
        concurrency: int = 8,
        jitter: float = 0.1,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.recorder = recorder
        self.watcher = watcher
        self.cache_dir = cache_dir if cache_dir is not None else Path("/var/cache/runink/git")
        self.concurrency = concurrency
        self.jitter = jitter
        self.rng = rng if rng is not None else random.Random()

    async def reconcile(self, request: _types.Request) -> _types.Result:
        try:
            source = await self.client.get(KIND, request.name, request.herd)
        except errors.NotFound:
            if self.watcher is not None:
                self.watcher.forget(request)
            return _types.Result()
        meta = source.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            # Objects it applied are left in place (orphaned), as Flux does without prune.
            if self.watcher is not None:
                self.watcher.forget(request)
            return _types.Result()
        spec = source.get("spec") or {}
        status: Obj = dict(source.get("status") or {})
        # Never empty: set_condition replaces an empty (falsy) status dict with a new one, and the
        # steps below keep a reference to this one.
        status.setdefault("conditions", [])
        interval = float(spec.get("intervalSeconds") or 120)
        work = {**source, "status": status}
        repo = _git.local_path(str(spec.get("url", "")))
        if self.watcher is not None:
            self.watcher.want(request, repo, spec.get("watch") or "commits")

        if spec.get("suspend"):
            _helpers.set_condition(
                work, "Reconciling", "False", "Suspended", "spec.suspend is true"
            )
            await self._write_status(source, work)
            return _types.Result()

        waiting = await self._dependencies_not_ready(source)
        if waiting:
            msg = f"waiting for GitSource {', '.join(waiting)} to be Ready"
            _helpers.set_condition(work, "Reconciling", "True", "DependencyNotReady", msg)
            _helpers.set_condition(work, "Ready", "False", "DependencyNotReady", msg)
            await self._write_status(source, work)
            return _types.Result(requeue_after=DEPENDENCY_POLL)

        try:
            revision, files = await self._read(spec, repo)
        except errors.RuninkError as e:
            await self._failed(
                source, work, SyncError("GitOperationFailed", e.message, stalled=False)
            )
            return _types.Result(requeue_after=min(interval, GIT_RETRY))

        generation = meta.get("generation")
        ready = _helpers.get_condition(source, "Ready") or {}
        fresh = (
            revision == status.get("syncedRevision")
            and generation == status.get("observedGeneration")
            and ready.get("status") == "True"
        )
        try:
            if fresh:
                await self._check_drift(source, work, files)
            else:
                await self._sync(source, work, revision, files)
        except SyncError as e:
            status["lastAttemptedRevision"] = revision
            await self._failed(source, work, e)
        return _types.Result(requeue_after=interval * (1.0 + self.rng.uniform(0, self.jitter)))

    async def read_desired(self, source: Obj) -> tuple[str, list[Desired]]:
        """The revision ``source`` follows now and its validated objects (``runink gitops diff``).

        Raises ``Invalid`` (file and line), ``Forbidden`` (a Herd not allowed), ``NotFound`` (no
        such ref or path) or ``Unavailable`` (git failed)."""
        spec = source.get("spec") or {}
        revision, files = await self._read(spec, _git.local_path(str(spec.get("url", ""))))
        desired = desired_objects(files, default_herd=default_herd(source))
        check_targets(source, desired)
        return revision, desired

    # -- steps ---------------------------------------------------------------------------------

    async def _dependencies_not_ready(self, source: Obj) -> list[str]:
        herd = (source.get("metadata") or {}).get("herd")
        waiting = []
        for name in (source.get("spec") or {}).get("dependsOn") or []:
            try:
                dep = await self.client.get(KIND, name, herd)
            except errors.NotFound:
                waiting.append(f"{name} (not found)")
                continue
            st = dep.get("status") or {}
            ready = _helpers.get_condition(dep, "Ready") or {}
            current = (
                ready.get("status") == "True"
                and st.get("observedGeneration") == (dep.get("metadata") or {}).get("generation")
                and st.get("syncedRevision") is not None
                and st.get("syncedRevision") == st.get("lastAttemptedRevision")
            )
            if not current:
                waiting.append(name)
        return waiting

    async def _read(self, spec: Obj, repo: Path | None) -> tuple[str, list[_git.File]]:
        url = str(spec.get("url", ""))
        ref_spec = spec.get("ref") or {}
        ref = _git.Ref(ref_spec.get("branch"), ref_spec.get("tag"), ref_spec.get("commit"))
        path = str(spec.get("path") or ".")
        if repo is None:
            repo, commit = await _git.fetch(url, ref, self.cache_dir)
        elif spec.get("watch") == "worktree":
            files, digest = await asyncio.to_thread(_git.read_worktree, repo, path)
            head = await _git.resolve(repo, _git.Ref(commit="HEAD"))
            return f"{head}+worktree.{digest[:12]}", files
        else:
            commit = await _git.resolve(repo, ref)
        return commit, await _git.read_tree(repo, commit, path)

    def _validated(self, source: Obj, files: list[_git.File]) -> list[Desired]:
        spec = source.get("spec") or {}
        try:
            desired = desired_objects(files, default_herd=default_herd(source))
        except errors.Invalid as e:
            raise SyncError("ValidationFailed", e.message, stalled=True) from None
        try:
            check_targets(source, desired)
        except errors.Forbidden as e:
            raise SyncError("HerdNotAllowed", e.message, stalled=True) from None
        if not desired and not spec.get("allowEmpty"):
            raise SyncError(
                "EmptyRevision",
                f"no manifests under path {spec.get('path') or '.'!r}; refusing to sync an empty "
                "set (it would prune everything): set spec.allowEmpty to allow it",
                stalled=True,
            )
        return desired

    async def _sync(self, source: Obj, work: Obj, revision: str, files: list[_git.File]) -> None:
        status: Obj = work["status"]
        spec = source.get("spec") or {}
        _helpers.set_condition(
            work, "Reconciling", "True", "Progressing", f"syncing {revision[:12]}"
        )
        desired = self._validated(source, files)
        manager = field_manager(source)
        live = await self._live(desired)
        outcomes = await self._apply_all(desired, live, manager, mode="sync")
        failed = [o for o in outcomes if o.error is not None]
        wanted = {d.key for d in desired}
        old_inventory = inventory_keys(status)
        if failed:
            # Partial: keep tracking everything we may have written, prune nothing.
            applied = {o.key for o in outcomes if o.error is None}
            status["inventory"] = _inventory(set(old_inventory) | applied)
            first = "; ".join(f"{_show(o.key)}: {o.error}" for o in failed[:5])
            raise SyncError(
                "ApplyFailed",
                f"{len(failed)} of {len(desired)} objects failed to apply at {revision[:12]}: {first}",
                stalled=False,
            )
        if spec.get("prune"):
            stale = [k for k in old_inventory if k not in wanted]
            outcomes += await self._prune(stale)
        status["inventory"] = _inventory(wanted)
        counts = {
            a: sum(o.action == a for o in outcomes) for a in ("created", "configured", "pruned")
        }
        status.update(
            syncedRevision=revision,
            lastAttemptedRevision=revision,
            lastSyncTime=_helpers.utc_now(),
            lastError=None,
            appliedAs=applied_as(source),
            diffSummary={
                "created": counts["created"],
                "updated": counts["configured"],
                "deleted": counts["pruned"],
                "unchanged": sum(o.action == "unchanged" for o in outcomes),
            },
            objects=_rows(outcomes),
        )
        msg = (
            f"Applied revision {revision[:12]}: {counts['created']} created, "
            f"{counts['configured']} configured, {counts['pruned']} pruned"
        )
        _helpers.set_condition(work, "Ready", "True", "Synced", msg)
        _helpers.set_condition(work, "Stalled", "False", "Synced")
        _helpers.set_condition(work, "Reconciling", "False", "Synced", msg)
        await self._write_status(source, work)
        await self._event(source, "Normal", "Synced", msg)

    async def _check_drift(self, source: Obj, work: Obj, files: list[_git.File]) -> None:
        status: Obj = work["status"]
        heal = bool((source.get("spec") or {}).get("selfHeal"))
        desired = self._validated(source, files)
        live = await self._live(desired)
        outcomes = await self._apply_all(
            desired, live, field_manager(source), mode="heal" if heal else "check"
        )
        failed = [o for o in outcomes if o.error is not None]
        if failed:
            first = "; ".join(f"{_show(o.key)}: {o.error}" for o in failed[:5])
            raise SyncError("DriftCheckFailed", f"drift check failed: {first}", stalled=False)
        drifted = [o for o in outcomes if o.action in ("drifted", "healed")]
        status["objects"] = _rows(outcomes)
        if drifted:
            what = "; ".join(f"{_show(o.key)}: {', '.join(o.fields)}" for o in drifted[:10])
            if heal:
                status["lastSyncTime"] = _helpers.utc_now()
                await self._event(
                    source, "Normal", "DriftReverted", f"reverted edits made outside Git: {what}"
                )
            else:
                await self._event(
                    source, "Warning", "DriftDetected", f"live objects differ from Git: {what}"
                )
        await self._write_status(source, work)

    async def _live(self, desired: list[Desired]) -> dict[Key, Obj]:
        """The current objects, one List per (kind, herd) rather than one Get per object."""
        out: dict[Key, Obj] = {}
        for kind, herd in sorted({(d.key[0], d.key[1]) for d in desired}, key=str):
            token: str | None = None
            while True:
                try:
                    page = await self.client.list(kind, herd, limit=500, continue_token=token)
                except errors.NotFound:
                    break  # the herd does not exist yet: created by this revision
                for obj in page.items:
                    m = obj.get("metadata") or {}
                    out[(kind, m.get("herd"), str(m.get("name")))] = obj
                token = page.continue_token
                if not token:
                    break
        return out

    async def _apply_all(
        self,
        desired: list[Desired],
        live: dict[Key, Obj],
        manager: str,
        *,
        mode: Literal["sync", "check", "heal"],
    ) -> list[_Outcome]:
        sem = asyncio.Semaphore(self.concurrency)
        results: dict[Key, _Outcome] = {}

        async def one(d: Desired) -> None:
            async with sem:
                results[d.key] = await self._apply_one(d, live.get(d.key), manager, mode)

        # Cluster-scoped objects (Herds) first: the namespaced ones may live in them.
        for phase in (False, True):
            async with asyncio.TaskGroup() as tg:
                for d in desired:
                    if d.namespaced == phase:
                        tg.create_task(one(d))
        return [results[d.key] for d in desired]

    async def _apply_one(
        self, d: Desired, before: Obj | None, manager: str, mode: Literal["sync", "check", "heal"]
    ) -> _Outcome:
        try:
            if mode == "sync":
                after = await self.client.apply(d.obj, manager, force=True)
                if before is None:
                    return _Outcome(d.key, "created", [])
                fields = [] if d.sealed else changed_fields(before, after)
                return _Outcome(d.key, "configured" if fields else "unchanged", fields)
            if d.sealed:
                # Re-sealing yields new ciphertext each time; sealed Secrets are checked on new
                # revisions only.
                return _Outcome(d.key, "unchanged", [])
            would = await self.client.apply(d.obj, manager, force=True, dry_run=True)
            fields = ["(object is missing)"] if before is None else changed_fields(before, would)
            if not fields:
                return _Outcome(d.key, "unchanged", [])
            if mode == "heal":
                await self.client.apply(d.obj, manager, force=True)
                return _Outcome(d.key, "healed", fields)
            return _Outcome(d.key, "drifted", fields)
        except errors.RuninkError as e:
            return _Outcome(d.key, "unchanged", [], error=e)

    async def _prune(self, stale: list[Key]) -> list[_Outcome]:
        out = []
        # Namespaced objects before the Herds that hold them.
        for kind, herd, name in sorted(stale, key=lambda k: (k[1] is None, k[0], k[1] or "", k[2])):
            with contextlib.suppress(errors.NotFound):  # already gone: the goal is reached
                await self.client.delete(kind, name, herd)
            out.append(_Outcome((kind, herd, name), "pruned", []))
        return out

    async def _failed(self, source: Obj, work: Obj, e: SyncError) -> None:
        status: Obj = work["status"]
        status["lastError"] = e.message
        _helpers.set_condition(work, "Ready", "False", e.reason, e.message)
        _helpers.set_condition(
            work, "Stalled", "True" if e.stalled else "False", e.reason, e.message
        )
        _helpers.set_condition(work, "Reconciling", "False", e.reason, e.message)
        await self._write_status(source, work)
        await self._event(source, "Warning", e.reason, e.message)

    async def _write_status(self, source: Obj, work: Obj) -> None:
        if work.get("status") == (source.get("status") or {}):
            return  # nothing changed: no write, no watch event
        await self.client.update_status(work)

    async def _event(
        self, source: Obj, type_: Literal["Normal", "Warning"], reason: str, message: str
    ) -> None:
        if self.recorder is None:
            return
        try:
            await self.recorder.record(source, type_, reason, message[:1000])
        except errors.RuninkError as e:  # Events are best effort; status already says it
            log.info("could not record an Event for %s: %s", _source_name(source), e)


def _inventory(keys: Iterable[Key]) -> list[Obj]:
    return [
        {"kind": k, "herd": h, "name": n} if h else {"kind": k, "name": n}
        for k, h, n in sorted(keys, key=lambda key: (key[0], key[1] or "", key[2]))
    ]


def _rows(outcomes: list[_Outcome]) -> list[Obj]:
    rows = []
    for o in outcomes:
        if o.action == "unchanged":
            continue
        row: Obj = {"kind": o.key[0], "name": o.key[2], "action": o.action, "fields": o.fields[:20]}
        if o.key[1]:
            row["herd"] = o.key[1]
        rows.append(row)
    return rows[:MAX_OBJECT_ROWS]


# -- watching repositories -----------------------------------------------------------------------


def _git_filter(git_dir: Path) -> Callable[[watchfiles.Change, str], bool]:
    """Only what moves a ref: HEAD, packed-refs, refs/** (not objects/, not lock files)."""

    def accept(_change: watchfiles.Change, path: str) -> bool:
        try:
            rel = Path(path).relative_to(git_dir).as_posix()
        except ValueError:
            return False
        if rel.endswith(".lock"):
            return False
        return rel in ("HEAD", "packed-refs") or rel.startswith("refs/")

    return accept


class RepoWatcher:
    """Watches local repositories with watchfiles and enqueues the GitSources that follow them.

    ``want``/``forget`` are called by the reconciler (synchronously, cheap); :meth:`run` owns one
    watch task per repository in a TaskGroup and restarts the set when it changes. A watch that
    fails (the directory vanished) is logged and retried on the next ``want``; the interval keeps
    the source syncing meanwhile.
    """

    def __init__(self, enqueue: Callable[[_types.Request], None], *, debounce_ms: int = 50) -> None:
        self._enqueue = enqueue
        self._debounce_ms = debounce_ms
        self._wanted: dict[_types.Request, tuple[Path, str]] = {}
        self._changed = asyncio.Event()
        self.running: dict[_types.Request, tuple[Path, str]] = {}

    def want(self, request: _types.Request, repo: Path | None, mode: str) -> None:
        if repo is None:  # a remote URL: the interval is the only trigger
            self.forget(request)
            return
        target = (repo.resolve(), mode)
        if self._wanted.get(request) != target:
            self._wanted[request] = target
            self._changed.set()

    def forget(self, request: _types.Request) -> None:
        if self._wanted.pop(request, None) is not None:
            self._changed.set()

    async def run(self) -> None:
        """Run until cancelled."""
        tasks: dict[_types.Request, tuple[tuple[Path, str], asyncio.Task[None]]] = {}
        try:
            async with asyncio.TaskGroup() as tg:
                while True:
                    await self._changed.wait()
                    self._changed.clear()
                    for req, (target, task) in list(tasks.items()):
                        if self._wanted.get(req) != target or task.done():
                            task.cancel()
                            with contextlib.suppress(asyncio.CancelledError):
                                await task
                            del tasks[req]
                            self.running.pop(req, None)
                    for req, target in self._wanted.items():
                        if req not in tasks:
                            tasks[req] = (target, tg.create_task(self._watch(req, *target)))
        finally:
            self.running.clear()

    async def _watch(self, request: _types.Request, repo: Path, mode: str) -> None:
        try:
            if mode == "worktree":
                path = repo
                filt: Callable[[watchfiles.Change, str], bool] | None = watchfiles.DefaultFilter()
            else:
                path = await _git.git_dir(repo)
                filt = _git_filter(path)
            stop = asyncio.Event()
            self.running[request] = (repo, mode)
            # A change between the reconcile's read and this watch starting would otherwise wait
            # for the interval: reconcile once more now.
            self._enqueue(request)
            try:
                async for _changes in watchfiles.awatch(
                    path, watch_filter=filt, debounce=self._debounce_ms, step=20, stop_event=stop
                ):
                    self._enqueue(request)
            finally:
                stop.set()
        except (errors.RuninkError, OSError) as e:
            log.warning("cannot watch %s for %s: %s (interval only)", repo, request, e)
        finally:
            self.running.pop(request, None)


# -- wiring --------------------------------------------------------------------------------------


class GitOps:
    """The GitOps controller and its repository watcher, ready for a Manager.

    ``manager.add(g.controller)`` and run ``g.run_watches()`` beside ``manager.run()`` in the
    composition root's TaskGroup.
    """

    def __init__(
        self,
        client: ApplyClient,
        *,
        recorder: Recorder | None = None,
        name: str = "gitops",
        cache_dir: Path | None = None,
        concurrency: int = 8,
        debounce_ms: int = 50,
        rng: random.Random | None = None,
    ) -> None:
        self.watcher = RepoWatcher(self._enqueue, debounce_ms=debounce_ms)
        self.reconciler = GitSourceReconciler(
            client,
            recorder=recorder,
            watcher=self.watcher,
            cache_dir=cache_dir,
            concurrency=concurrency,
            rng=rng,
        )
        self.controller = (
            _controller.Controller.builder(name)
            .for_kind(KIND)
            .with_predicates(sync_wanted)
            .max_concurrent(2)
            .build(self.reconciler)
        )

    def _enqueue(self, request: _types.Request) -> None:
        queue = self.controller.queue
        if queue is not None and not queue.shutting_down:
            queue.add(request)

    async def run_watches(self) -> None:
        """Watch the repositories of the GitSources reconciled so far; runs until cancelled."""
        await self.watcher.run()


__all__ = [
    "KIND",
    "MANAGER_PREFIX",
    "SYNC_ANNOTATION",
    "ApplyClient",
    "Desired",
    "GitOps",
    "GitSourceReconciler",
    "Recorder",
    "RepoWatcher",
    "allowed_herds",
    "applied_as",
    "changed_fields",
    "check_targets",
    "desired_objects",
    "field_manager",
    "inventory_keys",
    "sync_wanted",
]
