"""`runink logs -f` path: a running slice's output followed through a real API server (mTLS)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from runink import api, store
from runink.agent import _logs, _runtime
from runink.schemas import errors

pytestmark = pytest.mark.privileged


async def test_follow_a_running_slice_through_the_api(
    runtime: _runtime.SliceRuntime, tmp_path: Path
) -> None:
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_memory()
    srv = api.ApiServer(
        barn,
        ca_pem=pki.ca.cert_pem,
        server_pair=pki.server,
        log_source=_logs.SliceLogSource.for_runtime(runtime),
    )
    port = await srv.start()
    try:
        # The step waits for a go file after its first line, so the follower provably gets
        # output while the slice still runs.
        go = runtime.state_dir / "go"
        s = _runtime.SliceSpec(
            name="talker",
            herd="team",
            uid=uuid.uuid4().hex,
            command=(
                "sh",
                "-c",
                f"echo first; while [ ! -e {go} ]; do sleep 0.02; done;"
                " printf 'no newline yet'; echo ' then done'; echo err >&2",
            ),
        )
        await runtime.start(s)
        async with api.Client(
            f"127.0.0.1:{port}",
            ca_pem=pki.ca.cert_pem,
            cert_pem=pki.admin.cert_pem,
            key_pem=pki.admin.key_pem,
        ) as c:
            got = b""
            async for chunk in c.logs("team", "talker", follow=True, tail=None):
                if not got:
                    assert s.id in runtime.running()  # streaming, not replaying after the end
                    go.touch()
                got += chunk
            assert got == b"first\nno newline yet then done\nerr\n"
            tail = b"".join([ch async for ch in c.logs("team", "talker", tail=1)])
            assert tail == b"err\n"
            with pytest.raises(errors.NotFound):
                async for _ in c.logs("team", "nobody"):
                    pass
    finally:
        await srv.stop(0)
        await barn.close()
