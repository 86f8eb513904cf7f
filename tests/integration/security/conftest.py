"""A real API server (LMDB Barn, mTLS port + token port, data dir) and a local OIDC issuer."""

from __future__ import annotations

import http.server
import json
import threading
import time
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
    """An OIDC issuer on 127.0.0.1: discovery + JWKS over HTTP; ``keys`` is what it publishes."""

    url: str = ""
    keys: list[RSAKey] = field(default_factory=list)

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


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    state = Issuer(keys=[RSAKey.generate_key(2048, parameters={"kid": "k1"})])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": state.url + "/jwks"}
            elif self.path == "/jwks":
                body = {
                    "keys": [k.as_dict(private=False, alg="RS256", use="sig") for k in state.keys]
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
