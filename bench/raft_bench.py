"""Replicated Barn vs a 3-member etcd, same load generator, same run: prints figures and ratios.

Both are driven by one asyncio load generator, one connection per client, JSON over TCP: the Barn
through its replica's line protocol (store._raft_node), etcd through its v3 JSON gateway (HTTP/1.1
keep-alive). Writes are ~200-byte values. Not a test: run it and read the ratios.

Besides ops/s it prints the CPU time the servers (all members together, not the load generator)
spent per 16-client write, and the load average: on a shared 2-core machine the throughput moves
with the neighbours' load, the CPU per write much less.

    .venv/bin/python bench/raft_bench.py [--seconds 5] [--skip-etcd]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "cluster"))
import _harness

VALUE = "x" * 200


class EtcdClient:
    def __init__(self, port: int) -> None:
        self.port = port
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: dict[str, Any], timeout: float = 5) -> Any:
        async with asyncio.timeout(timeout):
            if self._w is None:
                self._r, self._w = await asyncio.open_connection("127.0.0.1", self.port)
            assert self._r is not None
            data = json.dumps(body).encode()
            self._w.write(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\n\r\n".encode()
                + data
            )
            status = await self._r.readline()
            length = 0
            while (line := await self._r.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            payload = json.loads(await self._r.readexactly(length))
            if b" 200 " not in status:
                raise RuntimeError(payload)
            return payload

    def close(self) -> None:
        if self._w is not None:
            self._w.close()
        self._r = self._w = None


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Etcd:
    def __init__(self, size: int = 3) -> None:
        self.root = tempfile.mkdtemp(prefix="runink-etcd-")
        self.ports = [(_harness.free_port(), _harness.free_port()) for _ in range(size)]
        self.procs: list[subprocess.Popen[bytes] | None] = []
        cluster = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, (_, p) in enumerate(self.ports))
        for i, (cport, pport) in enumerate(self.ports):
            self.procs.append(
                subprocess.Popen(
                    ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(self.root, f"e{i}"),
                     "--listen-client-urls", f"http://127.0.0.1:{cport}",
                     "--advertise-client-urls", f"http://127.0.0.1:{cport}",
                     "--listen-peer-urls", f"http://127.0.0.1:{pport}",
                     "--initial-advertise-peer-urls", f"http://127.0.0.1:{pport}",
                     "--initial-cluster", cluster, "--initial-cluster-state", "new"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip

    async def leader(self, exclude: int | None = None) -> int:
        for _ in range(200):
            for i, (cport, _) in enumerate(self.ports):
                if i == exclude or self.procs[i] is None:
                    continue
                c = EtcdClient(cport)
                try:
                    st = await c.post("/v3/maintenance/status", {}, timeout=1)
                    if st.get("leader") and st["leader"] == st["header"]["member_id"]:
                        return i
                except (OSError, TimeoutError, RuntimeError, json.JSONDecodeError):
                    pass
                finally:
                    c.close()
            await asyncio.sleep(0.1)
        raise TimeoutError("etcd elected no leader")

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            p.send_signal(signal.SIGKILL)
            p.wait()
            self.procs[i] = None

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)
        shutil.rmtree(self.root, ignore_errors=True)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time consumed so far by these processes (their threads included)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def load(
    op: Callable[[int, int], Awaitable[None]],
    clients: int,
    seconds: float,
    pids: list[int] | None = None,
) -> dict[str, float]:
    cpu0 = cpu_seconds(pids) if pids else 0.0
    lat: list[float] = []
    end = time.monotonic() + seconds

    async def worker(cid: int) -> None:
        n = 0
        while time.monotonic() < end:
            t0 = time.perf_counter()
            await op(cid, n)
            lat.append(time.perf_counter() - t0)
            n += 1

    t0 = time.monotonic()
    async with asyncio.TaskGroup() as tg:
        for cid in range(clients):
            tg.create_task(worker(cid))
    elapsed = time.monotonic() - t0
    cpu = cpu_seconds(pids) - cpu0 if pids else 0.0
    lat.sort()
    return {
        "ops": len(lat) / elapsed,
        "p50": statistics.median(lat) * 1000,
        "p99": lat[int(len(lat) * 0.99) - 1] * 1000,
        "cpu_ms": cpu / len(lat) * 1000,
    }


async def bench_barn(size: int, seconds: float) -> dict[str, dict[str, float]]:
    cluster = _harness.Cluster(size, fault_injection=False)
    out: dict[str, dict[str, float]] = {}
    try:
        cluster.start_all()
        leader = await cluster.leader()
        conns: dict[int, _harness.Client] = {}

        def conn(cid: int) -> _harness.Client:
            return conns.setdefault(cid, cluster.client(leader))

        async def put(cid: int, n: int) -> None:
            await conn(cid).call("create", obj={"kind": "B", "metadata": {"name": f"{size}-{cid}-{n}-{time.monotonic_ns()}"}, "spec": {"v": VALUE}})  # fmt: skip

        async def read(cid: int, n: int) -> None:
            await conn(cid).call("get", kind="B", name="r", linearizable=True)

        await cluster.call(
            leader, "create", obj={"kind": "B", "metadata": {"name": "r"}, "spec": {}}
        )
        out["write x1"] = await load(put, 1, seconds)
        pids = [r.proc.pid for r in cluster.replicas if r.proc is not None]
        out["write x16"] = await load(put, 16, seconds, pids)
        out["lin read x16"] = await load(read, 16, seconds)
        for c in conns.values():
            c.close()
        if size > 1:
            survivor = (leader + 1) % size
            c = cluster.client(survivor)
            cluster.kill(leader)
            t0 = time.monotonic()
            while True:
                try:
                    await c.call("create", obj={"kind": "B", "metadata": {"name": f"fo-{time.monotonic_ns()}"}, "spec": {}}, timeout=0.5)  # fmt: skip
                    break
                except (TimeoutError, OSError, _harness.RemoteError):
                    c.close()
            out["failover"] = {"s": time.monotonic() - t0}
            c.close()
    finally:
        cluster.close()
    return out


async def bench_etcd(seconds: float) -> dict[str, dict[str, float]]:
    etcd = Etcd(3)
    out: dict[str, dict[str, float]] = {}
    try:
        leader = await etcd.leader()
        port = etcd.ports[leader][0]
        conns: dict[int, EtcdClient] = {}

        def conn(cid: int) -> EtcdClient:
            return conns.setdefault(cid, EtcdClient(port))

        async def put(cid: int, n: int) -> None:
            await conn(cid).post("/v3/kv/put", {"key": _b64(f"b/{cid}/{n}/{time.monotonic_ns()}"), "value": _b64(VALUE)})  # fmt: skip

        async def read(cid: int, n: int) -> None:
            await conn(cid).post("/v3/kv/range", {"key": _b64("r")})

        await conn(0).post("/v3/kv/put", {"key": _b64("r"), "value": _b64(VALUE)})
        out["write x1"] = await load(put, 1, seconds)
        pids = [p.pid for p in etcd.procs if p is not None]
        out["write x16"] = await load(put, 16, seconds, pids)
        out["lin read x16"] = await load(read, 16, seconds)
        for c in conns.values():
            c.close()
        survivor = (leader + 1) % 3
        c = EtcdClient(etcd.ports[survivor][0])
        etcd.kill(leader)
        t0 = time.monotonic()
        while True:
            try:
                await c.post("/v3/kv/put", {"key": _b64("fo"), "value": _b64("1")}, timeout=0.5)
                break
            except (TimeoutError, OSError, RuntimeError):
                c.close()
        out["failover"] = {"s": time.monotonic() - t0}
        c.close()
    finally:
        etcd.close()
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--skip-etcd", action="store_true")
    a = ap.parse_args()
    load_before = os.getloadavg()
    b1 = await bench_barn(1, a.seconds)
    b3 = await bench_barn(3, a.seconds)
    e3 = None if a.skip_etcd or not shutil.which("etcd") else await bench_etcd(a.seconds)
    print(f"{'workload':<16}{'Barn x1 ops/s':>14}{'Barn x3 ops/s':>14}{'p50/p99 ms':>16}"
          f"{'etcd x3 ops/s':>14}{'p50/p99 ms':>16}{'x3 ratio':>10}")  # fmt: skip
    for w in ("write x1", "write x16", "lin read x16"):
        r1, r3 = b1[w], b3[w]
        line = f"{w:<16}{r1['ops']:>14,.0f}{r3['ops']:>14,.0f}{r3['p50']:>8.2f}/{r3['p99']:<7.2f}"
        if e3:
            e = e3[w]
            line += (
                f"{e['ops']:>14,.0f}{e['p50']:>8.2f}/{e['p99']:<7.2f}{r3['ops'] / e['ops']:>10.2f}"
            )
        print(line)
    fo = f"failover (leader SIGKILL -> first write): Barn {b3['failover']['s']:.2f} s"
    if e3:
        fo += f", etcd {e3['failover']['s']:.2f} s"
    print(fo)
    cpu = (
        f"server CPU per 16-client write (all members): Barn x1 {b1['write x16']['cpu_ms']:.3f} ms,"
        f" Barn x3 {b3['write x16']['cpu_ms']:.3f} ms"
    )
    if e3:
        cpu += f", etcd x3 {e3['write x16']['cpu_ms']:.3f} ms"
    print(cpu)
    print(
        "load average (1 min) before/after: "
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
    )


if __name__ == "__main__":
    asyncio.run(main())
