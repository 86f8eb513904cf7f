"""Two agents on one machine (issue 6): killing the one running a step mid-run fails its slice as
NodeLost, the step is retried on the other node and the run still succeeds; nothing is left behind.

The control plane runs in-process (`_up.serve` without a local agent) so that the node lifecycle
controller can get a 1 s grace period (`runink up` has no flag for it yet). The two agents are real
`runink agent` processes with short leases. The SIGKILLed agent's slice keeps running (the design
lets slices outlive an agent crash); the test restarts that agent, whose recovery finds the slice
running although its Slice is Failed(NodeLost), stops it and removes its cgroup. Only the node's
own agent can touch its processes, so that is where the clean-up belongs.

`runink logs` from the right node: with no agent beside the API server, a slice's logs come from
the agent that ran it, through the API (mutual TLS between the two), with tail and follow, and
the agent's log port refuses anyone but the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from runink import api, controllers
from runink.agent import _cgroups, _netpool, _runtime
from runink.api import _agentlogs, _tls, _wire
from runink.cli import _agent, _up
from runink.schemas import errors

pytestmark = [pytest.mark.integration, pytest.mark.privileged, pytest.mark.slow]
if os.geteuid() != 0:
    pytest.skip("agents need root (cgroups, namespaces)", allow_module_level=True)

Obj = dict[str, Any]
HERD = "mn"


async def _controllers_short_grace(cluster: _up.Cluster) -> None:
    mgr = controllers.Manager(cluster.barn, http_port=None, metrics=cluster.metrics)
    mgr.add(*controllers.builtin_controllers(mgr, node_grace_period=1.0))
    await mgr.run()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not under /tmp: slices have a private /tmp; 0711 so slice uids reach their work dirs.
    path = Path(tempfile.mkdtemp(prefix="runink-mn-", dir="/var/tmp"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def cluster(data_dir: Path) -> AsyncIterator[api.Client]:
    comps = [("controllers", _controllers_short_grace)]
    async with (
        _up.serve(
            data_dir / "cp",
            port=0,
            config=data_dir / "config",
            say=lambda _: None,
            with_components=comps,
        ),
        api.Client.from_config(data_dir / "config") as client,
    ):
        yield client


class Agents:
    """`runink agent` processes; every one is killed and its cgroups and netns removed at the end."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes: set[str] = set()

    def start(self, node: str) -> None:
        self.nodes.add(node)
        log = open(self.data_dir / f"{node}.log", "ab")  # noqa: SIM115 - the child owns it
        self.procs[node] = subprocess.Popen(
            [
                sys.executable, "-m", "runink.cli", "--config", str(self.data_dir / "config"),
                "agent", "--node-name", node, "--state-dir", str(self.data_dir / node),
                "--datasets-root", str(self.data_dir / "datasets"),
                "--heartbeat-interval", "0.5", "--lease-duration", "2",
            ],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()

    def kill(self, node: str) -> None:
        p = self.procs.pop(node)
        p.kill()
        p.wait()

    def stop_all(self) -> None:
        for node in list(self.procs):
            p = self.procs.pop(node)
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def leftovers(self, parked: bool = True) -> tuple[list[str], list[str]]:
        """(slice cgroups, netns) still present under the agents' names; without *parked*, not
        counting the cgroups of the zygotes running agents keep ready."""
        layout = _cgroups.detect()
        cgs = [c for n in self.nodes for c in _cgroups.list_slices(layout, _agent.cgroup_parent(n))]
        if not parked:
            cgs = [c for c in cgs if not c.startswith(_cgroups.ZYGOTE_PREFIX)]
        prefixes = tuple(_agent.netns_prefix(n) for n in self.nodes)
        ns = [p.name for p in _netpool.NETNS_DIR.glob("*") if p.name.startswith(prefixes)]
        return cgs, ns

    def clean(self) -> None:
        layout = _cgroups.detect()
        for n in self.nodes:
            parent = _agent.cgroup_parent(n)
            for c in _cgroups.list_slices(layout, parent):
                _cgroups.SliceCgroup(layout, c, parent).remove()
            for base in [p / parent for p in layout.v1.values()] + (
                [layout.unified / parent] if layout.unified else []
            ):
                with contextlib.suppress(FileNotFoundError, OSError):
                    base.rmdir()
            # A SIGKILLed agent leaves its slices' scratch dirs (tmpfs) for its restart to find.
            shutil.rmtree(_runtime.default_scratch_dir(self.data_dir / n), ignore_errors=True)
        for _, ns in [self.leftovers()]:
            for name in ns:
                with contextlib.suppress(OSError):
                    subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def agents(data_dir: Path) -> Iterator[Agents]:
    a = Agents(data_dir)
    try:
        yield a
    finally:
        for p in a.procs.values():
            p.kill()
            p.wait()
        a.procs.clear()
        a.clean()


async def _until(what: str, probe: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await probe()
        if got:
            return got
        await asyncio.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _procs_with(token: str, node: str | None = None) -> list[int]:
    """Pids whose command line holds *token* (in a slice cgroup of *node*'s agent, if given)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                if token.encode() not in (d / "cmdline").read_bytes():
                    continue
                if node is None or f"/{_agent.cgroup_parent(node)}/" in (d / "cgroup").read_text():
                    out.append(int(d.name))
    return out


async def test_killing_the_agent_mid_run_reschedules_the_step_and_the_run_succeeds(
    cluster: api.Client, agents: Agents
) -> None:
    client = cluster
    agents.start("mn-a")
    agents.start("mn-b")

    async def both_ready() -> bool:
        nodes = (await client.list("Node")).items
        ready = {
            n["metadata"]["name"]
            for n in nodes
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in (n.get("status") or {}).get("conditions") or []
            )
        }
        return {"mn-a", "mn-b"} <= ready

    await _until("both nodes Ready", both_ready, 60)
    # A unique sleep length marks the step's processes in /proc.
    token = f"12.{uuid.uuid4().int % 10**6:06d}"
    await client.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": HERD}, "spec": {}}
    )
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Pipeline",
            "metadata": {"name": "p", "herd": HERD},
            "spec": {
                "steps": [
                    {
                        "name": "nap",
                        "command": ["/bin/sleep", token],
                        "network": "none",
                        "resources": {"cpu": "100m", "memory": "64Mi"},
                        "retry": {"limit": 2},
                    }
                ]
            },
        }
    )
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "PipelineRun",
            "metadata": {"name": "r1", "herd": HERD},
            "spec": {"pipelineRef": {"name": "p"}},
        }
    )

    async def running_first() -> Obj | None:
        for s in (await client.list("Slice", HERD, selector="runink.io/run=r1")).items:
            if (s.get("status") or {}).get("phase") == "Running":
                return s
        return None

    first = await _until("the step Running", running_first, 60)
    victim = first["spec"]["nodeName"]
    survivor = ({"mn-a", "mn-b"} - {victim}).pop()
    assert _procs_with(token, victim), "the step's process should be running"
    agents.kill(victim)

    async def node_lost() -> Obj | None:
        s = await client.get("Slice", first["metadata"]["name"], HERD)
        return s if (s.get("status") or {}).get("reason") == "NodeLost" else None

    lost = await _until("the slice failed as NodeLost", node_lost, 30)
    assert lost["status"]["phase"] == "Failed"

    async def retry_bound() -> Obj | None:
        for s in (await client.list("Slice", HERD, selector="runink.io/run=r1")).items:
            if int(s["spec"].get("attempt", 1)) == 2 and s["spec"].get("nodeName"):
                return s
        return None

    retry = await _until("the retry bound to a node", retry_bound, 30)
    assert retry["spec"]["nodeName"] == survivor
    # The orphaned step still runs on the killed node; its agent comes back and must stop it
    # (restarted only now, so the retry could not go back to it).
    assert _procs_with(token, victim)
    agents.start(victim)

    async def orphan_stopped() -> bool:
        return not _procs_with(token, victim)

    # Well before its sleep would end by itself: the restarted agent's recovery stopped it.
    await _until("the restarted agent to stop the orphan", orphan_stopped, 4)

    async def run_done() -> Obj | None:
        run = await client.get("PipelineRun", "r1", HERD)
        return run if (run.get("status") or {}).get("phase") in ("Succeeded", "Failed") else None

    run = await _until("the run to finish", run_done, 90)
    assert run["status"]["phase"] == "Succeeded", run["status"]
    slices = (await client.list("Slice", HERD, selector="runink.io/run=r1")).items
    by_attempt = {int(s["spec"].get("attempt", 1)): s for s in slices}
    assert by_attempt[1]["status"]["reason"] == "NodeLost"  # not overwritten by the old agent
    assert by_attempt[2]["spec"]["nodeName"] == survivor
    assert by_attempt[2]["status"]["phase"] == "Succeeded"

    async def nothing_left() -> bool:
        return not _procs_with(token) and agents.leftovers(parked=False)[0] == []

    await _until("no orphan process or cgroup", nothing_left, 20)
    agents.stop_all()  # SIGTERM: each agent removes its netns pool
    assert agents.leftovers() == ([], [])


async def _read_agent_directly(
    target: str, node: str, cert: api.KeyPair | None, ca: bytes
) -> bytes:
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=cert.key_pem if cert else None,
        certificate_chain=cert.cert_pem if cert else None,
    )
    options = [("grpc.ssl_target_name_override", _tls.node_serving_name(node))]
    async with grpc.aio.secure_channel(target, creds, options=options) as ch:
        stub = ch.unary_stream(
            _agentlogs.READ, request_serializer=_wire.encode, response_deserializer=None
        )
        try:
            return b"".join([bytes(c) async for c in stub({"herd": HERD, "slice": "x"}, timeout=5)])
        except grpc.aio.AioRpcError as e:
            raise _wire.error_from_rpc(e) from None


async def test_logs_of_a_slice_on_a_remote_agent_come_through_the_api(
    cluster: api.Client, agents: Agents, data_dir: Path
) -> None:
    client = cluster
    agents.start("lg-a")

    async def endpoint() -> Obj | None:
        with contextlib.suppress(errors.NotFound):
            node = await client.get("Node", "lg-a")
            return node if _agentlogs.node_log_target(node) else None
        return None

    node = await _until("the node to publish its log endpoint", endpoint, 60)
    assert node["status"]["addresses"][0] == {"type": "InternalIP", "address": "127.0.0.1"}
    target = _agentlogs.node_log_target(node)
    assert target is not None
    go = data_dir / "go"
    await client.create(
        {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": HERD}, "spec": {}}
    )
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "Pipeline",
            "metadata": {"name": "talk", "herd": HERD},
            "spec": {
                "steps": [
                    {
                        "name": "talk",
                        "command": [
                            "/bin/sh",
                            "-c",
                            "for i in 1 2 3; do echo line-$i; done;"
                            f" while [ ! -e {go} ]; do sleep 0.02; done; echo line-4; echo err >&2",
                        ],
                        "network": "none",
                        "resources": {"cpu": "100m", "memory": "64Mi"},
                    }
                ]
            },
        }
    )
    await client.create(
        {
            "apiVersion": "runink.io/v1",
            "kind": "PipelineRun",
            "metadata": {"name": "r1", "herd": HERD},
            "spec": {"pipelineRef": {"name": "talk"}},
        }
    )

    async def running() -> Obj | None:
        for s in (await client.list("Slice", HERD, selector="runink.io/run=r1")).items:
            if (s.get("status") or {}).get("phase") == "Running":
                return s
        return None

    name = (await _until("the step Running", running, 60))["metadata"]["name"]
    # -f: the first lines arrive while the step still runs; the stream ends when it does.
    got = b""
    async for chunk in client.logs(HERD, name, follow=True):
        got += chunk
        if got == b"line-1\nline-2\nline-3\n":
            s = await client.get("Slice", name, HERD)
            assert s["status"]["phase"] == "Running"
            go.touch()
    assert got == b"line-1\nline-2\nline-3\nline-4\nerr\n"
    assert b"".join([c async for c in client.logs(HERD, name)]) == got
    assert b"".join([c async for c in client.logs(HERD, name, tail=2)]) == b"line-4\nerr\n"
    # The CLI, as a user runs it.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "runink.cli", "--config", str(data_dir / "config"),
        "logs", "run/r1/talk", "-n", HERD, "--tail", "1",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert (proc.returncode, out) == (0, b"err\n"), err
    # The agent's log port serves the API server's client certificate only.
    pki = api.ensure_cluster_pki(data_dir / "cp" / "pki")
    ca = pki.ca.cert_pem
    with pytest.raises(errors.Unavailable):  # no client certificate: no TLS session
        await _read_agent_directly(target, "lg-a", None, ca)
    with pytest.raises(errors.Forbidden, match="serves logs to the API server only"):
        await _read_agent_directly(target, "lg-a", pki.admin, ca)
    with pytest.raises(errors.NotFound):  # the API's certificate gets through (no slice "x")
        await _read_agent_directly(target, "lg-a", pki.agent_client, ca)
    agents.stop_all()
    assert agents.leftovers() == ([], [])
