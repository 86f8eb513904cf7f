"""The pure parts of the CLI's OIDC client: which URLs it trusts, when it renews a token."""

from __future__ import annotations

import base64
import json

import pytest

from runink.api import _config, _oidc
from runink.schemas import errors


def _jwt(claims: dict[str, object]) -> str:
    def part(d: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'kid': 'k1'})}.{part(claims)}.sig"


def _ctx(**kw: str | None) -> _config.Context:
    base: dict[str, str | None] = {
        "oidc_id_token": _jwt({"exp": 1000}),
        "oidc_refresh_token": "rt-secret",
        "oidc_issuer": "https://idp.example",
        "oidc_client_id": "runink",
    }
    base.update(kw)
    return _config.Context(name="work", server="127.0.0.1:1", **base)


@pytest.mark.parametrize(
    ("now", "expected"),
    [(0.0, False), (939.0, False), (941.0, True), (2000.0, True)],
)
def test_renews_within_a_minute_of_expiry(now: float, expected: bool) -> None:
    assert _oidc.needs_refresh(_ctx(), now) is expected


@pytest.mark.parametrize(
    "kw",
    [
        {"oidc_refresh_token": None},  # a pasted token: nothing to renew with
        {"oidc_issuer": None},
        {"api_key": "rk_x_y"},  # the context sends an API key, not the ID token
    ],
)
def test_no_renewal_without_a_renewable_oidc_login(kw: dict[str, str | None]) -> None:
    assert not _oidc.needs_refresh(_ctx(**kw), 2000.0)


def test_unreadable_token_is_renewed() -> None:
    assert _oidc.needs_refresh(_ctx(oidc_id_token="not-a-jwt"), 0.0)


@pytest.mark.parametrize(
    "url", ["http://idp.example", "ftp://127.0.0.1/x", "file:///etc/passwd", "https://"]
)
def test_issuer_must_be_https_or_loopback_http(url: str) -> None:
    with pytest.raises(errors.Invalid, match="must be an https:// URL"):
        _oidc.discover(url)


def test_config_view_redacts_the_new_credentials() -> None:
    config = _config.ClientConfig().with_context(_ctx(oidc_client_secret="cs-secret"))
    shown = config.dumps(redact=True)
    for secret in ("rt-secret", "cs-secret", _ctx().oidc_id_token or ""):
        assert secret not in shown
    assert "https://idp.example" in shown  # the issuer is not a secret
    again = _config.loads(config.dumps())
    assert again.context("work") == _ctx(oidc_client_secret="cs-secret")
