"""Authentication for the API server: a pluggable chain that turns a call into an ``Identity``.

Each ``Authenticator`` looks at the TLS peer (``auth_context``) and the call metadata and returns
an ``Identity``, ``None`` ("not my kind of credential") or raises ``Unauthenticated`` ("mine, and
bad"). The chain tries them in order. This module ships the mTLS client-certificate authenticator
(CN -> user, O -> groups, as Kubernetes); the security engineer's OIDC, API-key and service-account
token authenticators plug into the same chain. Authorization is a separate ``Authorizer`` hook
(RBAC lives in ``_rbac``); the default allows every authenticated identity.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cryptography import x509
from cryptography.x509.oid import NameOID

from runink.schemas import errors


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling. ``method`` names the authenticator that vouched for it."""

    user: str
    groups: tuple[str, ...] = ()
    method: str = "x509"
    extra: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuthRequest:
    """What an authenticator may look at: the TLS peer properties and the call's metadata."""

    auth_context: Mapping[str, Sequence[bytes]]
    metadata: Mapping[str, str | bytes]


class Authenticator(Protocol):
    async def authenticate(self, request: AuthRequest) -> Identity | None: ...


class Authorizer(Protocol):
    """Raise ``Forbidden`` if ``identity`` may not do ``verb`` on ``kind`` in ``herd``."""

    async def authorize(
        self, identity: Identity, verb: str, kind: str, herd: str | None, name: str | None
    ) -> None: ...


class ClientCertificateAuthenticator:
    """The identity in a client certificate the TLS layer already verified against the cluster CA."""

    async def authenticate(self, request: AuthRequest) -> Identity | None:
        pems = request.auth_context.get("x509_pem_cert") or ()
        if not pems:
            return None
        cert = x509.load_pem_x509_certificate(bytes(pems[0]))
        cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        if not cns:
            raise errors.Unauthenticated("client certificate has no common name")
        orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        return Identity(
            user=str(cns[0].value), groups=tuple(str(o.value) for o in orgs), method="x509"
        )


class AllowAll:
    """The authorizer until RBAC is wired in: every authenticated identity may do everything."""

    async def authorize(
        self, identity: Identity, verb: str, kind: str, herd: str | None, name: str | None
    ) -> None:
        return None


class AuthChain:
    """Try each authenticator in order; the first identity wins."""

    def __init__(self, authenticators: Sequence[Authenticator]) -> None:
        self.authenticators = list(authenticators)

    async def authenticate(self, request: AuthRequest) -> Identity:
        for authenticator in self.authenticators:
            identity = await authenticator.authenticate(request)
            if identity is not None:
                return identity
        raise errors.Unauthenticated("no valid credentials presented")


__all__ = [
    "AllowAll",
    "AuthChain",
    "AuthRequest",
    "Authenticator",
    "Authorizer",
    "ClientCertificateAuthenticator",
    "Identity",
]
