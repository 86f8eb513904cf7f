"""API keys and bootstrap tokens live in the Barn: two API servers over one Barn (LMDB on disk,
real gRPC/TLS on loopback) accept the same keys, see each other's revocations, and a data dir of
an older version (keys in ``secrets/*.json``) keeps its keys after the upgrade."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from runink import api, store
from runink.api import _apikeys
from runink.schemas import errors

pytestmark = pytest.mark.integration

T = TypeVar("T")
PROPAGATION = 10.0  # seconds: far above the watch's milliseconds, so only a real bug fails


async def eventually(
    what: str, probe: Callable[[], Awaitable[T]], timeout: float = PROPAGATION
) -> T:
    """``probe()``'s result once it stops raising AssertionError (polled, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await probe()
        except AssertionError as e:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s: {e}") from e
            await asyncio.sleep(0.05)


@dataclass
class Servers:
    pki: api.ClusterPKI
    barn: store.LocalBarn
    servers: list[api.ApiServer]
    dirs: list[Path]

    def admin(self, i: int) -> api.Client:
        return api.Client(
            f"127.0.0.1:{self.servers[i].port}",
            ca_pem=self.pki.ca.cert_pem,
            cert_pem=self.pki.admin.cert_pem,
            key_pem=self.pki.admin.key_pem,
            timeout=10,
        )

    def bearer(self, i: int, token: str) -> api.Client:
        target = f"127.0.0.1:{self.servers[i].token_port}"
        return api.Client(target, ca_pem=self.pki.ca.cert_pem, token=token, timeout=10)


async def _start(barn: store.LocalBarn, pki: api.ClusterPKI, data_dir: Path) -> api.ApiServer:
    server = api.ApiServer(
        barn,
        ca_pem=pki.ca.cert_pem,
        server_pair=pki.server,
        ca_pair=pki.ca,
        token_port=0,
        security=api.SecurityConfig(data_dir=data_dir),
    )
    await server.start()
    return server


@pytest.fixture
async def two(tmp_path: Path) -> AsyncIterator[Servers]:
    """Two API servers, each with its own data dir, over one Barn."""
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    started: list[api.ApiServer] = []
    dirs = [tmp_path / "a", tmp_path / "b"]
    try:
        for d in dirs:
            d.mkdir(mode=0o700)
            started.append(await _start(barn, pki, d))
        yield Servers(pki, barn, started, dirs)
    finally:
        for s in started:
            await s.stop(0)
        await barn.close()


async def whoami(c: Servers, i: int, token: str) -> str:
    async with c.bearer(i, token) as client:
        return str((await client.whoami())["user"])


async def refused(c: Servers, i: int, token: str) -> str:
    """The Unauthenticated message server ``i`` answers ``token`` with."""
    try:
        user = await whoami(c, i, token)
    except errors.Unauthenticated as e:
        return e.message
    raise AssertionError(f"server {i} still accepts the key (as {user})")


async def test_a_key_made_on_one_server_works_on_the_other_until_revoked_there(
    two: Servers,
) -> None:
    async with two.admin(0) as a:
        made = await a.create_api_key(ttl_seconds=600, description="ci")
    token, key_id = str(made["token"]), str(made["id"])

    async def on_b() -> str:
        try:
            return await whoami(two, 1, token)
        except errors.Unauthenticated as e:
            raise AssertionError(e.message) from e

    assert await eventually("the key works on server b", on_b) == "admin"
    assert await whoami(two, 0, token) == "admin"
    async with two.admin(1) as b:
        listed = {k["id"]: k for k in await b.list_api_keys()}
        assert listed[key_id]["description"] == "ci"
        assert "hash" not in listed[key_id]
        revoked = await b.revoke_api_key(key_id)
        assert revoked["revoked"] is True
    message = await eventually("server a refuses the revoked key", lambda: refused(two, 0, token))
    assert f"API key {key_id} has been revoked" in message
    assert token.split("_")[-1] not in message
    assert "has been revoked" in await refused(two, 1, token)
    async with two.admin(0) as a:
        assert {k["id"]: k for k in await a.list_api_keys()}[key_id]["revoked"] is True
        with pytest.raises(errors.NotFound, match="not found"):
            await a.revoke_api_key("0123456789abcdef")


async def test_an_expired_key_is_refused_everywhere_with_its_expiry(two: Servers) -> None:
    async with two.admin(1) as b:
        made = await b.create_api_key(ttl_seconds=2)
    token = str(made["token"])
    message = await eventually("the key expires", lambda: refused(two, 0, token))
    assert f"API key {made['id']} expired at {made['expiresAt']}" in message
    assert "expired at" in await refused(two, 1, token)


async def test_a_bootstrap_token_of_one_server_bootstraps_a_node_through_the_other(
    two: Servers,
) -> None:
    token = (two.dirs[0] / "bootstrap-token").read_text().strip()
    target = f"127.0.0.1:{two.servers[1].token_port}"

    async def bootstrap() -> tuple[bytes, bytes]:
        try:
            return await api.bootstrap_node_credentials(
                target, two.pki.ca.cert_pem, token, "node-x"
            )
        except errors.Unauthenticated as e:
            raise AssertionError(e.message) from e

    cert, key = await eventually("server b accepts server a's bootstrap token", bootstrap)
    node = api.Client(
        f"127.0.0.1:{two.servers[1].port}", ca_pem=two.pki.ca.cert_pem, cert_pem=cert, key_pem=key
    )
    async with node:
        assert (await node.whoami())["user"] == "system:node:node-x"


async def test_records_are_hashed_in_the_barn_and_not_served_as_resources(
    two: Servers, tmp_path: Path
) -> None:
    async with two.admin(0) as a:
        since = two.barn.revision
        made = await a.create_api_key(ttl_seconds=600)
        await a.create({"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": "h"}})
        with pytest.raises(errors.Invalid, match="unknown resource type"):
            await a.list("system:APIKey")
        with pytest.raises(errors.Invalid, match="unknown resource type"):
            await a.get("system:APIKey", str(made["id"]))
        seen: list[str] = []
        async for ev in a.watch(since=since):
            seen.append(str(ev.object.get("kind")))
            if ev.object.get("kind") == "Herd":
                break
        assert seen == ["Herd"], "an all-kinds watch must not show API key records"
    # The record is in the Barn (the id in clear), its secret nowhere on disk.
    stored = await two.barn.get("system:APIKey", str(made["id"]))
    assert stored["spec"]["hash"].startswith("sha256:")
    boot = (two.dirs[0] / "bootstrap-token").read_text().strip()
    raw = (tmp_path / "barn" / "data.mdb").read_bytes()
    assert str(made["id"]).encode() in raw
    for token in (str(made["token"]), boot):
        secret = token.split("_", 2)[2]
        leaked = [
            p for p in tmp_path.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()
        ]
        # The operator's bootstrap-token file is the only place a secret may be.
        assert [p.name for p in leaked] in ([], ["bootstrap-token"]), leaked


def _old_files(secrets_dir: Path) -> tuple[str, str, str]:
    """A data dir as older versions left it: records in 0600 JSON files. Returns a live key, a
    revoked key and a bootstrap token."""
    now = time.time()
    live, live_rec = _apikeys.create_api_key("ana", ["data-team"], 3600, now=now)
    gone, gone_rec = _apikeys.create_api_key("ana", [], 3600, now=now)
    gone_rec = _apikeys.revoke(gone_rec, now=now)
    boot, boot_rec = _apikeys.create_api_key(
        "system:bootstrap", ["system:bootstrappers"], 3600, now=now
    )
    boot_rec["user"] = f"system:bootstrap:{boot_rec['id']}"
    secrets_dir.mkdir(parents=True, mode=0o700)
    for name, records in (
        ("apikeys.json", [live_rec, gone_rec]),
        ("bootstrap-tokens.json", [boot_rec]),
    ):
        path = secrets_dir / name
        path.write_text(json.dumps({r["id"]: r for r in records}))
        path.chmod(0o600)
    return live, gone, boot


async def test_keys_of_an_older_data_dir_are_migrated_into_the_barn(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    live, gone, boot = _old_files(data_dir / "secrets")
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    c = Servers(pki, barn, [], [data_dir])
    try:
        c.servers.append(await _start(barn, pki, data_dir))
        assert await whoami(c, 0, live) == "ana"
        assert "has been revoked" in await refused(c, 0, gone)
        await api.bootstrap_node_credentials(
            f"127.0.0.1:{c.servers[0].token_port}", pki.ca.cert_pem, boot, "node-m"
        )
        names = sorted(p.name for p in (data_dir / "secrets").iterdir())
        assert "apikeys.json" not in names and "bootstrap-tokens.json" not in names
        assert {"apikeys.json.migrated", "bootstrap-tokens.json.migrated"} <= set(names)
        ids = {o["metadata"]["name"] for o in (await barn.list("system:APIKey")).items}
        assert {_apikeys.key_id_of(live), _apikeys.key_id_of(gone)} <= ids
        # A restart reads them from the Barn alone.
        await c.servers.pop().stop(0)
        c.servers.append(await _start(barn, pki, data_dir))
        assert await whoami(c, 0, live) == "ana"
        assert "has been revoked" in await refused(c, 0, gone)
    finally:
        for s in c.servers:
            await s.stop(0)
        await barn.close()


async def test_an_unreadable_old_key_file_stops_the_start_with_its_path(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "secrets").mkdir(parents=True, mode=0o700)
    bad = data_dir / "secrets" / "apikeys.json"
    bad.write_text("{not json")
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    try:
        with pytest.raises(errors.Invalid) as info:
            await _start(barn, pki, data_dir)
        assert str(bad) in info.value.message
        assert "repair the file" in info.value.message
        assert bad.exists(), "a file that could not be migrated is left in place"
    finally:
        await barn.close()


async def test_expired_and_revoked_records_leave_the_barn_after_their_retention(
    tmp_path: Path,
) -> None:
    """The credential cleaner: a bootstrap token goes at expiry, an API key after the retention
    past its expiry or revocation; a live key stays. Two servers race to delete: no error."""
    pki = api.ensure_cluster_pki(tmp_path / "pki")
    barn = store.open_local(tmp_path / "barn")
    servers: list[api.ApiServer] = []
    try:
        for name in ("a", "b"):
            (tmp_path / name).mkdir(mode=0o700)
            server = api.ApiServer(
                barn, ca_pem=pki.ca.cert_pem, server_pair=pki.server, ca_pair=pki.ca,
                token_port=0,
                security=api.SecurityConfig(
                    data_dir=tmp_path / name, bootstrap_ttl=1.0,
                    credential_cleanup_interval=0.2, apikey_retention=1.0,
                ),
            )  # fmt: skip
            await server.start()
            servers.append(server)
        c = Servers(pki, barn, servers, [tmp_path / "a", tmp_path / "b"])
        async with c.admin(0) as a:
            short = str((await a.create_api_key(ttl_seconds=1))["id"])
            gone = str((await a.create_api_key(ttl_seconds=600))["id"])
            await a.revoke_api_key(gone)
            live = str((await a.create_api_key(ttl_seconds=600))["id"])
            assert {short, gone, live} <= {k["id"] for k in await a.list_api_keys()}

            async def cleaned() -> None:
                ids = {k["id"] for k in await a.list_api_keys()}
                assert short not in ids and gone not in ids, ids
                assert (await barn.list("system:BootstrapToken")).items == []

            await eventually("expired records deleted", cleaned)
            assert live in {k["id"] for k in await a.list_api_keys()}
            with pytest.raises(errors.NotFound):
                await barn.get("system:APIKey", short)
    finally:
        for s in servers:
            await s.stop(0)
        await barn.close()
