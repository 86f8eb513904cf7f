"""Service-account JWTs and OIDC ID tokens, the latter against a real issuer on loopback."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from runink.api import _rbac, _tokens
from runink.schemas import errors

NOW = 1_800_000_000.0


# --- service-account tokens ------------------------------------------------------------------


@pytest.fixture
def sa_keys(tmp_path: Path) -> _tokens.ServiceAccountKeys:
    return _tokens.ServiceAccountKeys.load_or_create(tmp_path / "sa-keys.json")


def test_sa_token_round_trip(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="finance", name="etl", now=NOW, ttl=600)
    subj = _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW + 599, keys=sa_keys)
    assert subj == _rbac.Subject.for_service_account("finance", "etl")
    assert subj.user == "system:serviceaccount:finance:etl"
    claims = jwt.decode(tok, sa_keys.keys[sa_keys.active]).claims
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == 600


def test_sa_token_expired(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="finance", name="etl", now=NOW, ttl=600)
    with pytest.raises(errors.Unauthenticated, match="expired"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW + 700, keys=sa_keys)


def test_sa_token_not_yet_valid(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="finance", name="etl", now=NOW, ttl=600)
    with pytest.raises(errors.Unauthenticated, match=r"not valid yet|future"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW - 120, keys=sa_keys)


def test_sa_token_wrong_audience(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="f", name="e", now=NOW, audience="vault")
    with pytest.raises(errors.Unauthenticated, match="wrong audience"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


def test_sa_token_wrong_issuer(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="f", name="e", now=NOW, issuer="https://evil")
    with pytest.raises(errors.Unauthenticated, match="wrong issuer"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


def test_sa_token_tampered_payload(sa_keys: _tokens.ServiceAccountKeys) -> None:
    tok = _tokens.issue_sa_token(sa_keys, herd="finance", name="etl", now=NOW)
    h, p, s = tok.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    claims["sub"] = "system:serviceaccount:kube:admin"
    p2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(errors.Unauthenticated, match="signature does not verify"):
        _tokens.verify_sa_token(f"{h}.{p2}.{s}", _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


def test_sa_token_from_another_cluster(sa_keys: _tokens.ServiceAccountKeys) -> None:
    other = _tokens.ServiceAccountKeys.generate()
    tok = _tokens.issue_sa_token(other, herd="finance", name="etl", now=NOW)
    with pytest.raises(errors.Unauthenticated, match="unknown key"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


def test_sa_key_rotation(sa_keys: _tokens.ServiceAccountKeys, tmp_path: Path) -> None:
    old = sa_keys.active
    before = _tokens.issue_sa_token(sa_keys, herd="f", name="e", now=NOW)
    sa_keys.rotate()
    sa_keys.save()
    reloaded = _tokens.ServiceAccountKeys.load_or_create(tmp_path / "sa-keys.json")
    after = _tokens.issue_sa_token(reloaded, herd="f", name="e", now=NOW)
    for tok in (before, after):
        assert (
            _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW, keys=reloaded).user
            == "system:serviceaccount:f:e"
        )
    reloaded.retire(old)
    with pytest.raises(errors.Unauthenticated, match="unknown key"):
        _tokens.verify_sa_token(before, _tokens.DEFAULT_AUDIENCE, NOW, keys=reloaded)
    assert stat.S_IMODE((tmp_path / "sa-keys.json").stat().st_mode) == 0o600
    assert len(reloaded.public_jwks()["keys"]) == 1
    assert "d" not in reloaded.public_jwks()["keys"][0]  # public only


def _unsigned(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    def enc(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()

    return ".".join((enc(json.dumps(header).encode()), enc(json.dumps(claims).encode()), enc(sig)))


def test_sa_token_alg_none_refused(sa_keys: _tokens.ServiceAccountKeys) -> None:
    claims = {"sub": "system:serviceaccount:f:e", "aud": _tokens.DEFAULT_AUDIENCE, "exp": NOW + 60}
    tok = _unsigned({"alg": "none", "kid": sa_keys.active}, claims)
    with pytest.raises(errors.Unauthenticated, match="'none' is not allowed"):
        _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


@pytest.mark.parametrize("garbage", ["", "abc", "a.b", "a.b.c.d.e", "!!!.e30.x"])
def test_malformed_tokens(sa_keys: _tokens.ServiceAccountKeys, garbage: str) -> None:
    with pytest.raises(errors.Unauthenticated):
        _tokens.verify_sa_token(garbage, _tokens.DEFAULT_AUDIENCE, NOW, keys=sa_keys)


# --- a local OIDC issuer ------------------------------------------------------------------------


@dataclass
class Issuer:
    url: str
    published: list[RSAKey] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def publish(self, *keys: RSAKey) -> None:
        self.published = list(keys)

    def sign(self, key: RSAKey, **overrides: Any) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": "runink",
            "sub": "u-123",
            "email": "ana@example.com",
            "groups": ["data-team", "admins"],
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key, algorithms=["RS256"])


def rsa_key(kid: str) -> RSAKey:
    return RSAKey.generate_key(2048, parameters={"kid": kid})


@pytest.fixture(scope="module")
def k1() -> RSAKey:
    return rsa_key("k1")


@pytest.fixture(scope="module")
def k2() -> RSAKey:
    return rsa_key("k2")


@pytest.fixture
def issuer(k1: RSAKey) -> Iterator[Issuer]:
    state = Issuer(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.requests.append(self.path)
            body: dict[str, Any]
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": state.url + "/jwks"}
            elif self.path == "/jwks":
                body = {
                    "keys": [
                        k.as_dict(private=False, alg="RS256", use="sig") for k in state.published
                    ]
                }
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    state.publish(k1)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def verifier(issuer: Issuer, clock: FakeClock | None = None, **kw: Any) -> _tokens.OIDCVerifier:
    cfg = _tokens.OIDCConfig(issuer_url=issuer.url, client_id="runink", **kw)
    return _tokens.OIDCVerifier(cfg, clock=clock or FakeClock())


def test_oidc_valid_token_with_groups(issuer: Issuer, k1: RSAKey) -> None:
    subj = verifier(issuer).verify(issuer.sign(k1))
    assert subj.user == "oidc:u-123"
    assert subj.groups == {"oidc:data-team", "oidc:admins", "system:authenticated"}


def test_oidc_username_and_groups_claims_configurable(issuer: Issuer, k1: RSAKey) -> None:
    v = verifier(
        issuer, username_claim="email", username_prefix="", groups_claim="roles", groups_prefix=""
    )
    subj = v.verify(issuer.sign(k1, roles="ops"))
    assert subj.user == "ana@example.com" and subj.groups == {"ops", "system:authenticated"}


def test_oidc_cannot_claim_reserved_groups(issuer: Issuer, k1: RSAKey) -> None:
    v = verifier(issuer, groups_prefix="")
    subj = v.verify(issuer.sign(k1, groups=["system:masters", "ok"]))
    assert "system:masters" not in subj.groups and "ok" in subj.groups
    with pytest.raises(errors.Unauthenticated, match="reserved"):
        verifier(issuer, username_prefix="").verify(issuer.sign(k1, sub="system:admin"))


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"aud": "someone-else"}, "wrong audience"),
        ({"iss": "https://evil.example"}, "wrong issuer"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"sub": None}, "lacks required claim"),
    ],
    ids=["expired", "wrong audience", "wrong issuer", "nbf future", "no sub"],
)
def test_oidc_refusals(issuer: Issuer, k1: RSAKey, overrides: dict[str, Any], reason: str) -> None:
    with pytest.raises(errors.Unauthenticated, match=reason):
        verifier(issuer).verify(issuer.sign(k1, **overrides))


def test_oidc_leeway_accepts_small_clock_skew(issuer: Issuer, k1: RSAKey) -> None:
    tok = issuer.sign(k1, exp=int(time.time()) - 10)
    assert verifier(issuer, leeway_seconds=30).verify(tok).user == "oidc:u-123"
    with pytest.raises(errors.Unauthenticated, match="expired"):
        verifier(issuer, leeway_seconds=0).verify(tok)


def test_oidc_unknown_key(issuer: Issuer) -> None:
    with pytest.raises(errors.Unauthenticated, match="unknown key id 'k9'"):
        verifier(issuer).verify(issuer.sign(rsa_key("k9")))


def test_oidc_other_key_same_kid(issuer: Issuer) -> None:
    with pytest.raises(errors.Unauthenticated, match="signature does not verify"):
        verifier(issuer).verify(issuer.sign(rsa_key("k1")))


def test_oidc_alg_none(issuer: Issuer) -> None:
    tok = _unsigned({"alg": "none", "kid": "k1"}, {"iss": issuer.url, "aud": "runink", "sub": "x"})
    with pytest.raises(errors.Unauthenticated, match="'none' is not allowed"):
        verifier(issuer).verify(tok)


def test_oidc_hs256_signed_with_the_public_key(issuer: Issuer, k1: RSAKey) -> None:
    """The classic confusion attack: HMAC keyed with the RSA public key the verifier trusts."""
    pub_pem = k1.as_pem(private=False)
    header = {"alg": "HS256", "kid": "k1"}
    claims = {"iss": issuer.url, "aud": "runink", "sub": "x", "exp": int(time.time()) + 60}
    unsigned = _unsigned(header, claims).rsplit(".", 1)[0]
    sig = hmac.new(pub_pem, unsigned.encode(), hashlib.sha256).digest()
    tok = unsigned + "." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    with pytest.raises(errors.Unauthenticated, match="'HS256' is not allowed"):
        verifier(issuer).verify(tok)


def test_oidc_config_refuses_symmetric_algorithms() -> None:
    with pytest.raises(errors.Invalid):
        _tokens.OIDCConfig("https://i", "c", allowed_algorithms=frozenset({"RS256", "HS256"}))


def test_oidc_key_rotation_without_restart(issuer: Issuer, k1: RSAKey, k2: RSAKey) -> None:
    clock = FakeClock()
    v = verifier(issuer, clock, refetch_interval=10.0, jwks_ttl=3600.0)
    old_tok = issuer.sign(k1)
    assert v.verify(old_tok).user == "oidc:u-123"
    assert v.jwks.fetches == 1
    # The issuer adds k2 and signs with it: an unknown kid triggers one refetch.
    issuer.publish(k1, k2)
    clock.t += 11
    assert v.verify(issuer.sign(k2)).user == "oidc:u-123"
    assert v.jwks.fetches == 2
    # The issuer drops k1: once the cache expires, k1 tokens are refused, k2 still accepted.
    issuer.publish(k2)
    clock.t += 3600
    assert v.verify(issuer.sign(k2)).user == "oidc:u-123"
    with pytest.raises(errors.Unauthenticated, match="unknown key id 'k1'"):
        v.verify(old_tok)


def test_oidc_unknown_kid_refetches_are_rate_limited(issuer: Issuer, k1: RSAKey) -> None:
    clock = FakeClock()
    v = verifier(issuer, clock, refetch_interval=10.0)
    v.verify(issuer.sign(k1))
    for i in range(20):
        with pytest.raises(errors.Unauthenticated, match="unknown key id"):
            v.verify(issuer.sign(rsa_key(f"x{i % 2}")))
    assert v.jwks.fetches == 1
    clock.t += 10
    with pytest.raises(errors.Unauthenticated):
        v.verify(issuer.sign(rsa_key("x")))
    assert v.jwks.fetches == 2


def test_oidc_issuer_down_then_cached_keys_survive(issuer: Issuer, k1: RSAKey) -> None:
    clock = FakeClock()
    calls: list[str] = []

    def flaky(url: str) -> bytes:
        calls.append(url)
        if len(calls) > 2:
            raise OSError("connection refused")
        return _tokens.urllib_fetch(url)

    cfg = _tokens.OIDCConfig(issuer_url=issuer.url, client_id="runink", jwks_ttl=60)
    v = _tokens.OIDCVerifier(cfg, fetch=flaky, clock=clock)
    assert v.verify(issuer.sign(k1)).user == "oidc:u-123"
    clock.t += 120  # stale: refetch fails, the last good keys keep working
    assert v.verify(issuer.sign(k1)).user == "oidc:u-123"


def test_oidc_issuer_unreachable() -> None:
    cfg = _tokens.OIDCConfig(issuer_url="http://127.0.0.1:9", client_id="runink")
    v = _tokens.OIDCVerifier(cfg, fetch=lambda url: (_ for _ in ()).throw(OSError("refused")))
    tok = _unsigned({"alg": "RS256", "kid": "k1"}, {})
    with pytest.raises(errors.Unavailable, match="cannot fetch the signing keys"):
        v.verify(tok)


def test_oidc_discovery_issuer_mismatch(issuer: Issuer, k1: RSAKey) -> None:
    cfg = _tokens.OIDCConfig(issuer_url=issuer.url + "/", client_id="runink")
    with pytest.raises(errors.Unauthenticated, match="names issuer"):
        _tokens.OIDCVerifier(cfg).verify(issuer.sign(k1))


def test_default_fetch_refuses_other_schemes() -> None:
    with pytest.raises(OSError, match="only https and http"):
        _tokens.urllib_fetch("file:///etc/passwd")


async def test_oidc_async_verify(issuer: Issuer, k1: RSAKey) -> None:
    subj = await verifier(issuer).averify(issuer.sign(k1))
    assert subj.user == "oidc:u-123"
