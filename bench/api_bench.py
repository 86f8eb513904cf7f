"""API server overhead: `runink apply` of 1,000 manifests, and p50/p99 of Get/Create/Update through
the mTLS gRPC API with 1 and 16 clients beside the same operations on the Barn directly.

    .venv/bin/python bench/api_bench.py [--objects 1000] [--ops 400]

Prints figures and the API/store ratio; never pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from runink import api, store
from runink.cli import _app, _output, _up

Obj = dict[str, Any]


def herd() -> Obj:
    return {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "bench"}, "spec": {}}


def sa(name: str) -> Obj:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "ServiceAccount",
        "metadata": {"name": name, "herd": "bench"},
        "spec": {"description": "x"},
    }


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1000


async def timed(n: int, clients: int, op: Callable[[int, int], Awaitable[object]]) -> list[float]:
    lat: list[float] = []

    async def worker(w: int) -> None:
        for i in range(w, n, clients):
            t = time.perf_counter()
            await op(w, i)
            lat.append(time.perf_counter() - t)

    async with asyncio.TaskGroup() as tg:
        for w in range(clients):
            tg.create_task(worker(w))
    return lat


async def cli_apply(config: Path, paths: list[str]) -> float:
    s = _output.Streams(Console(file=io.StringIO()), Console(file=io.StringIO()))
    t = time.perf_counter()
    args = ["--config", str(config), "apply"]
    for p in paths:
        args += ["-f", p]
    code = await _app.amain(args, s)
    assert code == 0, s.err.file.getvalue()  # type: ignore[attr-defined]
    return time.perf_counter() - t


async def main(objects: int, ops: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="runink-bench-"))
    pki = api.ensure_cluster_pki(tmp / "pki")
    barn = store.open_local(tmp / "barn")
    server = api.ApiServer(barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server)
    port = await server.start()
    config = _up.write_client_config(tmp / "config", pki, port)
    await barn.create(herd())
    try:
        # 1) runink apply of N manifests, one file and one file per object.
        one = tmp / "one.yaml"
        one.write_text("---\n".join(_yaml(sa(f"one-{i}")) for i in range(objects)))
        per = tmp / "per"
        per.mkdir()
        for i in range(objects):
            (per / f"{i:05}.yaml").write_text(_yaml(sa(f"per-{i}")))
        t_one = await cli_apply(config, [str(one)])
        t_per = await cli_apply(config, [str(per)])
        print(
            f"runink apply, {objects} manifests in one file:      {t_one:6.2f} s ({objects / t_one:7.0f} objects/s)"
        )
        print(
            f"runink apply, {objects} manifests, a file per object: {t_per:6.2f} s ({objects / t_per:7.0f} objects/s)"
        )

        # 2) p50/p99 of Get, Create, Update: API vs Barn, 1 and 16 clients.
        print(
            f"\n{'op':8} {'clients':>7} {'api p50':>9} {'api p99':>9} {'barn p50':>9} {'barn p99':>9} {'ratio p50':>9}"
        )
        for clients in (1, 16):
            conns = [api.Client.from_config(config) for _ in range(clients)]
            try:
                for opname in ("create", "get", "update"):
                    tag = f"{opname}-{clients}"

                    def api_op(
                        w: int,
                        i: int,
                        opname: str = opname,
                        tag: str = tag,
                        clients: int = clients,
                        conns: list[api.Client] = conns,
                    ) -> Awaitable[object]:
                        c = conns[w]
                        if opname == "create":
                            return c.create(sa(f"a{tag}-{i}"))
                        if opname == "get":
                            return c.get("ServiceAccount", f"acreate-{clients}-{i}", "bench")
                        return _update(c, f"acreate-{clients}-{i}")

                    def barn_op(
                        w: int, i: int, opname: str = opname, tag: str = tag, clients: int = clients
                    ) -> Awaitable[object]:
                        if opname == "create":
                            return barn.create(sa(f"b{tag}-{i}"))
                        if opname == "get":
                            return barn.get("ServiceAccount", f"bcreate-{clients}-{i}", "bench")
                        return _update(barn, f"bcreate-{clients}-{i}")

                    a = await timed(ops, clients, api_op)
                    b = await timed(ops, clients, barn_op)
                    ratio = statistics.median(a) / statistics.median(b)
                    print(
                        f"{opname:8} {clients:7} {pct(a, 0.5):8.2f}ms {pct(a, 0.99):8.2f}ms {pct(b, 0.5):8.2f}ms {pct(b, 0.99):8.2f}ms {ratio:8.1f}x"
                    )
            finally:
                for c in conns:
                    await c.close()
    finally:
        await server.stop(0)
        await barn.close()


async def _update(target: Any, name: str) -> object:
    obj = await target.get("ServiceAccount", name, "bench")
    obj["spec"]["description"] = f"v{obj['metadata']['resourceVersion']}"
    return await target.update(obj)


def _yaml(obj: Obj) -> str:
    from runink import schemas

    return str(schemas.dump_yaml(obj))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--objects", type=int, default=1000)
    p.add_argument("--ops", type=int, default=400)
    a = p.parse_args()
    asyncio.run(main(a.objects, a.ops))
