"""The typed async client of the API server, shaped like the Barn so callers can swap one for the other.

Controllers and the agent use ``create/get/list/update/update_status/delete/watch`` exactly as on an
in-process Barn (same signatures, same ``ListResult``/``WatchEvent`` types, same ``RuninkError``s,
rebuilt from the server's ``runink-error-bin`` trailing metadata), plus ``apply`` (server-side
apply), ``dry_run`` and delete ``propagation``. Always TLS: the cluster CA verifies the server and
the client certificate identifies the caller (mTLS).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from runink.api import _config, _wire
from runink.schemas import errors
from runink.store import _api as barn_api

Obj = dict[str, Any]


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
    ) -> None:
        self.target = target
        self.herd = herd
        self.field_manager = field_manager
        self.timeout = timeout
        self._revision = barn_api.Revision(0)
        creds = grpc.ssl_channel_credentials(
            root_certificates=ca_pem, private_key=key_pem, certificate_chain=cert_pem
        )
        self._channel = grpc.aio.secure_channel(target, creds)

    @classmethod
    def from_context(cls, ctx: _config.Context, base: Path | None = None, **kw: Any) -> Client:
        ca, cert, key = ctx.credentials(base)
        return cls(ctx.server, ca_pem=ca, cert_pem=cert, key_pem=key, herd=ctx.herd, **kw)

    @classmethod
    def from_config(cls, path: Path | None = None, context: str | None = None, **kw: Any) -> Client:
        config = _config.load(path)
        base = config.path.parent if config.path else None
        return cls.from_context(config.context(context), base, **kw)

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
            response: Obj = await stub(request, timeout=self.timeout)
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
        call = stub(request)
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
        call = stub({"herd": herd, "slice": slice, "follow": follow, "tail": tail})
        try:
            async for chunk in call:
                yield bytes(chunk)
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None
        finally:
            call.cancel()


__all__ = ["Client"]
