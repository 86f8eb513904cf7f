"""The typed async client of the API server, shaped like the Barn so callers can swap one for the other.

Controllers and the agent use ``create/get/list/update/update_status/delete/watch`` exactly as on an
in-process Barn (same signatures, same ``ListResult``/``WatchEvent`` types, same ``RuninkError``s,
rebuilt from the server's ``runink-error-bin`` trailing metadata), plus ``apply`` (server-side
apply), ``dry_run`` and delete ``propagation``; the governance calls (lineage ingest and graph
queries, annotations) follow. Always TLS: the cluster CA verifies the server and
the client certificate identifies the caller (mTLS).
"""

from __future__ import annotations

import base64
import builtins
from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from runink.api import _config, _oidc, _tls, _wire
from runink.schemas import errors
from runink.store import _api as barn_api

Obj = dict[str, Any]
GOVERNANCE_SERVICE = "runink.v1.Governance"  # = runink.api._governance.SERVICE (no lmdb import)


def channel_options(target: str) -> list[tuple[str, Any]]:
    """Options for a target listing several replicas (``ipv4:h1:p1,h2:p2``): gRPC then fails over
    between them (pick_first), and TLS checks each against the first host's name, not against
    the whole list."""
    if "," not in target:
        return []
    first = target.split(":", 1)[1] if target.startswith(("ipv4:", "ipv6:")) else target
    host = first.split(",", 1)[0].rsplit(":", 1)[0].strip("[]")
    return [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]


class Client:
    """A connection to one API server. Use ``async with Client.from_config() as c:``."""

    def __init__(
        self,
        target: str,
        *,
        ca_pem: bytes | None,
        cert_pem: bytes | None = None,
        key_pem: bytes | None = None,
        herd: str | None = None,
        field_manager: str = "runink-client",
        timeout: float | None = 30.0,
        token: str | None = None,
    ) -> None:
        self.target = target
        self.ca_pem = ca_pem
        self.herd = herd
        self.field_manager = field_manager
        self.timeout = timeout
        self._revision = barn_api.Revision(0)
        # Bearer credential (API key, OIDC ID token, service-account or bootstrap token).
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channel = grpc.aio.secure_channel(target, creds, options=channel_options(target))

    @classmethod
    def from_context(cls, ctx: _config.Context, base: Path | None = None, **kw: Any) -> Client:
        ca, cert, key = ctx.credentials(base)
        bearer = ctx.bearer()
        target = ctx.server
        if bearer and cert is None and ctx.token_server:
            target = ctx.token_server  # no certificate: the server's bearer-token port
        return cls(target, ca_pem=ca, cert_pem=cert, key_pem=key, herd=ctx.herd, token=bearer, **kw)

    @classmethod
    def from_config(cls, path: Path | None = None, context: str | None = None, **kw: Any) -> Client:
        """A client for ``context`` (default: current) of the config at ``path``. An OIDC login
        (``runink login --issuer``) whose ID token expires within a minute is renewed with its
        refresh token and saved back first: blocking, at most once an hour, before any call."""
        config = _config.load(path)
        base = config.path.parent if config.path else None
        return cls.from_context(_oidc.fresh_context(config, context), base, **kw)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(None)

    @property
    def revision(self) -> barn_api.Revision:
        """The newest revision this client has seen (lists, watches, writes); not a server read."""
        return self._revision

    def _seen(self, rv: Any) -> None:
        try:
            value = int(rv)
        except (TypeError, ValueError):
            return
        if value > self._revision:
            self._revision = barn_api.Revision(value)

    async def _call(self, service: str, name: str, request: Obj) -> Obj:
        stub = self._channel.unary_unary(
            _wire.method(service, name),
            request_serializer=_wire.encode,
            response_deserializer=_wire.decode,
        )
        try:
            response: Obj = await stub(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None
        return response

    async def _obj_call(self, name: str, request: Obj) -> Obj:
        obj = await self._call(_wire.SERVICE, name, request)
        self._seen((obj.get("metadata") or {}).get("resourceVersion"))
        return obj

    # -- the Barn's methods ---------------------------------------------------------------------
    async def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        return await self._obj_call(
            "Create", {"object": obj, "dryRun": dry_run, "fieldManager": self.field_manager}
        )

    async def get(
        self, kind: str, name: str, herd: str | None = None, *, linearizable: bool = False
    ) -> Obj:
        return await self._obj_call(
            "Get", {"kind": kind, "name": name, "herd": herd, "linearizable": linearizable}
        )

    async def list(
        self,
        kind: str,
        herd: str | None = None,
        *,
        selector: str | None = None,
        limit: int = 0,
        continue_token: str | None = None,
        linearizable: bool = False,
    ) -> barn_api.ListResult:
        resp = await self._call(
            _wire.SERVICE,
            "List",
            {
                "kind": kind,
                "herd": herd,
                "selector": selector,
                "limit": limit,
                "continue": continue_token,
                "linearizable": linearizable,
            },
        )
        revision = barn_api.Revision(int(resp.get("resourceVersion") or 0))
        self._seen(revision)
        return barn_api.ListResult(
            items=list(resp.get("items") or []),
            revision=revision,
            continue_token=resp.get("continue") or None,
        )

    async def update(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        return await self._obj_call(
            "Update", {"object": obj, "dryRun": dry_run, "fieldManager": self.field_manager}
        )

    async def update_status(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        return await self._obj_call("UpdateStatus", {"object": obj, "dryRun": dry_run})

    async def delete(
        self,
        kind: str,
        name: str,
        herd: str | None = None,
        *,
        resource_version: str | None = None,
        propagation: str = "background",
        dry_run: bool = False,
    ) -> Obj:
        return await self._obj_call(
            "Delete",
            {
                "kind": kind,
                "name": name,
                "herd": herd,
                "resourceVersion": resource_version,
                "propagation": propagation,
                "dryRun": dry_run,
            },
        )

    async def watch(
        self,
        kind: str | None = None,
        herd: str | None = None,
        *,
        since: barn_api.Revision | None = None,
        selector: str | None = None,
        bookmark_interval: float | None = None,
    ) -> AsyncIterator[barn_api.WatchEvent]:
        """Changes after ``since`` in order, with server BOOKMARKs; ``Gone`` if compacted.

        A dropped connection raises ``Unavailable``: resume with ``since=`` the last revision seen.
        """
        stub = self._channel.unary_stream(
            _wire.method(_wire.SERVICE, "Watch"),
            request_serializer=_wire.encode,
            response_deserializer=_wire.decode,
        )
        request = {
            "kind": kind,
            "herd": herd,
            "since": str(since) if since is not None else None,
            "selector": selector,
            "bookmarkInterval": bookmark_interval,
        }
        call = stub(request, metadata=self._metadata)
        try:
            async for msg in call:
                revision = barn_api.Revision(int(msg["revision"]))
                self._seen(revision)
                yield barn_api.WatchEvent(type=msg["type"], object=msg["object"], revision=revision)
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None
        finally:
            call.cancel()

    async def compact(self, revision: barn_api.Revision) -> None:
        raise errors.Forbidden("compaction is an operator action on the server, not an API call")

    # -- beyond the Barn ------------------------------------------------------------------------
    async def apply(
        self,
        obj: Obj,
        manager: str | None = None,
        *,
        force: bool = False,
        dry_run: bool = False,
    ) -> Obj:
        """Server-side apply ``obj`` as ``manager``; ``Conflict`` lists contested fields."""
        return await self._obj_call(
            "Apply",
            {
                "object": obj,
                "fieldManager": manager or self.field_manager,
                "force": force,
                "dryRun": dry_run,
            },
        )

    async def whoami(self) -> Obj:
        return await self._call(_wire.AUTH_SERVICE, "WhoAmI", {})

    async def can_i(
        self,
        verb: str,
        resource: str,
        herd: str | None = None,
        name: str | None = None,
        *,
        as_user: str | None = None,
        as_groups: tuple[str, ...] = (),
    ) -> Obj:
        """``{allowed, reason, user}``: may I (or ``as_user``, needs ``impersonate``) do this?"""
        return await self._call(
            _wire.AUTH_SERVICE,
            "CanI",
            {
                "verb": verb,
                "resource": resource,
                "herd": herd,
                "name": name,
                "as": as_user,
                "asGroups": list(as_groups),
            },
        )

    async def reveal(self, herd: str, name: str, key: str | None = None) -> dict[str, bytes]:
        """A Secret's clear values (needs ``reveal``, or a node whose Slice references it)."""
        resp = await self._call(
            _wire.AUTH_SERVICE, "Reveal", {"herd": herd, "name": name, "key": key}
        )
        return {k: base64.b64decode(v) for k, v in (resp.get("data") or {}).items()}

    async def rotate_key(self) -> Obj:
        return await self._call(_wire.AUTH_SERVICE, "RotateKey", {})

    async def sealing_key(self) -> Obj:
        return await self._call(_wire.AUTH_SERVICE, "SealingKey", {})

    async def create_api_key(
        self, *, ttl_seconds: float | None = None, description: str = "", user: str | None = None
    ) -> Obj:
        return await self._call(
            _wire.AUTH_SERVICE,
            "CreateAPIKey",
            {"ttlSeconds": ttl_seconds, "description": description, "user": user},
        )

    async def list_api_keys(self) -> builtins.list[Obj]:
        resp = await self._call(_wire.AUTH_SERVICE, "ListAPIKeys", {})
        return list(resp.get("items") or [])

    async def revoke_api_key(self, key_id: str) -> Obj:
        return await self._call(_wire.AUTH_SERVICE, "RevokeAPIKey", {"id": key_id})

    async def service_account_token(
        self, herd: str, slice: str, *, audience: str | None = None, ttl_seconds: float = 600
    ) -> Obj:
        """(Agents) a short-lived token for the service account of a Slice bound to this node."""
        return await self._call(
            _wire.AUTH_SERVICE,
            "ServiceAccountToken",
            {"herd": herd, "slice": slice, "audience": audience, "ttlSeconds": ttl_seconds},
        )

    async def sign_node_csr(self, csr_pem: bytes, node_name: str) -> Obj:
        return await self._call(
            _wire.BOOTSTRAP_SERVICE, "SignNodeCSR", {"csr": csr_pem.decode(), "nodeName": node_name}
        )

    async def node_serving_certificate(self, node_name: str) -> _tls.KeyPair:
        """(Agents) a fresh key and a serving certificate for this node's log endpoint, signed
        by the cluster CA for ``<node>.nodes.runink.internal``; the key never leaves this host."""
        csr_pem, key_pem = _tls.make_csr(f"system:node:{node_name}", ("system:nodes",))
        resp = await self._call(
            _wire.BOOTSTRAP_SERVICE,
            "SignNodeServingCSR",
            {"csr": csr_pem.decode(), "nodeName": node_name},
        )
        return _tls.KeyPair(str(resp["certificate"]).encode(), key_pem)

    async def version(self) -> Obj:
        return await self._call(_wire.SERVICE, "Version", {})

    async def logs(
        self, herd: str, slice: str, *, follow: bool = False, tail: int | None = None
    ) -> AsyncIterator[bytes]:
        stub = self._channel.unary_stream(
            _wire.method(_wire.LOGS_SERVICE, "Read"),
            request_serializer=_wire.encode,
            response_deserializer=None,
        )
        call = stub(
            {"herd": herd, "slice": slice, "follow": follow, "tail": tail}, metadata=self._metadata
        )
        try:
            async for chunk in call:
                yield bytes(chunk)
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None
        finally:
            call.cancel()

    # -- governance -------------------------------------------------------------------------------
    async def ingest_lineage(self, event: Obj) -> Obj:
        """Store an OpenLineage RunEvent; returns the run's state. Invalid names the bad fields."""
        return await self._call(GOVERNANCE_SERVICE, "Ingest", {"event": event})

    async def lineage(self, node_id: str, *, direction: str = "both", depth: int = 20) -> Obj:
        """The Marquez-shaped graph around ``dataset:NS:NAME`` / ``dataset:NS/NAME``, ``job:...``
        or ``datasetField:NS:NAME:FIELD``; direction upstream, downstream or both."""
        return await self._call(
            GOVERNANCE_SERVICE,
            "Lineage",
            {"nodeId": node_id, "direction": direction, "depth": depth},
        )

    async def run_lineage(self, run_id: str) -> Obj:
        """One OpenLineage run's job with its inputs and outputs, plus ``run`` (its state)."""
        return await self._call(GOVERNANCE_SERVICE, "RunGraph", {"runId": run_id})

    async def dataset_versions(
        self, namespace: str, name: str, *, limit: int = 100
    ) -> builtins.list[Obj]:
        resp = await self._call(
            GOVERNANCE_SERVICE,
            "DatasetVersions",
            {"namespace": namespace, "name": name, "limit": limit},
        )
        return list(resp.get("items") or [])

    async def put_annotations(self, items: builtins.list[Obj]) -> Obj:
        """Store Annotation objects (the caller is recorded as producer): {written, skipped}."""
        return await self._call(GOVERNANCE_SERVICE, "PutAnnotations", {"items": items})

    async def query_annotations(
        self,
        *,
        type: str | None = None,
        model: str | None = None,
        data_ref: dict[str, str] | None = None,
        min_confidence: float | None = None,
        max_confidence: float | None = None,
        since: str | None = None,
        until: str | None = None,
        review_state: str | None = None,
        limit: int = 100,
        continue_token: str | None = None,
        count: bool = False,
        herd: str | None = None,
    ) -> Obj:
        """A page ``{"items", "nextCursor", "count"}``, newest first."""
        req: Obj = {
            "type": type,
            "model": model,
            "dataRef": data_ref,
            "minConfidence": min_confidence,
            "maxConfidence": max_confidence,
            "since": since,
            "until": until,
            "reviewState": review_state,
            "limit": limit,
            "continue": continue_token,
            "count": count,
            "herd": herd,
        }
        return await self._call(
            GOVERNANCE_SERVICE, "QueryAnnotations", {k: v for k, v in req.items() if v is not None}
        )

    async def get_annotation(self, annotation_id: str) -> Obj:
        return await self._call(GOVERNANCE_SERVICE, "GetAnnotation", {"id": annotation_id})

    async def review_annotation(self, annotation_id: str, state: str) -> Obj:
        """Set the review state (suggested, confirmed, rejected) as the caller; a producer may
        not confirm its own annotation (Forbidden)."""
        return await self._call(
            GOVERNANCE_SERVICE, "ReviewAnnotation", {"id": annotation_id, "state": state}
        )


async def bootstrap_node_credentials(
    server: str, ca_pem: bytes, token: str, node_name: str
) -> tuple[bytes, bytes]:
    """TLS bootstrap of a node agent: a fresh key, a CSR for ``system:node:<node_name>``, signed
    by the cluster CA through ``Bootstrap/SignNodeCSR`` authenticated by the bootstrap ``token``.
    ``server`` is the API server's token port. Returns ``(cert_pem, key_pem)``."""
    csr_pem, key_pem = _tls.make_csr(f"system:node:{node_name}", ("system:nodes",))
    async with Client(server, ca_pem=ca_pem, token=token) as c:
        resp = await c.sign_node_csr(csr_pem, node_name)
    return str(resp["certificate"]).encode(), key_pem


__all__ = ["Client", "bootstrap_node_credentials"]
