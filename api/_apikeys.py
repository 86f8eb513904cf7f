"""API keys for people and scripts: ``rk_<id>_<secret>``, stored hashed, expiring, revocable.

The API server keeps the records in the Barn, replicated to every replica (``_credentials``; JSON
dicts, safe there: they hold only the id in clear and a SHA-256 of the secret) and calls
:func:`verify` for ``Authorization: Bearer rk_...``.
The secret has 256 bits of entropy, so a plain (domain-separated) SHA-256 resists guessing as well
as a slow KDF would, at a microsecond per request. Comparisons are constant-time, and an unknown
id costs the same work as a known one, so timing tells nothing about which ids exist.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

from runink.api import _rbac
from runink.schemas import errors

PREFIX: Final = "rk_"
_TOKEN_RE: Final = re.compile(r"rk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
#: What a key id looks like (the ``id`` of a record, the name of its object in the Barn).
KEY_ID_RE: Final = re.compile(r"[0-9a-f]{16}")
_DUMMY_HASH: Final = "sha256:" + "0" * 64


def _hash(key_id: str, secret: str) -> str:
    digest = hashlib.sha256(f"runink-apikey-v1:{key_id}:{secret}".encode()).hexdigest()
    return "sha256:" + digest


def _ts(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(s: str) -> float:
    """A record's RFC 3339 time (``createdAt``, ``expiresAt``, ``revokedAt``) as a timestamp."""
    return _parse_ts(s)


def _parse_ts(s: object) -> float:
    if not isinstance(s, str):
        raise errors.Invalid("timestamp must be an RFC 3339 string")
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


def create_api_key(
    user: str, groups: Iterable[str], ttl: float, *, now: float
) -> tuple[str, dict[str, Any]]:
    """A new key: the token (show it once, never store it) and the record to store.

    The caller (the API) must only let a subject create keys for itself unless it may
    impersonate: a key for another user is that user's credential.
    """
    if ttl <= 0:
        raise errors.Invalid("ttl must be positive")
    if not user:
        raise errors.Invalid("user is required")
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)  # 43 chars, 256 bits
    record: dict[str, Any] = {
        "id": key_id,
        "user": user,
        "groups": sorted(set(groups)),
        "hash": _hash(key_id, secret),
        "createdAt": _ts(now),
        "expiresAt": _ts(now + ttl),
        "revoked": False,
    }
    return f"{PREFIX}{key_id}_{secret}", record


def revoke(record: Mapping[str, Any], *, now: float) -> dict[str, Any]:
    """The record, revoked (store it back; verification refuses it from then on)."""
    return {**record, "revoked": True, "revokedAt": _ts(now)}


def key_id_of(token: str) -> str | None:
    """The id part of a well-formed token (safe to log), else None."""
    m = _TOKEN_RE.fullmatch(token)
    return m.group(1) if m else None


def verify(token: str, records: Mapping[str, Mapping[str, Any]], now: float) -> _rbac.Subject:
    """The Subject of a valid, unexpired, unrevoked key; ``records`` maps id -> record.

    Raises ``errors.Unauthenticated``; messages name the key id at most, never the secret.
    """
    m = _TOKEN_RE.fullmatch(token)
    if m is None:
        raise errors.Unauthenticated("malformed API key (expected rk_<id>_<secret>)")
    key_id, secret = m.groups()
    record = records.get(key_id)
    stored = str(record.get("hash", _DUMMY_HASH)) if record is not None else _DUMMY_HASH
    # Always hash and compare, so an unknown id takes as long as a wrong secret.
    matches = hmac.compare_digest(_hash(key_id, secret).encode(), stored.encode())
    if record is None or not matches:
        raise errors.Unauthenticated(f"API key {key_id} is unknown or its secret is wrong")
    if record.get("revoked"):
        raise errors.Unauthenticated(f"API key {key_id} has been revoked")
    try:
        expires = _parse_ts(record.get("expiresAt"))
    except (errors.Invalid, ValueError):
        raise errors.Unauthenticated(f"API key {key_id} has a malformed expiry") from None
    if now >= expires:
        raise errors.Unauthenticated(f"API key {key_id} expired at {record.get('expiresAt')}")
    groups = {str(g) for g in record.get("groups", [])} | {_rbac.AUTHENTICATED_GROUP}
    return _rbac.Subject(user=str(record["user"]), groups=frozenset(groups))


__all__ = ["KEY_ID_RE", "PREFIX", "create_api_key", "key_id_of", "revoke", "verify"]
