"""Security wiring of the API server: credentials, the RBAC authorizer, Secret encryption, limits.

``_server.ApiServer`` owns one :class:`Security`. It holds the key material kept in the data dir
(Secret keyring, sealing key, service-account signing keys, all 0600 under ``<data dir>/secrets``),
the API key and bootstrap token records (in the Barn, replicated, cached in memory: see
``_credentials``), the bearer-token authenticator (API keys, bootstrap tokens, service-account
JWTs, OIDC ID tokens), the :class:`RbacAuthorizer` (a ``_rbac.PolicySnapshot`` kept current from
the Barn, plus the node authorizer for ``system:nodes``), the per-identity rate limiter and the
audit log. The pure decisions stay in ``_rbac``/``_secrets``/``_tokens``;
this module only does the I/O around them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from runink.api import _apikeys, _audit, _auth, _credentials, _rbac, _secrets, _tokens
from runink.schemas import errors, registry
from runink.store import _api as barn_api

log = logging.getLogger(__name__)

Obj = dict[str, Any]

BOOTSTRAP_GROUP: Final = "system:bootstrappers"
SECRET_KEYS_ANNOTATION: Final = "runink.io/secret-keys"
RBAC_KINDS: Final = ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding")


@dataclass(frozen=True, slots=True)
class SecurityConfig:
    """Server security options. Without ``data_dir`` every key lives in memory only (tests)."""

    data_dir: Path | None = None
    oidc: Sequence[_tokens.OIDCConfig] = ()
    #: How OIDC discovery/JWKS are fetched (default: urllib); tests may inject.
    oidc_fetch: _tokens.Fetch | None = None
    audit_path: Path | None = None
    audit_max_bytes: int = 50 * 1024 * 1024
    audit_backups: int = 5
    #: Token bucket per authenticated user: sustained requests/s and burst.
    rate_per_second: float = 500.0
    rate_burst: float = 1000.0
    #: gRPC max receive message size (requests above it are refused before decoding).
    max_message_bytes: int = 4 * 1024 * 1024
    #: Server-side deadline of every unary RPC (the client's own deadline wins when shorter).
    default_deadline: float = 60.0
    sa_issuer: str = _tokens.DEFAULT_SA_ISSUER
    audience: str = _tokens.DEFAULT_AUDIENCE
    #: Lifetime of the bootstrap token created at start (``<data dir>/bootstrap-token``).
    bootstrap_ttl: float = 24 * 3600.0
    #: How often expired or revoked credential records are deleted from the Barn, and how long
    #: an expired or revoked API key stays listed (`ListAPIKeys`) first. Bootstrap tokens go
    #: as soon as they expire (Kubernetes' token cleaner does the same).
    credential_cleanup_interval: float = 600.0
    apikey_retention: float = 7 * 86400.0


class RateLimiter:
    """A token bucket per key; ``take`` raises ``QuotaExceeded`` (gRPC RESOURCE_EXHAUSTED)."""

    def __init__(
        self, rate: float, burst: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> None:
        now = self._clock()
        tokens, last = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise errors.QuotaExceeded(
                f"rate limit exceeded for {key!r}: at most {self.rate:g} requests/s "
                f"(burst {self.burst:g}); retry in {wait:.2f} s"
            )
        self._buckets[key] = (tokens - 1.0, now)


def subject_of(identity: _auth.Identity) -> _rbac.Subject:
    """The RBAC subject of an authenticated identity (nodes only from certificates)."""
    groups = frozenset((*identity.groups, _rbac.AUTHENTICATED_GROUP))
    if (
        identity.method == "x509"
        and identity.user.startswith("system:node:")
        and _rbac.NODES_GROUP in groups
    ):
        return _rbac.Subject(identity.user, groups, node=identity.user.removeprefix("system:node:"))
    if identity.method == "serviceaccount" and identity.user.startswith(_rbac.SA_PREFIX):
        herd, _, name = identity.user.removeprefix(_rbac.SA_PREFIX).partition(":")
        return _rbac.Subject(identity.user, groups, service_account=(herd, name))
    return _rbac.Subject(identity.user, groups)


def identity_of(subject: _rbac.Subject, method: str) -> _auth.Identity:
    return _auth.Identity(user=subject.user, groups=tuple(sorted(subject.groups)), method=method)


def resource_of(kind: str) -> tuple[str, str | None]:
    """``"Slice/status"`` -> ``("slices", "status")``; unknown names are taken as resources."""
    base, _, sub = kind.partition("/")
    try:
        plural = registry.lookup(base).plural
    except errors.Invalid:
        plural = base.lower()
    return plural, sub or None


class BearerAuthenticator:
    """``authorization: Bearer <token>``: API keys and bootstrap tokens (``rk_...``),
    service-account JWTs (ours, ES256) and OIDC ID tokens (configured issuers)."""

    #: How long a bound token's Slice, once seen live, is not read again (a token may outlive
    #: its Slice by this much at most).
    BOUND_CACHE_SECONDS: ClassVar[float] = 1.0

    def __init__(self, security: Security) -> None:
        self.security = security
        self._live: dict[_tokens.BoundToken, float] = {}  # -> monotonic time it was seen live

    async def _check_bound(self, bound: _tokens.BoundToken) -> None:
        """A token minted for a Slice (the agent's, for the step) dies with it: refused once
        the Slice is deleted, replaced (another uid) or finished, as Kubernetes refuses a bound
        token whose pod is gone."""
        seen = self._live.get(bound)
        if seen is not None and time.monotonic() - seen < self.BOUND_CACHE_SECONDS:
            return
        what = f'service-account token of Slice "{bound.name}" in herd "{bound.herd}"'
        try:
            obj = await self.security.barn.get("Slice", bound.name, bound.herd)
        except errors.NotFound:
            self._live.pop(bound, None)
            raise errors.Unauthenticated(f"{what}: the Slice no longer exists") from None
        if (obj.get("metadata") or {}).get("uid") != bound.uid:
            self._live.pop(bound, None)
            raise errors.Unauthenticated(f"{what}: that Slice was deleted and made again")
        phase = (obj.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            self._live.pop(bound, None)
            raise errors.Unauthenticated(f"{what}: the Slice has finished ({phase})")
        if len(self._live) > 10_000:
            self._live.clear()
        self._live[bound] = time.monotonic()

    async def authenticate(self, request: _auth.AuthRequest) -> _auth.Identity | None:
        raw = request.metadata.get("authorization")
        if raw is None:
            return None
        text = raw.decode() if isinstance(raw, bytes) else raw
        scheme, _, token = text.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise errors.Unauthenticated("authorization metadata must be 'Bearer <token>'")
        sec = self.security
        now = time.time()
        if token.startswith(_apikeys.PREFIX):
            key_id = _apikeys.key_id_of(token)
            if key_id is not None and key_id in sec.bootstrap.records:
                subject = _apikeys.verify(token, sec.bootstrap.records, now)
                return identity_of(subject, "bootstrap")
            return identity_of(_apikeys.verify(token, sec.apikeys.records, now), "apikey")
        header = _tokens._header(token)
        if header.get("alg") == _tokens.SA_ALGORITHM and str(header.get("kid")) in sec.sa_keys.keys:
            subject, bound = _tokens.verify_bound_sa_token(
                token, sec.config.audience, now, keys=sec.sa_keys, issuer=sec.config.sa_issuer
            )
            if bound is not None:
                await self._check_bound(bound)
            return identity_of(subject, "serviceaccount")
        if not sec.oidc:
            raise errors.Unauthenticated("bearer token is not an API key or a known token")
        verifier = sec.oidc[0]
        if len(sec.oidc) > 1:
            verifier = next(
                (v for v in sec.oidc if v.config.issuer_url == _unverified_iss(token)), verifier
            )
        return identity_of(await verifier.averify(token, now), "oidc")


def _unverified_iss(token: str) -> str | None:
    # Only to choose which configured issuer verifies it; the signature check follows.
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    except (IndexError, ValueError, binascii.Error):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


def _flatten(obj: Mapping[str, Any]) -> dict[str, Any]:
    # Stored RBAC objects keep rules/roleRef/subjects under spec; _rbac reads them top-level.
    out = {k: v for k, v in obj.items() if k != "spec"}
    spec = obj.get("spec")
    if isinstance(spec, Mapping):
        out.update(spec)
    return out


class RbacAuthorizer:
    """``_rbac.authorize`` over a snapshot of the Barn's RBAC objects; ``_rbac.authorize_node``
    for agents' certificates, with their Slices and Secrets read from the Barn per request."""

    def __init__(self, barn: barn_api.Barn) -> None:
        self.barn = barn
        self.policy = _rbac.PolicySnapshot.from_objects([], [], [], [])
        self._refresh_lock = asyncio.Lock()

    async def refresh(self) -> None:
        async with self._refresh_lock:
            lists = [(await self.barn.list(kind)).items for kind in RBAC_KINDS]
            flat = [[_flatten(o) for o in items] for items in lists]
            policy = _rbac.PolicySnapshot.from_objects(*flat)
            for kind, herd, name, reason in policy.skipped:
                log.warning("RBAC object %s %s/%s ignored: %s", kind, herd, name, reason)
            self.policy = policy

    async def watch(self) -> None:
        """Keep the snapshot current (writes by other replicas too); runs until cancelled."""
        await self.refresh()
        async with asyncio.TaskGroup() as tg:
            for kind in RBAC_KINDS:
                tg.create_task(self._watch_kind(kind), name=f"rbac-watch-{kind}")

    async def _watch_kind(self, kind: str) -> None:
        since = self.barn.revision
        while True:
            try:
                async for ev in self.barn.watch(kind, since=since):
                    since = ev.revision
                    if ev.type != "BOOKMARK":
                        await self.refresh()
            except errors.Gone:
                await self.refresh()
                since = self.barn.revision

    async def _node_sets(
        self, node: str, attrs: _rbac.RequestAttributes
    ) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        slices: set[tuple[str, str]] = set()
        secrets: set[tuple[str, str]] = set()
        if attrs.resource == "slices" and attrs.name and attrs.herd:
            try:
                obj = await self.barn.get("Slice", attrs.name, attrs.herd)
            except errors.NotFound:
                return slices, secrets
            if (obj.get("spec") or {}).get("nodeName") == node:
                slices.add((attrs.herd, attrs.name))
        elif attrs.resource == "secrets" and attrs.name and attrs.herd:
            for obj in (await self.barn.list("Slice", attrs.herd)).items:
                spec = obj.get("spec") or {}
                if spec.get("nodeName") != node:
                    continue
                if any(u.get("secret") == attrs.name for u in spec.get("secrets") or []):
                    secrets.add((attrs.herd, attrs.name))
        return slices, secrets

    async def decide(
        self, subject: _rbac.Subject, attrs: _rbac.RequestAttributes
    ) -> _rbac.Decision:
        if subject.node is not None:
            slices, secrets = await self._node_sets(subject.node, attrs)
            d = _rbac.authorize_node(
                subject.node, attrs, slices_bound=slices, secrets_referenced=secrets
            )
            if d.allowed:
                return d
            rbac = _rbac.authorize(subject, attrs, self.policy)
            return rbac if rbac.allowed else d
        return _rbac.authorize(subject, attrs, self.policy)

    async def authorize(
        self,
        identity: _auth.Identity,
        verb: str,
        kind: str,
        herd: str | None,
        name: str | None,
        *,
        node_selector: str | None = None,
    ) -> None:
        resource, sub = resource_of(kind)
        attrs = _rbac.RequestAttributes(
            verb, resource, sub, herd=herd or None, name=name or None, node_selector=node_selector
        )
        d = await self.decide(subject_of(identity), attrs)
        if not d.allowed:
            raise errors.Forbidden(d.reason)


class Security:
    """The security state of one API server (see the module docstring)."""

    def __init__(self, barn: barn_api.Barn, config: SecurityConfig | None = None) -> None:
        self.config = config = config or SecurityConfig()
        self.barn = barn
        keydir: Path | None = None
        if config.data_dir is not None:
            keydir = config.data_dir / "secrets"
            keydir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if keydir is not None:
            self.keyring = _secrets.Keyring.load_or_create(keydir / "keyring.json")
            self.sealing_key = _secrets.load_or_create_sealing_key(keydir / "sealing.pem")
            self.sa_keys = _tokens.ServiceAccountKeys.load_or_create(keydir / "sa-keys.json")
        else:
            self.keyring = _secrets.Keyring.generate()
            self.sealing_key = _secrets._private_key(_secrets.generate_sealing_key()[0])
            self.sa_keys = _tokens.ServiceAccountKeys.generate()
        self.keydir = keydir
        # Replicated with the Barn, read from memory (see _credentials).
        self.apikeys = _credentials.RecordCache(barn, _credentials.APIKEY_KIND)
        self.bootstrap = _credentials.RecordCache(barn, _credentials.BOOTSTRAP_KIND)
        self.oidc = [_tokens.OIDCVerifier(c, fetch=config.oidc_fetch) for c in config.oidc]
        audit_path = config.audit_path or (
            config.data_dir / "audit" / "audit.log" if config.data_dir else None
        )
        self.audit: _audit.AuditLog | None = None
        if audit_path is not None:
            audit_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.audit = _audit.AuditLog(
                audit_path, max_bytes=config.audit_max_bytes, backups=config.audit_backups
            )
        self.limiter = RateLimiter(config.rate_per_second, config.rate_burst)
        self.rbac = RbacAuthorizer(barn)
        self.barn = barn

    @property
    def sealing_public_pem(self) -> bytes:
        from cryptography.hazmat.primitives import serialization

        return self.sealing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    async def create_bootstrap_token(self, ttl: float | None = None) -> str:
        """A new node bootstrap token (stored hashed in the Barn, so every replica accepts it);
        it may only call Bootstrap/SignNodeCSR."""
        token, record = _apikeys.create_api_key(
            "system:bootstrap", [BOOTSTRAP_GROUP], ttl or self.config.bootstrap_ttl, now=time.time()
        )
        record["user"] = f"system:bootstrap:{record['id']}"
        await self.bootstrap.create(record)
        return token

    async def load_credentials(self) -> None:
        """Read the API key and bootstrap token records from the Barn (a local read)."""
        await self.apikeys.refresh()
        await self.bootstrap.refresh()

    async def migrate_credential_files(self) -> int:
        """Move the records of the per-replica files of older versions
        (``secrets/apikeys.json``, ``secrets/bootstrap-tokens.json``) into the Barn, once."""
        if self.keydir is None:
            return 0
        changed = 0
        for name, cache in (
            ("apikeys.json", self.apikeys),
            ("bootstrap-tokens.json", self.bootstrap),
        ):
            path = self.keydir / name
            if path.exists():
                changed += await _credentials.migrate_file(path, cache)
        return changed

    async def watch(self) -> None:
        """Keep the RBAC snapshot and the credential caches current; runs until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.rbac.watch(), name="rbac-watch")
            tg.create_task(self.apikeys.watch(), name="apikeys-watch")
            tg.create_task(self.bootstrap.watch(), name="bootstrap-tokens-watch")
            tg.create_task(self._clean_credentials(), name="credential-cleaner")

    async def _clean_credentials(self) -> None:
        """Expired and revoked records leave the Barn (every replica runs this; deletes race
        harmlessly). Without it, each start's bootstrap token would stay forever."""
        while True:
            await asyncio.sleep(self.config.credential_cleanup_interval)
            now = time.time()
            for cache, retention in (
                (self.bootstrap, 0.0),
                (self.apikeys, self.config.apikey_retention),
            ):
                try:
                    n = await cache.purge(now=now, retention=retention)
                except errors.RuninkError as e:  # e.g. no quorum right now: next round
                    log.info("credential cleanup of %s postponed: %s", cache.kind, e)
                    continue
                if n:
                    log.info("deleted %d expired or revoked %s records", n, cache.kind)

    # -- Secrets ----------------------------------------------------------------------------------
    async def seal_secret_write(self, obj: Obj) -> Obj:
        """The Secret with clear values replaced by ``spec.encrypted`` (a new data version), or
        with the live envelope kept when it states no values. Never echoes a value in errors."""
        obj = dict(obj)
        meta = dict(obj.get("metadata") or {})
        spec = dict(obj.get("spec") or {})
        # Top-level data/stringData (Kubernetes manifests) are accepted and moved under spec.
        for f in ("data", "stringData"):
            if f in obj:
                spec.setdefault(f, obj.pop(f))
        herd, name = str(meta.get("herd") or ""), str(meta.get("name") or "")
        values: dict[str, bytes] = {}
        data, string_data = spec.pop("data", None), spec.pop("stringData", None)
        spec.pop("encrypted", None)  # clients never write the envelope themselves
        for key, value in (data or {}).items():
            if not isinstance(value, str):
                raise errors.Invalid(f"Secret {name}: data.{key} must be a base64 string")
            try:
                values[str(key)] = base64.b64decode(value, validate=True)
            except binascii.Error:
                raise errors.Invalid(f"Secret {name}: data.{key} is not valid base64") from None
        for key, value in (string_data or {}).items():
            if not isinstance(value, str):
                raise errors.Invalid(f"Secret {name}: stringData.{key} must be a string")
            values[str(key)] = value.encode()
        try:
            live: Obj | None = await self.barn.get("Secret", name, herd) if herd and name else None
        except errors.NotFound:
            live = None
        live_env = ((live or {}).get("spec") or {}).get("encrypted")
        if data is None and string_data is None:
            if live_env is not None:
                spec["encrypted"] = live_env
                annotations = dict(meta.get("annotations") or {})
                live_ann = ((live or {}).get("metadata") or {}).get("annotations") or {}
                if SECRET_KEYS_ANNOTATION in live_ann:
                    annotations[SECRET_KEYS_ANNOTATION] = live_ann[SECRET_KEYS_ANNOTATION]
                    meta["annotations"] = annotations
        else:
            version = int(live_env.get("version", 0)) + 1 if isinstance(live_env, dict) else 1
            spec["encrypted"] = _secrets.seal(herd, name, version, values, self.keyring)
            annotations = dict(meta.get("annotations") or {})
            annotations[SECRET_KEYS_ANNOTATION] = json.dumps(
                {k: len(v) for k, v in sorted(values.items())}, separators=(",", ":")
            )
            meta["annotations"] = annotations
        obj["metadata"], obj["spec"] = meta, spec
        return obj

    def open_secret(self, obj: Mapping[str, Any]) -> dict[str, bytes]:
        meta = obj.get("metadata") or {}
        env = (obj.get("spec") or {}).get("encrypted")
        if not isinstance(env, Mapping):
            return {}
        return _secrets.open(str(meta.get("herd")), str(meta.get("name")), env, self.keyring)

    def unseal(self, obj: Mapping[str, Any]) -> Obj:
        return _secrets.unseal_manifest(obj, self.sealing_key)

    async def rotate_key(self) -> dict[str, Any]:
        """A new active KEK, then every Secret's data key re-wrapped with it (online, CAS)."""
        old = sorted(k for k in self.keyring.keys if k != self.keyring.active)
        previous = self.keyring.active
        active = self.keyring.rotate()
        self.keyring.save() if self.keyring.path is not None else None
        rewrapped = 0
        for obj in (await self.barn.list("Secret")).items:
            meta = obj["metadata"]
            for _ in range(8):
                env = (obj.get("spec") or {}).get("encrypted")
                if not isinstance(env, dict) or env.get("keyId") == active:
                    break
                obj["spec"]["encrypted"] = _secrets.rewrap(env, self.keyring)
                try:
                    await self.barn.update(obj)
                    rewrapped += 1
                    break
                except errors.Conflict:
                    obj = await self.barn.get("Secret", meta["name"], meta["herd"])
                except errors.NotFound:
                    break
        return {
            "activeKeyId": active,
            "previousKeyIds": [*old, previous],
            "rewrapped": rewrapped,
        }


def present(obj: Obj) -> Obj:
    """What leaves the server for a read: Secrets keep only the envelope's key id and version."""
    out: Obj = _present(obj)
    return out


def _present(obj: Any) -> Any:
    if isinstance(obj, dict):
        if obj.get("kind") == "Secret" and isinstance(obj.get("spec"), dict):
            spec = dict(obj["spec"])
            env = spec.get("encrypted")
            if isinstance(env, dict):
                spec["encrypted"] = {"keyId": env.get("keyId"), "version": env.get("version")}
            spec.pop("data", None)
            spec.pop("stringData", None)
            return {**obj, "spec": spec}
        return {k: _present(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_present(v) for v in obj]
    return obj


__all__ = [
    "BOOTSTRAP_GROUP",
    "SECRET_KEYS_ANNOTATION",
    "BearerAuthenticator",
    "RateLimiter",
    "RbacAuthorizer",
    "Security",
    "SecurityConfig",
    "identity_of",
    "present",
    "resource_of",
    "subject_of",
]
