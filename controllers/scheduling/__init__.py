"""The scheduler as pure functions over a frozen snapshot (no I/O, no asyncio; Nomad's design).

``snapshot_from_objects`` turns the Node, Slice and Herd objects from the informers' caches into a
``Snapshot``; ``schedule(snapshot, now)`` returns a ``Plan`` (slice key -> node name, and a
Kubernetes-style reason for every slice it could not place). The scheduler controller writes the
bindings with compare-and-swap and re-evaluates on conflict.
"""

from runink.controllers.scheduling._convert import snapshot_from_objects
from runink.controllers.scheduling._model import (
    UNLIMITED,
    HerdQuota,
    LabelRequirement,
    LocalityHint,
    NodeAffinity,
    NodeInfo,
    PendingSlice,
    Plan,
    Policy,
    PreferredTerm,
    Resources,
    SliceKey,
    Snapshot,
    Taint,
    Toleration,
)
from runink.controllers.scheduling._scheduler import LOCALITY_WEIGHT, schedule

__all__ = [
    "LOCALITY_WEIGHT",
    "UNLIMITED",
    "HerdQuota",
    "LabelRequirement",
    "LocalityHint",
    "NodeAffinity",
    "NodeInfo",
    "PendingSlice",
    "Plan",
    "Policy",
    "PreferredTerm",
    "Resources",
    "SliceKey",
    "Snapshot",
    "Taint",
    "Toleration",
    "schedule",
    "snapshot_from_objects",
]
