"""One Barn replica as a process, with a tiny line-delimited JSON protocol on loopback.

Used by tests/cluster and bench/raft_bench.py until the API server's gRPC path replaces it:

    python -m runink.store._raft_node --data-dir D --raft-addr 127.0.0.1:P \
        --peers 127.0.0.1:Q,127.0.0.1:R --client-port C [--bootstrap] [--fault-injection]

Each request is one JSON line ``{"op": ..., ...}``; each reply one line ``{"ok": ...}`` or
``{"err": reason, "msg": ..., "details": ...}``. ``watch`` streams one line per event until the
client disconnects. The process prints ``READY <client-port>`` once it accepts clients.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from runink.schemas import errors
from runink.store import _api, _raft


async def _handle(barn: _raft.ReplicatedBarn, req: dict[str, Any]) -> Any:
    op = req["op"]
    if op == "create":
        return await barn.create(req["obj"])
    if op == "update":
        return await barn.update(req["obj"])
    if op == "update_status":
        return await barn.update_status(req["obj"])
    if op == "delete":
        return await barn.delete(
            req["kind"], req["name"], req.get("herd"), resource_version=req.get("resourceVersion")
        )
    if op == "get":
        return await barn.get(
            req["kind"], req["name"], req.get("herd"), linearizable=req.get("linearizable", False)
        )
    if op == "list":
        res = await barn.list(
            req["kind"],
            req.get("herd"),
            selector=req.get("selector"),
            limit=req.get("limit", 0),
            continue_token=req.get("continue"),
            linearizable=req.get("linearizable", False),
        )
        return {"items": res.items, "revision": res.revision, "continue": res.continue_token}
    if op == "status":
        return (await barn.status()).to_dict()
    if op == "digest":
        rev, digest = await barn.digest()
        return {"revision": rev, "digest": digest}
    if op == "barrier":
        await barn.barrier()
        return {}
    if op == "compact":
        await barn.compact(_api.Revision(req["revision"]))
        return {}
    if op == "partition":
        barn.set_partition(list(req["blocked"]))
        return {}
    if op == "add_member":
        await barn.add_member(req["address"])
        return {}
    if op == "remove_member":
        await barn.remove_member(req["address"])
        return {}
    if op == "info":
        return {"snapshots_installed": barn.snapshots_installed, "revision": barn.revision}
    raise errors.Invalid(f"unknown op {op!r}")


async def _serve_watch(
    barn: _raft.ReplicatedBarn, req: dict[str, Any], writer: asyncio.StreamWriter
) -> None:
    since = req.get("since")
    try:
        async for ev in barn.watch(
            req.get("kind"),
            req.get("herd"),
            since=None if since is None else _api.Revision(since),
            bookmark_interval=req.get("bookmark_interval"),
        ):
            line = {"type": ev.type, "revision": ev.revision, "object": ev.object}
            writer.write(json.dumps(line).encode() + b"\n")
            await writer.drain()
    except errors.RuninkError as exc:
        writer.write(json.dumps({"err": exc.reason, "msg": exc.message}).encode() + b"\n")
        await writer.drain()


async def _client(
    barn: _raft.ReplicatedBarn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while line := await reader.readline():
            req = json.loads(line)
            if req["op"] == "watch":
                await _serve_watch(barn, req, writer)
                return
            try:
                reply: dict[str, Any] = {"ok": await _handle(barn, req)}
            except errors.RuninkError as exc:
                reply = {"err": exc.reason, "msg": exc.message, "details": exc.details}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the client went away; nothing to answer
    finally:
        writer.close()


async def _main(args: argparse.Namespace) -> None:
    secret = _raft.ensure_secret(args.data_dir, create=args.bootstrap)
    peers = tuple(p for p in args.peers.split(",") if p)
    cfg = _raft.RaftConfig(
        data_dir=args.data_dir,
        self_addr=args.raft_addr,
        peers=peers,
        secret=secret,
        snapshot_entries=args.snapshot_entries,
        fault_injection=args.fault_injection,
    )
    barn = await _raft.ReplicatedBarn.open(cfg)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with asyncio.TaskGroup() as tg:
        conns: set[asyncio.Task[None]] = set()

        def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            task = tg.create_task(_client(barn, r, w))
            conns.add(task)
            task.add_done_callback(conns.discard)

        server = await asyncio.start_server(on_client, "127.0.0.1", args.client_port)
        port = server.sockets[0].getsockname()[1]
        print(f"READY {port}", flush=True)
        await stop.wait()
        server.close()
        for task in list(conns):
            task.cancel()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await barn.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m runink.store._raft_node")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--raft-addr", required=True)
    p.add_argument("--peers", default="")
    p.add_argument("--client-port", type=int, default=0)
    p.add_argument("--bootstrap", action="store_true", help="create the cluster secret if missing")
    p.add_argument("--snapshot-entries", type=int, default=20000)
    p.add_argument("--fault-injection", action="store_true")
    args = p.parse_args(argv)
    asyncio.run(_main(args))
    sys.exit(0)


if __name__ == "__main__":
    main()
