"""`runink logs` proxied API server -> the slice's node agent, in process: real gRPC over mutual
TLS on loopback (the agent side is `api.AgentLogServer` over a fake log source). What only the
real `runink agent` can show is in tests/integration/multinode/test_remote_logs.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from runink import api, store
from runink.api import _agentlogs, _tls, _wire
from runink.schemas import errors

HERD = "default"


class FakeSource:
    """Lines ``<node>-1..N``; follow keeps yielding until *stop* and records how it ended."""

    def __init__(self, node: str, lines: int = 5) -> None:
        self.node = node
        self.lines = [f"{node}-{i}\n".encode() for i in range(1, lines + 1)]
        self.requests: list[tuple[str, str, bool, int | None]] = []
        self.closed = asyncio.Event()

    async def read(
        self, herd: str, slice: str, *, follow: bool, tail: int | None
    ) -> AsyncIterator[bytes]:
        self.requests.append((herd, slice, follow, tail))
        if slice == "missing":
            raise errors.NotFound(f"no logs for slice {herd}/{slice} on this node")
        try:
            for line in self.lines if tail is None else self.lines[-tail:]:
                yield line
            while follow:
                await asyncio.sleep(0.01)
                yield b"."
        finally:
            self.closed.set()


@dataclass
class Env:
    pki: api.ClusterPKI
    barn: Any
    server: api.ApiServer
    client: api.Client
    local: FakeSource


async def _node(barn: Any, name: str, port: int | None, address: str = "127.0.0.1") -> None:
    node = await barn.create(
        {"apiVersion": "runink.io/v1", "kind": "Node", "metadata": {"name": name}, "spec": {}}
    )
    status: dict[str, Any] = {"addresses": [{"type": "InternalIP", "address": address}]}
    if port is not None:
        status["daemonEndpoints"] = {"logs": {"port": port}}
    await barn.update_status({**node, "status": status})


async def _slice(barn: Any, name: str, node: str) -> None:
    await barn.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Slice",
            "metadata": {"name": name, "herd": HERD},
            "spec": {
                "pipeline": "p",
                "run": "r",
                "step": "a",
                "command": ["true"],
                "nodeName": node,
            },
        }
    )


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_memory()
    local = FakeSource("local")
    server = api.ApiServer(
        barn,
        ca_pem=pki.ca.cert_pem,
        server_pair=pki.server,
        ca_pair=pki.ca,
        log_source=local,
        local_node="here",
        agent_client=pki.agent_client,
    )
    port = await server.start()
    client = api.Client(
        f"127.0.0.1:{port}",
        ca_pem=pki.ca.cert_pem,
        cert_pem=pki.admin.cert_pem,
        key_pem=pki.admin.key_pem,
    )
    try:
        yield Env(pki, barn, server, client, local)
    finally:
        await client.close()
        await server.stop(0)


@pytest.fixture
async def agent(env: Env) -> AsyncIterator[tuple[api.AgentLogServer, FakeSource]]:
    """Node n1's log endpoint with a serving certificate the API signed for n1."""
    source = FakeSource("n1")
    serving = await env.client.node_serving_certificate("n1")
    async with api.AgentLogServer(
        source, ca_pem=env.pki.ca.cert_pem, serving=serving, host="127.0.0.1"
    ) as srv:
        await _node(env.barn, "n1", srv.port)
        yield srv, source


async def _read(client: api.Client, name: str, **kw: Any) -> bytes:
    return b"".join([c async for c in client.logs(HERD, name, **kw)])


async def test_remote_slice_logs_come_from_its_node_with_tail_and_follow(
    env: Env, agent: tuple[api.AgentLogServer, FakeSource]
) -> None:
    _, source = agent
    await _slice(env.barn, "s1", "n1")
    assert await _read(env.client, "s1") == b"n1-1\nn1-2\nn1-3\nn1-4\nn1-5\n"
    assert await _read(env.client, "s1", tail=2) == b"n1-4\nn1-5\n"
    assert source.requests[-1] == (HERD, "s1", False, 2)
    # Follow, then the client goes away: the agent's stream is cancelled too.
    source.closed.clear()
    got = b""
    async for chunk in env.client.logs(HERD, "s1", follow=True, tail=1):
        got += chunk
        if got.count(b".") >= 3:
            break
    assert got.startswith(b"n1-5\n...")
    assert source.requests[-1] == (HERD, "s1", True, 1)
    await asyncio.wait_for(source.closed.wait(), 5)
    # Errors the agent sends arrive as themselves.
    await _slice(env.barn, "missing", "n1")
    with pytest.raises(errors.NotFound, match="no logs for slice default/missing"):
        await _read(env.client, "missing")


async def test_local_node_and_unknown_slices_use_the_local_source(
    env: Env, agent: tuple[api.AgentLogServer, FakeSource]
) -> None:
    await _slice(env.barn, "mine", "here")
    assert await _read(env.client, "mine", tail=1) == b"local-5\n"
    assert await _read(env.client, "no-such-slice", tail=1) == b"local-5\n"
    assert agent[1].requests == []


async def test_node_without_endpoint_or_unreachable_is_unavailable_naming_it(env: Env) -> None:
    await _node(env.barn, "old", None)
    await _slice(env.barn, "s-old", "old")
    with pytest.raises(errors.Unavailable, match='node "old" publishes no log endpoint'):
        await _read(env.client, "s-old")
    await _slice(env.barn, "s-gone", "gone")
    with pytest.raises(errors.Unavailable, match='node "gone", which is no longer registered'):
        await _read(env.client, "s-gone")
    # A port nobody listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    await _node(env.barn, "down", free)
    await _slice(env.barn, "s-down", "down")
    with pytest.raises(errors.Unavailable, match=r'node "down": its agent at 127\.0\.0\.1:\d+'):
        await _read(env.client, "s-down")


async def test_api_refuses_an_agent_whose_certificate_names_another_node(
    env: Env, agent: tuple[api.AgentLogServer, FakeSource]
) -> None:
    srv, source = agent
    # Node n2's record points at n1's endpoint: n1's certificate does not name n2.
    await _node(env.barn, "n2", srv.port)
    await _slice(env.barn, "s2", "n2")
    with pytest.raises(errors.Unavailable, match=r'node "n2".*TLS'):
        await _read(env.client, "s2")
    assert source.requests == []


async def _direct(port: int, cert: _tls.KeyPair | None, ca: bytes) -> bytes:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=cert.key_pem if cert else None,
        certificate_chain=cert.cert_pem if cert else None,
    )
    name = _tls.node_serving_name("n1")
    async with grpc.aio.secure_channel(
        f"127.0.0.1:{port}", creds, options=[("grpc.ssl_target_name_override", name)]
    ) as ch:
        stub = ch.unary_stream(
            _agentlogs.READ, request_serializer=_wire.encode, response_deserializer=None
        )
        out = b""
        try:
            async for c in stub({"herd": HERD, "slice": "s1"}, timeout=5):
                out += bytes(c)
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None
        return out


async def test_agent_serves_only_the_api_servers_client_certificate(
    env: Env, agent: tuple[api.AgentLogServer, FakeSource]
) -> None:
    srv, source = agent
    ca = env.pki.ca.cert_pem
    assert await _direct(srv.port, env.pki.agent_client, ca) == b"".join(source.lines)
    # No client certificate: the TLS handshake fails.
    with pytest.raises(errors.Unavailable):
        await _direct(srv.port, None, ca)
    # Certificates of the same CA that are not the API server's: refused by name.
    node_b = _tls.issue(env.pki.ca, "system:node:n2", organizations=("system:nodes",))
    for cert in (env.pki.admin, node_b):
        with pytest.raises(errors.Forbidden, match="serves logs to the API server only"):
            await _direct(srv.port, cert, ca)
    # A certificate from another CA with the right name: the TLS handshake fails.
    other = _tls.create_ca()
    forged = _tls.issue(other, _tls.AGENT_CLIENT_CN)
    with pytest.raises(errors.Unavailable):
        await _direct(srv.port, forged, ca)
    assert len(source.requests) == 1


async def test_serving_certificates_only_for_the_callers_own_node(env: Env) -> None:
    node_a = _tls.issue(env.pki.ca, "system:node:a", organizations=("system:nodes",))
    async with api.Client(
        f"127.0.0.1:{env.server.port}",
        ca_pem=env.pki.ca.cert_pem,
        cert_pem=node_a.cert_pem,
        key_pem=node_a.key_pem,
    ) as as_a:
        pair = await as_a.node_serving_certificate("a")
        san = x509.load_pem_x509_certificate(pair.cert_pem).extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )
        assert san.value.get_values_for_type(x509.DNSName) == ["a.nodes.runink.internal"]
        with pytest.raises(errors.Forbidden, match="only its agent"):
            await as_a.node_serving_certificate("b")
