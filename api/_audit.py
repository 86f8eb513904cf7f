"""The audit log: one JSON line per API request, rotated by size, with values redacted.

The API server's request path calls :meth:`AuditLog.record` once per RPC, after the decision and
the result are known (who, groups, verb, resource, herd, name, decision, status code, latency).
Any object attached is passed through ``_secrets.redact`` and strings are scrubbed of bearer
tokens, API keys and PEM blocks, so the audit file never holds a credential or a Secret value.
Appends are serialized by a lock (safe from threads and from the event loop: a line is one small
buffered write, no fsync); when the file would exceed ``max_bytes`` it is renamed to ``.1``
(``.1`` to ``.2``, ...) keeping ``backups`` old files, as logging's RotatingFileHandler.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, Literal

from runink.api import _secrets

_SCRUB: Final = [
    (re.compile(r"(?i)bearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer <redacted>"),
    (re.compile(r"rk_([0-9a-f]{16})_[A-Za-z0-9_-]+"), r"rk_\1_<redacted>"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "<redacted jwt>"),
    (re.compile(r"-----BEGIN [A-Z ]+-----.*?(-----END [A-Z ]+-----|$)", re.S), "<redacted pem>"),
]


def scrub(text: str) -> str:
    """Remove credentials that may appear in free text (error messages, user agents)."""
    for pattern, repl in _SCRUB:
        text = pattern.sub(repl, text)
    return text


def _clean(v: Any) -> Any:
    if isinstance(v, str):
        return scrub(v)
    if isinstance(v, Mapping):
        return {str(k): _clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_clean(x) for x in v]
    if isinstance(v, bytes | bytearray):
        return f"<{len(v)} bytes>"
    return v


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One request. ``time`` is epoch seconds; ``code`` the gRPC status name (``OK``, ...)."""

    user: str
    verb: str
    resource: str
    decision: Literal["allow", "deny"]
    code: str
    latency_ms: float
    groups: tuple[str, ...] = ()
    subresource: str | None = None
    herd: str | None = None
    name: str | None = None
    reason: str = ""
    request_id: str | None = None
    source: str | None = None
    #: The request or response object, if the server audits bodies; redacted before writing.
    object: Any = None
    time: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


class AuditLog:
    """Append-only JSON-lines writer with size-based rotation; mode 0600."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 100 * 1024 * 1024,
        backups: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups non-negative")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._clock = clock
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        f = os.fdopen(fd, "ab")
        self._size = os.fstat(fd).st_size
        return f

    def _rotate(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def format(self, entry: AuditEntry) -> bytes:
        d = asdict(entry)
        d["time"] = self._clock() if entry.time is None else entry.time
        d["groups"] = sorted(entry.groups)
        d["object"] = _clean(_secrets.redact(entry.object)) if entry.object is not None else None
        d["reason"] = scrub(entry.reason)
        d["extra"] = _clean(_secrets.redact(dict(entry.extra)))
        d = {k: v for k, v in d.items() if v not in (None, {}, "")}
        return json.dumps(d, sort_keys=True, default=str).encode() + b"\n"

    def record(self, entry: AuditEntry) -> None:
        line = self.format(entry)
        with self._lock:
            if self._file is None:
                self._file = self._open()
            if self._size and self._size + len(line) > self.max_bytes:
                self._rotate()
                self._file = self._open()
            self._file.write(line)
            self._file.flush()  # one write(2) per line, so a crash loses at most the line
            self._size += len(line)

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["AuditEntry", "AuditLog", "scrub"]
