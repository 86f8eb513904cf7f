"""`runink login --issuer`: authorization code + PKCE through a loopback redirect, then the CLI
(in-process) works against the real API server, and renews its ID token by itself.

The test plays the browser: it reads the URL the CLI prints, GETs it from the fake issuer, and
follows the redirect to the CLI's 127.0.0.1 listener.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import re
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from rich.console import Console

from runink import api
from runink.api import _oidc
from runink.cli import _app, _output

from .conftest import CLIENT_ID, Cluster, Issuer

pytestmark = pytest.mark.integration


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def config(tmp_path: Path, cluster: Cluster) -> Iterator[Path]:
    """A client config whose current context reaches the cluster's token port (no client cert)."""
    path = tmp_path / "client" / "config"
    api.ClientConfig().with_context(
        api.Context(
            name="work",
            server=cluster.target,
            certificate_authority_data=cluster.pki.ca.cert_pem.decode(),
            token_server=cluster.token_target,
            herd="alpha",
        )
    ).save(path)
    yield path


async def runink(config: Path, *argv: str, output: io.StringIO | None = None) -> Result:
    out, err = output or io.StringIO(), io.StringIO()
    streams = _output.Streams(Console(file=out, width=200), Console(file=err, width=200))
    code = await _app.amain(["--config", str(config), *argv], streams)
    return Result(code, out.getvalue(), err.getvalue())


def _open(url: str) -> tuple[int, str]:
    """What a browser does with the printed URL: GET it and follow the redirect."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def login(config: Path, issuer: Issuer, *extra: str) -> tuple[Result, str, int, str]:
    """Run `runink login --issuer ... --no-browser`, play the browser; returns the command's
    result, the URL it printed, and the status and page the browser ended on."""
    out = io.StringIO()
    task = asyncio.create_task(
        runink(
            config,
            "login",
            "--issuer",
            issuer.url,
            "--client-id",
            CLIENT_ID,
            "--no-browser",
            "--timeout",
            "20",
            *extra,
            output=out,
        )
    )
    try:
        async with asyncio.timeout(10):
            while not (m := re.search(r"^  (http\S+)$", out.getvalue(), re.M)):
                assert not task.done(), (await task).err
                await asyncio.sleep(0.02)
        url = m.group(1)
        status, page = await asyncio.to_thread(_open, url)
        result = await task
    finally:
        task.cancel()
    return result, url, status, page


def stored(config: Path) -> api.Context:
    return api.load_config(config).context()


def assert_no_secrets(issuer: Issuer, config: Path, *texts: str) -> None:
    """Neither the ID tokens, nor the refresh tokens, nor the codes appear in ``texts``."""
    ctx = stored(config)
    secrets = [ctx.oidc_id_token, ctx.oidc_refresh_token, *issuer.refresh_tokens]
    for form in issuer.token_requests:
        secrets += [form.get("code"), form.get("code_verifier"), form.get("refresh_token")]
    for s in secrets:
        if s:
            for text in texts:
                assert s not in text


async def test_browser_login_gives_a_working_context(
    cluster: Cluster, issuer: Issuer, config: Path
) -> None:
    async with cluster.cert_client("admin") as admin:
        subject = {"kind": "Group", "name": "oidc:data-eng"}
        await admin.create(
            {
                "apiVersion": "runink.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "data-eng-view", "herd": "alpha"},
                "spec": {"subjects": [subject], "roleRef": {"kind": "ClusterRole", "name": "view"}},
            }
        )

    result, url, status, page = await login(config, issuer)

    assert result.code == 0, result.err
    assert "logged in as dave" in result.out and "renewed automatically" in result.out
    assert status == 200 and "You are logged in" in page
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    assert {"openid", "offline_access"} <= set(query["scope"].split())
    assert query["state"] and query["nonce"]
    # The IdP redeemed the code only against the verifier whose S256 the URL carried.
    assert [f["grant_type"] for f in issuer.token_requests] == ["authorization_code"]
    assert issuer.token_answers == [(200, "")]

    ctx = stored(config)
    assert ctx.oidc_id_token and ctx.oidc_refresh_token in issuer.refresh_tokens
    assert (ctx.oidc_issuer, ctx.oidc_client_id) == (issuer.url, CLIENT_ID)
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    me = await runink(config, "whoami")
    assert me.code == 0, me.err
    assert me.out.startswith("oidc:dave ")
    pipelines = await runink(config, "get", "pipelines", "-n", "alpha")
    assert pipelines.code == 0, pipelines.err
    shown = await runink(config, "config", "view")
    assert shown.code == 0, shown.err
    assert_no_secrets(issuer, config, result.out, result.err, page, me.out, shown.out)
    assert_no_secrets(issuer, config, pipelines.out, pipelines.err)


async def test_wrong_state_is_refused(cluster: Cluster, issuer: Issuer, config: Path) -> None:
    issuer.state_override = "forged-state"
    result, _, status, page = await login(config, issuer)
    assert result.code == 1
    assert "wrong state" in result.err and "runink login" in result.err
    assert status == 400 and "does not match" in page
    assert issuer.token_requests == []  # the code was never redeemed
    assert stored(config).oidc_id_token is None


async def test_stolen_code_is_useless_without_the_pkce_verifier(
    cluster: Cluster, issuer: Issuer, config: Path
) -> None:
    """An app that intercepts the redirect (the code) cannot redeem it: it lacks the verifier
    that only the CLI holds. The CLI, given the same redirect, logs in."""
    out = io.StringIO()
    argv = ("login", "--issuer", issuer.url, "--client-id", CLIENT_ID, "--no-browser")
    task = asyncio.create_task(runink(config, *argv, output=out))
    try:
        async with asyncio.timeout(10):
            while not (m := re.search(r"^  (http\S+)$", out.getvalue(), re.M)):
                await asyncio.sleep(0.02)

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: object, **kwargs: object) -> None:
                return None

        def authorize() -> str:
            opener = urllib.request.build_opener(NoRedirect)
            try:
                opener.open(m.group(1), timeout=10)
            except urllib.error.HTTPError as e:
                assert e.code == 302
                return str(e.headers["Location"])
            raise AssertionError("the issuer did not redirect")

        redirect = await asyncio.to_thread(authorize)
        code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(redirect).query))["code"]
        redirect_uri = redirect.split("?", 1)[0]
        status, body = issuer.token_endpoint(
            {
                "grant_type": "authorization_code",
                "code": code,
                "client_id": CLIENT_ID,
                "redirect_uri": redirect_uri,
                "code_verifier": "guessed-" + "x" * 50,
            }
        )
        assert (status, body["error"]) == (400, "invalid_grant")
        assert "PKCE" in body["error_description"]

        status, _ = await asyncio.to_thread(_open, redirect)
        result = await task
    finally:
        task.cancel()
    assert status == 200
    assert result.code == 0, result.err
    assert issuer.token_answers == [(400, "invalid_grant"), (200, "")]


async def test_id_token_with_the_wrong_nonce_is_refused(
    cluster: Cluster, issuer: Issuer, config: Path
) -> None:
    issuer.nonce_override = "someone-elses-nonce"
    result, *_ = await login(config, issuer)
    assert result.code == 1
    assert "wrong nonce" in result.err
    assert stored(config).oidc_id_token is None
    assert_no_secrets(issuer, config, result.out, result.err)


def expire_stored_token(config: Path, issuer: Issuer) -> str:
    """Replace the stored ID token by one that expired five minutes ago (an hour later...)."""
    now = int(time.time())
    expired = issuer.token(iat=now - 3900, exp=now - 300)
    cfg = api.load_config(config)
    ctx = cfg.context()
    cfg.with_context(dataclasses.replace(ctx, oidc_id_token=expired)).save(config)
    return expired


async def test_expired_id_token_is_renewed_and_saved(
    cluster: Cluster, issuer: Issuer, config: Path
) -> None:
    result, *_ = await login(config, issuer)
    assert result.code == 0, result.err
    first_refresh = stored(config).oidc_refresh_token
    expired = expire_stored_token(config, issuer)

    me = await runink(config, "whoami")
    assert me.code == 0, me.err
    assert "oidc:dave" in me.out

    ctx = stored(config)
    assert ctx.oidc_id_token and ctx.oidc_id_token != expired
    assert _oidc.claims_of(ctx.oidc_id_token)["exp"] > time.time() + 60
    # The issuer rotates refresh tokens: the new one is saved, the spent one is gone.
    assert ctx.oidc_refresh_token != first_refresh
    assert ctx.oidc_refresh_token in issuer.refresh_tokens
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    grants = [f["grant_type"] for f in issuer.token_requests]
    assert grants == ["authorization_code", "refresh_token"]

    # A fresh token is not renewed again.
    again = await runink(config, "whoami")
    assert again.code == 0, again.err
    assert len(issuer.token_requests) == 2
    assert_no_secrets(issuer, config, me.out, me.err, again.out, again.err)


async def test_failed_renewal_says_to_log_in_again(
    cluster: Cluster, issuer: Issuer, config: Path
) -> None:
    result, *_ = await login(config, issuer)
    assert result.code == 0, result.err
    expired = expire_stored_token(config, issuer)
    spent = stored(config).oidc_refresh_token
    issuer.refresh_tokens.clear()  # the session ended at the identity provider

    me = await runink(config, "whoami")
    assert me.code == 1
    assert "could not be renewed" in me.err and "session ended" in me.err
    assert f"runink login --issuer {issuer.url} --client-id {CLIENT_ID}" in me.err
    assert me.out == ""
    assert stored(config).oidc_id_token == expired  # nothing half-saved
    for secret in (expired, spent):
        assert secret and secret not in me.err


async def test_pasted_token_still_works(cluster: Cluster, issuer: Issuer, config: Path) -> None:
    token_file = config.parent / "id-token"
    token_file.write_text(issuer.token() + "\n")
    result = await runink(config, "login", "--token-file", str(token_file))
    assert result.code == 0, result.err
    ctx = stored(config)
    assert ctx.oidc_refresh_token is None and ctx.oidc_issuer is None
    me = await runink(config, "whoami")
    assert me.code == 0 and "oidc:dave" in me.out
    assert issuer.token_requests == []
