"""``runink server``, ``runink cluster status|join|remove`` and ``runink up --replicas N``.

The composition root of a replicated control plane: each replica process runs one
``store.ReplicatedBarn`` (Raft over pysyncobj, behind the Barn protocol), the gRPC API server over
it (as ``cli._up`` does over the embedded Barn) and the controller manager, whose leader-only
controllers follow ``ReplicatedBarn.leadership()``. Membership and status go to a replica's Raft
port with the cluster secret (``store.raft_admin``), so they need no API RPC.

    <data-dir>/ lock  cluster.secret (0600)  raft/ (journal, state, snapshot)  raft.addr  pki/
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

from runink import api, controllers, store
from runink.cli import _up
from runink.schemas import errors

log = logging.getLogger(__name__)

Say = Callable[[str], None]


class _Leadership:
    """``controllers.LeaderElection`` over the Raft leadership of this replica."""

    def __init__(self, barn: store.ReplicatedBarn) -> None:
        self._barn = barn

    def changes(self) -> AsyncIterator[bool]:
        return self._barn.leadership()


def _peers(raw: str | list[str] | None) -> list[str]:
    if raw is None:
        return []
    items = raw if isinstance(raw, list) else raw.split(",")
    return [p.strip() for p in items if p and p.strip()]


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(args.data_dir).expanduser()


def _secret(data_dir: Path, args: argparse.Namespace) -> str:
    token = getattr(args, "token", None)
    token_file = getattr(args, "token_file", None)
    if token_file:
        try:
            token = Path(token_file).expanduser().read_text().strip()
        except OSError as e:
            raise errors.Invalid(f"--token-file {token_file}: {e.strerror}") from None
        if not token:
            raise errors.Invalid(f"--token-file {token_file} is empty: it must hold the secret")
    if token:
        store.write_secret(str(data_dir), token)
    return store.ensure_secret(str(data_dir), create=bool(getattr(args, "init", False)))


async def _ensure_default_herd(barn: store.ReplicatedBarn) -> None:
    # Any replica may do it (writes are forwarded to the leader); retry until a leader exists.
    while True:
        try:
            await _up._ensure_default_herd(cast(store.LocalBarn, barn))
            return
        except (errors.Unavailable, errors.OutcomeUnknown):
            await asyncio.sleep(1.0)


async def _run_controllers(cluster: _up.Cluster, barn: store.ReplicatedBarn) -> None:
    """``_up.run_controller_manager`` with the leader-only controllers gated on Raft leadership."""
    mgr = controllers.Manager(
        cluster.barn, http_port=cluster.controller_port, election=_Leadership(barn)
    )
    cluster.manager = mgr
    for info in cluster.plugins:
        if info.ok:
            mgr.add(*info.controllers, plugin=info.name)
    lineage = _up.FileLineageSink(cluster.data_dir / "lineage" / "events.jsonl")
    mgr.add(*controllers.builtin_controllers(mgr, lineage=lineage))
    try:
        await mgr.run()
    finally:
        cluster.manager = None


async def server(args: argparse.Namespace, say: Say = print) -> int:
    """Run one replica until SIGINT/SIGTERM. ``args``: ``data_dir``, ``raft_addr``, ``peers``
    (comma list), ``port`` (API), ``init`` (bootstrap: make the secret), ``join`` (a member's Raft
    address) with ``token``, optional ``pki_dir``/``shared_dir`` (PKI and keyring shared by the
    replicas), ``controller_port``, ``no_controllers``, ``ready_file``."""
    data_dir = _data_dir(args)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with _up.data_dir_lock(data_dir):
        secret = _secret(data_dir, args)
        if getattr(args, "init", False):
            say(f"cluster token (give it to `runink cluster join`): {secret}")
        peers = _peers(args.peers)
        join = getattr(args, "join", None)
        if join:
            raw = await asyncio.to_thread(store.raft_admin, join, secret, ["status"])
            st = store._raft.status_from_admin(raw)
            members = {st.self_addr, *(m.address for m in st.members)}
            peers = sorted((members | set(peers)) - {args.raft_addr})
        (data_dir / "raft.addr").write_text(args.raft_addr + "\n")
        cfg = store.RaftConfig(
            data_dir=str(data_dir / "raft"),
            self_addr=args.raft_addr,
            peers=tuple(peers),
            secret=secret,
        )
        barn = await store.ReplicatedBarn.open(cfg)
        try:
            if join:
                # Membership changes go through the leader; the joining replica asks for itself.
                await asyncio.to_thread(store.raft_admin, join, secret, ["add", args.raft_addr])
                say(f"joined the cluster through {join}")
            return await _serve_api(args, data_dir, barn, stop, say)
        finally:
            await barn.close()


async def _serve_api(
    args: argparse.Namespace,
    data_dir: Path,
    barn: store.ReplicatedBarn,
    stop: asyncio.Event,
    say: Say,
) -> int:
    shared = Path(args.shared_dir) if getattr(args, "shared_dir", None) else data_dir
    pki = api.ensure_cluster_pki(
        Path(args.pki_dir) if getattr(args, "pki_dir", None) else shared / "pki"
    )
    local = cast(store.LocalBarn, barn)  # the same Barn protocol; typed as the embedded one in _up
    plugins = controllers.load_plugins(local)
    server = api.ApiServer(
        local,
        ca_pem=pki.ca.cert_pem,
        server_pair=pki.server,
        port=args.port,
        security=api.SecurityConfig(data_dir=shared),
        ca_pair=pki.ca,
        token_port=args.port + 2 if args.port else 0,
        # No local agent: `runink logs` is proxied from the slice's node (mutual TLS).
        agent_client=pki.agent_client,
    )
    bound = await server.start()
    try:
        cport = getattr(args, "controller_port", None)
        cluster = _up.Cluster(
            data_dir,
            local,
            server,
            pki,
            Path(args.config) if getattr(args, "config", None) else api.default_config_path(),
            bound,
            plugins,
            cport if cport is not None else (bound + 1 if args.port else 0),
        )
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(_ensure_default_herd(barn))]
            if not getattr(args, "no_controllers", False):

                async def run_controllers(c: _up.Cluster) -> None:
                    await _run_controllers(c, barn)

                tasks.append(
                    tg.create_task(_up.supervise("controllers", run_controllers, cluster, say))
                )
            say(f"replica {args.raft_addr}: API on 127.0.0.1:{bound}")
            if getattr(args, "ready_file", None):
                await asyncio.to_thread(Path(args.ready_file).write_text, f"{bound}\n")
            await stop.wait()
            say("shutting down")
            for t in tasks:
                t.cancel()
    finally:
        await server.stop(1.0)
    return 0


def _ask(address: str, secret: str, command: list[str]) -> Any:
    return store.raft_admin(address, secret, command, timeout=5.0)


def status_of(address: str, secret: str) -> dict[str, Any]:
    """Members, leader, term, commit/applied index and per-member lag, as the leader sees it
    (asked through ``address``, any member)."""
    st = store._raft.status_from_admin(_ask(address, secret, ["status"]))
    if st.leader and st.leader != st.self_addr:
        with contextlib.suppress(errors.Unavailable):
            st = store._raft.status_from_admin(_ask(st.leader, secret, ["status"]))
    out = st.to_dict()
    out.pop("revision")
    return out


def _secret_for_admin(args: argparse.Namespace) -> tuple[str, str]:
    data_dir = Path(args.data_dir).expanduser()
    secret = getattr(args, "token", None) or store.ensure_secret(str(data_dir), create=False)
    address = getattr(args, "raft_addr", None) or (data_dir / "raft.addr").read_text().strip()
    return address, secret


def status(args: argparse.Namespace, say: Say = print) -> int:
    """``runink cluster status``: ``args.data_dir`` (secret, and the replica's address unless
    ``args.raft_addr``), ``args.output`` (``json`` or a table)."""
    address, secret = _secret_for_admin(args)
    try:
        st = status_of(address, secret)
    except errors.Unavailable as e:
        say(f"error: {e}")
        return 1
    if getattr(args, "output", None) == "json":
        say(json.dumps(st, indent=2))
        return 0
    say(f"leader: {st['leader'] or '(none)'}   term: {st['term']}")
    say(f"commit index: {st['commit_index']}   applied index: {st['applied_index']}")
    say(f"{'MEMBER':<24}{'ROLE':<10}{'CONNECTED':<11}{'MATCH':>8}{'LAG':>8}")
    say(
        f"{st['self']:<24}{'leader' if st['is_leader'] else 'follower':<10}{'-':<11}{'-':>8}{'-':>8}"
    )
    for m in st["members"]:
        role = "leader" if m["address"] == st["leader"] else "follower"
        match = "-" if m["match_index"] is None else str(m["match_index"])
        lag = "-" if m["lag"] is None else str(m["lag"])
        say(
            f"{m['address']:<24}{role:<10}{'yes' if m['connected'] else 'no':<11}{match:>8}{lag:>8}"
        )
    return 0


def remove(args: argparse.Namespace, say: Say = print) -> int:
    """``runink cluster remove ADDRESS``: ``args.address`` leaves (stop its process afterwards)."""
    via, secret = _secret_for_admin(args)
    reply = _ask(via, secret, ["remove", args.address])
    say(str(reply))
    return 0 if str(reply).startswith("SUCCESS") else 1


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def up_replicas(args: argparse.Namespace, n: int, say: Say = print) -> int:
    """``runink up --replicas N``: N replica processes on loopback sharing one PKI and keyring
    under ``args.data_dir`` (replica i in ``r<i>``, API on ``port + 10*i``); the client config
    points at replica 0. Runs until Ctrl-C, then stops the replicas it started."""
    root = Path(args.data_dir).expanduser() if args.data_dir else _up.default_data_dir()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    base = args.port or 7443
    addrs = [f"127.0.0.1:{_free_port()}" for _ in range(n)]
    secret = store.ensure_secret(str(root), create=True)
    pki = api.ensure_cluster_pki(root / "pki")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(n):
            ready = root / f"r{i}.ready"
            ready.unlink(missing_ok=True)
            # The cluster secret goes to the replica's data dir (0600), not its argv: a command
            # line is readable by every local user (and a secret starting with "-" broke it).
            store.write_secret(str(root / f"r{i}"), secret)
            cmd = [
                sys.executable, "-m", "runink.cli._cluster", "server",
                "--data-dir", str(root / f"r{i}"), "--raft-addr", addrs[i],
                "--peers", ",".join(a for a in addrs if a != addrs[i]),
                "--port", str(base + 10 * i), "--shared-dir", str(root),
                "--ready-file", str(ready),
            ]  # fmt: skip
            logf = open(root / f"r{i}.log", "ab")  # noqa: SIM115 - owned by the child
            procs.append(subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT))
            logf.close()
            # One at a time: the first creates the shared keyring the others then load.
            deadline = time.monotonic() + 60
            while not ready.exists():
                if time.monotonic() > deadline or procs[-1].poll() is not None:
                    say(f"error: replica {i} did not start; see {root}/r{i}.log")
                    return 1
                time.sleep(0.2)
        # Every replica serves the API: the client fails over between them (gRPC pick_first).
        target = "ipv4:" + ",".join(f"127.0.0.1:{base + 10 * i}" for i in range(n))
        config_path = _up.write_client_config(
            Path(args.config) if getattr(args, "config", None) else None,
            pki,
            base,
            server=target,
        )
        say(f"runink is up with {n} replicas: APIs on 127.0.0.1:{base}..{base + 10 * (n - 1)}")
        say(f"Raft: {', '.join(addrs)}; admin credentials in {config_path} (context 'local')")
        say(f"cluster status: runink cluster status --data-dir {root}/r0")

        def on_term(signum: int, frame: object) -> None:
            raise KeyboardInterrupt  # SIGTERM stops the replicas as Ctrl-C does

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            with contextlib.suppress(KeyboardInterrupt):
                while any(p.poll() is None for p in procs):  # a killed replica is a fault
                    time.sleep(0.5)
        finally:
            signal.signal(signal.SIGTERM, previous)
        return 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m runink.cli._cluster")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--data-dir", required=True)
    s.add_argument("--raft-addr", required=True)
    s.add_argument("--peers", default="")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--init", action="store_true")
    s.add_argument("--join")
    s.add_argument("--token")
    s.add_argument("--token-file")
    s.add_argument("--pki-dir")
    s.add_argument("--shared-dir")
    s.add_argument("--controller-port", type=int)
    s.add_argument("--no-controllers", action="store_true")
    s.add_argument("--ready-file")
    s.add_argument("--config")
    st = sub.add_parser("status")
    st.add_argument("--data-dir", required=True)
    st.add_argument("--raft-addr")
    st.add_argument("--token")
    st.add_argument("-o", "--output")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point used by ``up_replicas`` for its children (independent of the main parser)."""
    logging.basicConfig(level=os.environ.get("RUNINK_LOG", "WARNING"))
    args = _parser().parse_args(argv)
    if args.cmd == "server":
        return asyncio.run(server(args))
    return status(args)


if __name__ == "__main__":
    sys.exit(main())
