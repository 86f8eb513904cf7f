"""OIDC ID tokens from a local issuer through the real server's token port."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import pytest
from joserfc.jwk import RSAKey

from runink.schemas import errors

from .conftest import CLIENT_ID, Cluster, Issuer

pytestmark = pytest.mark.integration


async def test_valid_token_is_accepted_with_its_groups(cluster: Cluster, issuer: Issuer) -> None:
    async with cluster.token_client(issuer.token()) as c:
        me = await c.whoami()
    assert me["user"] == "oidc:dave"
    assert "oidc:data-eng" in me["groups"] and me["method"] == "oidc"


def _b64(d: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("expired", "expired"),
        ("audience", "wrong audience"),
        ("issuer", "wrong issuer"),
        ("unknown-key", "unknown key id"),
        ("alg-none", "algorithm 'none' is not allowed"),
        ("hs256-public-key", "algorithm 'HS256' is not allowed"),
    ],
)
async def test_bad_tokens_are_refused_with_a_reason(
    cluster: Cluster, issuer: Issuer, case: str, reason: str
) -> None:
    now = int(time.time())
    if case == "expired":
        token = issuer.token(iat=now - 600, exp=now - 300)
    elif case == "audience":
        token = issuer.token(aud="someone-else")
    elif case == "issuer":
        token = issuer.token(iss="http://127.0.0.1:1/evil")
    elif case == "unknown-key":
        token = issuer.token(key=RSAKey.generate_key(2048, parameters={"kid": "rogue"}))
    elif case == "alg-none":
        claims = {"iss": issuer.url, "aud": CLIENT_ID, "sub": "x", "iat": now, "exp": now + 60}
        token = f"{_b64({'alg': 'none', 'kid': 'k1'})}.{_b64(claims)}."
    else:
        # The classic confusion: HMAC keyed with the issuer's PUBLIC key bytes.
        pub = issuer.keys[0].as_pem(private=False)
        claims = {"iss": issuer.url, "aud": CLIENT_ID, "sub": "x", "iat": now, "exp": now + 60}
        signing_input = f"{_b64({'alg': 'HS256', 'kid': 'k1'})}.{_b64(claims)}"
        mac = hmac.new(pub, signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
    async with cluster.token_client(token) as c:
        with pytest.raises(errors.Unauthenticated) as info:
            await c.whoami()
    assert reason in str(info.value)


async def test_issuer_key_rotation_needs_no_restart(cluster: Cluster, issuer: Issuer) -> None:
    async with cluster.token_client(issuer.token()) as c:
        assert (await c.whoami())["user"] == "oidc:dave"
    k2 = RSAKey.generate_key(2048, parameters={"kid": "k2"})
    issuer.keys = [issuer.keys[0], k2]
    async with cluster.token_client(issuer.token(key=k2, sub="erin")) as c:
        assert (await c.whoami())["user"] == "oidc:erin"
    old = issuer.keys[0]
    issuer.keys = [k2]  # k1 dropped: tokens it signs no longer verify once the JWKS is refetched
    await asyncio.sleep(0.3)  # the server's JWKS cache TTL is 0.2 s in this fixture
    async with cluster.token_client(issuer.token(key=old)) as c:
        with pytest.raises(errors.Unauthenticated):
            await c.whoami()
