"""The CLI's OIDC relying party: ``runink login --issuer`` and the silent refresh of ID tokens.

The API server only *verifies* OIDC ID tokens (``_tokens.OIDCVerifier``); this module *obtains*
them, as kubelogin or ``gcloud auth login`` do. The flow (OAuth 2.0 for native apps, RFC 8252)::

    runink login --issuer URL --client-id ID
      discover(issuer)               GET  <issuer>/.well-known/openid-configuration
      authorization_request(...)     state + nonce + PKCE verifier (S256, RFC 7636)
      LoopbackReceiver               http://127.0.0.1:<port>/callback  <- browser, ?code=&state=
      exchange_code(...)             POST token_endpoint (code + code_verifier)
      verify_id_token(...)           JWKS signature, iss, aud, exp (the server's verifier) + nonce
      -> the context keeps oidc-id-token, oidc-refresh-token, oidc-issuer, oidc-client-id[, secret]

    Client.from_config / the CLI's Ctx.client()
      fresh_context(config, name)    ID token expires within REFRESH_MARGIN and a refresh token?
        refresh(ctx)                 POST token_endpoint (grant_type=refresh_token), verify
        saved back to the config file (0600), under an flock so two CLIs do not race a rotation

Failures are ``Unauthenticated`` (the login or the renewal did not produce a trustworthy token:
log in again), ``Invalid`` (the flags or the issuer's metadata are wrong) or ``Unavailable`` (the
issuer cannot be reached). No message ever contains a token, a code or the client secret.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import fcntl
import hmac
import html
import ipaddress
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from authlib.common.security import generate_token
from authlib.oauth2.rfc6749 import parameters as oauth2_parameters
from authlib.oauth2.rfc7636 import create_s256_code_challenge

from runink.api import _config, _tokens
from runink.schemas import errors

#: Renew an ID token that expires within this many seconds (clock skew plus a slow command).
REFRESH_MARGIN: Final = 60.0
DEFAULT_SCOPES: Final = ("openid", "offline_access")
CALLBACK_PATH: Final = "/callback"
_HTTP_TIMEOUT: Final = 10.0
_MAX_RESPONSE: Final = 1024 * 1024


# --- discovery ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Provider:
    """What discovery tells a client about an issuer."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    #: ``token_endpoint_auth_methods_supported`` (the spec's default: client_secret_basic).
    auth_methods: tuple[str, ...] = ("client_secret_basic",)


def _check_url(url: str, what: str) -> None:
    """HTTPS, or plain HTTP to a loopback address only: codes and tokens travel over it."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return
    if parts.scheme == "http" and parts.hostname:
        host = parts.hostname
        with contextlib.suppress(ValueError):
            if ipaddress.ip_address(host).is_loopback:
                return
        if host == "localhost":
            return
    raise errors.Invalid(
        f"{what} {url!r} must be an https:// URL (plain http is allowed for 127.0.0.1/localhost "
        "only, since codes and tokens travel over it)"
    )


def discover(issuer: str) -> Provider:
    """The issuer's endpoints from ``/.well-known/openid-configuration`` (blocking)."""
    _check_url(issuer, "the OIDC issuer")
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    try:
        doc = json.loads(_tokens.urllib_fetch(url, timeout=_HTTP_TIMEOUT))
    except OSError as e:
        raise errors.Unavailable(
            f"cannot read the OIDC discovery document {url}: {e}; check --issuer and the network"
        ) from None
    except ValueError:
        raise errors.Invalid(f"the OIDC discovery document {url} is not JSON") from None
    if not isinstance(doc, dict):
        raise errors.Invalid(f"the OIDC discovery document {url} is not a JSON object")
    if doc.get("issuer") != issuer:
        raise errors.Invalid(
            f"{url} names issuer {doc.get('issuer')!r}, not {issuer!r}; pass the issuer URL "
            "exactly as the identity provider (and the API server's OIDC config) spells it"
        )
    missing = [k for k in ("authorization_endpoint", "token_endpoint") if not doc.get(k)]
    if missing:
        raise errors.Invalid(f"the OIDC discovery document {url} lacks {', '.join(missing)}")
    provider = Provider(
        issuer=issuer,
        authorization_endpoint=str(doc["authorization_endpoint"]),
        token_endpoint=str(doc["token_endpoint"]),
        auth_methods=tuple(doc.get("token_endpoint_auth_methods_supported") or ())
        or ("client_secret_basic",),
    )
    _check_url(provider.authorization_endpoint, "the authorization endpoint")
    _check_url(provider.token_endpoint, "the token endpoint")
    return provider


# --- the authorization request and its redirect -------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """One login attempt: the URL to open and the secrets that bind its answer to it."""

    url: str
    redirect_uri: str
    state: str
    nonce: str
    code_verifier: str


def authorization_request(
    provider: Provider, client_id: str, redirect_uri: str, scopes: Sequence[str] = DEFAULT_SCOPES
) -> AuthorizationRequest:
    """A fresh ``state`` (CSRF), ``nonce`` (ID-token replay) and PKCE verifier (code theft)."""
    state = str(generate_token(32))
    nonce = str(generate_token(32))
    verifier = str(generate_token(64))  # RFC 7636: 43-128 unreserved characters
    wanted = list(dict.fromkeys(["openid", *scopes]))
    url = oauth2_parameters.prepare_grant_uri(
        provider.authorization_endpoint,
        client_id,
        "code",
        redirect_uri=redirect_uri,
        scope=" ".join(wanted),
        state=state,
        nonce=nonce,
        code_challenge=create_s256_code_challenge(verifier),
        code_challenge_method="S256",
    )
    return AuthorizationRequest(str(url), redirect_uri, state, nonce, verifier)


_PAGE = (
    "<!doctype html><meta charset=utf-8><title>Runink login</title>"
    "<body style='font-family:sans-serif'><h1>{title}</h1><p>{body}</p></body>"
)


class LoopbackReceiver:
    """An HTTP listener on 127.0.0.1 that waits for the one redirect of a login (RFC 8252 7.3).

    ``async with LoopbackReceiver(port) as r:``, ``r.expect(state)``, then ``await r.wait()``. The first
    request to ``/callback`` decides: a matching ``state`` with a ``code`` wins; a wrong state or
    an ``error`` from the identity provider fails the login (a forged or stale redirect must not
    be retried into success). Other paths (``/favicon.ico``) get 404.
    """

    def __init__(self, port: int = 0) -> None:
        self._port = port
        self._server: asyncio.Server | None = None
        self._state: str | None = None
        self._result: asyncio.Future[str] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("LoopbackReceiver is not listening; use `async with`")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    async def __aenter__(self) -> LoopbackReceiver:
        self._result = asyncio.get_running_loop().create_future()
        try:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", self._port)
        except OSError as e:
            raise errors.Unavailable(
                f"cannot listen on 127.0.0.1:{self._port} for the login redirect: {e}; "
                "pick another --listen-port (or 0 for any free port)"
            ) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._result is not None and not self._result.done():
            self._result.cancel()

    def expect(self, state: str) -> None:
        """Accept only a redirect that carries ``state``; call it before the URL is shown (a
        browser with a live session at the issuer may come back at once)."""
        self._state = state

    async def wait(self) -> str:
        """The authorization code of the first redirect (see :meth:`expect`)."""
        assert self._result is not None, "use `async with`"
        return await self._result

    def _decide(self, query: dict[str, str]) -> tuple[int, str, str]:
        """(HTTP status, page title, page text) for a callback; settles the result."""
        assert self._result is not None
        if self._result.done():
            return 409, "Already handled", "This login has finished; close this tab."
        if "error" in query:
            why = query["error"] + (
                f": {query['error_description']}" if query.get("error_description") else ""
            )
            self._result.set_exception(
                errors.Unauthenticated(f"the identity provider refused the login ({why})")
            )
            return 400, "Login failed", f"The identity provider said: {why}"
        got = query.get("state") or ""
        if self._state is None or not hmac.compare_digest(got.encode(), self._state.encode()):
            self._result.set_exception(
                errors.Unauthenticated(
                    "the login redirect carried the wrong state (a stale browser tab or a forged "
                    "request); refused. Run `runink login` again and use the URL it prints"
                )
            )
            return 400, "Login refused", "The state does not match this login; nothing was saved."
        code = query.get("code")
        if not code:
            self._result.set_exception(
                errors.Unauthenticated("the login redirect carried no authorization code")
            )
            return 400, "Login failed", "The redirect carried no authorization code."
        self._result.set_result(code)
        return 200, "Logged in", "You are logged in to Runink. You can close this tab."

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers: nothing in them matters here
            parts = line.decode("latin-1").split()
            target = urllib.parse.urlsplit(parts[1] if len(parts) >= 2 else "")
            if parts[:1] != ["GET"] or target.path != CALLBACK_PATH:
                status, title, body = 404, "Not found", "Not the login callback."
            else:
                status, title, body = self._decide(dict(urllib.parse.parse_qsl(target.query)))
            page = _PAGE.format(title=html.escape(title), body=html.escape(body)).encode()
            writer.write(
                f"HTTP/1.1 {status} {title}\r\nContent-Type: text/html; charset=utf-8\r\n"
                f"Content-Length: {len(page)}\r\nConnection: close\r\n"
                "Cache-Control: no-store\r\n\r\n".encode()
                + page
            )
            await writer.drain()
        except (TimeoutError, ConnectionError, ValueError):
            pass  # a half-open or garbled connection is not the login's business
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


# --- the token endpoint -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token endpoint's answer. ``repr`` hides the credentials."""

    id_token: str = dataclasses.field(repr=False)
    refresh_token: str | None = dataclasses.field(default=None, repr=False)


class _TokenEndpointError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _scrub(text: str, secrets: Sequence[str | None]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "[REDACTED]")
    return text


def _token_request(
    provider: Provider, client_id: str, client_secret: str | None, form: dict[str, str]
) -> Tokens:
    """POST ``form`` to the token endpoint (blocking); the client authenticates with its secret
    by HTTP Basic unless the issuer only takes it in the body (``client_secret_post``)."""
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    body = dict(form, client_id=client_id)
    if client_secret:
        if "client_secret_basic" in provider.auth_methods:
            pair = (
                f"{urllib.parse.quote(client_id, safe='')}:"
                f"{urllib.parse.quote(client_secret, safe='')}"
            )
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            body["client_secret"] = client_secret
    data = oauth2_parameters.prepare_token_request(body.pop("grant_type"), **body)
    request = urllib.request.Request(
        provider.token_endpoint, data=str(data).encode(), headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=_HTTP_TIMEOUT) as resp:  # URL checked
            raw: bytes = resp.read(_MAX_RESPONSE + 1)
    except urllib.error.HTTPError as e:
        detail = f"HTTP {e.code}"
        with contextlib.suppress(ValueError, OSError):
            err = json.loads(e.read(_MAX_RESPONSE))
            if isinstance(err, dict) and err.get("error"):
                detail = f"{err['error']}" + (
                    f": {err['error_description']}" if err.get("error_description") else ""
                )
        raise _TokenEndpointError(
            f"the token endpoint {provider.token_endpoint} refused: {detail}"
        ) from None
    except OSError as e:
        raise _TokenEndpointError(
            f"cannot reach the token endpoint {provider.token_endpoint}: {e}"
        ) from None
    try:
        answer = json.loads(raw)
    except ValueError:
        raise _TokenEndpointError(
            f"the token endpoint {provider.token_endpoint} did not answer JSON"
        ) from None
    id_token = answer.get("id_token") if isinstance(answer, dict) else None
    if not isinstance(id_token, str) or not id_token:
        raise _TokenEndpointError(
            f"the token endpoint {provider.token_endpoint} returned no ID token "
            "(is `openid` among the client's allowed scopes?)"
        )
    refresh = answer.get("refresh_token")
    return Tokens(id_token, refresh if isinstance(refresh, str) and refresh else None)


def exchange_code(
    provider: Provider,
    client_id: str,
    client_secret: str | None,
    code: str,
    request: AuthorizationRequest,
) -> Tokens:
    """Trade the authorization code (and the PKCE verifier) for tokens (blocking)."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": request.redirect_uri,
        "code_verifier": request.code_verifier,
    }
    try:
        return _token_request(provider, client_id, client_secret, form)
    except _TokenEndpointError as e:
        message = _scrub(e.message, [code, request.code_verifier, client_secret])
        raise errors.Unauthenticated(f"login failed: {message}; nothing was saved") from None


# --- ID tokens ----------------------------------------------------------------------------------


def claims_of(token: str) -> dict[str, Any]:
    """The payload of a JWT, *unverified*: only to read ``exp``/``sub`` of a token we verified
    before or will let the server verify. ``{}`` if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def verify_id_token(
    token: str, issuer: str, client_id: str, *, nonce: str | None = None, now: float | None = None
) -> dict[str, Any]:
    """Verify as the API server will (signature by the issuer's JWKS, ``iss``, ``aud``, ``exp``,
    ``iat``, ``sub``; RS256/ES256 only), plus the ``nonce`` of this login. Returns the claims.
    Blocking (fetches the JWKS)."""
    verifier = _tokens.OIDCVerifier(_tokens.OIDCConfig(issuer_url=issuer, client_id=client_id))
    try:
        verifier.verify(token, now)
    except (errors.Unauthenticated, errors.Unavailable) as e:
        raise errors.Unauthenticated(
            f"the ID token from {issuer} does not verify: {e.message}"
        ) from None
    claims = claims_of(token)
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
            raise errors.Unauthenticated(
                f"the ID token from {issuer} carries the wrong nonce (it was not issued for this "
                "login: a replayed or substituted token); refused"
            )
    return claims


# --- refresh ------------------------------------------------------------------------------------


def can_refresh(ctx: _config.Context) -> bool:
    return bool(
        ctx.oidc_id_token and ctx.oidc_refresh_token and ctx.oidc_issuer and ctx.oidc_client_id
    )


def needs_refresh(ctx: _config.Context, now: float, margin: float = REFRESH_MARGIN) -> bool:
    """True if the context's ID token is what it sends, is renewable and expires within
    ``margin`` seconds of ``now`` (or has no readable ``exp``)."""
    if not can_refresh(ctx) or ctx.bearer() != ctx.oidc_id_token:
        return False
    exp = claims_of(ctx.oidc_id_token or "").get("exp")
    return not isinstance(exp, int | float) or exp - now < margin


def refresh(ctx: _config.Context, *, now: float | None = None) -> _config.Context:
    """A copy of ``ctx`` with a new, verified ID token (and the rotated refresh token, if the
    issuer rotates them). Blocking. ``Unauthenticated`` tells the user to log in again."""
    if not can_refresh(ctx):
        raise errors.Unauthenticated(
            f"context {ctx.name!r} has no OIDC refresh token: run `runink login --issuer URL "
            "--client-id ID` to log in through the browser"
        )
    issuer, client_id = str(ctx.oidc_issuer), str(ctx.oidc_client_id)
    again = f"run `runink login --issuer {issuer} --client-id {client_id}` again"
    try:
        provider = discover(issuer)
        tokens = _token_request(
            provider,
            client_id,
            ctx.oidc_client_secret,
            {"grant_type": "refresh_token", "refresh_token": str(ctx.oidc_refresh_token)},
        )
        verify_id_token(tokens.id_token, issuer, client_id, now=now)
    except _TokenEndpointError as e:
        why = _scrub(e.message, [ctx.oidc_refresh_token, ctx.oidc_client_secret])
        raise errors.Unauthenticated(
            f"the OIDC ID token of context {ctx.name!r} expired and could not be renewed: "
            f"{why}; {again}"
        ) from None
    except errors.RuninkError as e:
        raise errors.Unauthenticated(
            f"the OIDC ID token of context {ctx.name!r} expired and could not be renewed: "
            f"{e.message}; {again}"
        ) from None
    return dataclasses.replace(
        ctx,
        oidc_id_token=tokens.id_token,
        oidc_refresh_token=tokens.refresh_token or ctx.oidc_refresh_token,
    )


@contextlib.contextmanager
def _config_lock(path: Path) -> Iterator[None]:
    """An exclusive flock beside the config file, so that two CLIs renewing at once do not
    both spend a refresh token the issuer rotates (the second would be refused)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fresh_context(
    config: _config.ClientConfig, name: str | None = None, *, now: float | None = None
) -> _config.Context:
    """The context ``name`` (default: current), its OIDC ID token renewed and saved back to the
    config file first if it expires within :data:`REFRESH_MARGIN`. Blocking (HTTP to the issuer,
    once an hour at most); a context that is not an OIDC login is returned as is."""
    ctx = config.context(name)
    t = time.time() if now is None else now
    if not needs_refresh(ctx, t):
        return ctx
    if config.path is None:
        return refresh(ctx, now=t)
    with _config_lock(config.path):
        # Another runink may have renewed it (and spent the old refresh token) while we waited.
        on_disk = _config.load(config.path)
        ctx = on_disk.contexts.get(ctx.name, ctx)
        if not needs_refresh(ctx, t):
            return ctx
        renewed = refresh(ctx, now=t)
        on_disk.with_context(renewed, current=False).save(config.path)
    return renewed


__all__ = [
    "CALLBACK_PATH",
    "DEFAULT_SCOPES",
    "REFRESH_MARGIN",
    "AuthorizationRequest",
    "LoopbackReceiver",
    "Provider",
    "Tokens",
    "authorization_request",
    "can_refresh",
    "claims_of",
    "discover",
    "exchange_code",
    "fresh_context",
    "needs_refresh",
    "refresh",
    "verify_id_token",
]
