"""The scheduler's input and output: frozen snapshots of nodes, pending slices and Herd quotas.

``schedule()`` (``_scheduler.py``) is a pure function from a :class:`Snapshot` to a :class:`Plan`;
``snapshot_from_objects()`` (``_convert.py``) builds the snapshot from the JSON dicts the Barn
stores. Everything here is plain frozen data with integer quantities (cpu in millicores, memory in
bytes) so that the scheduler never parses anything and property tests can generate it directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

Policy = Literal["binpack", "spread"]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]
TolerationOperator = Literal["Equal", "Exists"]
LabelOperator = Literal["In", "NotIn", "Exists", "DoesNotExist"]

#: Stands for "no limit" in allocatable slice counts and in quotas, so that hot loops compare ints.
UNLIMITED = 1 << 62


class SliceKey(NamedTuple):
    """Identity of a Slice: its Herd and its name (sorts by herd, then name)."""

    herd: str
    name: str

    def __str__(self) -> str:
        return f"{self.herd}/{self.name}"


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of each schedulable resource: cpu millicores, memory bytes, GPUs, slice count."""

    cpu: int = 0
    memory: int = 0
    gpu: int = 0
    slices: int = 0


@dataclass(frozen=True, slots=True)
class Taint:
    """A node taint: slices that do not tolerate it stay off (NoSchedule, NoExecute) or avoid it."""

    key: str
    value: str = ""
    effect: TaintEffect = "NoSchedule"


@dataclass(frozen=True, slots=True)
class Toleration:
    """Kubernetes semantics: an empty ``key`` with ``Exists`` tolerates every taint; an empty
    ``effect`` matches every effect; ``Equal`` also compares the value."""

    key: str = ""
    operator: TolerationOperator = "Equal"
    value: str = ""
    effect: TaintEffect | Literal[""] = ""

    def tolerates(self, taint: Taint) -> bool:
        if self.effect and self.effect != taint.effect:
            return False
        if not self.key:
            return self.operator == "Exists"
        if self.key != taint.key:
            return False
        return self.operator == "Exists" or self.value == taint.value


@dataclass(frozen=True, slots=True)
class LabelRequirement:
    """One node-label expression: ``zone In (a, b)``, ``gpu-type Exists``, ..."""

    key: str
    operator: LabelOperator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        value = labels.get(self.key)
        if self.operator == "In":
            return value is not None and value in self.values
        if self.operator == "NotIn":
            return value is None or value not in self.values
        if self.operator == "Exists":
            return value is not None
        return value is None


@dataclass(frozen=True, slots=True)
class PreferredTerm:
    """A soft preference: nodes matching every requirement gain ``weight`` (1-100)."""

    weight: int
    requirements: tuple[LabelRequirement, ...]

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)


@dataclass(frozen=True, slots=True)
class NodeAffinity:
    """``required``: terms ORed, each term's requirements ANDed (no terms: no constraint).
    ``preferred``: weighted soft terms added to a node's preference score."""

    required: tuple[tuple[LabelRequirement, ...], ...] = ()
    preferred: tuple[PreferredTerm, ...] = ()

    def required_match(self, labels: Mapping[str, str]) -> bool:
        if not self.required:
            return True
        return any(all(r.matches(labels) for r in term) for term in self.required)


@dataclass(frozen=True, slots=True)
class LocalityHint:
    """Where a slice's input data lives: node names, or node labels (all must match)."""

    nodes: frozenset[str] = frozenset()
    labels: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.nodes or self.labels)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A node as the scheduler sees it; ``used`` is what slices already bound to it take."""

    name: str
    allocatable: Resources
    used: Resources = Resources()
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class PendingSlice:
    """A slice waiting for a node. ``creation`` (a timestamp or any increasing number) orders
    slices of equal ``priority`` within their Herd, older first."""

    key: SliceKey
    cpu: int = 0
    memory: int = 0
    gpu: int = 0
    node_selector: Mapping[str, str] = field(default_factory=dict)
    affinity: NodeAffinity = NodeAffinity()
    tolerations: tuple[Toleration, ...] = ()
    locality: LocalityHint = LocalityHint()
    priority: int = 0
    creation: float = 0.0

    @property
    def herd(self) -> str:
        return self.key.herd


@dataclass(frozen=True, slots=True)
class HerdQuota:
    """A Herd's limits (``None``: unlimited) and what its bound slices already use."""

    herd: str
    cpu: int | None = None
    memory: int | None = None
    gpu: int | None = None
    slices: int | None = None
    used: Resources = Resources()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one scheduling pass looks at. Order of the tuples does not matter."""

    nodes: tuple[NodeInfo, ...]
    pending: tuple[PendingSlice, ...]
    herds: tuple[HerdQuota, ...] = ()
    policy: Policy = "binpack"


@dataclass(frozen=True, slots=True)
class Plan:
    """The outcome of a pass: every pending slice is in exactly one of the two maps.

    ``unplaced`` reasons read like Kubernetes' ("0/5 nodes available: 3 insufficient memory, 2
    NotReady.") or name the Herd quota ("herd quota exceeded: cpu 3500m/4000m used, slice needs
    1000m").
    """

    placements: Mapping[SliceKey, str]
    unplaced: Mapping[SliceKey, str]
