"""The cluster's TLS material: a CA, the server certificate and client certificates.

``runink up`` calls :func:`ensure_cluster_pki` on every start: the first start creates a cluster CA
(ECDSA P-256, ten years), a server certificate for 127.0.0.1/localhost/hostname and an admin client
certificate (CN=admin, O=system:masters); later starts load the same files, so client configs written
earlier stay valid. The API server then requires and verifies client certificates (mTLS) against the
CA: a certificate the cluster did not issue is refused in the TLS handshake.

Agents' slice-log endpoints (``api/_agentlogs.py``) use the same CA both ways, as the kubelet and
the kube-apiserver do: the API server presents ``agent-client`` (CN=`AGENT_CLIENT_CN`, no group:
it can do nothing at the API itself), the only client an agent accepts; an agent serves with a
certificate the API signed for its node alone (`sign_csr` with *serving_name*), whose only name
is `node_serving_name` (``<node>.nodes.runink.internal``), which the API server checks.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes


AGENT_CLIENT_CN = "runink-apiserver-agent-client"
"""The API server's identity towards agents (their log endpoints accept no other client)."""
NODE_SERVING_DOMAIN = "nodes.runink.internal"


def node_serving_name(node_name: str) -> str:
    """The one DNS name in node *node_name*'s serving certificate, which the API server checks
    (not resolved: several nodes may share an IP, a name pins the node)."""
    return f"{node_name}.{NODE_SERVING_DOMAIN}"


@dataclass(frozen=True, slots=True)
class ClusterPKI:
    """What the server needs (CA, its own pair) and the admin identity it hands to ``runink up``;
    ``agent_client`` is the API server's client certificate towards agents' log endpoints."""

    ca: KeyPair
    server: KeyPair
    admin: KeyPair
    agent_client: KeyPair


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def create_ca(common_name: str = "runink-cluster-ca", *, days: int = 3650) -> KeyPair:
    """A fresh self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue(
    ca: KeyPair,
    common_name: str,
    *,
    organizations: tuple[str, ...] = (),
    server_names: tuple[str, ...] = (),
    client: bool = True,
    server: bool = False,
    days: int = 365,
) -> KeyPair:
    """A leaf certificate signed by ``ca``. ``server_names`` become DNS or IP SANs."""
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA key must be an EC key")
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    now = _now()
    usages = []
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if server_names:
        sans: list[x509.GeneralName] = []
        for n in server_names:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                sans.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def sign_csr(
    ca: KeyPair,
    csr_pem: bytes,
    common_name: str,
    *,
    organizations: tuple[str, ...],
    days: int = 365,
    serving_name: str | None = None,
) -> bytes:
    """A client certificate for the CSR's public key with the subject WE choose (the CSR's own
    subject is ignored: a bootstrap token may only ever obtain ``common_name``). With
    *serving_name*, a serving certificate instead (server auth only) whose only name is that DNS
    name (the CSR's SANs are ignored too)."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as e:
        raise ValueError(f"not a PEM certificate signing request: {e}") from None
    if not csr.is_signature_valid:
        raise ValueError("the CSR's signature does not verify (proof of key possession)")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_pem)
    ca_key = serialization.load_pem_private_key(ca.key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise TypeError("the cluster CA key must be an EC key")
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    now = _now()
    usage = (
        ExtendedKeyUsageOID.CLIENT_AUTH if serving_name is None else ExtendedKeyUsageOID.SERVER_AUTH
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(csr.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if serving_name is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(serving_name)]), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def make_csr(common_name: str, organizations: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """A fresh EC key and a CSR for it: ``(csr_pem, key_pem)``; the key never leaves the node."""
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attrs += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations]
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name(attrs))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _write_private(path: Path, data: bytes) -> None:
    # Keys are written 0600 from the start (no window where they are world-readable).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _load_or_create(directory: Path, stem: str, make: object) -> KeyPair:
    crt, key = directory / f"{stem}.crt", directory / f"{stem}.key"
    if crt.exists() and key.exists():
        return KeyPair(crt.read_bytes(), key.read_bytes())
    assert callable(make)
    pair: KeyPair = make()
    _write_private(key, pair.key_pem)
    crt.write_bytes(pair.cert_pem)
    return pair


def ensure_cluster_pki(directory: Path) -> ClusterPKI:
    """Load the PKI under ``directory`` (``ca``, ``server``, ``admin``, ``agent-client``
    .crt/.key), creating what is missing."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    ca = _load_or_create(directory, "ca", create_ca)
    names = ("127.0.0.1", "localhost", "::1", socket.gethostname())
    server = _load_or_create(
        directory,
        "server",
        lambda: issue(ca, "runink-apiserver", server_names=names, server=True, client=False),
    )
    admin = _load_or_create(
        directory, "admin", lambda: issue(ca, "admin", organizations=("system:masters",))
    )
    # No organization: at the API server it is a user with no permission at all.
    agent_client = _load_or_create(directory, "agent-client", lambda: issue(ca, AGENT_CLIENT_CN))
    return ClusterPKI(ca=ca, server=server, admin=admin, agent_client=agent_client)


__all__ = [
    "AGENT_CLIENT_CN",
    "NODE_SERVING_DOMAIN",
    "ClusterPKI",
    "KeyPair",
    "create_ca",
    "ensure_cluster_pki",
    "issue",
    "make_csr",
    "node_serving_name",
    "sign_csr",
]
