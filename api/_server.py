"""The API server: grpc.aio over mTLS in front of a Barn.

Request flow: TLS handshake (mTLS port: the client certificate must chain to the cluster CA;
token port: server TLS only, a bearer token is required) -> authentication chain (``_auth``,
``_security``) -> per-identity rate limit -> authorization (RBAC / node authorizer, escalation
checks) -> Secret sealing -> admission (``_admission``; ``_apply``) -> the Barn, every request
audited. Services, all JSON over gRPC generic handlers (``api/resources.proto``):
``runink.v1.Resources`` (CRUD, Apply, Watch, Version), ``runink.v1.Logs`` (Read),
``runink.v1.Auth`` (WhoAmI, CanI, Reveal, RotateKey, SealingKey, API keys, ServiceAccountToken),
``runink.v1.Bootstrap`` (SignNodeCSR) and, given a `GovernanceService`, ``runink.v1.Governance``
(lineage ingest and queries, annotations; RBAC resources ``lineage`` and ``annotations``) plus the
OpenLineage HTTP endpoint (`lineage_http`). Errors leave as a gRPC status plus
``runink-error-bin`` trailing metadata (``_wire``).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime
import json
import logging
import os
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import grpc

import runink
from runink import schemas
from runink.api import (
    _admission,
    _agentlogs,
    _apikeys,
    _apply,
    _audit,
    _auth,
    _credentials,
    _governance,
    _lineage_http,
    _rbac,
    _security,
    _tls,
    _wire,
)
from runink.schemas import errors
from runink.store import _api as barn_api

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Propagation = Literal["background", "foreground", "orphan"]
PROPAGATIONS: tuple[str, ...] = ("background", "foreground", "orphan")
FINALIZER_FOR = {"foreground": "foregroundDeletion", "orphan": "orphan"}
DEFAULT_MANAGER = "runink-client"
_RETRIES = 8


LogSource = _agentlogs.LogSource


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rv(obj: Obj) -> str | None:
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value not in (None, "") else None


class Handlers:
    """The resource operations, transport-free: the gRPC layer below only decodes and encodes."""

    def __init__(self, barn: barn_api.Barn, *, bookmark_interval: float = 5.0) -> None:
        self.barn = barn
        self.bookmark_interval = bookmark_interval

    # -- events ---------------------------------------------------------------------------------
    async def record_event(
        self, obj: Obj, reason: str, message: str, *, type_: str = "Normal"
    ) -> None:
        """Best effort: an Event about ``obj`` in its herd (cluster-scoped objects get none)."""
        meta = obj.get("metadata") or {}
        herd = meta.get("herd")
        if not herd:
            return
        now = _now()
        event: Obj = {
            "apiVersion": "runink.io/v1",
            "kind": "Event",
            # Event names are DNS labels: "<object>-<random>", truncated to fit 63 characters.
            "metadata": {
                "name": f"{str(meta.get('name'))[:50]}-{uuid.uuid4().hex[:10]}",
                "herd": herd,
            },
            "spec": {
                "involvedObject": {
                    "kind": obj.get("kind"),
                    "herd": herd,
                    "name": meta.get("name"),
                    "uid": meta.get("uid"),
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "source": "apiserver",
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
            },
        }
        try:
            event = schemas.validate(event)
            await self.barn.create(event)
        except errors.RuninkError as e:
            # An event is a courtesy to `describe`; it never fails the write it describes.
            log.debug("event not recorded: %s", e)

    # -- reads ----------------------------------------------------------------------------------
    async def get(self, req: Obj) -> Obj:
        info = _admission.resolve(str(req.get("kind", "")))
        return await self.barn.get(
            info.kind,
            str(req.get("name", "")),
            req.get("herd") if info.namespaced else None,
            linearizable=bool(req.get("linearizable")),
        )

    async def list(self, req: Obj) -> Obj:
        info = _admission.resolve(str(req.get("kind", "")))
        result = await self.barn.list(
            info.kind,
            req.get("herd") if info.namespaced else None,
            selector=req.get("selector") or None,
            limit=int(req.get("limit") or 0),
            continue_token=req.get("continue") or None,
            linearizable=bool(req.get("linearizable")),
        )
        return {
            "items": result.items,
            "resourceVersion": str(result.revision),
            "continue": result.continue_token,
        }

    async def watch(self, req: Obj) -> AsyncIterator[Obj]:
        kind = req.get("kind")
        herd = req.get("herd")
        if kind:
            info = _admission.resolve(str(kind))
            kind = info.kind
            herd = herd if info.namespaced else None
        since = req.get("since")
        interval = req.get("bookmarkInterval")
        async for ev in self.barn.watch(
            kind or None,
            herd or None,
            since=barn_api.Revision(int(since)) if since not in (None, "") else None,
            selector=req.get("selector") or None,
            bookmark_interval=float(interval) if interval else self.bookmark_interval,
        ):
            if _credentials.is_reserved(ev.object.get("kind")):
                continue  # API key records (hashed) are the server's own, never served
            yield {"type": ev.type, "object": ev.object, "revision": str(ev.revision)}

    # -- writes ---------------------------------------------------------------------------------
    async def create(self, req: Obj) -> Obj:
        obj = await _admission.admit_create(self.barn, req.get("object") or {})
        manager = str(req.get("fieldManager") or DEFAULT_MANAGER)
        obj["metadata"]["managedFields"] = _apply.record_update(None, obj, manager)
        if req.get("dryRun"):
            meta = obj["metadata"]
            try:
                await self.barn.get(obj["kind"], meta["name"], meta.get("herd"))
            except errors.NotFound:
                return obj
            raise errors.AlreadyExists(f"{barn_api.ObjectKey.of(obj)} already exists")
        # No Event for a plain create: controllers create Slices and Events through this path,
        # and an Event per create would double their writes (apply and delete record one).
        return await self.barn.create(obj)

    async def update(self, req: Obj) -> Obj:
        raw = req.get("object") or {}
        info, shaped = _admission.admit_status(raw)
        meta = shaped["metadata"]
        manager = str(req.get("fieldManager") or DEFAULT_MANAGER)
        wanted_rv = _rv(shaped)
        for _ in range(_RETRIES):
            live = await self.barn.get(info.kind, meta["name"], meta.get("herd"))
            obj = await _admission.admit_update(self.barn, shaped, live)
            if wanted_rv is None:
                # Unconditional update: still CAS on what we read, so managedFields stay exact.
                obj["metadata"]["resourceVersion"] = _rv(live)
            obj["metadata"]["managedFields"] = _apply.record_update(live, obj, manager)
            if req.get("dryRun"):
                if wanted_rv is not None and wanted_rv != _rv(live):
                    raise _stale(live, wanted_rv)
                return obj
            try:
                return await self.barn.update(obj)
            except errors.Conflict:
                if wanted_rv is not None:
                    raise
        raise errors.Conflict(f"{barn_api.ObjectKey.of(shaped)} keeps changing; retry")

    async def update_status(self, req: Obj) -> Obj:
        _, obj = _admission.admit_status(req.get("object") or {})
        if req.get("dryRun"):
            meta = obj["metadata"]
            live = await self.barn.get(obj["kind"], meta["name"], meta.get("herd"))
            wanted = _rv(obj)
            if wanted is not None and wanted != _rv(live):
                raise _stale(live, wanted)
            preview = copy.deepcopy(live)
            preview["status"] = obj.get("status")
            return preview
        return await self.barn.update_status(obj)

    async def delete(self, req: Obj) -> Obj:
        info = _admission.resolve(str(req.get("kind", "")))
        name = str(req.get("name", ""))
        herd = req.get("herd") if info.namespaced else None
        rv = req.get("resourceVersion") or None
        propagation = str(req.get("propagation") or "background")
        if propagation not in PROPAGATIONS:
            raise errors.Invalid(
                f"propagation must be one of {', '.join(PROPAGATIONS)}",
                errors=[errors.FieldError("propagation", f"unknown value {propagation!r}")],
            )
        if req.get("dryRun"):
            live = await self.barn.get(info.kind, name, herd)
            if rv is not None and rv != _rv(live):
                raise _stale(live, rv)
            preview = copy.deepcopy(live)
            preview["metadata"].setdefault("deletionTimestamp", _now())
            return preview
        finalizer = FINALIZER_FOR.get(propagation)
        if finalizer is not None:
            await self._add_finalizer(info.kind, name, herd, finalizer, rv)
            rv = None  # our own finalizer write moved the version on
        deleted = await self.barn.delete(info.kind, name, herd, resource_version=rv)
        await self.record_event(
            deleted, "Deleting", f"{info.kind} deletion requested (propagation={propagation})"
        )
        return deleted

    async def _add_finalizer(
        self, kind: str, name: str, herd: str | None, finalizer: str, rv: str | None
    ) -> None:
        for _ in range(_RETRIES):
            live = await self.barn.get(kind, name, herd)
            if rv is not None and rv != _rv(live):
                raise _stale(live, rv)
            meta = live["metadata"]
            if meta.get("deletionTimestamp") or finalizer in (meta.get("finalizers") or []):
                return
            meta["finalizers"] = [*(meta.get("finalizers") or []), finalizer]
            try:
                await self.barn.update(live)
                return
            except errors.Conflict:
                if rv is not None:
                    raise
        raise errors.Conflict(f"{kind}/{name} keeps changing; retry the delete")

    async def apply(self, req: Obj) -> Obj:
        intent = req.get("object") or {}
        manager = req.get("fieldManager")
        if not manager:
            raise errors.Invalid(
                "apply needs a field manager",
                errors=[errors.FieldError("fieldManager", "required")],
            )
        force = bool(req.get("force"))
        info, intent = _admission.admit_status(intent)
        meta = intent["metadata"]
        intent.pop("status", None)
        for _ in range(_RETRIES):
            try:
                live: Obj | None = await self.barn.get(info.kind, meta["name"], meta.get("herd"))
            except errors.NotFound:
                live = None
            merged = _apply.apply(live, intent, str(manager), force=force)
            # Non-owned metadata the intent states (finalizers, ownerReferences) is taken as given.
            for key in ("finalizers", "ownerReferences"):
                if key in meta:
                    merged["metadata"][key] = copy.deepcopy(meta[key])
            if live is None:
                obj = await _admission.admit_create(self.barn, merged)
                if req.get("dryRun"):
                    return obj
                try:
                    created = await self.barn.create(obj)
                except errors.AlreadyExists:
                    continue
                await self.record_event(created, "Applied", f"created by {manager}")
                return created
            merged["metadata"]["resourceVersion"] = _rv(live)
            obj = await _admission.admit_update(self.barn, merged, live)
            if req.get("dryRun") or _same(obj, live):
                return obj if req.get("dryRun") else live
            try:
                updated = await self.barn.update(obj)
            except errors.Conflict:
                continue
            await self.record_event(updated, "Applied", f"updated by {manager}")
            return updated
        raise errors.Conflict(f"{barn_api.ObjectKey.of(intent)} keeps changing; retry the apply")


def _same(obj: Obj, live: Obj) -> bool:
    a = {k: v for k, v in obj.items() if k != "status"}
    b = {k: v for k, v in live.items() if k != "status"}
    return a == b


def _stale(live: Obj, wanted: str) -> errors.Conflict:
    have = _rv(live)
    return errors.Conflict(
        f"{barn_api.ObjectKey.of(live)}: resourceVersion {wanted} is stale, the current "
        f"resourceVersion is {have}",
        details={"currentResourceVersion": have},
    )


# ---------------------------------------------------------------------------------------------
# gRPC plumbing

Unary = Callable[[Obj], Awaitable[Obj]]
Rpc = Callable[[_auth.Identity, Obj, "_Call"], Awaitable[Obj]]
_NODE_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_WRITE_VERBS = {"Create": "create", "Update": "update", "Apply": "apply"}


@dataclass(slots=True)
class _Call:
    """What the audit line says about one request; filled in as the request proceeds."""

    rpc: str
    verb: str = ""
    kind: str = ""
    herd: str | None = None
    name: str | None = None
    decision: Literal["allow", "deny"] = "deny"
    reason: str = ""


def _target(req: Obj) -> tuple[str, str | None, str | None]:
    obj = req.get("object")
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        return str(obj.get("kind", "")), meta.get("herd"), meta.get("name")
    return str(req.get("kind") or ""), req.get("herd"), req.get("name")


def _namespaced(kind: str) -> bool:
    try:
        return _admission.resolve(kind.partition("/")[0]).namespaced
    except errors.Invalid:
        return True


class ApiServer:
    """The API server bound to ``host:port`` (``port=0`` picks one; read ``.port`` after start).

    ``token_port`` (None: none) opens a second, server-TLS-only listener for clients without a
    certificate (OIDC users, API keys, service-account tokens, node bootstrap): grpcio cannot ask
    for an optional client certificate, so certificate and bearer clients use separate ports.

    ``runink logs``: ``log_source`` serves the slices of ``local_node`` (this host's agent, read
    from its state dir); given ``agent_client`` (the ``agent-client`` pair of the cluster PKI),
    the logs of a slice bound to any other node are proxied from that node's agent
    (`_agentlogs`). Without ``agent_client``, ``log_source`` serves every slice (as before).
    """

    def __init__(
        self,
        barn: barn_api.Barn,
        *,
        ca_pem: bytes,
        server_pair: _tls.KeyPair,
        host: str = "127.0.0.1",
        port: int = 0,
        authenticators: Sequence[_auth.Authenticator] | None = None,
        authorizer: _auth.Authorizer | None = None,
        log_source: LogSource | None = None,
        bookmark_interval: float = 5.0,
        security: _security.SecurityConfig | None = None,
        ca_pair: _tls.KeyPair | None = None,
        token_port: int | None = None,
        governance: _governance.GovernanceService | None = None,
        local_node: str | None = None,
        agent_client: _tls.KeyPair | None = None,
    ) -> None:
        self.handlers = Handlers(barn, bookmark_interval=bookmark_interval)
        self.governance = governance
        self.ca_pem = ca_pem
        self.ca_pair = ca_pair
        self.server_pair = server_pair
        self.host = host
        self.requested_port = port
        self.requested_token_port = token_port
        self.port = 0
        self.token_port = 0
        self.security = _security.Security(barn, security)
        self.auth = _auth.AuthChain(
            authenticators
            if authenticators is not None
            else [
                _security.BearerAuthenticator(self.security),
                _auth.ClientCertificateAuthenticator(),
            ]
        )
        self.authorizer: _auth.Authorizer = authorizer or self.security.rbac
        self.log_source = log_source
        self.local_node = local_node
        self.agent_client = agent_client
        self.bootstrap_token: str | None = None
        self._server: grpc.aio.Server | None = None
        self._background: asyncio.Task[None] | None = None

    # -- auth -----------------------------------------------------------------------------------
    async def _identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> _auth.Identity:
        auth_context = {k: list(v) for k, v in context.auth_context().items()}
        metadata: dict[str, str | bytes] = dict(context.invocation_metadata() or ())
        return await self.auth.authenticate(_auth.AuthRequest(auth_context, metadata))

    async def _authz(
        self,
        identity: _auth.Identity,
        call: _Call,
        verb: str,
        kind: str,
        herd: str | None,
        name: str | None,
        *,
        node_selector: str | None = None,
    ) -> None:
        """Authorize and note the decision for the audit line (Forbidden on deny)."""
        call.verb, call.kind, call.herd, call.name = verb, kind, herd, name
        if not _namespaced(kind):
            herd = None
        if isinstance(self.authorizer, _security.RbacAuthorizer):
            await self.authorizer.authorize(
                identity, verb, kind, herd, name, node_selector=node_selector
            )
        else:
            await self.authorizer.authorize(identity, verb, kind, herd, name)
        call.decision = "allow"

    def _audit(
        self, identity: _auth.Identity | None, call: _Call, code: str, started: float
    ) -> None:
        audit = self.security.audit
        if audit is None:
            return
        resource, sub = _security.resource_of(call.kind) if call.kind else (call.rpc, None)
        audit.record(
            _audit.AuditEntry(
                user=identity.user if identity else "<unauthenticated>",
                groups=identity.groups if identity else (),
                verb=call.verb or call.rpc,
                resource=resource,
                subresource=sub,
                herd=call.herd,
                name=call.name,
                decision=call.decision,
                code=code,
                latency_ms=round((time.monotonic() - started) * 1000, 3),
                reason=call.reason,
                extra={"rpc": call.rpc, "method": identity.method if identity else ""},
            )
        )

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: errors.RuninkError) -> None:
        await context.abort(
            _wire.status_code(err),
            err.message.split("\n", 1)[0],
            trailing_metadata=((_wire.ERROR_KEY, _wire.error_payload(err)),),
        )

    def _deadline(self, context: grpc.aio.ServicerContext[Any, Any]) -> float:
        limit = self.security.config.default_deadline
        remaining: float | None = context.time_remaining()  # None: the client set no deadline
        return min(limit, remaining) if remaining is not None else limit

    def _rpc(self, rpc: str, fn: Rpc) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            started = time.monotonic()
            call = _Call(rpc)
            identity: _auth.Identity | None = None
            try:
                try:
                    req = _wire.decode(request)
                except ValueError:
                    raise errors.Invalid("request body is not JSON") from None
                identity = await self._identity(context)
                self.security.limiter.take(identity.user)
                deadline = self._deadline(context)
                try:
                    async with asyncio.timeout(deadline):
                        out = _wire.encode(await fn(identity, req, call))
                except TimeoutError:
                    raise errors.OutcomeUnknown(
                        f"{rpc} did not finish within the server deadline of {deadline:.1f} s; "
                        "a write may still have happened: read before retrying"
                    ) from None
                self._audit(identity, call, "OK", started)
                return out
            except errors.RuninkError as e:
                call.reason = e.message.split("\n", 1)[0]
                self._audit(identity, call, _wire.status_code(e).name, started)
                await self._abort(context, e)
                raise AssertionError("unreachable: abort raises") from e

        return grpc.unary_unary_rpc_method_handler(handler)

    # -- resource RPCs --------------------------------------------------------------------------
    def _resource(self, rpc: str, verb: str, fn: Unary) -> Rpc:
        async def run(identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
            kind, herd, name = _target(req)
            if rpc == "UpdateStatus":
                kind = f"{kind}/status"
            await self._authz(identity, call, verb, kind, herd, name)
            return _security.present(await fn(req))

        return run

    def _write(self, rpc: str, fn: Unary) -> Rpc:
        async def run(identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
            obj = req.get("object")
            if not isinstance(obj, dict):
                raise errors.Invalid("the request has no object")
            if obj.get("kind") == "SealedSecret":
                if rpc == "Update":
                    raise errors.Invalid("a SealedSecret is applied or created, not updated")
                obj = self.security.unseal(obj)
            kind, herd, name = _target({"object": obj})
            verb = _WRITE_VERBS[rpc]
            if verb == "apply":
                try:
                    info = _admission.resolve(kind)
                    await self.handlers.barn.get(
                        info.kind, str(name), herd if info.namespaced else None
                    )
                    verb = "update"
                except errors.NotFound:
                    verb = "create"
            await self._authz(identity, call, verb, kind, herd, name)
            resolved = _admission.resolve(kind).kind
            if resolved in _security.RBAC_KINDS:
                decision = _rbac.check_rbac_write(
                    _security.subject_of(identity),
                    _security._flatten({**obj, "kind": resolved}),
                    self.security.rbac.policy,
                )
                if not decision.allowed:
                    call.decision = "deny"
                    raise errors.Forbidden(decision.reason)
            if resolved == "Secret":
                obj = await self.security.seal_secret_write({**obj, "kind": "Secret"})
            result = await fn({**req, "object": obj})
            if resolved in _security.RBAC_KINDS and not req.get("dryRun"):
                await self.security.rbac.refresh()
            return _security.present(result)

        return run

    async def _delete(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        kind, herd, name = _target(req)
        await self._authz(identity, call, "delete", kind, herd, name)
        result = await self.handlers.delete(req)
        if _admission.resolve(kind).kind in _security.RBAC_KINDS:
            await self.security.rbac.refresh()
        return _security.present(result)

    def _node_filter(self, identity: _auth.Identity, kind: str) -> str | None:
        """An agent lists/watches only the Slices bound to it: the server adds the filter."""
        node = _security.subject_of(identity).node
        if node is None:
            return None
        try:
            return node if _admission.resolve(kind).kind == "Slice" else None
        except errors.Invalid:
            return None

    async def _list(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        kind, herd, _ = _target(req)
        node = self._node_filter(identity, kind)
        await self._authz(identity, call, "list", kind, herd, None, node_selector=node)
        out = await self.handlers.list(req)
        if node is not None:
            out["items"] = [
                o for o in out["items"] if (o.get("spec") or {}).get("nodeName") == node
            ]
        return _security.present(out)

    async def _version(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        return {"version": runink.__version__, "revision": str(self.handlers.barn.revision)}

    def _stream(
        self,
        rpc: str,
        body: Callable[[_auth.Identity, Obj, _Call], AsyncIterator[bytes]],
    ) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            started = time.monotonic()
            call = _Call(rpc)
            identity: _auth.Identity | None = None
            code = "OK"
            try:
                try:
                    req = _wire.decode(request)
                except ValueError:
                    raise errors.Invalid("request body is not JSON") from None
                identity = await self._identity(context)
                self.security.limiter.take(identity.user)
                async for chunk in body(identity, req, call):
                    yield chunk
            except errors.RuninkError as e:
                code = _wire.status_code(e).name
                call.reason = e.message.split("\n", 1)[0]
                self._audit(identity, call, code, started)
                await self._abort(context, e)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            finally:
                if code in ("OK", "CANCELLED"):
                    self._audit(identity, call, code, started)

        return grpc.unary_stream_rpc_method_handler(handler)

    async def _watch(self, identity: _auth.Identity, req: Obj, call: _Call) -> AsyncIterator[bytes]:
        kind, herd, _ = _target(req)
        node = self._node_filter(identity, kind)
        await self._authz(identity, call, "watch", kind, herd, None, node_selector=node)
        async for ev in self.handlers.watch(req):
            spec = (ev.get("object") or {}).get("spec") or {}
            if node is not None and ev["type"] != "BOOKMARK" and spec.get("nodeName") != node:
                continue
            yield _wire.encode(_security.present(ev))

    async def _logs(self, identity: _auth.Identity, req: Obj, call: _Call) -> AsyncIterator[bytes]:
        herd, name = str(req.get("herd") or ""), str(req.get("slice") or "")
        await self._authz(identity, call, "get", "Slice/log", herd, name)
        tail = req.get("tail")
        follow, n = bool(req.get("follow")), int(tail) if tail is not None else None
        node = await self._log_node(herd, name)
        if node is not None:
            assert self.agent_client is not None
            target = await self._log_target(node, herd, name)
            source = _agentlogs.read_remote(
                target,
                node,
                ca_pem=self.ca_pem,
                client=self.agent_client,
                herd=herd,
                slice=name,
                follow=follow,
                tail=n,
            )
        elif self.log_source is None:
            raise errors.Unavailable("no log source: the node agent is not running here")
        else:
            source = self.log_source.read(herd, name, follow=follow, tail=n)
        try:
            async for chunk in source:
                yield chunk
        finally:
            # Now, not at garbage collection: a cancelled client stream cancels the agent's.
            aclose = getattr(source, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _log_node(self, herd: str, name: str) -> str | None:
        """The node to proxy a slice's logs from; None for the local log source (this host's
        agent, a slice not bound yet or not found, or no agent client certificate)."""
        if self.agent_client is None:
            return None
        try:
            obj = await self.handlers.barn.get("Slice", name, herd)
        except errors.NotFound:
            return None
        node = (obj.get("spec") or {}).get("nodeName")
        return str(node) if node and node != self.local_node else None

    async def _log_target(self, node: str, herd: str, name: str) -> str:
        try:
            obj = await self.handlers.barn.get("Node", node)
        except errors.NotFound:
            raise errors.Unavailable(
                f'slice {herd}/{name} ran on node "{node}", which is no longer registered: '
                "its logs went with it"
            ) from None
        target = _agentlogs.node_log_target(obj)
        if target is None:
            raise errors.Unavailable(
                f'node "{node}" publishes no log endpoint (status.daemonEndpoints.logs and '
                f"status.addresses): its agent is older or not running; restart `runink agent "
                f"--node-name {node}` (it serves logs on --log-port) and retry"
            )
        return target

    # -- auth RPCs ------------------------------------------------------------------------------
    async def _whoami(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        call.decision = "allow"
        return {"user": identity.user, "groups": list(identity.groups), "method": identity.method}

    async def _can_i(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        call.verb, call.decision = "can-i", "allow"
        subject = _security.subject_of(identity)
        as_user = req.get("as")
        if as_user:
            await self._authz(identity, call, "impersonate", "users", None, str(as_user))
            groups = [str(g) for g in req.get("asGroups") or []]
            subject = _security.subject_of(
                _auth.Identity(str(as_user), tuple(groups), method="impersonated")
            )
        resource, sub = _security.resource_of(str(req.get("resource") or ""))
        herd = req.get("herd") or None
        if not _namespaced(resource):
            herd = None
        attrs = _rbac.RequestAttributes(
            str(req.get("verb") or ""), resource, sub, herd=herd, name=req.get("name") or None
        )
        assert isinstance(self.security.rbac, _security.RbacAuthorizer)
        d = await self.security.rbac.decide(subject, attrs)
        return {"allowed": d.allowed, "reason": d.reason, "user": subject.user}

    async def _reveal(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        herd, name = str(req.get("herd") or ""), str(req.get("name") or "")
        await self._authz(identity, call, "reveal", "Secret", herd, name)
        obj = await self.handlers.barn.get("Secret", name, herd)
        values = self.security.open_secret(obj)
        key = req.get("key")
        if key is not None:
            if key not in values:
                raise errors.NotFound(f'Secret "{name}" in herd "{herd}" has no key {key!r}')
            values = {str(key): values[str(key)]}
        return {"data": {k: base64.b64encode(v).decode() for k, v in sorted(values.items())}}

    async def _rotate_key(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        await self._authz(identity, call, "update", "secrets/keyring", None, None)
        return await self.security.rotate_key()

    async def _sealing_key(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        call.decision = "allow"  # a public key: any authenticated caller may fetch it
        pem = self.security.sealing_public_pem
        from runink.api import _secrets

        return {"publicKey": pem.decode(), "fingerprint": _secrets.public_key_fingerprint(pem)}

    async def _create_api_key(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        user = str(req.get("user") or identity.user)
        groups = list(identity.groups)
        if user != identity.user:
            await self._authz(identity, call, "impersonate", "users", None, user)
            groups = [str(g) for g in req.get("groups") or []]
        else:
            call.verb, call.kind, call.decision = "create", "apikeys", "allow"
        if user.startswith("system:"):
            raise errors.Forbidden(f"API keys cannot be issued for the reserved user {user!r}")
        groups = [g for g in groups if g != _rbac.AUTHENTICATED_GROUP]
        ttl = float(req.get("ttlSeconds") or 30 * 86400)
        token, record = _apikeys.create_api_key(user, groups, ttl, now=time.time())
        record["description"] = str(req.get("description") or "")
        record = await self.security.apikeys.create(record)
        return {"token": token, **{k: v for k, v in record.items() if k != "hash"}}

    def _may_manage_all_keys(self, identity: _auth.Identity) -> bool:
        return _rbac.MASTERS_GROUP in identity.groups

    async def _list_api_keys(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        call.verb, call.kind, call.decision = "list", "apikeys", "allow"
        everyone = self._may_manage_all_keys(identity)
        items = [
            {k: v for k, v in r.items() if k != "hash"}
            for r in self.security.apikeys.records.values()
            if everyone or r.get("user") == identity.user
        ]
        return {"items": sorted(items, key=lambda r: str(r.get("createdAt")))}

    async def _revoke_api_key(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        call.verb, call.kind, call.name = "delete", "apikeys", str(req.get("id"))
        not_found = errors.NotFound(f"API key {req.get('id')!r} not found")
        if _apikeys.KEY_ID_RE.fullmatch(str(req.get("id"))) is None:
            raise not_found
        try:
            # From the Barn, not the cache: a key made through another replica a moment ago.
            _, record = await self.security.apikeys.get(str(req.get("id")))
        except errors.NotFound:
            raise not_found from None
        if not (record.get("user") == identity.user or self._may_manage_all_keys(identity)):
            raise not_found
        call.decision = "allow"
        revoked = await self.security.apikeys.revoke(str(record["id"]), now=time.time())
        return {k: v for k, v in revoked.items() if k != "hash"}

    async def _sa_token(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        """An agent mints a token for a Slice bound to it, as the Slice's service account."""
        from runink.api import _tokens

        herd, name = str(req.get("herd") or ""), str(req.get("slice") or "")
        call.verb, call.kind, call.herd, call.name = "create", "Slice/token", herd, name
        node = _security.subject_of(identity).node
        if node is None:
            raise errors.Forbidden("only node agents (system:node:<name>) mint slice tokens")
        try:
            obj = await self.handlers.barn.get("Slice", name, herd)
        except errors.NotFound:
            obj = {}
        spec = obj.get("spec") or {}
        if spec.get("nodeName") != node:
            raise errors.Forbidden(f'Slice "{name}" in herd "{herd}" is not bound to node "{node}"')
        call.decision = "allow"
        ttl = min(float(req.get("ttlSeconds") or 600), 3600.0)
        audience = str(req.get("audience") or self.security.config.audience)
        sa = str(spec.get("serviceAccount") or "default")
        now = time.time()
        token = _tokens.issue_sa_token(
            self.security.sa_keys,
            herd=herd,
            name=sa,
            now=now,
            ttl=ttl,
            audience=audience,
            issuer=self.security.config.sa_issuer,
            bound_uid=(obj.get("metadata") or {}).get("uid"),
            bound_slice=name,
        )
        return {"token": token, "expiresAt": int(now + ttl), "serviceAccount": sa}

    async def _sign_node_csr(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        node = str(req.get("nodeName") or "")
        call.verb, call.kind, call.name = "create", "certificatesigningrequests", node
        if not (
            _security.BOOTSTRAP_GROUP in identity.groups or _rbac.MASTERS_GROUP in identity.groups
        ):
            raise errors.Forbidden(
                f"{identity.user} may not sign node certificates (needs a bootstrap token)"
            )
        if not _NODE_NAME.fullmatch(node):
            raise errors.Invalid(f"nodeName {node!r} is not a DNS label")
        return self._sign_as_node(node, req, call)

    def _sign_as_node(
        self, node: str, req: Obj, call: _Call, serving_name: str | None = None
    ) -> Obj:
        """Sign the request's CSR as ``system:node:<node>`` (group system:nodes), with the CA."""
        if self.ca_pair is None:
            raise errors.Unavailable("this API server has no CA key; it cannot sign certificates")
        try:
            cert = _tls.sign_csr(
                self.ca_pair,
                str(req.get("csr") or "").encode(),
                f"system:node:{node}",
                organizations=(_rbac.NODES_GROUP,),
                serving_name=serving_name,
            )
        except ValueError as e:
            raise errors.Invalid(str(e)) from None
        call.decision = "allow"
        return {"certificate": cert.decode(), "caCertificate": self.ca_pem.decode()}

    async def _sign_node_serving_csr(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        """A serving certificate for a node's log endpoint (as the kubelet-serving signer): only
        for the caller's own node (or an admin), naming `_tls.node_serving_name` and nothing else."""
        node = str(req.get("nodeName") or "")
        call.verb, call.kind, call.name = "create", "certificatesigningrequests/serving", node
        if not _NODE_NAME.fullmatch(node):
            raise errors.Invalid(f"nodeName {node!r} is not a DNS label")
        if not (
            _security.subject_of(identity).node == node or _rbac.MASTERS_GROUP in identity.groups
        ):
            raise errors.Forbidden(
                f"{identity.user} may not get a serving certificate for node {node!r}: only its "
                f"agent (system:node:{node}) or an admin may"
            )
        return self._sign_as_node(node, req, call, _tls.node_serving_name(node))

    # -- governance RPCs ------------------------------------------------------------------------
    def _gov(self) -> _governance.GovernanceService:
        if self.governance is None:
            raise errors.Unavailable("this API server runs no governance service")
        return self.governance

    async def ingest_lineage(self, event: Obj | str | bytes) -> Obj:
        """Store an OpenLineage RunEvent, then apply the Dataset objects its schema facets imply.

        The caller is already authorized. The catalog write is a courtesy: a Dataset that cannot
        be written (an invalid name, a conflict that keeps coming back) is logged, and the event,
        which is stored, is not refused for it.
        """
        gov = self._gov()
        state = await asyncio.to_thread(gov.ingest, event)
        raw = json.loads(event) if isinstance(event, str | bytes) else event
        for obj in _governance.catalog_objects(raw):
            req = {"object": obj, "fieldManager": _governance.CATALOG_MANAGER, "force": True}
            try:
                await self.handlers.apply(req)
            except errors.RuninkError as e:
                log.warning(
                    "catalog: Dataset %s/%s not written: %s",
                    obj["metadata"]["herd"],
                    obj["metadata"]["name"],
                    e,
                )
        return state

    async def _gov_ingest(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        await self._authz(identity, call, "create", "lineage", None, None)
        event = req.get("event")
        if not isinstance(event, dict):
            raise errors.Invalid(
                "the request has no event",
                errors=[errors.FieldError("event", "an OpenLineage RunEvent object is required")],
            )
        return await self.ingest_lineage(event)

    async def _gov_lineage(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        node = str(req.get("nodeId") or "")
        await self._authz(identity, call, "get", "lineage", None, node)
        if not node:
            raise errors.Invalid("nodeId is required", errors=[errors.FieldError("nodeId", "")])
        gov = self._gov()
        return await asyncio.to_thread(
            gov.lineage,
            node,
            str(req.get("direction") or "both"),
            int(req["depth"]) if req.get("depth") is not None else 20,
        )

    async def _gov_run_graph(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        run_id = str(req.get("runId") or "")
        await self._authz(identity, call, "get", "lineage", None, run_id)
        return await asyncio.to_thread(self._gov().run_graph, run_id)

    async def _gov_versions(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        ns, name = str(req.get("namespace") or ""), str(req.get("name") or "")
        await self._authz(identity, call, "get", "lineage", None, name)
        items = await asyncio.to_thread(
            self._gov().dataset_versions, ns, name, int(req.get("limit") or 100)
        )
        return {"items": items}

    async def _gov_put_annotations(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        items = req.get("items")
        if not isinstance(items, list):
            raise errors.Invalid("items must be a list of Annotation objects")
        herds = sorted(
            {str((i.get("metadata") or {}).get("herd") or "") for i in items if isinstance(i, dict)}
        )
        for herd in herds or [""]:
            await self._authz(identity, call, "create", "Annotation", herd or None, None)
        gov = self._gov()
        return await asyncio.to_thread(lambda: gov.put_annotations(items, caller=identity.user))

    async def _gov_query_annotations(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        # As a list of a herd-scoped kind: in one herd (what the caller may list there), or in
        # every herd (needs a ClusterRoleBinding).
        herd = str(req.get("herd") or "") or None
        await self._authz(identity, call, "list", "Annotation", herd, None)
        ref = req.get("dataRef")
        gov = self._gov()

        def query() -> Obj:
            return gov.query_annotations(
                annotation_type=req.get("type"),
                source_model=req.get("model"),
                data_ref=dict(ref) if isinstance(ref, dict) else None,
                min_confidence=_float(req.get("minConfidence")),
                max_confidence=_float(req.get("maxConfidence")),
                since=req.get("since"),
                until=req.get("until"),
                review_state=req.get("reviewState"),
                limit=int(req.get("limit") or 100),
                cursor=req.get("continue") or None,
                count=bool(req.get("count")),
                herd=herd,
            )

        return await asyncio.to_thread(query)

    async def _gov_get_annotation(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        aid = str(req.get("id") or "")
        obj = await asyncio.to_thread(self._gov().get_annotation, aid)
        herd = (obj.get("metadata") or {}).get("herd")
        await self._authz(identity, call, "get", "Annotation", herd, aid)
        return obj

    async def _gov_review(self, identity: _auth.Identity, req: Obj, call: _Call) -> Obj:
        aid, state = str(req.get("id") or ""), str(req.get("state") or "")
        gov = self._gov()
        current = await asyncio.to_thread(gov.get_annotation, aid)
        herd = (current.get("metadata") or {}).get("herd")
        await self._authz(identity, call, "update", "Annotation", herd, aid)
        # The store refuses a confirmation by the annotation's producer (errors.Forbidden).
        return await asyncio.to_thread(
            lambda: gov.review_annotation(aid, state, reviewer=identity.user)
        )

    def _governance_handlers(self) -> dict[str, grpc.RpcMethodHandler[bytes, bytes]]:
        return {
            "Ingest": self._rpc("Ingest", self._gov_ingest),
            "Lineage": self._rpc("Lineage", self._gov_lineage),
            "RunGraph": self._rpc("RunGraph", self._gov_run_graph),
            "DatasetVersions": self._rpc("DatasetVersions", self._gov_versions),
            "PutAnnotations": self._rpc("PutAnnotations", self._gov_put_annotations),
            "QueryAnnotations": self._rpc("QueryAnnotations", self._gov_query_annotations),
            "GetAnnotation": self._rpc("GetAnnotation", self._gov_get_annotation),
            "ReviewAnnotation": self._rpc("ReviewAnnotation", self._gov_review),
        }

    def lineage_http(
        self, *, host: str | None = None, port: int = 0
    ) -> _lineage_http.LineageHttpServer:
        """The OpenLineage endpoint (``POST /api/v1/lineage``) over HTTPS with the server's
        certificate, authenticated like the token port (bearer token or API key) and authorized
        on resource ``lineage`` (POST: create, GET: get). Call from the server's event loop, after
        `start`; the caller starts and stops the returned server."""
        loop = asyncio.get_running_loop()
        gov = self._gov()

        async def check(header: str | None, verb: str) -> None:
            call = _Call("HTTP/" + verb)
            started = time.monotonic()
            identity: _auth.Identity | None = None
            try:
                if not header:
                    raise errors.Unauthenticated(
                        "an Authorization: Bearer <token> header is needed"
                    )
                identity = await self.auth.authenticate(
                    _auth.AuthRequest({}, {"authorization": header})
                )
                await self._authz(identity, call, verb, "lineage", None, None)
            except errors.RuninkError as e:
                call.reason = e.message.split("\n", 1)[0]
                self._audit(identity, call, _wire.status_code(e).name, started)
                raise
            self._audit(identity, call, "OK", started)

        def authorize(header: str | None, verb: str) -> None:
            asyncio.run_coroutine_threadsafe(check(header, verb), loop).result(timeout=30)

        def ingest(event: Any) -> Obj:
            return asyncio.run_coroutine_threadsafe(self.ingest_lineage(event), loop).result(
                timeout=60
            )

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        _load_pair(ctx, self.server_pair)
        return _lineage_http.LineageHttpServer(
            gov,
            host=host or self.host,
            port=port,
            authorize=authorize,
            ingest=ingest,
            ssl_context=ctx,
        )

    def generic_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        h = self.handlers
        resources = {
            "Apply": self._rpc("Apply", self._write("Apply", h.apply)),
            "Create": self._rpc("Create", self._write("Create", h.create)),
            "Get": self._rpc("Get", self._resource("Get", "get", h.get)),
            "List": self._rpc("List", self._list),
            "Update": self._rpc("Update", self._write("Update", h.update)),
            "UpdateStatus": self._rpc(
                "UpdateStatus", self._resource("UpdateStatus", "update", h.update_status)
            ),
            "Delete": self._rpc("Delete", self._delete),
            "Version": self._rpc("Version", self._version),
            "Watch": self._stream("Watch", self._watch),
        }
        auth = {
            "WhoAmI": self._rpc("WhoAmI", self._whoami),
            "CanI": self._rpc("CanI", self._can_i),
            "Reveal": self._rpc("Reveal", self._reveal),
            "RotateKey": self._rpc("RotateKey", self._rotate_key),
            "SealingKey": self._rpc("SealingKey", self._sealing_key),
            "CreateAPIKey": self._rpc("CreateAPIKey", self._create_api_key),
            "ListAPIKeys": self._rpc("ListAPIKeys", self._list_api_keys),
            "RevokeAPIKey": self._rpc("RevokeAPIKey", self._revoke_api_key),
            "ServiceAccountToken": self._rpc("ServiceAccountToken", self._sa_token),
        }
        out = [
            grpc.method_handlers_generic_handler(_wire.SERVICE, resources),
            grpc.method_handlers_generic_handler(
                _wire.LOGS_SERVICE, {"Read": self._stream("Logs", self._logs)}
            ),
            grpc.method_handlers_generic_handler(_wire.AUTH_SERVICE, auth),
            grpc.method_handlers_generic_handler(
                _wire.BOOTSTRAP_SERVICE,
                {
                    "SignNodeCSR": self._rpc("SignNodeCSR", self._sign_node_csr),
                    "SignNodeServingCSR": self._rpc(
                        "SignNodeServingCSR", self._sign_node_serving_csr
                    ),
                },
            ),
        ]
        if self.governance is not None:
            out.append(
                grpc.method_handlers_generic_handler(
                    _governance.SERVICE, self._governance_handlers()
                )
            )
        return out

    # -- lifecycle ------------------------------------------------------------------------------
    def _bind(self, server: grpc.aio.Server, port: int, creds: grpc.ServerCredentials) -> int:
        address = f"{self.host}:{port}"
        try:
            bound = server.add_secure_port(address, creds)
        except RuntimeError as e:
            raise errors.Unavailable(
                f"cannot listen on {address}: {e}; is another runink server running? "
                "(choose another one with --port)"
            ) from e
        if bound == 0:
            raise errors.Unavailable(f"cannot listen on {address}: the port is taken")
        return bound

    async def start(self) -> int:
        """Bind and serve; returns the port. ``Unavailable`` if the address is taken."""
        limit = self.security.config.max_message_bytes
        server = grpc.aio.server(
            handlers=self.generic_handlers(),
            options=[("grpc.max_receive_message_length", limit)],
        )
        mtls = grpc.ssl_server_credentials(
            [(self.server_pair.key_pem, self.server_pair.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )
        port = self._bind(server, self.requested_port, mtls)
        if self.requested_token_port is not None:
            tls = grpc.ssl_server_credentials(
                [(self.server_pair.key_pem, self.server_pair.cert_pem)], require_client_auth=False
            )
            self.token_port = self._bind(server, self.requested_token_port, tls)
        await self.security.rbac.refresh()
        await self.security.load_credentials()
        try:
            published = await self._publish_credentials()
        except (errors.Unavailable, errors.OutcomeUnknown) as e:
            # A replica starting before its cluster has a leader: retried in the background.
            log.info("credentials not published yet (%s); retrying in the background", e)
            published = False
        except BaseException:
            await server.stop(None)
            if self.security.audit is not None:
                self.security.audit.close()
            raise
        await server.start()
        self._server = server
        self.port = port
        self._background = asyncio.create_task(
            self._keep_security(published), name="apiserver-security"
        )
        return port

    async def _publish_credentials(self) -> bool:
        """Move old per-replica key files into the Barn, then mint this start's bootstrap token
        (record in the Barn, token in ``<data dir>/bootstrap-token`` for the operator)."""
        await self.security.migrate_credential_files()
        data_dir = self.security.config.data_dir
        if data_dir is not None:
            token = await self.security.create_bootstrap_token()
            _write_private(data_dir / "bootstrap-token", token.encode() + b"\n")
            self.bootstrap_token = token
        return True

    async def _keep_security(self, published: bool) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.security.watch(), name="apiserver-security-watch")
            while not published:
                try:
                    published = await self._publish_credentials()
                except (errors.Unavailable, errors.OutcomeUnknown):
                    await asyncio.sleep(1.0)
                except errors.Invalid as e:
                    log.error("%s", e.message)
                    return

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._background is not None:
            self._background.cancel()
            try:
                await self._background
            except asyncio.CancelledError:
                # Ours (we cancelled it) unless our caller is being cancelled too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            self._background = None
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self.security.audit is not None:
            self.security.audit.close()

    async def run(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until cancelled (the composition root's component shape)."""
        await self.start()
        try:
            if ready is not None:
                ready(self.port)
            await asyncio.Event().wait()
        finally:
            await self.stop()


def _float(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        return float(v)
    except (TypeError, ValueError):
        raise errors.Invalid(f"{v!r} is not a number") from None


def _load_pair(ctx: ssl.SSLContext, pair: _tls.KeyPair) -> None:
    """ssl wants files: write the pair to a private temp dir just long enough to load it."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        cert, key = Path(d) / "tls.crt", Path(d) / "tls.key"
        _write_private(cert, pair.cert_pem)
        _write_private(key, pair.key_pem)
        ctx.load_cert_chain(cert, key)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


__all__ = ["ApiServer", "Handlers", "LogSource", "Propagation"]
