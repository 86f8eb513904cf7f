"""CLI commands for identity and secrets: whoami, auth can-i, login, seal, secret rotate-key /
reveal, apikey create|list|revoke. Each ``cmd_*`` takes the CLI's ``Ctx`` and returns an exit code;
``add_parsers(sub)`` registers them (the lead wires it into ``_app``). Values are printed only by
``secret reveal``; tokens are read from files or stdin when possible (argv is visible in /proc).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import sys
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runink import schemas
from runink.api import _oidc, _secrets
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app


async def cmd_can_i(ctx: _app.Ctx) -> int:
    """Exit 0 and print "yes" when allowed, exit 1 and print "no" otherwise (as kubectl)."""
    a = ctx.args
    resource, _, name = str(a.resource).partition("/")
    out = await ctx.client().can_i(
        a.verb,
        resource,
        ctx.herd if not a.all_herds else None,
        name or None,
        as_user=a.as_user,
        as_groups=tuple(a.as_group or ()),
    )
    ctx.streams.write(("yes" if out["allowed"] else "no") + "\n")
    if a.verbose:
        ctx.streams.write(f"reason: {out['reason']}\n")
    return 0 if out["allowed"] else 1


async def cmd_login(ctx: _app.Ctx) -> int:
    """Log the current context in with OIDC: through the browser (``--issuer``, authorization
    code + PKCE, renewed automatically) or with an ID token you already have (--token-file,
    --token or stdin)."""
    a = ctx.args
    if a.issuer or a.client_id:
        if not (a.issuer and a.client_id):
            raise errors.Invalid(
                "`runink login` needs both --issuer and --client-id to log in through the browser"
            )
        if a.token or a.token_file:
            raise errors.Invalid(
                "--issuer logs in through the browser, --token/--token-file store a token you "
                "already have: give one or the other"
            )
        return await _login_browser(ctx)
    if a.token_file:
        token = (await asyncio.to_thread(Path(a.token_file).read_text)).strip()
    elif a.token:
        token = str(a.token).strip()
    else:
        token = sys.stdin.readline().strip()
    if token.count(".") != 2:
        raise errors.Invalid("that is not an ID token (a JWT has three dot-separated parts)")
    name = _save_login(ctx, token)
    ctx.streams.write(f"logged in: context {name!r} now uses your OIDC ID token\n")
    return 0


def _save_login(
    ctx: _app.Ctx,
    id_token: str,
    *,
    refresh_token: str | None = None,
    issuer: str | None = None,
    client_id: str | None = None,
    client_secret: str | None = None,
) -> str:
    """Store the OIDC credentials in the context (replacing any other credential it had, so
    that the ID token is what it sends); returns the context's name. The file stays 0600."""
    a = ctx.args
    config = ctx.config()
    current = config.context(a.context)
    updated = dataclasses.replace(
        current,
        name=a.new_context or current.name,
        oidc_id_token=id_token,
        oidc_refresh_token=refresh_token,
        oidc_issuer=issuer,
        oidc_client_id=client_id,
        oidc_client_secret=client_secret,
        token=None,
        api_key=None,
        token_server=a.token_server or current.token_server,
        client_certificate=None,
        client_certificate_data=None,
        client_key=None,
        client_key_data=None,
    )
    config.with_context(updated).save(ctx.config_path)
    return updated.name


async def _login_browser(ctx: _app.Ctx) -> int:
    """Authorization code + PKCE through a loopback redirect (RFC 8252), as kubelogin does."""
    a = ctx.args
    ctx.config().context(a.context)  # fail before the browser dance if there is no context
    issuer, client_id = str(a.issuer), str(a.client_id)
    scopes = [s for s in str(a.scopes).replace(",", " ").split() if s]
    provider = await asyncio.to_thread(_oidc.discover, issuer)
    async with _oidc.LoopbackReceiver(a.listen_port) as receiver:
        request = _oidc.authorization_request(provider, client_id, receiver.redirect_uri, scopes)
        receiver.expect(request.state)
        ctx.streams.write(
            "Open this URL in a browser to log in "
            f"(waiting {a.timeout:g}s for the redirect to {receiver.redirect_uri}):\n\n"
            f"  {request.url}\n\n"
        )
        if not a.no_browser:
            await asyncio.to_thread(webbrowser.open, request.url)
        try:
            async with asyncio.timeout(a.timeout):
                code = await receiver.wait()
        except TimeoutError:
            raise errors.Unauthenticated(
                f"no login arrived at {receiver.redirect_uri} within {a.timeout:g}s; run "
                "`runink login` again (and open the URL it prints), or raise --timeout"
            ) from None
    tokens = await asyncio.to_thread(
        _oidc.exchange_code, provider, client_id, a.client_secret, code, request
    )
    claims = await asyncio.to_thread(
        _oidc.verify_id_token, tokens.id_token, issuer, client_id, nonce=request.nonce
    )
    name = _save_login(
        ctx,
        tokens.id_token,
        refresh_token=tokens.refresh_token,
        issuer=issuer,
        client_id=client_id,
        client_secret=a.client_secret,
    )
    expires = datetime.datetime.fromtimestamp(int(claims["exp"]), datetime.UTC)
    renew = (
        "it is renewed automatically"
        if tokens.refresh_token
        else "the issuer gave no refresh token (ask for the offline_access scope?): "
        "log in again then"
    )
    ctx.streams.write(
        f"logged in as {claims.get('sub')!s} ({issuer}): context {name!r} now uses your OIDC "
        f"ID token, valid until {expires:%Y-%m-%d %H:%M:%S}Z; {renew}\n"
    )
    return 0


async def cmd_seal(ctx: _app.Ctx) -> int:
    """Seal a Secret manifest with the cluster's public key (safe to commit to Git)."""
    path = ctx.args.filename
    text = sys.stdin.read() if path == "-" else await asyncio.to_thread(Path(path).read_text)
    key = await ctx.client().sealing_key()
    pub = str(key["publicKey"]).encode()
    out: list[dict[str, Any]] = []
    for doc in schemas.load_documents(text, str(path)):
        obj = dict(doc.data)
        obj.setdefault("metadata", {}).setdefault("herd", ctx.herd)
        out.append(_secrets.seal_manifest(obj, pub))
    ctx.streams.write("\n---\n".join(json.dumps(o, indent=2) for o in out) + "\n")
    return 0


async def cmd_rotate_key(ctx: _app.Ctx) -> int:
    out = await ctx.client().rotate_key()
    ctx.streams.write(f"active key {out['activeKeyId']}; {out['rewrapped']} secret(s) re-wrapped\n")
    return 0


async def cmd_reveal(ctx: _app.Ctx) -> int:
    values = await ctx.client().reveal(ctx.herd, ctx.args.name, ctx.args.key)
    if ctx.args.key:
        ctx.streams.write(values[ctx.args.key].decode(errors="replace") + "\n")
    else:
        shown = {k: v.decode(errors="replace") for k, v in values.items()}
        ctx.streams.write(json.dumps(shown, indent=2) + "\n")
    return 0


async def cmd_apikey_create(ctx: _app.Ctx) -> int:
    out = await ctx.client().create_api_key(
        ttl_seconds=ctx.args.ttl, description=ctx.args.description or ""
    )
    ctx.streams.write(f"id: {out['id']}\nexpires: {out['expiresAt']}\ntoken: {out['token']}\n")
    ctx.streams.write("(the token is shown once; store it now)\n")
    return 0


async def cmd_apikey_list(ctx: _app.Ctx) -> int:
    for r in await ctx.client().list_api_keys():
        state = "revoked" if r.get("revoked") else "active"
        ctx.streams.write(f"{r['id']}  {r['user']}  {state}  expires {r['expiresAt']}\n")
    return 0


async def cmd_apikey_revoke(ctx: _app.Ctx) -> int:
    await ctx.client().revoke_api_key(ctx.args.id)
    ctx.streams.write(f"API key {ctx.args.id} revoked\n")
    return 0


def add_parsers(sub: Any) -> None:
    """Register every command above on the CLI's top-level subparsers."""
    # `whoami` is registered by _app.
    auth = sub.add_parser("auth", help="inspect authorization").add_subparsers(dest="auth_cmd")
    p = auth.add_parser("can-i", help="may I do VERB on RESOURCE[/NAME]?")
    p.add_argument("verb")
    p.add_argument("resource")
    p.add_argument("--as", dest="as_user")
    p.add_argument("--as-group", action="append")
    p.add_argument("-A", "--all-herds", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="print the reason")
    p.set_defaults(func=cmd_can_i)

    p = sub.add_parser(
        "login",
        help="log the current context in with OIDC (browser, or an ID token you have)",
        description="With --issuer and --client-id: open the identity provider's login page "
        "(authorization code + PKCE, redirect to 127.0.0.1) and store the verified ID token and "
        "refresh token in the context; the ID token is then renewed automatically. Without: "
        "store an ID token from --token-file, --token or stdin.",
    )
    p.add_argument("--issuer", help="the OIDC issuer URL, as the API server trusts it")
    p.add_argument("--client-id", help="the OAuth client id registered for runink")
    p.add_argument(
        "--client-secret",
        help="the client secret, for confidential clients (stored in the 0600 config file)",
    )
    p.add_argument(
        "--scopes",
        default=" ".join(_oidc.DEFAULT_SCOPES),
        help="space- or comma-separated scopes (openid is always asked for; "
        "offline_access gets a refresh token from most issuers)",
    )
    p.add_argument(
        "--listen-port", type=int, default=0, help="loopback port for the redirect (0: any free)"
    )
    p.add_argument("--no-browser", action="store_true", help="only print the URL to open")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the browser login"
    )
    p.add_argument("--token-file")
    p.add_argument("--token", help="the ID token (prefer --token-file or stdin)")
    p.add_argument("--token-server", help="the server's token port, host:port")
    p.add_argument("--new-context", help="store under this context name instead")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("seal", help="encrypt a Secret manifest for Git")
    p.add_argument("-f", "--filename", required=True)
    p.set_defaults(func=cmd_seal)

    secret = sub.add_parser("secret", help="secret operations").add_subparsers(dest="secret_cmd")
    p = secret.add_parser("rotate-key", help="new key-encryption key; re-wrap every secret")
    p.set_defaults(func=cmd_rotate_key)
    p = secret.add_parser("reveal", help="print a Secret's values (needs the reveal verb)")
    p.add_argument("name")
    p.add_argument("--key")
    p.set_defaults(func=cmd_reveal)

    apikey = sub.add_parser("apikey", help="API keys").add_subparsers(dest="apikey_cmd")
    p = apikey.add_parser("create")
    p.add_argument("--ttl", type=float, default=30 * 86400.0, help="seconds")
    p.add_argument("--description")
    p.set_defaults(func=cmd_apikey_create)
    apikey.add_parser("list").set_defaults(func=cmd_apikey_list)
    p = apikey.add_parser("revoke")
    p.add_argument("id")
    p.set_defaults(func=cmd_apikey_revoke)


__all__ = [
    "add_parsers",
    "cmd_apikey_create",
    "cmd_apikey_list",
    "cmd_apikey_revoke",
    "cmd_can_i",
    "cmd_login",
    "cmd_reveal",
    "cmd_rotate_key",
    "cmd_seal",
]
