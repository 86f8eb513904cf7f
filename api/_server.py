"""The API server: grpc.aio over mTLS in front of a Barn.

Request flow: TLS handshake (the client certificate must chain to the cluster CA) -> authentication
chain (``_auth``) -> authorization hook -> admission (``_admission``; ``_apply`` for server-side
apply) -> the Barn. Three services, all JSON over gRPC generic handlers (``api/resources.proto``):
``runink.v1.Resources`` (CRUD, Apply, Watch, Version), ``runink.v1.Logs`` (Read, server-streaming
raw bytes from a pluggable ``LogSource``) and ``runink.v1.Auth`` (WhoAmI). Errors leave as a gRPC
status plus ``runink-error-bin`` trailing metadata (``_wire``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Literal, Protocol

import grpc

import runink
from runink import schemas
from runink.api import _admission, _apply, _auth, _tls, _wire
from runink.schemas import errors
from runink.store import _api as barn_api

log = logging.getLogger(__name__)

Obj = dict[str, Any]
Propagation = Literal["background", "foreground", "orphan"]
PROPAGATIONS: tuple[str, ...] = ("background", "foreground", "orphan")
FINALIZER_FOR = {"foreground": "foregroundDeletion", "orphan": "orphan"}
DEFAULT_MANAGER = "runink-client"
_RETRIES = 8


class LogSource(Protocol):
    """Where ``runink logs`` bytes come from; the node agent plugs its implementation in."""

    def read(
        self, herd: str, slice: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[bytes]: ...


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


class ApiServer:
    """The API server bound to ``host:port`` (``port=0`` picks one; read ``.port`` after start)."""

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
    ) -> None:
        self.handlers = Handlers(barn, bookmark_interval=bookmark_interval)
        self.ca_pem = ca_pem
        self.server_pair = server_pair
        self.host = host
        self.requested_port = port
        self.port = 0
        self.auth = _auth.AuthChain(
            authenticators
            if authenticators is not None
            else [_auth.ClientCertificateAuthenticator()]
        )
        self.authorizer: _auth.Authorizer = authorizer or _auth.AllowAll()
        self.log_source = log_source
        self._server: grpc.aio.Server | None = None

    # -- auth -----------------------------------------------------------------------------------
    async def _identity(self, context: grpc.aio.ServicerContext[Any, Any]) -> _auth.Identity:
        auth_context = {k: list(v) for k, v in context.auth_context().items()}
        metadata: dict[str, str | bytes] = dict(context.invocation_metadata() or ())
        return await self.auth.authenticate(_auth.AuthRequest(auth_context, metadata))

    async def _authorize(self, identity: _auth.Identity, verb: str, req: Obj) -> None:
        obj = req.get("object")
        if isinstance(obj, dict):
            meta = obj.get("metadata") or {}
            kind, herd, name = str(obj.get("kind", "")), meta.get("herd"), meta.get("name")
        else:
            kind, herd, name = str(req.get("kind") or ""), req.get("herd"), req.get("name")
        await self.authorizer.authorize(identity, verb, kind, herd, name)

    @staticmethod
    async def _abort(context: grpc.aio.ServicerContext[Any, Any], err: errors.RuninkError) -> None:
        await context.abort(
            _wire.status_code(err),
            err.message.split("\n", 1)[0],
            trailing_metadata=((_wire.ERROR_KEY, _wire.error_payload(err)),),
        )

    def _unary(self, verb: str, fn: Unary) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                req = _wire.decode(request)
                identity = await self._identity(context)
                await self._authorize(identity, verb, req)
                return _wire.encode(await fn(req))
            except errors.RuninkError as e:
                await self._abort(context, e)
                raise AssertionError("unreachable: abort raises") from e

        return grpc.unary_unary_rpc_method_handler(handler)

    def _watch_handler(self) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            try:
                req = _wire.decode(request)
                identity = await self._identity(context)
                await self._authorize(identity, "watch", req)
                async for ev in self.handlers.watch(req):
                    yield _wire.encode(ev)
            except errors.RuninkError as e:
                await self._abort(context, e)

        return grpc.unary_stream_rpc_method_handler(handler)

    def _logs_handler(self) -> grpc.RpcMethodHandler[bytes, bytes]:
        async def handler(
            request: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            try:
                req = _wire.decode(request)
                identity = await self._identity(context)
                await self.authorizer.authorize(
                    identity, "get", "Slice/log", req.get("herd"), req.get("slice")
                )
                if self.log_source is None:
                    raise errors.Unavailable("no log source: the node agent is not running here")
                tail = req.get("tail")
                async for chunk in self.log_source.read(
                    str(req.get("herd", "")),
                    str(req.get("slice", "")),
                    follow=bool(req.get("follow")),
                    tail=int(tail) if tail is not None else None,
                ):
                    yield chunk
            except errors.RuninkError as e:
                await self._abort(context, e)

        return grpc.unary_stream_rpc_method_handler(handler)

    async def _whoami(self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        try:
            identity = await self._identity(context)
        except errors.RuninkError as e:
            await self._abort(context, e)
            raise AssertionError("unreachable: abort raises") from e
        return _wire.encode(
            {"user": identity.user, "groups": list(identity.groups), "method": identity.method}
        )

    async def _version(self, req: Obj) -> Obj:
        return {"version": runink.__version__, "revision": str(self.handlers.barn.revision)}

    def generic_handlers(self) -> list[grpc.GenericRpcHandler[Any, Any]]:
        h = self.handlers
        resources = {
            "Apply": self._unary("apply", h.apply),
            "Create": self._unary("create", h.create),
            "Get": self._unary("get", h.get),
            "List": self._unary("list", h.list),
            "Update": self._unary("update", h.update),
            "UpdateStatus": self._unary("update", h.update_status),
            "Delete": self._unary("delete", h.delete),
            "Version": self._unary("get", self._version),
            "Watch": self._watch_handler(),
        }
        return [
            grpc.method_handlers_generic_handler(_wire.SERVICE, resources),
            grpc.method_handlers_generic_handler(
                _wire.LOGS_SERVICE, {"Read": self._logs_handler()}
            ),
            grpc.method_handlers_generic_handler(
                _wire.AUTH_SERVICE, {"WhoAmI": grpc.unary_unary_rpc_method_handler(self._whoami)}
            ),
        ]

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> int:
        """Bind and serve; returns the port. ``Unavailable`` if the address is taken."""
        server = grpc.aio.server(handlers=self.generic_handlers())
        creds = grpc.ssl_server_credentials(
            [(self.server_pair.key_pem, self.server_pair.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )
        address = f"{self.host}:{self.requested_port}"
        try:
            port = server.add_secure_port(address, creds)
        except RuntimeError as e:
            raise errors.Unavailable(
                f"cannot listen on {address}: {e}; is another runink server running? "
                "(choose another one with --port)"
            ) from e
        if port == 0:
            raise errors.Unavailable(f"cannot listen on {address}: the port is taken")
        await server.start()
        self._server = server
        self.port = port
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def run(self, ready: Callable[[int], None] | None = None) -> None:
        """Serve until cancelled (the composition root's component shape)."""
        await self.start()
        try:
            if ready is not None:
                ready(self.port)
            await asyncio.Event().wait()
        finally:
            await self.stop()


__all__ = ["ApiServer", "Handlers", "LogSource", "Propagation"]
