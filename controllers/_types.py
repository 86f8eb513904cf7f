"""The reconcile contract: what a controller author implements, and nothing else.

A :class:`Request` names one object (kind, herd, name) and carries no event payload: reconciles are
level-triggered (controller-runtime's ``reconcile.go``). The reconciler reads the current state, drives
it toward the desired state and returns a :class:`Result`. It must be idempotent, because the runtime
calls it again after any error, on every resync, and whenever a watched object changes. Raise
:class:`TerminalError` for a failure that retrying cannot fix (counted and logged, never retried);
any other exception is retried with per-key exponential backoff.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True, slots=True, order=True)
class Request:
    """Which object to reconcile. ``herd`` is ``None`` for cluster-scoped kinds."""

    kind: str
    herd: str | None
    name: str

    @classmethod
    def of(cls, obj: Obj) -> Request:
        meta = obj.get("metadata") or {}
        return cls(str(obj.get("kind", "")), meta.get("herd"), str(meta.get("name", "")))

    def __str__(self) -> str:
        return f"{self.kind}/{self.herd}/{self.name}" if self.herd else f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class Result:
    """What to do next. ``requeue_after`` (seconds) schedules another reconcile of the same key even
    if nothing changes (polling an external system, a timeout); ``None`` waits for the next change."""

    requeue_after: float | None = None


class TerminalError(Exception):
    """A reconcile failure that must not be retried (invalid spec, a missing immutable input).

    The runtime logs it, counts it in ``controller_runtime_terminal_reconcile_errors_total`` and
    forgets the key until the object changes again.
    """


class Reconciler(Protocol):
    """Drives one object toward its desired state. Level-triggered and idempotent by contract."""

    async def reconcile(self, request: Request) -> Result: ...


Mapper = Callable[[Obj], Iterable[Request]]
"""Maps a changed object of a watched kind to the requests it should trigger."""

Predicate = Callable[[Obj | None, Obj | None], bool]
"""``(old, new) -> bool``: whether a change is worth a reconcile (``old`` is ``None`` on add,
``new`` is ``None`` on delete)."""
