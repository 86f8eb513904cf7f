"""Barn (embedded, LMDB) vs a single-member etcd, measured in the same run.

    .venv/bin/python bench/store_bench.py            # default run, under a minute
    .venv/bin/python bench/store_bench.py --ops 5000 --clients 32

Both sides write ~200-byte values with the same op counts and concurrency. The Barn is called
in-process (LocalBarn on LMDB, fsync on every commit, group commit), as `runink up` embeds it;
etcd is reached over loopback through its v3 JSON gateway (http.client, one keep-alive
connection per client thread), so its figures include an HTTP/JSON hop the Barn does not pay
here; the API server adds that hop back for the Barn (~4k req/s gRPC ceiling, measured.md).
etcd updates are plain puts (no compare); Barn updates are CAS on resourceVersion.
Watch latency: a sequential writer stamps each write, a watcher records when the event arrives.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from runink import store
from runink.store import _commit, _lmdb, _local

PAD = "x" * 180


def pct(lat: list[float], q: float) -> float:
    s = sorted(lat)
    return s[min(len(s) - 1, int(q * len(s)))] * 1000


def row(name: str, n: int, elapsed: float, lat: list[float]) -> dict[str, float]:
    r = {"ops_s": n / elapsed, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)}
    print(f"  {name:<34} {r['ops_s']:>9,.0f} ops/s  p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms")
    return r


# --- Barn ------------------------------------------------------------------------------------


def obj(name: str, i: int) -> dict[str, object]:
    return {"kind": "Item", "metadata": {"name": name}, "spec": {"pad": PAD, "i": i}}


async def barn_phase(
    barn: store.LocalBarn, clients: int, per_client: int, tag: str
) -> tuple[tuple[int, float, list[float]], tuple[int, float, list[float]]]:
    created: dict[str, dict[str, object]] = {}

    async def run(op: Callable[[int, int], Awaitable[None]]) -> tuple[int, float, list[float]]:
        lat: list[float] = []

        async def client(c: int) -> None:
            for i in range(per_client):
                t = time.perf_counter()
                await op(c, i)
                lat.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        async with asyncio.TaskGroup() as tg:
            for c in range(clients):
                tg.create_task(client(c))
        return clients * per_client, time.perf_counter() - t0, lat

    async def create(c: int, i: int) -> None:
        name = f"{tag}-{c}-{i}"
        created[name] = await barn.create(obj(name, i))

    async def update(c: int, i: int) -> None:
        name = f"{tag}-{c}-{i}"
        o = created[name]
        o["spec"] = {"pad": PAD, "i": -i}
        await barn.update(o)

    return await run(create), await run(update)


async def barn_watch(barn: store.LocalBarn, n: int) -> list[float]:
    sent: dict[int, float] = {}
    lat: list[float] = []
    w = barn.watch("Probe", since=barn.revision)

    async def watcher() -> None:
        for _ in range(n):
            ev = await anext(w)
            lat.append(time.perf_counter() - sent[ev.object["spec"]["i"]])

    async with asyncio.TaskGroup() as tg:
        tg.create_task(watcher())
        for i in range(n):
            sent[i] = time.perf_counter()
            await barn.create({"kind": "Probe", "metadata": {"name": f"w{i}"}, "spec": {"i": i}})
    await w.aclose()  # type: ignore[attr-defined]
    return lat


async def bench_barn(args: argparse.Namespace, group_commit: bool) -> dict[str, dict[str, float]]:
    d = tempfile.mkdtemp(prefix="barn-bench-")
    backend = _lmdb.LmdbBackend(d)
    committer = _commit.GroupCommitter(backend, max_batch=256 if group_commit else 1)
    barn = _local.LocalBarn(backend, committer=committer)
    out: dict[str, dict[str, float]] = {}
    try:
        label = "Barn LMDB" + ("" if group_commit else " (no group commit)")
        print(label)
        if group_commit:
            (c1, u1) = await barn_phase(barn, 1, args.ops, "s")
            out["create x1"] = row("create, 1 client", *c1)
            out["update x1"] = row("update, 1 client", *u1)
        (cn, un) = await barn_phase(barn, args.clients, args.ops // args.clients, "c")
        out[f"create x{args.clients}"] = row(f"create, {args.clients} clients", *cn)
        out[f"update x{args.clients}"] = row(f"update, {args.clients} clients", *un)
        if group_commit:
            lat = await barn_watch(barn, args.watch)
            out["watch"] = row("watch delivery (write -> event)", len(lat), sum(lat), lat)
    finally:
        await barn.close()
        shutil.rmtree(d, ignore_errors=True)
    return out


# --- etcd ------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


class Etcd:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="etcd-bench-")
        self.port, peer = free_port(), free_port()
        peer_url = f"http://127.0.0.1:{peer}"
        client_url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            ["etcd", "--name", "b0", "--data-dir", self.dir + "/data",
             "--listen-client-urls", client_url, "--advertise-client-urls", client_url,
             "--listen-peer-urls", peer_url, "--initial-advertise-peer-urls", peer_url,
             "--initial-cluster", f"b0={peer_url}", "--log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            try:
                self.call(self.conn(), "/v3/kv/put", {"key": b64("ping"), "value": b64("1")})
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    @staticmethod
    def call(c: http.client.HTTPConnection, path: str, body: dict[str, object]) -> object:
        c.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"etcd {path}: {r.status} {data[:200]!r}")
        return json.loads(data)

    def close(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def etcd_phase(etcd: Etcd, clients: int, per_client: int, tag: str) -> tuple[
    tuple[int, float, list[float]], tuple[int, float, list[float]]
]:  # fmt: skip
    def run(update: bool) -> tuple[int, float, list[float]]:
        lat: list[float] = []
        lock = threading.Lock()

        def client(c: int) -> None:
            conn = etcd.conn()
            mine = []
            for i in range(per_client):
                value = json.dumps({"pad": PAD, "i": -i if update else i})
                t = time.perf_counter()
                etcd.call(conn, "/v3/kv/put", {"key": b64(f"{tag}-{c}-{i}"), "value": b64(value)})
                mine.append(time.perf_counter() - t)
            conn.close()
            with lock:
                lat.extend(mine)

        t0 = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        return clients * per_client, time.perf_counter() - t0, lat

    return run(False), run(True)


def etcd_watch(etcd: Etcd, n: int) -> list[float]:
    sent: dict[int, float] = {}
    lat: list[float] = []
    ready = threading.Event()

    def watcher() -> None:
        c = etcd.conn()
        body = {"create_request": {"key": b64("probe/"), "range_end": b64("probe0")}}
        c.request("POST", "/v3/watch", json.dumps(body))
        r = c.getresponse()
        got = 0
        while got < n:
            line = r.readline()
            if not line:
                break
            msg = json.loads(line)
            if msg.get("result", {}).get("created"):
                ready.set()
            for ev in msg.get("result", {}).get("events", []):
                i = json.loads(base64.b64decode(ev["kv"]["value"]))
                lat.append(time.perf_counter() - sent[i])
                got += 1
        c.close()

    t = threading.Thread(target=watcher)
    t.start()
    ready.wait(10)
    conn = etcd.conn()
    for i in range(n):
        sent[i] = time.perf_counter()
        etcd.call(conn, "/v3/kv/put", {"key": b64(f"probe/{i}"), "value": b64(str(i))})
    t.join(30)
    conn.close()
    return lat


def bench_etcd(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    etcd = Etcd()
    out: dict[str, dict[str, float]] = {}
    try:
        print(f"etcd {version()} (1 member, v3 JSON gateway over loopback)")
        (c1, u1) = etcd_phase(etcd, 1, args.ops, "s")
        out["create x1"] = row("create (put), 1 client", *c1)
        out["update x1"] = row("update (put), 1 client", *u1)
        (cn, un) = etcd_phase(etcd, args.clients, args.ops // args.clients, "c")
        out[f"create x{args.clients}"] = row(f"create (put), {args.clients} clients", *cn)
        out[f"update x{args.clients}"] = row(f"update (put), {args.clients} clients", *un)
        lat = etcd_watch(etcd, args.watch)
        out["watch"] = row("watch delivery (put -> event)", len(lat), sum(lat), lat)
    finally:
        etcd.close()
    return out


def version() -> str:
    out = subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout
    return out.split()[2] if out else "?"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=2000, help="writes per point (split over clients)")
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--watch", type=int, default=500, help="events for the watch latency point")
    args = p.parse_args()
    print(f"{os.cpu_count()} CPUs, ~200-byte values, {args.ops} writes per point\n")
    barn = asyncio.run(bench_barn(args, True))
    nogc = asyncio.run(bench_barn(args, False))
    etcd = bench_etcd(args)
    print("\nratio Barn / etcd (throughput: higher is better; latency: lower is better)")
    for k, b in barn.items():
        e = etcd[k]
        if k == "watch":  # a latency point: its "ops/s" is only 1 / mean latency
            print(
                f"  {k:<12} {'':<18}   p50 x{b['p50'] / e['p50']:5.2f}   p99 x{b['p99'] / e['p99']:5.2f}"
            )
            continue
        print(
            f"  {k:<12} throughput x{b['ops_s'] / e['ops_s']:5.2f}   "
            f"p50 x{b['p50'] / e['p50']:5.2f}   p99 x{b['p99'] / e['p99']:5.2f}"
        )
    k = f"create x{args.clients}"
    print(
        f"  group commit gain at {args.clients} clients: x{barn[k]['ops_s'] / nogc[k]['ops_s']:.2f}"
    )


if __name__ == "__main__":
    main()
