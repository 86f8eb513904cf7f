"""`network: isolated` for real: a pooled netns with a veth to the host, and nothing left after."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest

from runink.agent import _launcher, _logs, _netpool, _runtime

pytestmark = pytest.mark.privileged
PREFIX = "rkt"

PROBE = """
import socket, struct, sys
gw = None
for line in open("/proc/net/route").read().splitlines()[1:]:
    f = line.split()
    if f[1] == "00000000":
        gw = socket.inet_ntoa(struct.pack("<I", int(f[2], 16)))
print("gateway", gw, flush=True)
s = socket.create_connection((gw, PORT), timeout=5)
print("host says", s.recv(64).decode(), flush=True)
try:
    socket.create_connection(("127.0.0.1", LOOPBACK_PORT), timeout=2)
    print("loopback reachable")
except OSError as e:
    print("loopback refused", type(e).__name__)
print("links", sorted(open("/proc/net/dev").read().split()[i].rstrip(":")
      for i in range(20, len(open("/proc/net/dev").read().split()), 17)))
"""


def leftovers() -> tuple[list[str], list[str]]:
    ns = sorted(p.name for p in _netpool.NETNS_DIR.glob(f"{PREFIX}*"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    ours = sorted(
        ln.split(":")[1].strip().split("@")[0]
        for ln in links.splitlines()
        if ln.split(":")[1].strip().startswith(PREFIX)
    )
    return ns, ours


async def until_gone(deadline: float = 10.0) -> tuple[list[str], list[str]]:
    # A removed netns takes its veth with it asynchronously (the kernel's cleanup_net).
    async with asyncio.timeout(deadline):
        while any(left := leftovers()):
            await asyncio.sleep(0.05)
    return left


async def test_isolated_slice_reaches_its_veth_host_not_loopback(
    launcher: _launcher.Launcher, shared_dir: Path, cgroup_parent: str
) -> None:
    pool = _netpool.NetnsPool(1, prefix=PREFIX)
    rt = _runtime.SliceRuntime(
        shared_dir / "state", launcher, cgroup_parent=cgroup_parent, netns_pool=pool
    )
    loopback = socket.create_server(("127.0.0.1", 0))
    try:
        async with rt:
            async with asyncio.timeout(20):
                while pool.ready < 1:
                    await asyncio.sleep(0.02)
            ns = pool.peek()
            assert ns is not None
            # A server on the host end of the veth the slice will get.

            async def greet(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                w.write(b"hello")
                w.close()

            srv = await asyncio.start_server(greet, ns.host_ip, 0)
            port = srv.sockets[0].getsockname()[1]
            code = textwrap.dedent(PROBE).replace("LOOPBACK_PORT", str(loopback.getsockname()[1]))
            s = _runtime.SliceSpec(
                name="iso",
                herd="t",
                uid=uuid.uuid4().hex,
                command=("/usr/bin/python3", "-I", "-S", "-c", code.replace("PORT", str(port))),
                network="isolated",
            )
            async with srv:
                await rt.start(s)
                o = await rt.wait(s.id)
            lines = [ln.split(" ", 3)[3] for ln in _logs.tail(rt.log_dir(s.id))]
            assert o.reason == "Completed", lines
            assert lines[:3] == [
                f"gateway {ns.host_ip}",
                "host says hello",
                "loopback refused ConnectionRefusedError",
            ]
            assert lines[3] == "links ['eth0', 'lo']"
            # Its netns is gone with the slice; the pool refills with a fresh one.
            assert not Path(ns.path).exists()
            async with asyncio.timeout(20):
                while pool.ready < 1:
                    await asyncio.sleep(0.02)
    finally:
        loopback.close()
    assert await until_gone() == ([], [])


async def test_recover_sweeps_netns_of_a_crashed_agent(
    launcher: _launcher.Launcher, shared_dir: Path, cgroup_parent: str
) -> None:
    # A netns left by a previous agent process (same prefix, no slice uses it).
    crashed = _netpool.NetnsPool(1, prefix=PREFIX)
    left = await crashed._call(crashed.build)
    crashed._all.clear()  # as if that process died without cleaning up
    assert Path(left.path).exists()
    pool = _netpool.NetnsPool(1, prefix=PREFIX)
    rt = _runtime.SliceRuntime(
        shared_dir / "state", launcher, cgroup_parent=cgroup_parent, netns_pool=pool
    )
    try:
        async with rt:
            await rt.recover()
            assert not Path(left.path).exists()
    finally:
        await crashed.aclose()
    assert await until_gone() == ([], [])
