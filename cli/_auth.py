"""CLI commands for identity and secrets: whoami, auth can-i, login, seal, secret rotate-key /
reveal, apikey create|list|revoke. Each ``cmd_*`` takes the CLI's ``Ctx`` and returns an exit code;
``add_parsers(sub)`` registers them (the lead wires it into ``_app``). Values are printed only by
``secret reveal``; tokens are read from files or stdin when possible (argv is visible in /proc).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runink import schemas
from runink.api import _secrets
from runink.schemas import errors

if TYPE_CHECKING:
    from runink.cli import _app


async def cmd_whoami(ctx: _app.Ctx) -> int:
    me = await ctx.client().whoami()
    if getattr(ctx.args, "output", None) == "json":
        ctx.streams.write(json.dumps(me, indent=2) + "\n")
    else:
        ctx.streams.write(f"user: {me['user']}\ngroups: {', '.join(me['groups'])}\n")
    return 0


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
    """Store an OIDC ID token (from --token-file, --token or stdin) in the current context."""
    a = ctx.args
    if a.token_file:
        token = (await asyncio.to_thread(Path(a.token_file).read_text)).strip()
    elif a.token:
        token = str(a.token).strip()
    else:
        token = sys.stdin.readline().strip()
    if token.count(".") != 2:
        raise errors.Invalid("that is not an ID token (a JWT has three dot-separated parts)")
    config = ctx.config()
    current = config.context(ctx.args.context)
    updated = dataclasses.replace(
        current,
        oidc_id_token=token,
        token_server=a.token_server or current.token_server,
        client_certificate=None,
        client_certificate_data=None,
        client_key=None,
        client_key_data=None,
    )
    name = a.new_context or current.name
    updated = dataclasses.replace(updated, name=name)
    config.with_context(updated).save(ctx.config_path)
    ctx.streams.write(f"logged in: context {name!r} now uses your OIDC ID token\n")
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
    # `whoami` is already registered by _app (its cmd_whoami is equivalent).
    auth = sub.add_parser("auth", help="inspect authorization").add_subparsers(dest="auth_cmd")
    p = auth.add_parser("can-i", help="may I do VERB on RESOURCE[/NAME]?")
    p.add_argument("verb")
    p.add_argument("resource")
    p.add_argument("--as", dest="as_user")
    p.add_argument("--as-group", action="append")
    p.add_argument("-A", "--all-herds", action="store_true")
    p.add_argument("-v", "--verbose", action="store_true", help="print the reason")
    p.set_defaults(func=cmd_can_i)

    p = sub.add_parser("login", help="use an OIDC ID token for the current context")
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
    "cmd_whoami",
]
