"""The client configuration, kubeconfig-like: ``~/.runink/config`` (YAML).

Overridable by ``RUNINK_CONFIG`` or the CLI's ``--config``. A config holds named contexts (server
address, CA, client certificate and key, inline as PEM text or by path, and a default herd) and the
``current-context``. ``runink up`` writes the admin context here; the CLI and :class:`Client.from_config`
read it.

    current-context: local
    contexts:
    - name: local
      server: 127.0.0.1:7443
      certificate-authority-data: "-----BEGIN CERTIFICATE-----..."
      client-certificate-data: ...
      client-key-data: ...
      herd: default
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from runink.schemas import errors


def default_path() -> Path:
    env = os.environ.get("RUNINK_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".runink" / "config"


@dataclass(frozen=True, slots=True)
class Context:
    """Where and as whom to connect. ``*_data`` (PEM text) wins over the matching path."""

    name: str
    server: str
    certificate_authority: str | None = None
    certificate_authority_data: str | None = None
    client_certificate: str | None = None
    client_certificate_data: str | None = None
    client_key: str | None = None
    client_key_data: str | None = None
    herd: str | None = None
    #: Bearer credentials (any one; sent as ``authorization: Bearer``): a service-account or
    #: other bearer token, an API key (``rk_...``) or an OIDC ID token from ``runink login``.
    token: str | None = None
    api_key: str | None = None
    oidc_id_token: str | None = None
    #: Written by ``runink login --issuer``: what refreshes ``oidc_id_token`` when it expires
    #: (``runink.api._oidc``). The refresh token and client secret are credentials too.
    oidc_refresh_token: str | None = None
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    #: The server's token port (server TLS only), used when the context has no client certificate.
    token_server: str | None = None

    def bearer(self) -> str | None:
        return self.token or self.api_key or self.oidc_id_token

    def _pem(self, data: str | None, path: str | None, base: Path | None) -> bytes | None:
        if data:
            return data.encode()
        if path:
            p = Path(path)
            if not p.is_absolute() and base is not None:
                p = base / p
            return p.read_bytes()
        return None

    def credentials(
        self, base: Path | None = None
    ) -> tuple[bytes | None, bytes | None, bytes | None]:
        """(ca, client cert, client key) as PEM bytes, read from files when given by path."""
        return (
            self._pem(self.certificate_authority_data, self.certificate_authority, base),
            self._pem(self.client_certificate_data, self.client_certificate, base),
            self._pem(self.client_key_data, self.client_key, base),
        )


#: Credentials: never printed by ``runink config view`` (``to_dict(redact=True)``).
_SECRET_FIELDS = frozenset(
    {"token", "api_key", "oidc_id_token", "oidc_refresh_token", "oidc_client_secret"}
)

_FIELDS = {
    "server": "server",
    "certificate-authority": "certificate_authority",
    "certificate-authority-data": "certificate_authority_data",
    "client-certificate": "client_certificate",
    "client-certificate-data": "client_certificate_data",
    "client-key": "client_key",
    "client-key-data": "client_key_data",
    "herd": "herd",
    "token": "token",
    "api-key": "api_key",
    "oidc-id-token": "oidc_id_token",
    "oidc-refresh-token": "oidc_refresh_token",
    "oidc-issuer": "oidc_issuer",
    "oidc-client-id": "oidc_client_id",
    "oidc-client-secret": "oidc_client_secret",
    "token-server": "token_server",
}


@dataclass(frozen=True, slots=True)
class ClientConfig:
    contexts: dict[str, Context] = field(default_factory=dict)
    current_context: str | None = None
    path: Path | None = None

    def context(self, name: str | None = None) -> Context:
        wanted = name or self.current_context
        if not wanted:
            raise errors.NotFound(
                f"no current context in {self.path or 'the client config'}: "
                "run `runink up` or `runink config use-context NAME`"
            )
        try:
            return self.contexts[wanted]
        except KeyError:
            raise errors.NotFound(f"context {wanted!r} not found in {self.path}") from None

    def with_context(self, ctx: Context, *, current: bool = True) -> ClientConfig:
        contexts = dict(self.contexts)
        contexts[ctx.name] = ctx
        return replace(
            self, contexts=contexts, current_context=ctx.name if current else self.current_context
        )

    def use_context(self, name: str) -> ClientConfig:
        self.context(name)
        return replace(self, current_context=name)

    def set_herd(self, herd: str, name: str | None = None) -> ClientConfig:
        ctx = self.context(name)
        return self.with_context(replace(ctx, herd=herd), current=False)

    def to_dict(self, *, redact: bool = False) -> dict[str, Any]:
        out: list[dict[str, Any]] = []
        for ctx in self.contexts.values():
            d: dict[str, Any] = {"name": ctx.name}
            for key, attr in _FIELDS.items():
                value = getattr(ctx, attr)
                if value is None:
                    continue
                if redact and (attr.endswith("_data") or attr in _SECRET_FIELDS):
                    value = "REDACTED" if attr != "certificate_authority_data" else "DATA+OMITTED"
                d[key] = value
            out.append(d)
        return {
            "apiVersion": "runink.io/v1",
            "kind": "Config",
            "current-context": self.current_context,
            "contexts": out,
        }

    def dumps(self, *, redact: bool = False) -> str:
        buf = io.StringIO()
        y = YAML()
        y.default_flow_style = False
        y.dump(self.to_dict(redact=redact), buf)
        return buf.getvalue()

    def save(self, path: Path | None = None) -> Path:
        target = path or self.path or default_path()
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = target.with_name(target.name + ".tmp")
        # The file holds a private key: create it 0600 and swap it in atomically.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.dumps())
        os.replace(tmp, target)
        return target


def loads(text: str, path: Path | None = None) -> ClientConfig:
    data = YAML(typ="safe").load(text) or {}
    if not isinstance(data, dict):
        raise errors.Invalid(f"{path}: the client config must be a mapping")
    contexts: dict[str, Context] = {}
    for i, raw in enumerate(data.get("contexts") or []):
        if not isinstance(raw, dict) or "name" not in raw or "server" not in raw:
            raise errors.Invalid(
                f"{path}: contexts[{i}] needs a name and a server",
                errors=[
                    errors.FieldError(f"contexts[{i}]", "needs name and server", file=str(path))
                ],
            )
        kwargs: dict[str, Any] = {
            attr: str(raw[key]) for key, attr in _FIELDS.items() if raw.get(key) is not None
        }
        contexts[str(raw["name"])] = Context(name=str(raw["name"]), **kwargs)
    current = data.get("current-context")
    return ClientConfig(
        contexts=contexts, current_context=str(current) if current else None, path=path
    )


def load(path: Path | None = None) -> ClientConfig:
    """The config at ``path`` (default: RUNINK_CONFIG or ~/.runink/config); empty if missing."""
    target = path or default_path()
    if not target.exists():
        return ClientConfig(path=target)
    return loads(target.read_text(), target)


__all__ = ["ClientConfig", "Context", "default_path", "load", "loads"]
