"""Slice logs from the node that ran the slice: the agent's log endpoint and the API server's
client of it (as ``kubectl logs`` goes API server -> kubelet).

Each ``runink agent`` serves ``runink.v1.AgentLogs/Read`` (``{herd, slice, follow, tail}`` -> a
stream of raw log bytes, the same shape as the API's ``runink.v1.Logs/Read``) on a port of its
own, gRPC over mutual TLS, from its `LogSource` (the agent's ``SliceLogSource``). The agent
publishes where in its Node (``status.addresses`` + ``status.daemonEndpoints.logs.port``); the
API server, after its own RBAC check, finds the Slice's node and proxies the stream with
`read_remote`.

Both directions are checked against the cluster CA (``_tls``): the agent requires a client
certificate and accepts only ``CN=runink-apiserver-agent-client`` (so neither another node's
certificate nor an admin's reads logs here, RBAC stays in the API server), and the API server
accepts only a serving certificate naming ``<node>.nodes.runink.internal`` for the node it meant
to reach (the address in the Node object is not trusted to say who answers). The code lives in
``api`` because it is gRPC + TLS + the ``_wire`` codec; ``runink agent`` (cli/_agent.py)
composes it with the agent's log source, and ``runink.agent`` stays free of gRPC.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc
from cryptography import x509
from cryptography.x509.oid import NameOID

from runink.api import _tls, _wire
from runink.schemas import errors

log = logging.getLogger(__name__)

SERVICE = "runink.v1.AgentLogs"
READ = _wire.method(SERVICE, "Read")


class LogSource(Protocol):
    """Where ``runink logs`` bytes come from; the node agent plugs its implementation in."""

    def read(
        self, herd: str, slice: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[bytes]: ...


def _request(req: dict[str, Any]) -> tuple[str, str, bool, int | None]:
    tail = req.get("tail")
    try:
        n = int(tail) if tail is not None else None
    except (TypeError, ValueError):
        raise errors.Invalid(f"tail must be a number of lines, not {tail!r}") from None
    return str(req.get("herd") or ""), str(req.get("slice") or ""), bool(req.get("follow")), n


def _peer_cn(context: grpc.aio.ServicerContext[Any, Any]) -> str | None:
    pems = list(context.auth_context().get("x509_pem_cert") or ())
    if not pems:
        return None
    cert = x509.load_pem_x509_certificate(bytes(pems[0]))
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else None


class AgentLogServer:
    """A node's log endpoint: `LogSource` reads for the API server only, over mutual TLS.

    *serving* is the node's serving certificate (signed by the cluster CA for
    `_tls.node_serving_name`); *ca_pem* verifies clients, and only a certificate whose common
    name is in *allowed_clients* may read. ``port=0`` picks one; read ``.port`` after `start`.
    """

    def __init__(
        self,
        source: LogSource,
        *,
        ca_pem: bytes,
        serving: _tls.KeyPair,
        host: str = "0.0.0.0",
        port: int = 0,
        allowed_clients: Sequence[str] = (_tls.AGENT_CLIENT_CN,),
    ) -> None:
        self.source = source
        self.ca_pem = ca_pem
        self.serving = serving
        self.host = host
        self.requested_port = port
        self.allowed_clients = frozenset(allowed_clients)
        self.port = 0
        self._server: grpc.aio.Server | None = None

    async def _read(
        self, request: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[bytes]:
        try:
            who = _peer_cn(context)
            if who not in self.allowed_clients:
                log.warning("log request refused: client certificate CN=%s", who)
                raise errors.Forbidden(
                    f"this agent serves logs to the API server only (client {who!r}); "
                    "use `runink logs` through the API"
                )
            try:
                herd, name, follow, tail = _request(_wire.decode(request))
            except ValueError:
                raise errors.Invalid("request body is not JSON") from None
            async for chunk in self.source.read(herd, name, follow=follow, tail=tail):
                yield chunk
        except errors.RuninkError as e:
            await context.abort(
                _wire.status_code(e),
                e.message.split("\n", 1)[0],
                trailing_metadata=((_wire.ERROR_KEY, _wire.error_payload(e)),),
            )

    async def start(self) -> int:
        """Bind and serve; returns the port. ``Unavailable`` if the address is taken."""
        server = grpc.aio.server(
            handlers=[
                grpc.method_handlers_generic_handler(
                    SERVICE, {"Read": grpc.unary_stream_rpc_method_handler(self._read)}
                )
            ]
        )
        creds = grpc.ssl_server_credentials(
            [(self.serving.key_pem, self.serving.cert_pem)],
            root_certificates=self.ca_pem,
            require_client_auth=True,
        )
        address = (
            f"[{self.host}]:{self.requested_port}"
            if ":" in self.host
            else (f"{self.host}:{self.requested_port}")
        )
        try:
            port = server.add_secure_port(address, creds)
        except RuntimeError as e:
            raise errors.Unavailable(f"cannot serve logs on {address}: {e}") from e
        if port == 0:
            raise errors.Unavailable(
                f"cannot serve logs on {address}: the port is taken (choose another --log-port)"
            )
        await server.start()
        self._server, self.port = server, port
        return port

    async def stop(self, grace: float | None = 1.0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def __aenter__(self) -> AgentLogServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def node_log_target(node: dict[str, Any]) -> str | None:
    """``host:port`` of a Node's log endpoint (first InternalIP, else ExternalIP, else Hostname
    in ``status.addresses``), or None when the node publishes none."""
    status = node.get("status") or {}
    port = ((status.get("daemonEndpoints") or {}).get("logs") or {}).get("port")
    addresses = status.get("addresses") or []
    for kind in ("InternalIP", "ExternalIP", "Hostname"):
        for a in addresses:
            if a.get("type") == kind and a.get("address") and port:
                host = str(a["address"])
                return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return None


async def read_remote(
    target: str,
    node: str,
    *,
    ca_pem: bytes,
    client: _tls.KeyPair,
    herd: str,
    slice: str,
    follow: bool,
    tail: int | None,
) -> AsyncIterator[bytes]:
    """Stream a slice's log from node *node*'s agent at *target* (the API server's side).

    The agent must present a certificate from *ca_pem* naming *node*. Closing the generator
    (the API client went away) cancels the agent's stream. Errors the agent sends (NotFound,
    ...) come back as themselves; not reaching it is ``Unavailable`` naming the node.
    """
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca_pem, private_key=client.key_pem, certificate_chain=client.cert_pem
    )
    name = _tls.node_serving_name(node)
    options = [("grpc.ssl_target_name_override", name), ("grpc.default_authority", name)]
    async with grpc.aio.secure_channel(target, creds, options=options) as channel:
        stub = channel.unary_stream(
            READ, request_serializer=_wire.encode, response_deserializer=None
        )
        call = stub({"herd": herd, "slice": slice, "follow": follow, "tail": tail})
        try:
            async for chunk in call:
                yield bytes(chunk)
        except grpc.aio.AioRpcError as e:
            err = _wire.error_from_rpc(e)
            metadata: Any = e.trailing_metadata() or ()  # grpc-stubs types the pairs opaquely
            sent = any(k == _wire.ERROR_KEY for k, _ in metadata)
            if isinstance(err, errors.Unavailable) and not sent:
                raise errors.Unavailable(
                    f'cannot read logs from node "{node}": its agent at {target} is unreachable '
                    f"or failed the TLS check ({e.details()}); check that `runink agent "
                    f"--node-name {node}` is running and that its log port is reachable from the "
                    "API server"
                ) from None
            raise err from None
        finally:
            call.cancel()


__all__ = ["SERVICE", "AgentLogServer", "LogSource", "node_log_target", "read_remote"]
