"""The kind registry: (apiVersion, kind) -> model, names the CLI accepts, and printer columns.

The codec, the API server and the CLI (`get`, `explain`, `api-resources`) look kinds up here.
Plugins add their kinds with ``register``. Lookups by kind, plural, singular or short name are
case-insensitive; an unknown name is an ``errors.Invalid`` with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Literal

import pydantic

from runink.schemas import _base, _cluster, _governance, _pipelines, errors

ColumnFormat = Literal["string", "age", "count", "duration", "join", "bytes"]


@dataclass(frozen=True, slots=True)
class Column:
    """A printer column of `runink get`.

    ``json_path`` is a dotted path from the object root (".status.phase"). ``format`` says how to
    render it: string as is, age (time since the timestamp), count (length of a list or map),
    duration (from the timestamp to ``end_json_path`` or now), join (a list joined with ',').
    """

    header: str
    json_path: str
    wide_only: bool = False
    format: ColumnFormat = "string"
    end_json_path: str | None = None


@dataclass(frozen=True, slots=True)
class KindInfo:
    """Everything the rest of Runink needs to know about one kind."""

    api_version: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    model: type[pydantic.BaseModel]
    columns: tuple[Column, ...]


_BY_KEY: dict[tuple[str, str], KindInfo] = {}
_BY_NAME: dict[str, KindInfo] = {}


def _names(info: KindInfo) -> list[str]:
    return [n.lower() for n in (info.kind, info.plural, info.singular, *info.short_names)]


def register(info: KindInfo) -> None:
    """Add a kind. A taken (apiVersion, kind) or a name already used by another kind is an error."""
    key = (info.api_version, info.kind)
    if key in _BY_KEY:
        raise errors.AlreadyExists(f"kind {info.kind} ({info.api_version}) is already registered")
    for n in _names(info):
        other = _BY_NAME.get(n)
        if other is not None and other is not info and other.kind != info.kind:
            raise errors.AlreadyExists(
                f"name {n!r} of kind {info.kind} is already used by kind {other.kind}"
            )
    _BY_KEY[key] = info
    for n in _names(info):
        _BY_NAME.setdefault(n, info)


def unregister(api_version: str, kind: str) -> None:
    """Remove a kind (for tests of plugins)."""
    info = _BY_KEY.pop((api_version, kind), None)
    if info is None:
        return
    for n in _names(info):
        if _BY_NAME.get(n) is info:
            del _BY_NAME[n]


def lookup(name: str) -> KindInfo:
    """Resolve a kind, plural, singular or short name (any case), e.g. 'pl', 'PipelineRuns', 'run'."""
    info = _BY_NAME.get(name.strip().lower())
    if info is not None:
        return info
    close = difflib.get_close_matches(name.lower(), list(_BY_NAME), n=1, cutoff=0.6)
    hint = f" (did you mean {_BY_NAME[close[0]].plural!r}?)" if close else ""
    raise errors.Invalid(
        f"unknown resource type {name!r}{hint}; `runink api-resources` lists them",
        details={"name": name},
    )


def get(api_version: str, kind: str) -> KindInfo:
    """The kind for an exact (apiVersion, kind) pair as found in a manifest."""
    info = _BY_KEY.get((api_version, kind))
    if info is not None:
        return info
    same_kind = [i for (_, k), i in _BY_KEY.items() if k == kind]
    if same_kind:
        versions = ", ".join(sorted(i.api_version for i in same_kind))
        raise errors.Invalid(
            f"kind {kind} has no apiVersion {api_version!r} (use {versions})",
            errors=[
                errors.FieldError(
                    path="apiVersion", message=f"expected {versions}, got {api_version!r}"
                )
            ],
        )
    kinds = sorted({k for _, k in _BY_KEY})
    close = difflib.get_close_matches(kind, kinds, n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise errors.Invalid(
        f"unknown kind {kind!r}{hint}",
        errors=[errors.FieldError(path="kind", message=f"unknown kind {kind!r}{hint}")],
    )


def all_kinds() -> list[KindInfo]:
    """Every registered kind, sorted by kind name."""
    return sorted(_BY_KEY.values(), key=lambda i: (i.kind, i.api_version))


def _c(
    header: str,
    path: str,
    fmt: ColumnFormat = "string",
    *,
    wide: bool = False,
    end: str | None = None,
) -> Column:
    return Column(header, path, wide, fmt, end)


NAME = _c("NAME", ".metadata.name")
AGE = _c("AGE", ".metadata.creationTimestamp", "age")
READY = _c("READY", ".status.conditions[?type=Ready].status")


def _builtin(
    kind: str,
    plural: str,
    short: tuple[str, ...],
    namespaced: bool,
    model: type[pydantic.BaseModel],
    *columns: Column,
) -> KindInfo:
    return KindInfo(
        api_version=_base.API_VERSION,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        short_names=short,
        namespaced=namespaced,
        model=model,
        columns=(NAME, *columns),
    )


_BUILTINS = (
    _builtin(
        "Herd",
        "herds",
        ("hd",),
        False,
        _cluster.Herd,
        _c("CPU", ".spec.quota.cpu"),
        _c("MEMORY", ".spec.quota.memory"),
        _c("SLICES", ".spec.quota.slices"),
        _c("USED-CPU", ".status.usage.cpu", wide=True),
        _c("USED-MEMORY", ".status.usage.memory", wide=True),
        AGE,
    ),
    _builtin(
        "Pipeline",
        "pipelines",
        ("pl",),
        True,
        _pipelines.Pipeline,
        _c("STEPS", ".spec.steps", "count"),
        _c("SCHEDULE", ".spec.schedule.cron"),
        _c("SUSPENDED", ".spec.schedule.suspend", wide=True),
        _c("LAST-SCHEDULE", ".status.lastScheduleTime", "age", wide=True),
        AGE,
    ),
    _builtin(
        "PipelineRun",
        "pipelineruns",
        ("run", "runs", "pr"),
        True,
        _pipelines.PipelineRun,
        _c("PIPELINE", ".spec.pipelineRef.name"),
        _c("PHASE", ".status.phase"),
        _c("STARTED", ".status.startTime", "age"),
        _c("DURATION", ".status.startTime", "duration", end=".status.completionTime"),
        _c("STEPS", ".status.steps", "count", wide=True),
    ),
    _builtin(
        "Slice",
        "slices",
        ("sl",),
        True,
        _pipelines.Slice,
        _c("RUN", ".spec.run", wide=True),
        _c("STEP", ".spec.step"),
        _c("ATTEMPT", ".spec.attempt", wide=True),
        _c("NODE", ".spec.nodeName"),
        _c("PHASE", ".status.phase"),
        _c("REASON", ".status.reason", wide=True),
        _c("EXIT", ".status.exitCode", wide=True),
        AGE,
    ),
    _builtin(
        "Node",
        "nodes",
        ("no",),
        False,
        _cluster.Node,
        READY,
        _c("CPU", ".status.allocatable.cpu"),
        _c("MEMORY", ".status.allocatable.memory", "bytes"),
        _c("GPU", ".status.allocatable.gpu", wide=True),
        _c("UNSCHEDULABLE", ".spec.unschedulable", wide=True),
        _c("VERSION", ".status.agentVersion", wide=True),
        AGE,
    ),
    _builtin(
        "Secret",
        "secrets",
        (),
        True,
        _cluster.Secret,
        _c("TYPE", ".spec.type"),
        AGE,
    ),
    _builtin("ServiceAccount", "serviceaccounts", ("sa",), True, _cluster.ServiceAccount, AGE),
    _builtin("Role", "roles", (), True, _cluster.Role, _c("RULES", ".spec.rules", "count"), AGE),
    _builtin(
        "ClusterRole",
        "clusterroles",
        (),
        False,
        _cluster.ClusterRole,
        _c("RULES", ".spec.rules", "count"),
        AGE,
    ),
    _builtin(
        "RoleBinding",
        "rolebindings",
        ("rb",),
        True,
        _cluster.RoleBinding,
        _c("ROLE", ".spec.roleRef.name"),
        _c("SUBJECTS", ".spec.subjects", "count"),
        AGE,
    ),
    _builtin(
        "ClusterRoleBinding",
        "clusterrolebindings",
        ("crb",),
        False,
        _cluster.ClusterRoleBinding,
        _c("ROLE", ".spec.roleRef.name"),
        _c("SUBJECTS", ".spec.subjects", "count"),
        AGE,
    ),
    _builtin(
        "Dataset",
        "datasets",
        ("ds",),
        True,
        _governance.Dataset,
        _c("URI", ".spec.uri"),
        _c("OWNERS", ".spec.owners", "join", wide=True),
        _c("TAGS", ".spec.tags", "join", wide=True),
        AGE,
    ),
    _builtin(
        "QualityRule",
        "qualityrules",
        ("qr",),
        True,
        _governance.QualityRule,
        _c("DATASET", ".spec.dataset"),
        _c("CHECKS", ".spec.checks", "count"),
        _c("BLOCKING", ".spec.blocking"),
        AGE,
    ),
    _builtin(
        "Annotation",
        "annotations",
        ("ann",),
        True,
        _governance.Annotation,
        _c("TYPE", ".spec.annotationType"),
        _c("DATASET", ".spec.annotatedDataRef.dataset"),
        _c("REVIEW", ".spec.provenance.reviewState"),
        _c("MODEL", ".spec.sourceModel", wide=True),
        AGE,
    ),
    _builtin(
        "GitSource",
        "gitsources",
        ("gs",),
        True,
        _cluster.GitSource,
        _c("URL", ".spec.url"),
        _c("REVISION", ".status.syncedRevision"),
        READY,
        _c("SUSPENDED", ".spec.suspend", wide=True),
        AGE,
    ),
    _builtin(
        "Event",
        "events",
        ("ev",),
        True,
        _cluster.Event,
        _c("LAST-SEEN", ".spec.lastTimestamp", "age"),
        _c("TYPE", ".spec.type"),
        _c("REASON", ".spec.reason"),
        _c("OBJECT", ".spec.involvedObject.name"),
        _c("COUNT", ".spec.count", wide=True),
        _c("MESSAGE", ".spec.message"),
    ),
)

for _info in _BUILTINS:
    register(_info)

__all__ = [
    "Column",
    "ColumnFormat",
    "KindInfo",
    "all_kinds",
    "get",
    "lookup",
    "register",
    "unregister",
]
