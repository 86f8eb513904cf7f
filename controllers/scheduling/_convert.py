"""Pure converters from the JSON dicts the Barn stores (Node, Slice, Herd) to a scheduler Snapshot.

The scheduler controller lists these kinds from its informer caches and calls
``snapshot_from_objects``; nothing here reads the store itself. Usage is derived from the slices,
not from Herd or Node status (which may lag): a slice with ``spec.nodeName`` that has not
Succeeded or Failed counts against its node and its Herd; one without is pending unless it is
being deleted. Quantities go through ``runink.schemas.quantity``; a malformed field raises
``errors.Invalid`` naming the object and the field path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal, TypeVar, cast

from runink.controllers.scheduling import _model
from runink.schemas import errors, quantity

_T = TypeVar("_T")
_TERMINAL = frozenset({"Succeeded", "Failed"})
_EFFECTS = frozenset({"NoSchedule", "PreferNoSchedule", "NoExecute"})
_LABEL_OPS = frozenset({"In", "NotIn", "Exists", "DoesNotExist"})


class _Bad(Exception):
    """A field-level problem, turned into errors.Invalid with the object's identity."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


def snapshot_from_objects(
    nodes: list[dict[str, Any]],
    slices: list[dict[str, Any]],
    herds: list[dict[str, Any]],
    *,
    now: float,
    policy: _model.Policy = "binpack",
) -> _model.Snapshot:
    """Build the snapshot for one pass from Node, Slice and Herd objects (any order).

    Slices of a Herd that has no Herd object are scheduled without a quota. ``now`` is accepted
    for symmetry with ``schedule``; no conversion depends on it today.
    """
    del now
    node_alloc: dict[str, _model.Resources] = {}
    node_parts: dict[str, dict[str, Any]] = {}
    for obj in nodes:
        name, parts = _guard(obj, "Node", _node_parts)
        node_parts[name] = parts
        node_alloc[name] = parts["allocatable"]

    used_on_node: dict[str, list[int]] = {}
    used_by_herd: dict[str, list[int]] = {}
    pending: list[_model.PendingSlice] = []
    interner: dict[object, object] = {}
    for obj in slices:
        _, item = _guard(obj, "Slice", lambda o: _slice_parts(o, interner))
        if item is None:
            continue
        if isinstance(item, _model.PendingSlice):
            pending.append(item)
            continue
        herd, node_name, cpu, memory, gpu = item
        for acc in (
            used_on_node.setdefault(node_name, [0, 0, 0, 0]),
            used_by_herd.setdefault(herd, [0, 0, 0, 0]),
        ):
            acc[0] += cpu
            acc[1] += memory
            acc[2] += gpu
            acc[3] += 1

    infos = []
    for name, parts in node_parts.items():
        u = used_on_node.get(name, [0, 0, 0, 0])
        infos.append(
            _model.NodeInfo(
                name=name,
                allocatable=parts["allocatable"],
                used=_model.Resources(u[0], u[1], u[2], u[3]),
                labels=parts["labels"],
                taints=parts["taints"],
                ready=parts["ready"],
                unschedulable=parts["unschedulable"],
            )
        )

    quotas = []
    for obj in herds:
        name, q = _guard(obj, "Herd", _herd_quota)
        u = used_by_herd.get(name, [0, 0, 0, 0])
        quotas.append(
            _model.HerdQuota(
                herd=name,
                cpu=q[0],
                memory=q[1],
                gpu=q[2],
                slices=q[3],
                used=_model.Resources(u[0], u[1], u[2], u[3]),
            )
        )
    return _model.Snapshot(
        nodes=tuple(infos), pending=tuple(pending), herds=tuple(quotas), policy=policy
    )


def _guard(
    obj: Mapping[str, Any], kind: str, fn: Callable[[Mapping[str, Any]], _T]
) -> tuple[str, _T]:
    meta = obj.get("metadata") or {}
    name = meta.get("name")
    herd = meta.get("herd")
    ident = f"{kind} {herd}/{name}" if herd else f"{kind} {name}"
    if not isinstance(name, str) or not name:
        raise errors.Invalid(
            f"{ident}: cannot schedule", errors=[errors.FieldError("metadata.name", "missing")]
        )
    try:
        return name, fn(obj)
    except _Bad as e:
        raise errors.Invalid(
            f"{ident}: cannot schedule", errors=[errors.FieldError(e.path, e.message)]
        ) from e


def _get(d: Mapping[str, Any], path: str) -> Any:
    # Barn objects are decoded JSON, so plain dicts (an isinstance(Mapping) check per field
    # costs more than the rest of the conversion).
    cur: Any = d
    for part in path.split("."):
        if type(cur) is not dict:
            return None
        cur = cur.get(part)
    return cur


_PARSED: dict[tuple[Callable[[Any], int], type, object], int] = {}


def _quantity(parse: Callable[[Any], int], value: Any, path: str) -> int:
    # A cluster repeats a handful of quantity strings; parsing each once keeps conversion cheap.
    # The cache is bounded by clearing it, so a hostile stream of distinct values cannot grow it.
    key: tuple[Callable[[Any], int], type, object] | None = (parse, type(value), value)
    try:
        return _PARSED[(parse, type(value), value)]
    except KeyError:
        pass
    except TypeError:  # unhashable value: let the parser reject it
        key = None
    try:
        result = parse(value)
    except errors.Invalid as e:
        raise _Bad(path, e.message) from e
    if key is not None:
        if len(_PARSED) > 4096:
            _PARSED.clear()
        _PARSED[key] = result
    return result


def _count(value: Any, path: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Bad(path, f"expected a non-negative integer, got {value!r}")
    return value


def _node_parts(obj: Mapping[str, Any]) -> dict[str, Any]:
    status = obj.get("status") or {}
    alloc_path = "status.allocatable" if status.get("allocatable") else "status.capacity"
    alloc = _get(obj, alloc_path) or {}
    slices_cap = alloc.get("slices")
    allocatable = _model.Resources(
        cpu=_quantity(quantity.parse_cpu, alloc.get("cpu", 0), f"{alloc_path}.cpu"),
        memory=_quantity(quantity.parse_memory, alloc.get("memory", 0), f"{alloc_path}.memory"),
        gpu=_count(alloc.get("gpu", 0), f"{alloc_path}.gpu"),
        slices=_model.UNLIMITED
        if slices_cap is None
        else _count(slices_cap, f"{alloc_path}.slices"),
    )
    ready = any(
        isinstance(c, Mapping) and c.get("type") == "Ready" and c.get("status") in ("True", True)
        for c in status.get("conditions") or ()
    )
    taints = []
    for n, t in enumerate(_get(obj, "spec.taints") or ()):
        effect = t.get("effect", "NoSchedule")
        if effect not in _EFFECTS:
            raise _Bad(f"spec.taints[{n}].effect", f"unknown effect {effect!r}")
        taints.append(_model.Taint(str(t.get("key", "")), str(t.get("value", "") or ""), effect))
    meta = obj.get("metadata") or {}
    return {
        "allocatable": allocatable,
        "labels": dict(meta.get("labels") or {}),
        "taints": tuple(taints),
        "ready": ready,
        # A node being deleted takes no new work.
        "unschedulable": bool(_get(obj, "spec.unschedulable"))
        or bool(meta.get("deletionTimestamp")),
    }


def _slice_parts(
    obj: Mapping[str, Any], interner: dict[object, object]
) -> _model.PendingSlice | tuple[str, str, int, int, int] | None:
    """A PendingSlice, a bound slice's (herd, node, cpu, memory, gpu), or None (not counted)."""
    meta = obj.get("metadata") or {}
    herd = meta.get("herd")
    if not isinstance(herd, str) or not herd:
        raise _Bad("metadata.herd", "a Slice belongs to a Herd")
    if _get(obj, "status.phase") in _TERMINAL:
        return None
    res = _get(obj, "spec.resources") or {}
    cpu = _quantity(quantity.parse_cpu, res.get("cpu", 0), "spec.resources.cpu")
    memory = _quantity(quantity.parse_memory, res.get("memory", 0), "spec.resources.memory")
    gpu = _count(res.get("gpu", 0), "spec.resources.gpu")
    node_name = _get(obj, "spec.nodeName")
    if node_name:
        return (herd, str(node_name), cpu, memory, gpu)
    if meta.get("deletionTimestamp"):
        return None

    def intern(value: _T) -> _T:
        # Equal constraints become one object, so the scheduler groups them by identity cheaply.
        return cast(_T, interner.setdefault(value, value))

    selector_items = tuple(
        sorted((str(k), str(v)) for k, v in (_get(obj, "spec.nodeSelector") or {}).items())
    )
    selector = cast(
        dict[str, str], interner.setdefault(("selector", selector_items), dict(selector_items))
    )
    priority = _get(obj, "spec.priority")
    if priority is None:
        priority = 0
    elif isinstance(priority, bool) or not isinstance(priority, int):
        raise _Bad("spec.priority", f"expected an integer, got {priority!r}")
    return _model.PendingSlice(
        key=_model.SliceKey(herd, str(meta["name"])),
        cpu=cpu,
        memory=memory,
        gpu=gpu,
        node_selector=selector,
        affinity=intern(_affinity(_get(obj, "spec.affinity"))),
        tolerations=intern(_tolerations(_get(obj, "spec.tolerations"))),
        locality=intern(_locality(_get(obj, "spec.locality"))),
        priority=priority,
        creation=_timestamp(meta.get("creationTimestamp")),
    )


def _timestamp(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    try:
        return datetime.fromisoformat(str(value)).timestamp()
    except ValueError as e:
        raise _Bad("metadata.creationTimestamp", f"not an RFC 3339 time: {value!r}") from e


def _requirements(exprs: Any, path: str) -> tuple[_model.LabelRequirement, ...]:
    out = []
    for n, e in enumerate(exprs or ()):
        op = e.get("operator")
        if op not in _LABEL_OPS:
            raise _Bad(
                f"{path}[{n}].operator", f"expected In, NotIn, Exists or DoesNotExist, got {op!r}"
            )
        values = tuple(sorted(str(v) for v in e.get("values") or ()))
        if op in ("In", "NotIn") and not values:
            raise _Bad(f"{path}[{n}].values", f"{op} needs at least one value")
        out.append(_model.LabelRequirement(str(e.get("key", "")), op, values))
    return tuple(out)


def _affinity(spec: Any) -> _model.NodeAffinity:
    """Either Runink's short form ``{required: [expr...], preferred: [{weight, matchExpressions}]}``
    or Kubernetes' ``{nodeAffinity: {requiredDuringScheduling..., preferredDuringScheduling...}}``."""
    if not spec:
        return _model.NodeAffinity()
    required: list[tuple[_model.LabelRequirement, ...]] = []
    preferred: list[_model.PreferredTerm] = []
    if "nodeAffinity" in spec:
        na = spec["nodeAffinity"] or {}
        base = "spec.affinity.nodeAffinity"
        req = na.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
        for n, term in enumerate(req.get("nodeSelectorTerms") or ()):
            p = f"{base}.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[{n}].matchExpressions"
            required.append(_requirements(term.get("matchExpressions"), p))
        for n, pref in enumerate(na.get("preferredDuringSchedulingIgnoredDuringExecution") or ()):
            p = f"{base}.preferredDuringSchedulingIgnoredDuringExecution[{n}]"
            exprs = (pref.get("preference") or {}).get("matchExpressions")
            preferred.append(
                _model.PreferredTerm(
                    _count(pref.get("weight", 1), f"{p}.weight"),
                    _requirements(exprs, f"{p}.preference.matchExpressions"),
                )
            )
    else:
        if spec.get("required"):
            required.append(_requirements(spec["required"], "spec.affinity.required"))
        for n, pref in enumerate(spec.get("preferred") or ()):
            p = f"spec.affinity.preferred[{n}]"
            preferred.append(
                _model.PreferredTerm(
                    _count(pref.get("weight", 1), f"{p}.weight"),
                    _requirements(pref.get("matchExpressions"), f"{p}.matchExpressions"),
                )
            )
    return _model.NodeAffinity(tuple(required), tuple(preferred))


def _tolerations(spec: Any) -> tuple[_model.Toleration, ...]:
    out = []
    for n, t in enumerate(spec or ()):
        op = t.get("operator", "Equal")
        if op not in ("Equal", "Exists"):
            raise _Bad(f"spec.tolerations[{n}].operator", f"expected Equal or Exists, got {op!r}")
        effect = cast(_model.TaintEffect | Literal[""], t.get("effect") or "")
        if effect and effect not in _EFFECTS:
            raise _Bad(f"spec.tolerations[{n}].effect", f"unknown effect {effect!r}")
        out.append(
            _model.Toleration(
                str(t.get("key", "") or ""), op, str(t.get("value", "") or ""), effect
            )
        )
    return tuple(out)


def _locality(spec: Any) -> _model.LocalityHint:
    """``spec.locality: {nodes: [name...], labels: {key: value}}``: where the input data lives."""
    if not spec:
        return _model.LocalityHint()
    return _model.LocalityHint(
        nodes=frozenset(str(n) for n in spec.get("nodes") or ()),
        labels=tuple(sorted((str(k), str(v)) for k, v in (spec.get("labels") or {}).items())),
    )


def _herd_quota(obj: Mapping[str, Any]) -> tuple[int | None, int | None, int | None, int | None]:
    q = _get(obj, "spec.quota") or {}
    cpu = q.get("cpu")
    memory = q.get("memory")
    gpu = q.get("gpu")
    slices = q.get("slices")
    return (
        None if cpu is None else _quantity(quantity.parse_cpu, cpu, "spec.quota.cpu"),
        None if memory is None else _quantity(quantity.parse_memory, memory, "spec.quota.memory"),
        None if gpu is None else _count(gpu, "spec.quota.gpu"),
        None if slices is None else _count(slices, "spec.quota.slices"),
    )
