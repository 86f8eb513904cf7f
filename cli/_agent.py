"""``runink agent``: a standalone Runi Agent joining a cluster through the API server.

The composition root for one node: it starts the fork server first (agent.Launcher), then runs
`runink.agent.run_agent` with `runink.api.Client` as the agent's Client (TLS, the credentials of
the client config context, or ``--server`` to point it elsewhere) and Secrets revealed through the
API. It also serves the node's slice logs to the API server (`runink.api.AgentLogServer` over the
agent's `SliceLogSource`, mutual TLS with a serving certificate the API signs for this node at
every start) on ``--log-address:--log-port`` and publishes that in its Node (``status.addresses``,
``status.daemonEndpoints.logs``), so ``runink logs`` reaches slices run here. `runink up` runs the
same agent in-process instead (cli/_up.py), whose logs the API reads locally. Wiring in cli/_app.py:
``from runink.cli import _agent`` and ``_agent.add_parser(sub)`` in `build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import ipaddress
import os
import signal
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runink import agent, api
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app

DEFAULT_STATE_DIR = "/var/lib/runink/agent"


def parse_labels(text: str | None) -> dict[str, str]:
    """``zone=a,gpu=true`` -> a dict; `errors.Invalid` names the bad item."""
    out: dict[str, str] = {}
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise errors.Invalid(f"--labels: {item!r} is not key=value")
        out[key] = value
    return out


def parse_taints(text: str | None) -> list[dict[str, str]]:
    """``gpu=true:NoSchedule,spot:PreferNoSchedule`` -> taint dicts, as kubectl taint."""
    out: list[dict[str, str]] = []
    for item in filter(None, (x.strip() for x in (text or "").split(","))):
        kv, colon, effect = item.rpartition(":")
        if not colon or effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            raise errors.Invalid(
                f"--taints: {item!r} must be key[=value]:NoSchedule|PreferNoSchedule|NoExecute"
            )
        key, _, value = kv.partition("=")
        taint = {"key": key, "effect": effect}
        if value:
            taint["value"] = value
        out.append(taint)
    return out


def cgroup_parent(node_name: str) -> str:
    """The default cgroup parent of a standalone agent: one per node name, so that two agents
    on one machine never sweep each other's slices away when one of them recovers."""
    return f"runink-{node_name}"


def netns_prefix(node_name: str) -> str:
    """A 4-character netns/veth name prefix per node name (interface names are <= 15 chars)."""
    return "r" + hashlib.sha256(node_name.encode()).hexdigest()[:3]


def make_client(args: argparse.Namespace) -> api.Client:
    """The API client from the config context, with ``--server`` overriding its address."""
    config = api.load_config(Path(args.config) if getattr(args, "config", None) else None)
    context = config.context(getattr(args, "context", None))
    if args.server:
        context = dataclasses.replace(context, server=args.server)
    base = config.path.parent if config.path else None
    return api.Client.from_context(context, base, field_manager=f"agent:{args.node_name}")


def _api_host(target: str) -> str:
    """The first host of an API target (``h:p``, ``ipv4:h1:p1,h2:p2``, ``[::1]:p``)."""
    first = target.split(":", 1)[1] if target.startswith(("ipv4:", "ipv6:", "dns:")) else target
    first = first.lstrip("/").split(",", 1)[0]
    return first.rsplit(":", 1)[0].strip("[]")


def advertise_address(bind: str, explicit: str | None, api_target: str) -> str:
    """The address the API server should dial for this agent's endpoints: *explicit*, else the
    bind address when it is a specific one, else this host's address on the route to the API
    server (a connected UDP socket sends nothing), else the host name."""
    if explicit:
        return explicit
    try:
        if not ipaddress.ip_address(bind).is_unspecified:
            return bind
    except ValueError:
        return bind  # a host name
    host = _api_host(api_target)
    try:
        info = socket.getaddrinfo(host, 1, type=socket.SOCK_DGRAM)[0]
        with socket.socket(info[0], socket.SOCK_DGRAM) as s:
            s.connect(info[4])
            return str(s.getsockname()[0])
    except OSError:
        return socket.gethostname()


def node_addresses(address: str) -> list[dict[str, str]]:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return [{"type": "Hostname", "address": address}]
    return [
        {"type": "InternalIP", "address": address},
        {"type": "Hostname", "address": socket.gethostname()},
    ]


async def run(args: argparse.Namespace, say: Any = print) -> int:
    if os.geteuid() != 0:
        raise errors.Forbidden(
            "runink agent needs root: it creates cgroups, namespaces and ephemeral slice UIDs"
        )
    config = agent.AgentConfig(
        node_name=args.node_name,
        labels=parse_labels(args.labels),
        taints=parse_taints(args.taints),
        heartbeat_interval=args.heartbeat_interval,
        lease_duration=args.lease_duration,
        fluentd=args.fluentd,
        log_retention=args.log_retention,
    )
    if args.fluentd:
        try:
            agent.parse_fluentd_address(args.fluentd)
        except ValueError as e:
            raise errors.Invalid(f"--fluentd: {e}") from None
    if args.heartbeat_interval <= 0 or args.lease_duration <= args.heartbeat_interval:
        raise errors.Invalid(
            "--lease-duration must be longer than --heartbeat-interval (both positive), or the "
            "node goes NotReady between two heartbeats"
        )
    # The fork server first: a small fresh interpreter, started before the agent gets busy.
    launcher = await asyncio.to_thread(agent.Launcher.start)
    try:
        async with make_client(args) as client, _log_server(args, client, say) as logs:
            if logs is not None:
                address = advertise_address(args.log_address, args.advertise_address, client.target)
                config = dataclasses.replace(
                    config, addresses=node_addresses(address), log_port=logs.port
                )
                say(
                    f"runink agent {args.node_name}: logs served to the API server on "
                    f"{args.log_address}:{logs.port} (advertised as {address})"
                )

            async def reveal(herd: str, name: str) -> dict[str, bytes]:
                return await client.reveal(herd, name)

            say(f"runink agent {args.node_name}: state in {args.state_dir}")
            # SIGTERM/SIGINT: stop cleanly (the netns pool is removed); running slices stay, to
            # be re-attached by the next agent process, as after a crash.
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            try:
                async with asyncio.TaskGroup() as tg:
                    running = tg.create_task(
                        agent.run_agent(
                            client,
                            config,
                            args.state_dir,
                            launcher,
                            args.metrics_port,
                            datasets_root=args.datasets_root,
                            python=args.python,
                            reveal_secret=reveal,
                            cgroup_parent=args.cgroup_parent or cgroup_parent(args.node_name),
                            netns_prefix=netns_prefix(args.node_name),
                        )
                    )
                    stopper = tg.create_task(stop.wait())
                    await asyncio.wait({running, stopper}, return_when=asyncio.FIRST_COMPLETED)
                    running.cancel()
                    stopper.cancel()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        await asyncio.to_thread(launcher.close)
    return 0


@contextlib.asynccontextmanager
async def _log_server(
    args: argparse.Namespace, client: api.Client, say: Any
) -> AsyncIterator[api.AgentLogServer | None]:
    """This node's log endpoint (None with ``--log-port -1``): a serving certificate for this
    node from the API server (a fresh key, in memory only), then `api.AgentLogServer`."""
    if args.log_port < 0:
        yield None
        return
    if client.ca_pem is None:
        raise errors.Invalid("the client config context has no certificate authority")
    try:
        serving = await client.node_serving_certificate(args.node_name)
    except errors.RuninkError as e:
        # Slices still run; only `runink logs` cannot reach them (the API server says so).
        say(
            f"warning: no serving certificate for the log endpoint ({e.reason}: "
            f"{e.message.splitlines()[0]}); slice logs of this node are not served"
        )
        yield None
        return
    async with api.AgentLogServer(
        agent.SliceLogSource.for_state_dir(args.state_dir),
        ca_pem=client.ca_pem,
        serving=serving,
        host=args.log_address,
        port=args.log_port,
    ) as server:
        yield server


async def cmd_agent(ctx: _app.Ctx) -> int:
    def say(text: str) -> None:
        ctx.streams.write(text + "\n")

    return await run(ctx.args, say)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--node-name", required=True, help="the Node this agent registers and serves")
    p.add_argument("--labels", help="Node labels, e.g. zone=a,disk=ssd")
    p.add_argument("--taints", help="Node taints, e.g. gpu=true:NoSchedule")
    p.add_argument(
        "--state-dir",
        default=DEFAULT_STATE_DIR,
        help=f"slice state, work dirs and logs (default {DEFAULT_STATE_DIR})",
    )
    p.add_argument(
        "--datasets-root",
        help="where named datasets live, <root>/<herd>/<name> (default <state-dir>/../datasets;"
        " not under /tmp, its parents traversable by other users)",
    )
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT")
    p.add_argument("--server", help="API server host:port (default: the config context's)")
    p.add_argument(
        "--log-port",
        type=int,
        default=0,
        metavar="PORT",
        help="serve slice logs to the API server on this port, mutual TLS (default 0: any free"
        " port, published in the Node; -1: do not serve, `runink logs` cannot reach this node)",
    )
    p.add_argument(
        "--log-address",
        default="0.0.0.0",
        metavar="ADDRESS",
        help="bind address of the log endpoint (default 0.0.0.0)",
    )
    p.add_argument(
        "--advertise-address",
        metavar="ADDRESS",
        help="the address the API server dials for this node's endpoints (default: the bind"
        " address, or this host's address on the route to the API server)",
    )
    p.add_argument(
        "--cgroup-parent",
        help="cgroup under which slice cgroups are made (default runink-<node-name>)",
    )
    p.add_argument(
        "--fluentd",
        metavar="HOST:PORT",
        help="also ship slice log lines to this Fluentd/Fluent Bit forward input (acknowledged)",
    )
    p.add_argument(
        "--heartbeat-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how often the Node's lease is renewed (default 10)",
    )
    p.add_argument(
        "--lease-duration",
        type=int,
        default=40,
        metavar="SECONDS",
        help="how long the lease lasts without renewal before the node is NotReady (default 40)",
    )
    p.add_argument(
        "--log-retention",
        type=float,
        default=24 * 3600.0,
        metavar="SECONDS",
        help="keep a finished slice's logs this long while its Slice exists (default 86400)",
    )
    p.add_argument(
        "--python", help="interpreter for python: steps (default: one the slices can run)"
    )


def add_parser(sub: Any) -> None:
    p = sub.add_parser("agent", help="run a node agent that executes the Slices bound to it")
    add_arguments(p)
    p.set_defaults(func=cmd_agent)
