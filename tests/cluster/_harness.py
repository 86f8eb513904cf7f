"""Multi-process Barn clusters on loopback for the cluster tests and the benchmark.

``Cluster`` starts ``python -m runink.store._raft_node`` replicas (separate processes sharing one
cluster secret), kills/stops/restarts them by PID, and always cleans up. ``Client`` speaks the
node's line-delimited JSON protocol over asyncio streams.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RemoteError(Exception):
    def __init__(self, reason: str, msg: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{reason}: {msg}")
        self.reason = reason
        self.details = details or {}


class Client:
    """One connection to one replica; requests are serialised on it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()

    async def call(self, op: str, timeout: float = 15.0, **kw: Any) -> Any:
        async with self._lock:
            try:
                async with asyncio.timeout(timeout):
                    if self._w is None:
                        self._r, self._w = await asyncio.open_connection(
                            "127.0.0.1", self.port, limit=1 << 28
                        )
                    assert self._r is not None
                    self._w.write(json.dumps({"op": op, **kw}).encode() + b"\n")
                    await self._w.drain()
                    line = await self._r.readline()
            except (OSError, TimeoutError):
                self.close()
                raise
            if not line:
                self.close()
                raise ConnectionError("replica closed the connection")
        reply = json.loads(line)
        if "err" in reply:
            raise RemoteError(reply["err"], reply.get("msg", ""), reply.get("details"))
        return reply["ok"]

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
        self._r = self._w = None


@dataclass
class Replica:
    index: int
    raft_addr: str
    client_port: int
    data_dir: str
    proc: subprocess.Popen[bytes] | None = None
    log: Any = None
    stopped: bool = False


@dataclass
class Cluster:
    size: int = 3
    snapshot_entries: int = 20000
    fault_injection: bool = True
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="runink-raft-"))
    replicas: list[Replica] = field(default_factory=list)

    def __post_init__(self) -> None:
        for i in range(self.size):
            self.replicas.append(
                Replica(
                    i, f"127.0.0.1:{free_port()}", free_port(), os.path.join(self.root, f"r{i}")
                )
            )
        secret = os.urandom(24).hex()
        for r in self.replicas:
            os.makedirs(r.data_dir)
            path = os.path.join(r.data_dir, "cluster.secret")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, secret.encode())
            os.close(fd)

    def add_replica(self) -> int:
        """A new replica (not started) sharing the cluster secret; its peers are all the others."""
        i = len(self.replicas)
        r = Replica(i, f"127.0.0.1:{free_port()}", free_port(), os.path.join(self.root, f"r{i}"))
        os.makedirs(r.data_dir)
        with open(os.path.join(self.replicas[0].data_dir, "cluster.secret"), "rb") as f:
            secret = f.read()
        fd = os.open(os.path.join(r.data_dir, "cluster.secret"), os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, secret)
        os.close(fd)
        self.replicas.append(r)
        self.size += 1
        return i

    def start(self, i: int) -> None:
        r = self.replicas[i]
        peers = ",".join(x.raft_addr for x in self.replicas if x is not r)
        cmd = [
            PY,
            "-m",
            "runink.store._raft_node",
            "--data-dir",
            r.data_dir,
            "--raft-addr",
            r.raft_addr,
            "--peers",
            peers,
            "--client-port",
            str(r.client_port),
            "--snapshot-entries",
            str(self.snapshot_entries),
        ]
        if self.fault_injection:
            cmd.append("--fault-injection")
        r.log = open(os.path.join(self.root, f"r{i}.log"), "ab")  # noqa: SIM115 - closed in kill()
        r.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=r.log)
        assert r.proc.stdout is not None
        line = r.proc.stdout.readline()
        if not line.startswith(b"READY"):
            raise RuntimeError(f"replica {i} did not start: {line!r}, see {self.root}/r{i}.log")
        r.stopped = False

    def start_all(self) -> None:
        for i in range(self.size):
            self.start(i)

    def kill(self, i: int) -> None:
        r = self.replicas[i]
        if r.proc is not None:
            if r.stopped:
                os.kill(r.proc.pid, signal.SIGCONT)
            r.proc.kill()
            r.proc.wait()
            if r.proc.stdout is not None:
                r.proc.stdout.close()
            r.proc = None
            r.log.close()

    def sigstop(self, i: int) -> None:
        p = self.replicas[i].proc
        assert p is not None
        os.kill(p.pid, signal.SIGSTOP)
        self.replicas[i].stopped = True

    def sigcont(self, i: int) -> None:
        p = self.replicas[i].proc
        assert p is not None
        os.kill(p.pid, signal.SIGCONT)
        self.replicas[i].stopped = False

    async def call(self, i: int, op: str, **kw: Any) -> Any:
        """One request on a fresh connection to replica ``i``."""
        c = self.client(i)
        try:
            return await c.call(op, **kw)
        finally:
            c.close()

    def client(self, i: int) -> Client:
        return Client(self.replicas[i].client_port)

    def close(self) -> None:
        for i in range(self.size):
            self.kill(i)
        shutil.rmtree(self.root, ignore_errors=True)

    async def leader(self, timeout: float = 15.0, exclude: set[int] = frozenset()) -> int:  # type: ignore[assignment]
        """Index of the replica that all live replicas (but the excluded) agree leads."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.replicas:
                if r.proc is None or r.stopped or r.index in exclude:
                    continue
                c = Client(r.client_port)
                try:
                    st = await c.call("status", timeout=2)
                except (OSError, TimeoutError, RemoteError):
                    continue
                finally:
                    c.close()
                if st["is_leader"]:
                    return r.index
            await asyncio.sleep(0.1)
        raise TimeoutError("no leader elected")
