"""A real API server (LMDB Barn, mTLS port + token port, data dir) and a local OIDC issuer.

The issuer is a small but strict identity provider over real loopback HTTP: discovery, JWKS, an
authorization endpoint that redirects straight back (the user "consents" at once) and a token
endpoint that checks the PKCE verifier, single-use codes and refresh tokens (rotated on use).
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import secrets
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from runink import api, store
from runink.api import _tokens

pytestmark = pytest.mark.integration

CLIENT_ID = "runink-cli"


@dataclass
class Issuer:
    """An OIDC issuer on 127.0.0.1; ``keys`` is what it publishes. The knobs below let a test
    play a misbehaving (or attacked) provider."""

    url: str = ""
    keys: list[RSAKey] = field(default_factory=list)
    #: Lifetime of the ID tokens the token endpoint issues.
    id_token_ttl: int = 300
    #: Redirect with this state instead of the client's (a forged or stale redirect).
    state_override: str | None = None
    #: Put this nonce in the ID token instead of the client's (a substituted token).
    nonce_override: str | None = None
    #: Live authorization codes -> their request; live refresh tokens -> subject.
    codes: dict[str, dict[str, str]] = field(default_factory=dict)
    refresh_tokens: dict[str, str] = field(default_factory=dict)
    #: Every token-endpoint form received, and what the endpoint answered (status, error).
    token_requests: list[dict[str, str]] = field(default_factory=list)
    token_answers: list[tuple[int, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def token(self, key: RSAKey | None = None, **overrides: Any) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.url,
            "aud": CLIENT_ID,
            "sub": "dave",
            "iat": now,
            "exp": now + 300,
            "groups": ["data-eng"],
        }
        claims.update(overrides)
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key, algorithms=["RS256"])

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, Any] | str]:
        """(302, redirect URL) or (400, OAuth error body)."""
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != CLIENT_ID:
            return 400, {"error": "unauthorized_client"}
        if not redirect.startswith("http://127.0.0.1:"):
            return 400, {"error": "invalid_request", "error_description": "redirect_uri"}
        if query.get("response_type") != "code" or "openid" not in query.get("scope", "").split():
            return 400, {"error": "invalid_request", "error_description": "response_type/scope"}
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return 400, {"error": "invalid_request", "error_description": "PKCE S256 required"}
        code = secrets.token_urlsafe(24)
        with self.lock:
            self.codes[code] = dict(query)
        state = self.state_override if self.state_override is not None else query.get("state")
        sep = "&" if "?" in redirect else "?"
        return 302, redirect + sep + urllib.parse.urlencode({"code": code, "state": state or ""})

    def token_endpoint(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.token_requests.append(dict(form))
            status, body = self._token(form)
            self.token_answers.append((status, str(body.get("error", ""))))
        return status, body

    def _token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("client_id") != CLIENT_ID:
            return 401, {"error": "invalid_client"}
        grant = form.get("grant_type")
        nonce: str | None = None
        if grant == "authorization_code":
            req = self.codes.get(form.get("code", ""))
            if req is None:
                return 400, {"error": "invalid_grant", "error_description": "unknown code"}
            if form.get("redirect_uri") != req["redirect_uri"]:
                return 400, {"error": "invalid_grant", "error_description": "redirect_uri"}
            verifier = form.get("code_verifier", "").encode()
            digest = hashlib.sha256(verifier).digest()
            if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != req["code_challenge"]:
                return 400, {"error": "invalid_grant", "error_description": "PKCE check failed"}
            del self.codes[form["code"]]  # single use, once redeemed
            sub = "dave"
            nonce = self.nonce_override if self.nonce_override is not None else req.get("nonce")
        elif grant == "refresh_token":
            sub_or_none = self.refresh_tokens.pop(form.get("refresh_token", ""), None)
            if sub_or_none is None:
                return 400, {"error": "invalid_grant", "error_description": "session ended"}
            sub = sub_or_none
        else:
            return 400, {"error": "unsupported_grant_type"}
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "iat": now, "exp": now + self.id_token_ttl}
        if nonce is not None:
            claims["nonce"] = nonce
        refresh = "rt-" + secrets.token_urlsafe(24)
        self.refresh_tokens[refresh] = sub
        return 200, {
            "id_token": self.token(**claims),
            "access_token": "at-" + secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": self.id_token_ttl,
            "refresh_token": refresh,
        }


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer(keys=[RSAKey.generate_key(2048, parameters={"kid": "k1"})])

    class Handler(http.server.BaseHTTPRequestHandler):
        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for k, v in {"Content-Type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            if path == "/.well-known/openid-configuration":
                body = {
                    "issuer": state.url,
                    "jwks_uri": state.url + "/jwks",
                    "authorization_endpoint": state.url + "/authorize",
                    "token_endpoint": state.url + "/token",
                    "token_endpoint_auth_methods_supported": ["none", "client_secret_basic"],
                    "code_challenge_methods_supported": ["S256"],
                }
            elif path == "/jwks":
                body = {
                    "keys": [k.as_dict(private=False, alg="RS256", use="sig") for k in state.keys]
                }
            elif path == "/authorize":
                status, answer = state.authorize(dict(urllib.parse.parse_qsl(query)))
                if isinstance(answer, str):
                    self._send(status, {}, {"Location": answer})
                else:
                    self._send(status, answer, {})
                return
            else:
                self.send_error(404)
                return
            self._send(200, body, {})

        def do_POST(self) -> None:
            if self.path != "/token":
                self.send_error(404)
                return
            length = int(self.headers.get("Content-Length") or 0)
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            status, body = state.token_endpoint(form)
            self._send(status, body, {"Cache-Control": "no-store"})

        def log_message(self, *args: Any) -> None:
            return

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class Cluster:
    server: api.ApiServer
    pki: api.ClusterPKI
    data_dir: Path
    barn: store.LocalBarn

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    @property
    def token_target(self) -> str:
        return f"127.0.0.1:{self.server.token_port}"

    def cert_client(self, user: str, *groups: str) -> api.Client:
        pair = (
            self.pki.admin
            if user == "admin"
            else api.issue(self.pki.ca, user, organizations=tuple(groups))
        )
        return api.Client(
            self.target,
            ca_pem=self.pki.ca.cert_pem,
            cert_pem=pair.cert_pem,
            key_pem=pair.key_pem,
            timeout=10,
        )

    def token_client(self, token: str) -> api.Client:
        return api.Client(self.token_target, ca_pem=self.pki.ca.cert_pem, token=token, timeout=10)

    def sa_client(self, herd: str, name: str, **kw: Any) -> api.Client:
        token = _tokens.issue_sa_token(
            self.server.security.sa_keys, herd=herd, name=name, now=time.time(), **kw
        )
        return self.token_client(token)


@pytest.fixture
async def cluster(tmp_path: Path, issuer: Issuer) -> AsyncIterator[Cluster]:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    pki = api.ensure_cluster_pki(data_dir / "pki")
    barn = store.open_local(data_dir / "barn")
    config = api.SecurityConfig(
        data_dir=data_dir,
        oidc=[
            api.OIDCConfig(
                issuer_url=issuer.url, client_id=CLIENT_ID, refetch_interval=0.0, jwks_ttl=0.2
            )
        ],
    )
    server = api.ApiServer(
        barn,
        ca_pem=pki.ca.cert_pem,
        server_pair=pki.server,
        ca_pair=pki.ca,
        token_port=0,
        security=config,
    )
    await server.start()
    c = Cluster(server, pki, data_dir, barn)
    try:
        async with c.cert_client("admin") as admin:
            for herd in ("alpha", "beta"):
                await admin.create(
                    {"apiVersion": "runink.io/v1", "kind": "Herd", "metadata": {"name": herd}}
                )
        yield c
    finally:
        await server.stop(0)
        await barn.close()
