"""A real slice's output reaches a Fluentd forward collector (the loopback stub) through the
agent's runtime, tagged with its herd and slice, and also stays in the slice's log file."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runink.agent import _fluent, _fluent_stub, _launcher, _logs, _runtime

pytestmark = pytest.mark.privileged


async def test_slice_lines_are_forwarded_and_kept_locally(
    shared_dir: Path, launcher: _launcher.Launcher, cgroup_parent: str
) -> None:
    async with _fluent_stub.ForwardStub() as stub:
        fwd = _fluent.Forwarder("127.0.0.1", stub.port, node="node-a")
        rt = _runtime.SliceRuntime(
            shared_dir / "state", launcher, cgroup_parent=cgroup_parent, netns_pool_size=0,
            log_forwarder=fwd,
        )  # fmt: skip
        async with rt:
            spec = _runtime.SliceSpec(
                name="talker",
                herd="finance",
                uid=uuid.uuid4().hex,
                command=("/bin/sh", "-c", "for i in 1 2 3; do echo out $i; done; echo bad >&2"),
            )
            await rt.start(spec)
            outcome = await rt.wait(spec.id)
            assert outcome.reason == "Completed"
            await stub.wait_for(4)
        got = sorted(
            (tag, r["stream"], r["log"], r["node"]) for tag, _, r in stub.received.records()
        )
    assert got == [
        ("runink.finance.talker", "stderr", "bad", "node-a"),
        *[("runink.finance.talker", "stdout", f"out {i}", "node-a") for i in (1, 2, 3)],
    ]
    local = _logs.tail(rt.log_dir(spec.id))
    assert len(local) == 4 and any(line.endswith("stdout F out 3") for line in local)
