"""Bearer-token authentication: service-account JWTs we sign, and OIDC ID tokens we verify.

The API server's authentication chain calls :func:`verify_sa_token` for tokens minted by
:func:`issue_sa_token` (ES256, short-lived, audience-bound; the agent hands one to each Slice) and
:class:`OIDCVerifier` for ID tokens from the configured issuer (signatures checked against the
issuer's JWKS, which is cached and refetched, rate-limited, on an unknown key id). Both return an
:class:`runink.api._rbac.Subject` or raise ``errors.Unauthenticated`` with a reason a person can
act on. JOSE is done with joserfc, authlib's successor (``authlib.jose`` is deprecated and warns).
Every token is decoded AND its claims validated: decode alone checks only the signature.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from joserfc import errors as jose_errors, jwt
from joserfc.jwk import ECKey, KeySet, RSAKey

from runink.api import _rbac
from runink.schemas import errors

SA_ALGORITHM: Final = "ES256"
DEFAULT_SA_ISSUER: Final = "https://runink.local/serviceaccounts"
DEFAULT_AUDIENCE: Final = "runink-apiserver"
OIDC_ALGORITHMS: Final = frozenset({"RS256", "ES256"})
_MAX_TOKEN: Final = 16 * 1024
_MAX_DOCUMENT: Final = 1024 * 1024

Key = ECKey | RSAKey


def _header(token: str) -> dict[str, Any]:
    """The JOSE header, read before any verification only to choose the key and refuse algs."""
    if len(token) > _MAX_TOKEN:
        raise errors.Unauthenticated("token is too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise errors.Unauthenticated("token is not a signed JWT (expected 3 dot-separated parts)")
    try:
        raw = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4))
        header = json.loads(raw)
    except (binascii.Error, ValueError):
        raise errors.Unauthenticated("token header is not base64url JSON") from None
    if not isinstance(header, dict):
        raise errors.Unauthenticated("token header is not a JSON object")
    return header


def _claim_error(e: jose_errors.JoseError, who: str) -> errors.Unauthenticated:
    if isinstance(e, jose_errors.ExpiredTokenError):
        return errors.Unauthenticated(f"{who} token has expired")
    if isinstance(e, jose_errors.MissingClaimError):
        return errors.Unauthenticated(f"{who} token lacks required claim(s): {e.description}")
    if isinstance(e, jose_errors.InvalidClaimError):
        claim = e.claim
        detail = {
            "aud": "wrong audience",
            "iss": "wrong issuer",
            "nbf": "not valid yet",
            "iat": "issued in the future",
        }.get(str(claim), f"invalid claim {claim!r}")
        return errors.Unauthenticated(f"{who} token refused: {detail}")
    return errors.Unauthenticated(f"{who} token refused: {e.error or type(e).__name__}")


def _verify(
    token: str,
    key: Key,
    alg: str,
    who: str,
    *,
    now: float,
    leeway: int,
    issuer: str,
    audience: str,
    essential: tuple[str, ...],
) -> dict[str, Any]:
    try:
        decoded = jwt.decode(token, key, algorithms=[alg])
    except jose_errors.BadSignatureError:
        raise errors.Unauthenticated(f"{who} token signature does not verify") from None
    except jose_errors.JoseError as e:
        raise errors.Unauthenticated(
            f"{who} token refused: {e.error or type(e).__name__}"
        ) from None
    options: dict[str, Any] = {c: {"essential": True} for c in essential}
    options["iss"] = {"essential": True, "value": issuer}
    options["aud"] = {"essential": True, "value": audience}
    registry = jwt.JWTClaimsRegistry(now=int(now), leeway=leeway, **options)
    try:
        registry.validate(decoded.claims)  # REQUIRED: jwt.decode() checks only the signature
    except jose_errors.JoseError as e:
        raise _claim_error(e, who) from None
    return decoded.claims


# --- service-account tokens --------------------------------------------------------------------


@dataclass(slots=True)
class ServiceAccountKeys:
    """The control plane's SA signing keys: ``active`` signs, every key verifies.

    Rotate by :meth:`rotate` (new key signs; old keys keep verifying until tokens they signed
    expire), then :meth:`retire`. Stored as a private JWK set, mode 0600, in the data dir.
    """

    keys: dict[str, ECKey]
    active: str
    path: Path | None = field(default=None)

    @classmethod
    def generate(cls) -> ServiceAccountKeys:
        k = ECKey.generate_key("P-256", auto_kid=True)
        return cls({str(k.kid): k}, str(k.kid))

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> ServiceAccountKeys:
        p = Path(path)
        if not p.exists():
            ring = cls.generate()
            ring.save(p)
            return ring
        if p.stat().st_mode & 0o077:
            raise errors.RuninkError(f"{p} is accessible by group or others; run: chmod 600 {p}")
        doc = json.loads(p.read_bytes())
        keys = {str(d["kid"]): ECKey.import_key(d) for d in doc["keys"]}
        return cls(keys, str(doc["active"]), p)

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        p = Path(path) if path is not None else self.path
        if p is None:
            raise errors.RuninkError("service-account keys have no path to save to")
        doc = {"active": self.active, "keys": [k.as_dict(private=True) for k in self.keys.values()]}
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f)
        os.replace(tmp, p)
        self.path = p

    def rotate(self) -> str:
        k = ECKey.generate_key("P-256", auto_kid=True)
        self.keys[str(k.kid)] = k
        self.active = str(k.kid)
        return self.active

    def retire(self, kid: str) -> None:
        if kid == self.active:
            raise errors.RuninkError("cannot retire the active signing key; rotate first")
        self.keys.pop(kid, None)

    def public_jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                k.as_dict(private=False, alg=SA_ALGORITHM, use="sig") for k in self.keys.values()
            ]
        }


def issue_sa_token(
    keys: ServiceAccountKeys,
    *,
    herd: str,
    name: str,
    now: float,
    ttl: float = 3600.0,
    audience: str = DEFAULT_AUDIENCE,
    issuer: str = DEFAULT_SA_ISSUER,
    bound_uid: str | None = None,
    bound_slice: str | None = None,
) -> str:
    """A JWT for ServiceAccount herd/name, valid ``ttl`` seconds from ``now`` for ``audience``.

    ``bound_slice``/``bound_uid`` (the Slice in the same herd a token was minted for, and its
    uid) are carried as ``runink.io/boundSlice`` and ``runink.io/boundUid``: the server refuses
    the token once that Slice is gone, replaced or finished (`BoundToken`).
    """
    if ttl <= 0:
        raise errors.Invalid("ttl must be positive")
    iat = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": f"{_rbac.SA_PREFIX}{herd}:{name}",
        "aud": audience,
        "iat": iat,
        "nbf": iat,
        "exp": iat + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    if bound_uid is not None:
        claims["runink.io/boundUid"] = bound_uid
    if bound_slice is not None:
        claims["runink.io/boundSlice"] = bound_slice
    header = {"alg": SA_ALGORITHM, "kid": keys.active, "typ": "JWT"}
    return jwt.encode(header, claims, keys.keys[keys.active], algorithms=[SA_ALGORITHM])


@dataclass(frozen=True, slots=True)
class BoundToken:
    """What a service-account token is bound to: Slice *name* (uid *uid*) in *herd*."""

    herd: str
    name: str
    uid: str


def verify_sa_token(
    token: str,
    audience: str,
    now: float,
    *,
    keys: ServiceAccountKeys,
    issuer: str = DEFAULT_SA_ISSUER,
    leeway: int = 5,
) -> _rbac.Subject:
    """The ServiceAccount subject of a valid token, else ``errors.Unauthenticated``."""
    return verify_bound_sa_token(token, audience, now, keys=keys, issuer=issuer, leeway=leeway)[0]


def verify_bound_sa_token(
    token: str,
    audience: str,
    now: float,
    *,
    keys: ServiceAccountKeys,
    issuer: str = DEFAULT_SA_ISSUER,
    leeway: int = 5,
) -> tuple[_rbac.Subject, BoundToken | None]:
    """`verify_sa_token`, and the Slice the token is bound to (None for an unbound token):
    the caller checks that the Slice still exists with that uid and has not finished."""
    who = "service-account"
    header = _header(token)
    if header.get("alg") != SA_ALGORITHM:
        raise errors.Unauthenticated(
            f"{who} token algorithm {header.get('alg')!r} is not allowed; expected {SA_ALGORITHM}"
        )
    key = keys.keys.get(str(header.get("kid")))
    if key is None:
        raise errors.Unauthenticated(f"{who} token signed by unknown key {header.get('kid')!r}")
    claims = _verify(
        token,
        key,
        SA_ALGORITHM,
        who,
        now=now,
        leeway=leeway,
        issuer=issuer,
        audience=audience,
        essential=("sub", "exp", "iat", "nbf", "jti"),
    )
    parts = str(claims["sub"]).removeprefix(_rbac.SA_PREFIX).split(":")
    if not str(claims["sub"]).startswith(_rbac.SA_PREFIX) or len(parts) != 2 or not all(parts):
        raise errors.Unauthenticated(
            f"{who} token subject is not system:serviceaccount:<herd>:<name>"
        )
    subject = _rbac.Subject.for_service_account(parts[0], parts[1])
    uid, name = claims.get("runink.io/boundUid"), claims.get("runink.io/boundSlice")
    if isinstance(uid, str) and isinstance(name, str) and uid and name:
        return subject, BoundToken(parts[0], name, uid)
    return subject, None


# --- OIDC ---------------------------------------------------------------------------------------

Fetch = Callable[[str], bytes]
"""GET a URL, return the body; raise OSError (or a subclass) on failure."""


def urllib_fetch(url: str, *, timeout: float = 5.0) -> bytes:
    """The default fetch: HTTPS (or HTTP, for tests and loopback issuers) only, size-capped."""
    if urllib.parse.urlsplit(url).scheme not in ("https", "http"):
        raise OSError(f"refusing to fetch {url!r}: only https and http are allowed")
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # scheme checked above
        body: bytes = resp.read(_MAX_DOCUMENT + 1)
    if len(body) > _MAX_DOCUMENT:
        raise OSError(f"{url} returned more than {_MAX_DOCUMENT} bytes")
    return body


@dataclass(frozen=True, slots=True)
class OIDCConfig:
    """One trusted issuer, as kube-apiserver's ``--oidc-*`` flags.

    The username/groups prefixes keep an issuer from minting reserved names: a group claim of
    ``system:masters`` becomes ``oidc:system:masters``, which no default binding mentions.
    """

    issuer_url: str
    client_id: str
    username_claim: str = "sub"
    username_prefix: str = "oidc:"
    groups_claim: str | None = "groups"
    groups_prefix: str = "oidc:"
    leeway_seconds: int = 30
    allowed_algorithms: frozenset[str] = OIDC_ALGORITHMS
    #: Least seconds between two JWKS fetches triggered by unknown key ids.
    refetch_interval: float = 10.0
    #: Seconds after which a cached JWKS is refetched anyway.
    jwks_ttl: float = 3600.0

    def __post_init__(self) -> None:
        bad = self.allowed_algorithms - OIDC_ALGORITHMS
        if bad or not self.allowed_algorithms:
            raise errors.Invalid(f"OIDC algorithms must be among RS256, ES256; got {sorted(bad)}")
        if not self.issuer_url or not self.client_id:
            raise errors.Invalid("OIDC needs an issuer URL and a client id")


class JWKSCache:
    """The issuer's signing keys, found by discovery and refetched on an unknown ``kid``.

    Thread-safe; fetching blocks, so async callers use :meth:`OIDCVerifier.averify`. A failed
    refetch keeps the last good key set. ``clock`` is monotonic seconds (injectable for tests).
    """

    def __init__(
        self,
        config: OIDCConfig,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._fetch = fetch or urllib_fetch
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, Key] = {}
        self._fetched_at: float | None = None
        self.fetches = 0

    def _load(self) -> None:
        issuer = self._config.issuer_url.rstrip("/")
        try:
            disco = json.loads(self._fetch(issuer + "/.well-known/openid-configuration"))
            if disco.get("issuer") != self._config.issuer_url:
                raise errors.Unauthenticated(
                    f"OIDC discovery for {self._config.issuer_url} names issuer "
                    f"{disco.get('issuer')!r}; refusing"
                )
            jwks = json.loads(self._fetch(str(disco["jwks_uri"])))
            keyset = KeySet.import_key_set(jwks)
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            AttributeError,
            jose_errors.JoseError,
        ) as e:
            raise errors.Unavailable(
                f"cannot fetch the signing keys of OIDC issuer {self._config.issuer_url}: {e}"
            ) from None
        keys: dict[str, Key] = {}
        for k in keyset:
            if isinstance(k, RSAKey | ECKey) and k.kid is not None:
                keys[str(k.kid)] = k
        self._keys = keys
        self.fetches += 1

    def get(self, kid: str | None) -> Key:
        with self._lock:
            now = self._clock()
            stale = self._fetched_at is None or now - self._fetched_at >= self._config.jwks_ttl
            unknown = kid not in self._keys if kid is not None else len(self._keys) != 1
            may_refetch = (
                self._fetched_at is None or now - self._fetched_at >= self._config.refetch_interval
            )
            if stale or (unknown and may_refetch):
                try:
                    self._load()
                    self._fetched_at = now
                except errors.Unavailable:
                    if not self._keys:
                        raise
                    # Keep serving the last good keys; retry after refetch_interval.
                    self._fetched_at = now - self._config.jwks_ttl + self._config.refetch_interval
            if kid is None:
                if len(self._keys) == 1:
                    return next(iter(self._keys.values()))
                raise errors.Unauthenticated(
                    "OIDC token has no key id (kid) and the issuer has several keys"
                )
            key = self._keys.get(kid)
            if key is None:
                raise errors.Unauthenticated(
                    f"OIDC token signed by unknown key id {kid!r} of issuer {self._config.issuer_url}"
                )
            return key


class OIDCVerifier:
    """Verify ID tokens of one issuer into Subjects (``prefix+username``, ``prefix+groups``)."""

    def __init__(
        self,
        config: OIDCConfig,
        *,
        fetch: Fetch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.jwks = JWKSCache(config, fetch=fetch, clock=clock)

    def verify(self, token: str, now: float | None = None) -> _rbac.Subject:
        """Blocking (may fetch the JWKS); ``now`` is wall-clock epoch seconds."""
        cfg = self.config
        who = "OIDC"
        header = _header(token)
        alg = header.get("alg")
        if alg not in cfg.allowed_algorithms:
            raise errors.Unauthenticated(
                f"{who} token algorithm {alg!r} is not allowed; expected one of "
                f"{', '.join(sorted(cfg.allowed_algorithms))}"
            )
        kid = header.get("kid")
        key = self.jwks.get(str(kid) if kid is not None else None)
        if (alg == "RS256") != isinstance(key, RSAKey):
            raise errors.Unauthenticated(f"{who} token algorithm {alg} does not match key {kid!r}")
        claims = _verify(
            token,
            key,
            str(alg),
            who,
            now=time.time() if now is None else now,
            leeway=cfg.leeway_seconds,
            issuer=cfg.issuer_url,
            audience=cfg.client_id,
            essential=("sub", "exp", "iat"),
        )
        username = claims.get(cfg.username_claim)
        if not isinstance(username, str) or not username:
            raise errors.Unauthenticated(f"{who} token has no string claim {cfg.username_claim!r}")
        user = cfg.username_prefix + username
        if user.startswith("system:"):
            raise errors.Unauthenticated(
                f"{who} username {user!r} uses the reserved system: prefix"
            )
        groups = {_rbac.AUTHENTICATED_GROUP}
        raw = claims.get(cfg.groups_claim) if cfg.groups_claim else None
        if isinstance(raw, str):
            raw = [raw]
        if isinstance(raw, list):
            groups.update(
                cfg.groups_prefix + g
                for g in raw
                if isinstance(g, str) and g and not (cfg.groups_prefix + g).startswith("system:")
            )
        return _rbac.Subject(user=user, groups=frozenset(groups))

    async def averify(self, token: str, now: float | None = None) -> _rbac.Subject:
        """:meth:`verify` in a worker thread, so a JWKS fetch never blocks the event loop."""
        return await asyncio.to_thread(self.verify, token, now)


__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_SA_ISSUER",
    "OIDC_ALGORITHMS",
    "SA_ALGORITHM",
    "BoundToken",
    "Fetch",
    "JWKSCache",
    "OIDCConfig",
    "OIDCVerifier",
    "ServiceAccountKeys",
    "issue_sa_token",
    "urllib_fetch",
    "verify_bound_sa_token",
    "verify_sa_token",
]
