"""`runink agent` (cli/_agent.py) joining a real API server over mTLS: registers, runs, reports."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import pytest

from runink import api, store
from runink.agent import _runtime
from runink.cli import _agent
from runink.schemas import errors

pytestmark = pytest.mark.privileged


def test_labels_and_taints_parse_like_kubectl() -> None:
    assert _agent.parse_labels("zone=a, disk=ssd") == {"zone": "a", "disk": "ssd"}
    assert _agent.parse_taints("gpu=true:NoSchedule,spot:PreferNoSchedule") == [
        {"key": "gpu", "value": "true", "effect": "NoSchedule"},
        {"key": "spot", "effect": "PreferNoSchedule"},
    ]
    with pytest.raises(errors.Invalid, match="key=value"):
        _agent.parse_labels("zone")
    with pytest.raises(errors.Invalid, match="NoSchedule"):
        _agent.parse_taints("gpu=true:Sometimes")


async def test_standalone_agent_runs_a_slice(
    tmp_path: Path, shared_dir: Path, cgroup_parent: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_memory()
    srv = api.ApiServer(barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server)
    port = await srv.start()
    cfg = tmp_path / "config"
    api.ClientConfig().with_context(
        api.Context(
            name="test",
            server="127.0.0.1:1",  # wrong on purpose: --server overrides it
            certificate_authority_data=pki.ca.cert_pem.decode(),
            client_certificate_data=pki.admin.cert_pem.decode(),
            client_key_data=pki.admin.key_pem.decode(),
        )
    ).save(cfg)
    # Keep the test's slices in its own cgroup parent, cleaned up by the fixture.
    real = _runtime.SliceRuntime.__init__

    def init(self: Any, *a: Any, **kw: Any) -> None:
        real(self, *a, **{**kw, "cgroup_parent": cgroup_parent})

    monkeypatch.setattr(_runtime.SliceRuntime, "__init__", init)
    parser = argparse.ArgumentParser()
    _agent.add_arguments(parser)
    parser.add_argument("--config")
    parser.add_argument("--context")
    args = parser.parse_args(
        [
            "--node-name", "n1", "--labels", "zone=z", "--taints", "gpu=yes:NoSchedule",
            "--state-dir", str(shared_dir / "state"), "--server", f"127.0.0.1:{port}",
            "--config", str(cfg),
        ]
    )  # fmt: skip
    try:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(_agent.run(args, say=lambda _t: None))
            await barn.create(
                {
                    "apiVersion": "runink.io/v1",
                    "kind": "Slice",
                    "metadata": {"name": "hello", "herd": "team"},
                    "spec": {
                        "pipeline": "p", "run": "r", "step": "s", "nodeName": "n1",
                        "command": ["sh", "-c", "exit 0"], "network": "none",
                    },
                }
            )  # fmt: skip
            async with asyncio.timeout(30):
                while True:
                    obj = await barn.get("Slice", "hello", "team")
                    if (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                        break
                    await asyncio.sleep(0.05)
            assert obj["status"]["phase"] == "Succeeded", obj["status"]
            node = await barn.get("Node", "n1")
            assert node["metadata"]["labels"]["zone"] == "z"
            assert node["spec"]["taints"] == [
                {"key": "gpu", "value": "yes", "effect": "NoSchedule"}
            ]
            task.cancel()
    finally:
        await srv.stop(0)
        await barn.close()
