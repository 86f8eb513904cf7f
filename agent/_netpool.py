"""Pre-wired network namespaces for ``network: isolated`` slices, kept off the launch path.

A netns with a veth to the host costs ~15-90 ms to build here (research/agent.md 2.2), against
~2 ms for the whole isolated launch, so `NetnsPool` builds them ahead of time in a worker thread
(pyroute2 is synchronous) and the fork server only ``setns()``es into one (~0 ms). Each entry is a
named netns ``/run/netns/<prefix><hex>`` holding ``lo`` (up) and ``eth0`` (the veth's slice end,
``.2/30``, default route via ``.1``); the host end ``<prefix><hex>h`` carries ``.1/30`` of a /30
taken from the agent's private range (default 10.213.0.0/16), skipping addresses already in use on
this host. A netns is used by one slice and then removed (the kernel drops its veth with it).
Everything named with the pool's prefix is removed on shutdown and by `sweep` at agent start.
"""

from __future__ import annotations

import _socket
import asyncio
import concurrent.futures
import contextlib
import ctypes
import functools
import ipaddress
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

NETNS_DIR = Path("/run/netns")
DEFAULT_RANGE = "10.213.0.0/16"
DEFAULT_PREFIX = "rk"
CLONE_NEWNET, MS_BIND, MNT_DETACH = 0x40000000, 4096, 2
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_void_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.setns.argtypes = [ctypes.c_int, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Netns:
    """One pre-wired network namespace."""

    name: str
    host_ifname: str
    host_ip: str
    slice_ip: str

    @property
    def path(self) -> str:
        return str(NETNS_DIR / self.name)


def _check(rc: int, what: str) -> None:
    if rc != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def _repair_inet_ntop() -> None:
    """pysyncobj (imported by runink.store) replaces ``socket.inet_ntop`` with a Windows-only
    stub on import; pyroute2 decodes addresses with it. Put the C implementation back."""
    import pyroute2.netlink

    if socket.inet_ntop is not _socket.inet_ntop:
        socket.inet_ntop = _socket.inet_ntop
    pyroute2.netlink.inet_ntop = _socket.inet_ntop


class NetnsPool:
    """A pool of *size* ready netns; `run` keeps it full until cancelled, then removes them all.

    Interface names must be unique and at most 15 characters, and are never reused soon (veth
    teardown is asynchronous): names are *prefix* + 8 random hex digits (+ ``h`` on the host).
    """

    def __init__(
        self, size: int = 2, *, subnet: str = DEFAULT_RANGE, prefix: str = DEFAULT_PREFIX
    ) -> None:
        if not 1 <= len(prefix) <= 4 or not prefix.isalnum():
            raise ValueError("netns pool prefix: 1-4 letters or digits")
        self.size = size
        self.subnet = ipaddress.IPv4Network(subnet)
        self.prefix = prefix
        self._ready: list[Netns] = []
        self._in_use: dict[str, Netns] = {}
        self._wanted = asyncio.Event()
        # pyroute2 calls run in worker threads, one at a time; `close` takes the lock too, so a
        # build still running in a thread after its awaiting task was cancelled is not leaked.
        self._lock = threading.Lock()
        self._all: set[str] = set()  # every netns this pool created and has not removed
        self._closed = False
        self._ipr: Any = None
        # One thread for every pyroute2 call: its sync API keeps an event loop per thread.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="netns-pool")

    # -- building (worker thread) ---------------------------------------------------------------
    def _iproute(self) -> Any:
        if self._ipr is None:
            # Imported here: agents that never isolate a slice do not pay for pyroute2.
            from pyroute2 import IPRoute

            _repair_inet_ntop()

            self._ipr = IPRoute()
        return self._ipr

    def _free_30(self, ipr: Any) -> ipaddress.IPv4Network:
        used = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(family=2)}
        for net in self.subnet.subnets(new_prefix=30):
            hosts = list(net.hosts())
            if str(hosts[0]) not in used and str(hosts[1]) not in used:
                return net
        raise OSError(0, f"no free /30 left in {self.subnet} for isolated slices")

    def _create_netns(self, name: str) -> Any:
        """Create the named netns from this (pool) thread; returns an IPRoute bound inside it.

        Not pyroute2's ``netns.create``/``IPRoute(netns=)``: those fork a helper, and forking a
        process with gRPC threads (the agent) can abort the child. A netns is a per-thread
        attribute, so this thread unshares one, pins it with a bind mount, opens its netlink
        socket there and returns to the host's netns.
        """
        from pyroute2 import IPRoute

        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        path = NETNS_DIR / name
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0))
        host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
            try:
                _check(
                    _libc.mount(b"/proc/thread-self/ns/net", bytes(path), None, MS_BIND, None),
                    f"bind mount {path}",
                )
                return IPRoute()
            finally:
                # Never leave the pool thread in the slice's netns.
                _check(_libc.setns(host, CLONE_NEWNET), "setns back to the host netns")
        except BaseException:
            with contextlib.suppress(OSError):
                _libc.umount2(bytes(path), MNT_DETACH)
                path.unlink()
            raise
        finally:
            os.close(host)

    def build(self) -> Netns:
        """Create and wire one netns (blocking; tens of ms)."""
        tag = f"{self.prefix}{secrets.token_hex(4)}"
        with self._lock:
            if self._closed:
                raise OSError(0, "the netns pool is closed")
            ipr = self._iproute()
            net = self._free_30(ipr)
            host_ip, slice_ip = (str(h) for h in net.hosts())
            ns = Netns(tag, f"{tag}h", host_ip, slice_ip)
            nsr = self._create_netns(tag)
            self._all.add(tag)
            try:
                # The peer is created inside the netns: moving a device costs ~20 ms more.
                ipr.link("add", ifname=ns.host_ifname, kind="veth",
                         peer={"ifname": "eth0", "net_ns_fd": tag})  # fmt: skip
                idx = ipr.link_lookup(ifname=ns.host_ifname)[0]
                ipr.addr("add", index=idx, address=host_ip, prefixlen=30)
                ipr.link("set", index=idx, state="up")
                nsr.link("set", index=nsr.link_lookup(ifname="lo")[0], state="up")
                c = nsr.link_lookup(ifname="eth0")[0]
                nsr.addr("add", index=c, address=slice_ip, prefixlen=30)
                nsr.link("set", index=c, state="up")
                nsr.route("add", dst="default", gateway=host_ip)
            except BaseException:
                self._remove_named(tag)
                raise
            finally:
                nsr.close()
        return ns

    def _remove_named(self, name: str) -> None:
        from pyroute2 import netns
        from pyroute2.netlink.exceptions import NetlinkError

        self._all.discard(name)
        with contextlib.suppress(FileNotFoundError, OSError):
            netns.remove(name)
        # Normally the veth goes with its netns; delete the host end if it is still there.
        ipr = self._iproute()
        for idx in ipr.link_lookup(ifname=f"{name}h"):
            # ENODEV: the kernel removed it with the netns between the lookup and the delete.
            with contextlib.suppress(OSError, NetlinkError):
                ipr.link("del", index=idx)

    # -- the agent's side (event loop) ----------------------------------------------------------
    async def _call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn)

    async def take(self) -> Netns:
        """A ready netns for one slice; builds one on the spot only when the pool ran dry."""
        ns = self._ready.pop() if self._ready else await self._call(self.build)
        self._in_use[ns.name] = ns
        self._wanted.set()
        return ns

    def adopt(self, ns: Netns) -> None:
        """Mark a netns of a slice that outlived the previous agent as in use (see `sweep`)."""
        self._in_use[ns.name] = ns

    async def release(self, ns: Netns) -> None:
        """The slice is gone: remove its netns (and so its veth)."""
        self._in_use.pop(ns.name, None)
        await self._call(functools.partial(self._locked_remove, ns.name))

    def _locked_remove(self, name: str) -> None:
        with self._lock:
            self._remove_named(name)

    @property
    def ready(self) -> int:
        """How many netns wait in the pool."""
        return len(self._ready)

    def peek(self) -> Netns | None:
        """The netns the next `take` returns, if one is ready (tests use its addresses)."""
        return self._ready[-1] if self._ready else None

    def names(self) -> list[str]:
        """Every netns of this pool's prefix that exists on the host."""
        if not NETNS_DIR.is_dir():
            return []
        return sorted(p.name for p in NETNS_DIR.iterdir() if self._ours(p.name))

    def _ours(self, name: str) -> bool:
        rest = name[len(self.prefix) :]
        return (
            name.startswith(self.prefix)
            and len(rest) == 8
            and all(c in "0123456789abcdef" for c in rest)
        )

    async def sweep(self) -> list[str]:
        """Remove every netns with our prefix that no slice uses (after an agent crash)."""
        stale = [n for n in self.names() if n not in self._in_use and n not in self._all]
        for name in stale:
            await self._call(functools.partial(self._locked_remove, name))
        return stale

    async def run(self) -> None:
        """Keep *size* netns ready until cancelled (then call `close`)."""
        while True:
            while len(self._ready) < self.size:
                self._ready.append(await self._call(self.build))
            self._wanted.clear()
            await self._wanted.wait()

    async def aclose(self) -> None:
        """`close` on the pool's thread, then stop that thread."""
        try:
            await self._call(self.close)
        finally:
            self._thread.shutdown(wait=True)

    def close(self) -> None:
        """Remove every netns this pool created (ready, in use, or built by a thread whose
        awaiter was cancelled) and close the netlink socket. Blocks for a running build."""
        with self._lock:
            self._closed = True
            for name in sorted(self._all | set(self._in_use)):
                self._remove_named(name)
            self._ready.clear()
            self._in_use.clear()
            if self._ipr is not None:
                self._ipr.close()
                self._ipr = None


def available() -> bool:
    """True when this process can build isolated netns (root with pyroute2 installed)."""
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return False
    return os.geteuid() == 0
