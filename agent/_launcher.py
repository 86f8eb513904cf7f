"""The agent's side of the fork server (agent/_forkserver.py): start it, send launches, get exits.

`Launcher.start()` must run before the agent imports grpc/asyncio-heavy code: it spawns the fork
server as a separate small interpreter (``python -I -S``) joined by a SOCK_SEQPACKET socket pair.
`launch_sync` is for benchmarks and simple tools; the agent uses `launch`/`wait` (asyncio, reading
the socket through ``loop.add_reader``). Exit statuses are the raw ``waitpid`` statuses of each
slice init; the step's own status is in the file the init writes (``status_path``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import marshal
import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from runink.agent import _cgroups

NetworkMode = Literal["none", "host", "isolated"]
FORKSERVER = Path(__file__).with_name("_forkserver.py")


class LaunchError(OSError):
    """The fork server could not start the slice (clone, uid map, cgroup join failed)."""


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """Everything the fork server needs to start one slice; paths are on the host."""

    argv: tuple[str, ...]
    env: dict[str, str]
    hostname: str
    uid: int
    gid: int
    cgroup: _cgroups.Plan | None = None
    """The slice's cgroup and limits; the reply (`Launched`) names the cgroup it got."""
    network: NetworkMode = "none"
    netns_path: str | None = None
    cwd: str | None = None
    stdout: str | None = None
    stderr: str | None = None
    status_path: str | None = None
    secrets_dir: str | None = None
    secrets: dict[str, bytes] = field(default_factory=dict)
    user_ns: bool = True
    pid_ns: bool = True
    mount_ns: bool = True
    uts_ns: bool = True
    ipc_ns: bool = True
    private_tmp: bool = True
    binds: tuple[tuple[str, str, bool], ...] = ()
    """(host source, target inside the slice, read-only): attached in the slice's mount ns."""

    def to_wire(self, req_id: int) -> bytes:
        msg: dict[str, Any] = {
            "id": req_id,
            "argv": list(self.argv),
            "env": self.env,
            "hostname": self.hostname,
            "uid": self.uid,
            "gid": self.gid,
            "cgroup": self.cgroup.to_wire() if self.cgroup is not None else None,
            "net": self.network,
            "netns_path": self.netns_path,
            "cwd": self.cwd,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "status_path": self.status_path,
            "secrets_dir": self.secrets_dir,
            "secrets": {k: base64.b64encode(v).decode() for k, v in self.secrets.items()},
            "private_tmp": self.private_tmp,
            "binds": [{"src": s, "dst": d, "ro": ro} for s, d, ro in self.binds],
            "ns": {
                "user": self.user_ns,
                "pid": self.pid_ns,
                "mnt": self.mount_ns,
                "uts": self.uts_ns,
                "ipc": self.ipc_ns,
            },
        }
        return marshal.dumps(msg)


class Launched(NamedTuple):
    """A started slice: its init's host pid, and the cgroup it runs in (under the plan's bases:
    the plan's own name, or the cgroup of the zygote it was launched from)."""

    pid: int
    cgroup: str | None


class Launcher:
    """Client of one fork server process. Not thread-safe; one asyncio loop at a time."""

    def __init__(self, sock: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        self._sock = sock
        self._proc = proc
        self._ids = itertools.count(1)
        self._replies: dict[int, dict[str, Any]] = {}
        self._reply_waiters: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._exits: dict[int, int] = {}
        self._exit_waiters: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.zygote_prefix = f"{_cgroups.ZYGOTE_PREFIX}{secrets.token_hex(4)}-"
        """Cgroups of this fork server's parked zygotes start with this."""

    @classmethod
    def start(cls, python: str = sys.executable) -> Launcher:
        """Spawn the fork server. Call it early: the server is a fresh interpreter either way, but
        spawning it is a vfork only while this process has not been made multi-threaded oddly."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        proc = subprocess.Popen(
            [python, "-I", "-S", str(FORKSERVER), str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
        theirs.close()
        return cls(ours, proc)

    @property
    def pid(self) -> int:
        return self._proc.pid

    # -- synchronous API (bench, tools) --------------------------------------------------------
    def _dispatch(self, msg: dict[str, Any]) -> None:
        if msg.get("op") == "exit":
            pid, status = int(msg["pid"]), int(msg["status"])
            fut = self._exit_waiters.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(status)
            else:
                self._exits[pid] = status
            return
        rid = int(msg["id"])
        waiter = self._reply_waiters.pop(rid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(msg)
        else:
            self._replies[rid] = msg

    def _recv_blocking(self) -> None:
        data = self._sock.recv(1 << 16)
        if not data:
            raise LaunchError(0, "the fork server exited")
        self._dispatch(marshal.loads(data))

    @staticmethod
    def _launched(reply: dict[str, Any]) -> Launched:
        if "error" in reply:
            raise LaunchError(int(reply.get("errno") or 0), str(reply["error"]))
        return Launched(int(reply["pid"]), reply.get("cgroup"))

    def enable_zygotes(
        self,
        size: int = 2,
        kinds: tuple[NetworkMode, ...] = ("none",),
        cgroup: _cgroups.Plan | None = None,
    ) -> None:
        """Keep *size* pre-cloned slice inits per network mode in *kinds* (``none``/``host``);
        ``size=0`` kills the parked ones. Launches with every namespace on and such a network
        mode then skip the clone and the mounts. With *cgroup* (its bases; name and writes are
        ignored) each zygote waits in a cgroup of its own below them, named with
        `zygote_prefix`: a launch with a plan under the same bases only writes the limits."""
        cg = None
        if cgroup is not None:
            cg = {"bases": list(cgroup.bases), "v2": cgroup.v2, "prefix": self.zygote_prefix}
        msg = {"op": "zygotes", "size": size, "kinds": list(kinds), "cgroup": cg}
        self._sock.send(marshal.dumps(msg))

    def launch_sync(self, req: LaunchRequest) -> Launched:
        rid = next(self._ids)
        self._sock.send(req.to_wire(rid))
        while rid not in self._replies:
            self._recv_blocking()
        return self._launched(self._replies.pop(rid))

    def wait_sync(self, pid: int) -> int:
        while pid not in self._exits:
            self._recv_blocking()
        return self._exits.pop(pid)

    # -- asyncio API ---------------------------------------------------------------------------
    def _attach(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop:
            return
        if self._loop is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                self._loop.remove_reader(self._sock.fileno())
        self._loop = loop
        loop.add_reader(self._sock.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        while True:
            try:
                data = self._sock.recv(1 << 16, socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            if not data:
                assert self._loop is not None
                self._loop.remove_reader(self._sock.fileno())
                err = LaunchError(0, "the fork server exited")
                futs: list[asyncio.Future[Any]] = [
                    *self._reply_waiters.values(),
                    *self._exit_waiters.values(),
                ]
                for fut in futs:
                    if not fut.done():
                        fut.set_exception(err)
                return
            self._dispatch(marshal.loads(data))

    async def launch(self, req: LaunchRequest) -> Launched:
        """Start a slice: the host pid of its init (PID 1 of its pid namespace), its cgroup."""
        self._attach()
        loop = asyncio.get_running_loop()
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._reply_waiters[rid] = fut
        self._sock.send(req.to_wire(rid))
        return self._launched(await fut)

    async def wait(self, pid: int) -> int:
        """Raw wait status of a slice init this fork server started."""
        self._attach()
        if pid in self._exits:
            return self._exits.pop(pid)
        fut = self._exit_waiters.get(pid)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._exit_waiters[pid] = fut
        return await asyncio.shield(fut)

    def close(self) -> None:
        """Stop the fork server (running slices are left alone, as after an agent crash)."""
        if self._loop is not None:
            with contextlib.suppress(RuntimeError, ValueError):
                self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def exitcode(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal) of a raw wait status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None
