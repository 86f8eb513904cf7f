"""Secrets never stored or shown in clear; rotation; sealing; agents confined to their node."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import pytest

from runink import api
from runink.api import _secrets
from runink.schemas import errors

from .conftest import Cluster

pytestmark = pytest.mark.integration

VALUE = "s3cr3t-V4lue-that-must-not-leak"


def _secret(herd: str, name: str, value: str = VALUE) -> dict[str, object]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Secret",
        "metadata": {"name": name, "herd": herd},
        "spec": {"stringData": {"password": value}},
    }


def _grep(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_secret_values_never_reach_disk_or_responses(cluster: Cluster) -> None:
    seen: list[str] = []
    async with cluster.cert_client("admin") as admin:
        seen.append(repr(await admin.create(_secret("alpha", "db"))))
        seen.append(repr(await admin.apply(_secret("alpha", "db2"), "test")))
        got = await admin.get("Secret", "db", "alpha")
        seen.append(repr(got))
        seen.append(repr((await admin.list("Secret")).items))
        keys = got["metadata"]["annotations"]["runink.io/secret-keys"]
        assert keys == f'{{"password":{len(VALUE)}}}'
        assert "wrappedKey" not in got["spec"]["encrypted"]
        assert (await admin.reveal("alpha", "db")) == {"password": VALUE.encode()}
        # A bad value in an error message must not echo the value either.
        bad = _secret("alpha", "bad")
        bad["spec"] = {"data": {"k": VALUE}}
        with pytest.raises(errors.Invalid) as info:
            await admin.create(bad)
        seen.append(str(info.value))
    await cluster.server.stop(0)  # flush audit and LMDB
    assert not any(VALUE in s for s in seen)
    assert _grep(cluster.data_dir, VALUE.encode()) == []
    assert list((cluster.data_dir / "audit").glob("audit.log*"))


async def test_ciphertext_copied_elsewhere_does_not_open(cluster: Cluster) -> None:
    async with cluster.cert_client("admin") as admin:
        await admin.create(_secret("alpha", "orig"))
        await admin.create(_secret("beta", "target", "other"))
        await admin.create(_secret("alpha", "target2", "other"))
        stolen = (await cluster.barn.get("Secret", "orig", "alpha"))["spec"]["encrypted"]
        for herd, name in (("beta", "target"), ("alpha", "target2")):
            live = await cluster.barn.get("Secret", name, herd)
            live["spec"]["encrypted"] = copy.deepcopy(stolen)
            await cluster.barn.update(live)  # an attacker with write access to the store
            with pytest.raises(errors.Invalid, match="does not authenticate"):
                await admin.reveal(herd, name)


async def test_rotation_rewraps_and_everything_stays_readable(cluster: Cluster) -> None:
    async with cluster.cert_client("admin") as admin:
        for i in range(5):
            await admin.create(_secret("alpha", f"r{i}", f"value-{i}"))
        before = cluster.server.security.keyring.active
        out = await admin.rotate_key()
        assert out["activeKeyId"] != before and out["rewrapped"] == 5
        for i in range(5):
            assert await admin.reveal("alpha", f"r{i}") == {"password": f"value-{i}".encode()}
            stored = await cluster.barn.get("Secret", f"r{i}", "alpha")
            assert stored["spec"]["encrypted"]["keyId"] == out["activeKeyId"]
    async with cluster.cert_client("alice") as alice:
        with pytest.raises(errors.Forbidden):
            await alice.rotate_key()


async def test_sealed_manifest_applies_and_only_the_cluster_opens_it(cluster: Cluster) -> None:
    async with cluster.cert_client("admin") as admin:
        pub = (await admin.sealing_key())["publicKey"].encode()
        sealed = _secrets.seal_manifest(_secret("alpha", "from-git"), pub)
        assert VALUE not in repr(sealed)
        await admin.apply(sealed, "gitops")
        assert await admin.reveal("alpha", "from-git") == {"password": VALUE.encode()}
        moved = copy.deepcopy(sealed)
        moved["metadata"]["herd"] = "beta"
        with pytest.raises(errors.Invalid):
            await admin.apply(moved, "gitops")


def _slice(herd: str, name: str, node: str) -> dict[str, object]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Slice",
        "metadata": {"name": name, "herd": herd},
        "spec": {
            "pipeline": "p",
            "run": "r",
            "step": "a",
            "command": ["true"],
            "nodeName": node,
            "serviceAccount": "etl",
            "secrets": [{"secret": f"{name}-secret"}],
        },
    }


async def test_agent_bootstraps_and_sees_only_its_own_slices(cluster: Cluster) -> None:
    async with cluster.cert_client("admin") as admin:
        for name, node in (("mine", "node-a"), ("theirs", "node-b")):
            await admin.create(_secret("alpha", f"{name}-secret"))
            await admin.create(_slice("alpha", name, node))
    token = (cluster.data_dir / "bootstrap-token").read_text().strip()
    cert, key = await api.bootstrap_node_credentials(
        cluster.token_target, cluster.pki.ca.cert_pem, token, "node-a"
    )
    agent = api.Client(
        cluster.target, ca_pem=cluster.pki.ca.cert_pem, cert_pem=cert, key_pem=key, timeout=10
    )
    async with agent:
        assert (await agent.whoami())["user"] == "system:node:node-a"
        names = [o["metadata"]["name"] for o in (await agent.list("Slice")).items]
        assert names == ["mine"]
        with pytest.raises(errors.Forbidden):
            await agent.get("Slice", "theirs", "alpha")
        with pytest.raises(errors.Forbidden):
            await agent.reveal("alpha", "theirs-secret")
        assert await agent.reveal("alpha", "mine-secret") == {"password": VALUE.encode()}
        minted = await agent.service_account_token("alpha", "mine")
        with pytest.raises(errors.Forbidden):
            await agent.service_account_token("alpha", "theirs")
    async with cluster.token_client(minted["token"]) as slice_client:
        assert (await slice_client.whoami())["user"] == "system:serviceaccount:alpha:etl"
    # The bootstrap token itself can do nothing but sign node CSRs.
    async with cluster.token_client(token) as boot:
        with pytest.raises(errors.Forbidden):
            await boot.list("Secret", "alpha")


async def test_rate_limit_and_request_size(cluster: Cluster) -> None:
    cluster.server.security.limiter.rate = 1.0
    cluster.server.security.limiter.burst = 3.0
    async with cluster.cert_client("bob") as bob:
        with pytest.raises(errors.QuotaExceeded, match="rate limit exceeded"):
            for _ in range(10):
                await bob.whoami()
    async with cluster.cert_client("admin") as admin:
        huge = _secret("alpha", "huge", "x" * (5 * 1024 * 1024))
        with pytest.raises(errors.Invalid, match="request too large"):
            await admin.create(huge)


async def test_a_slice_token_dies_with_its_slice(cluster: Cluster) -> None:
    """A token the agent minted for a Slice is refused once that Slice finished, or was deleted
    (or deleted and made again under the same name), as a bound token of a deleted pod."""
    async with cluster.cert_client("admin") as admin:
        for name in ("done", "gone", "deleted"):
            await admin.create(_slice("alpha", name, "node-a"))
    token = (cluster.data_dir / "bootstrap-token").read_text().strip()
    cert, key = await api.bootstrap_node_credentials(
        cluster.token_target, cluster.pki.ca.cert_pem, token, "node-a"
    )
    agent = api.Client(
        cluster.target, ca_pem=cluster.pki.ca.cert_pem, cert_pem=cert, key_pem=key, timeout=10
    )
    async with agent:
        done = (await agent.service_account_token("alpha", "done"))["token"]
        gone = (await agent.service_account_token("alpha", "gone"))["token"]
        deleted = (await agent.service_account_token("alpha", "deleted"))["token"]
    for minted in (done, gone, deleted):
        async with cluster.token_client(minted) as step:
            assert (await step.whoami())["user"] == "system:serviceaccount:alpha:etl"
    async with cluster.cert_client("admin") as admin:
        live = await admin.get("Slice", "done", "alpha")
        live["status"] = {"phase": "Succeeded", "exitCode": 0}
        await admin.update_status(live)
        await admin.delete("Slice", "gone", "alpha")
        await admin.create(_slice("alpha", "gone", "node-a"))  # same name, another uid
        await admin.delete("Slice", "deleted", "alpha")

    async def refused(minted: str) -> str:
        deadline = time.monotonic() + 5  # past the authenticator's 1 s cache of live slices
        while True:
            try:
                async with cluster.token_client(minted) as step:
                    await step.whoami()
            except errors.Unauthenticated as e:
                return e.message
            assert time.monotonic() < deadline, "the token still works"
            await asyncio.sleep(0.1)

    assert "has finished (Succeeded)" in await refused(done)
    assert "deleted and made again" in await refused(gone)
    assert "no longer exists" in await refused(deleted)
    assert done not in await refused(done)
