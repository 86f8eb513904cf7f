"""The error tree shared by every layer, grouped by what the caller should do.

Each error carries a machine-readable ``reason`` (as Kubernetes' ``StatusReason``) that the API
maps to a gRPC status code and the CLI to an exit code and message::

    RuninkError
    ├── NotFound            (LookupError)   the object does not exist
    ├── AlreadyExists                       create of a name that is taken
    ├── Conflict                            stale resourceVersion: re-read, re-apply, retry
    ├── Invalid             (ValueError)    the input is wrong: fix it (carries field errors)
    ├── Forbidden           (PermissionError) RBAC said no
    ├── Unauthenticated                     no or bad credentials
    ├── Gone                                watch revision compacted: re-list
    ├── QuotaExceeded                       a Herd quota would be exceeded
    ├── OutcomeUnknown                      a write timed out; it may still commit: re-read
    └── Unavailable                         no leader / shutting down: retry later
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

Reason = Literal[
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Invalid",
    "Forbidden",
    "Unauthenticated",
    "Gone",
    "QuotaExceeded",
    "OutcomeUnknown",
    "Unavailable",
    "Internal",
]


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field of one document.

    ``path`` is the dotted field path (``spec.steps[2].dependsOn``); ``file``, ``document`` (0-based
    index in a multi-document file) and ``line`` (1-based) locate it in the source when known.
    """

    path: str
    message: str
    file: str | None = None
    document: int | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = []
        if self.file is not None:
            where.append(self.file)
        if self.document is not None:
            where.append(f"document {self.document}")
        if self.line is not None:
            where.append(f"line {self.line}")
        loc = ", ".join(where)
        prefix = f"{loc}: " if loc else ""
        fld = f"{self.path}: " if self.path else ""
        return f"{prefix}{fld}{self.message}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "message": self.message,
            "file": self.file,
            "document": self.document,
            "line": self.line,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FieldError:
        return cls(
            path=str(d.get("path", "")),
            message=str(d.get("message", "")),
            file=d.get("file"),
            document=d.get("document"),
            line=d.get("line"),
        )


class RuninkError(Exception):
    """Base of every error Runink raises on purpose."""

    reason: ClassVar[Reason] = "Internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = details or {}


class NotFound(RuninkError, LookupError):
    reason = "NotFound"


class AlreadyExists(RuninkError):
    reason = "AlreadyExists"


class Conflict(RuninkError):
    """Compare-and-swap failed; ``details["currentResourceVersion"]`` names the winner's version."""

    reason = "Conflict"


class Invalid(RuninkError, ValueError):
    """The input is wrong. ``errors`` lists every problem found, not just the first."""

    reason = "Invalid"

    def __init__(
        self,
        message: str,
        *,
        errors: list[FieldError] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.errors: list[FieldError] = list(errors or [])
        if self.errors and message:
            message = message + "\n" + "\n".join(f"  {e}" for e in self.errors)
        super().__init__(message, details=details)


class Forbidden(RuninkError, PermissionError):
    reason = "Forbidden"


class Unauthenticated(RuninkError):
    reason = "Unauthenticated"


class Gone(RuninkError):
    """The requested revision was compacted away; re-list and watch from the list's revision."""

    reason = "Gone"


class QuotaExceeded(RuninkError):
    reason = "QuotaExceeded"


class OutcomeUnknown(RuninkError):
    """A write was proposed but not confirmed in time: it may still commit. Re-read before retrying."""

    reason = "OutcomeUnknown"


class Unavailable(RuninkError):
    reason = "Unavailable"


_BY_REASON: dict[str, type[RuninkError]] = {
    cls.reason: cls
    for cls in (
        NotFound,
        AlreadyExists,
        Conflict,
        Invalid,
        Forbidden,
        Unauthenticated,
        Gone,
        QuotaExceeded,
        OutcomeUnknown,
        Unavailable,
    )
}


def error_for_reason(reason: str) -> type[RuninkError]:
    """The exception class for a wire ``reason`` (``RuninkError`` for an unknown one)."""
    return _BY_REASON.get(reason, RuninkError)


__all__ = [
    "AlreadyExists",
    "Conflict",
    "FieldError",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "OutcomeUnknown",
    "QuotaExceeded",
    "Reason",
    "RuninkError",
    "Unauthenticated",
    "Unavailable",
    "error_for_reason",
]
