"""`runink up --replicas 3`: an API key made through one replica works on every replica, also after
its leader is SIGKILLed; a revocation through one replica is refused by the others; an expired
key is refused with its expiry; the bootstrap token lets a node bootstrap through any replica;
and no key's secret is in clear in the Raft journals, the LMDB files or the replicas' logs."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from runink import api
from runink.schemas import errors

sys.path.insert(0, os.path.dirname(__file__))
import _up

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

T = TypeVar("T")
PROPAGATION = 10.0  # the cache follows the Raft apply (milliseconds); generous for a busy host
FAILOVER = 30.0


def _run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def eventually(what: str, probe: Callable[[], Awaitable[T]], timeout: float = PROPAGATION) -> T:
    """``probe()``'s result once it stops raising AssertionError (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _run(probe())
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s: {e}") from e
            time.sleep(0.1)


class Replicas:
    def __init__(self, root: Path) -> None:
        self.data = root / "data"
        self.pki = api.ensure_cluster_pki(self.data / "pki")  # loads the shared PKI
        self.ports = [int((self.data / f"r{i}.ready").read_text()) for i in range(3)]

    def admin(self, i: int) -> api.Client:
        return api.Client(
            f"127.0.0.1:{self.ports[i]}",
            ca_pem=self.pki.ca.cert_pem,
            cert_pem=self.pki.admin.cert_pem,
            key_pem=self.pki.admin.key_pem,
            timeout=10,
        )

    def token_target(self, i: int) -> str:
        return f"127.0.0.1:{self.ports[i] + 2}"

    async def whoami(self, i: int, token: str) -> str:
        """The user replica ``i`` authenticates ``token`` as (AssertionError if refused)."""
        client = api.Client(self.token_target(i), ca_pem=self.pki.ca.cert_pem, token=token)
        async with client:
            try:
                return str((await client.whoami())["user"])
            except errors.Unauthenticated as e:
                raise AssertionError(f"replica {i}: {e.message}") from e

    async def refused(self, i: int, token: str) -> str:
        """The Unauthenticated message replica ``i`` answers with (AssertionError if accepted)."""
        try:
            user = await self.whoami(i, token)
        except AssertionError as e:
            return str(e)
        raise AssertionError(f"replica {i} still accepts the key (as {user})")


def _replica_of(leader: str) -> tuple[int, int]:
    """(pid, replica index) of the process serving Raft address ``leader``."""
    pids = subprocess.run(
        ["pgrep", "-f", "--", f"--raft-addr {leader}"], capture_output=True, text=True
    ).stdout.split()
    assert pids, f"no process for leader {leader}"
    cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes().split(b"\0")
    data_dir = cmdline[cmdline.index(b"--data-dir") + 1].decode()
    return int(pids[0]), int(data_dir.rsplit("/r", 1)[1])


def test_keys_follow_the_cluster_across_replicas_and_failover() -> None:
    with _up.replicas(3) as root:
        rs = Replicas(root)
        leader = _up.leader(root, 0)
        assert leader is not None
        pid, lead = _replica_of(leader)

        async def make(ttl: float) -> dict[str, object]:
            async with rs.admin(lead) as c:
                return await c.create_api_key(ttl_seconds=ttl, description="replicated")

        key = _run(make(3600))
        short = _run(make(4))
        token, key_id = str(key["token"]), str(key["id"])
        for i in range(3):
            user = eventually(f"replica {i} accepts the key", lambda i=i: rs.whoami(i, token))
            assert user == "admin"

        # The operator's bootstrap token (minted by whichever replica wrote the shared file
        # last) bootstraps a node through every replica.
        boot = (rs.data / "bootstrap-token").read_text().strip()
        for i in range(3):

            async def bootstrap(i: int = i) -> tuple[bytes, bytes]:
                try:
                    return await api.bootstrap_node_credentials(
                        rs.token_target(i), rs.pki.ca.cert_pem, boot, f"node-{i}"
                    )
                except errors.Unauthenticated as e:
                    raise AssertionError(e.message) from e

            eventually(f"replica {i} accepts the bootstrap token", bootstrap)

        # SIGKILL the leader the key was made on: the survivors keep accepting it.
        os.kill(pid, signal.SIGKILL)
        survivors = [i for i in range(3) if i != lead]
        for i in survivors:
            assert _run(rs.whoami(i, token)) == "admin"
        a, b = survivors

        # Revoke through one survivor (a write: it waits for the new leader)...
        async def revoke() -> dict[str, object]:
            async with rs.admin(a) as c:
                try:
                    return await c.revoke_api_key(key_id)
                except (errors.Unavailable, errors.OutcomeUnknown) as e:
                    raise AssertionError(e.message) from e

        assert eventually("a revocation after failover", revoke, FAILOVER)["revoked"] is True
        assert "has been revoked" in _run(rs.refused(a, token))
        # ...and the other refuses it too, within the propagation bound.
        message = eventually("the other survivor refuses it", lambda: rs.refused(b, token))
        assert f"API key {key_id} has been revoked" in message

        # Expiry: refused everywhere, saying when it expired.
        for i in survivors:
            message = eventually(
                f"replica {i} refuses the expired key",
                lambda i=i: rs.refused(i, str(short["token"])),
            )
            assert f"API key {short['id']} expired at {short['expiresAt']}" in message

        # The records went through Raft (their ids are in the journals), their secrets did not.
        files = [p for p in root.rglob("*") if p.is_file() and p.name != "bootstrap-token"]
        raft = [p for p in files if "raft" in str(p.relative_to(root))]
        assert raft, "expected Raft journal/state files under the data dir"
        assert any(key_id.encode() in p.read_bytes() for p in raft), "the record is not in Raft"
        for t in (token, str(short["token"]), boot):
            secret = t.split("_", 2)[2].encode()
            leaked = [str(p) for p in files if secret in p.read_bytes()]
            assert not leaked, f"a key's secret is in clear in {leaked}"
