"""Secret values at rest: envelope encryption, key rotation, sealing for Git, and redaction.

The API server calls :func:`seal` on every Secret write *before* the object reaches the Barn or
the Raft log, so LMDB files, journals and snapshots only ever hold ciphertext; :func:`open`
decrypts for the ``reveal`` verb and for agents delivering values to Slices. Each version gets a
fresh AES-256-GCM data key, wrapped (RFC 3394 AES key wrap) by a key-encryption key (KEK) from the
:class:`Keyring` kept 0600 in the data dir; the associated data binds the ciphertext to
herd/name/version, so a copy under another name or herd does not open. :func:`seal_manifest` is
``runink seal``: RSA-OAEP + AES-GCM against the cluster's public key, so manifests can live in Git.
:func:`redact` and :func:`secret_summary` keep values out of logs, errors, Events, audit and CLI.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets as _random
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from runink.schemas import errors

ALGORITHM: Final = "A256KW+A256GCM"
SEALED_ALGORITHM: Final = "RSA-OAEP-256+A256GCM"
_AAD_TAG: Final = b"runink-secret-v1"
_SEALED_TAG: Final = b"runink-sealed-v1"


class DecryptionError(errors.Invalid):
    """An envelope does not open: wrong herd/name/version, unknown or retired key, or tampering.

    The message names the object and key id, never a value or key material.
    """


class KeyringError(errors.RuninkError):
    """The keyring file is missing, unreadable, malformed or too widely readable."""


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _unb64(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise DecryptionError(f"envelope field {what} is missing")
    try:
        return base64.b64decode(s, validate=True)
    except binascii.Error:
        raise DecryptionError(f"envelope field {what} is not base64") from None


def _lp(*parts: bytes) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") give different associated data.
    return b"".join(struct.pack(">I", len(p)) + p for p in parts)


def _aad(herd: str, name: str, version: int) -> bytes:
    return _lp(_AAD_TAG, herd.encode(), name.encode(), str(version).encode())


@dataclass(slots=True)
class Keyring:
    """Key-encryption keys by id; ``active`` wraps new data keys, the others only unwrap.

    Never replicated: each control-plane replica loads its own copy from its data dir.
    """

    keys: dict[str, bytes]
    active: str
    path: Path | None = field(default=None)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise KeyringError(f"active key {self.active!r} is not in the keyring")
        for kid, k in self.keys.items():
            if len(k) != 32:
                raise KeyringError(f"key {kid!r} is not 256 bits")

    @classmethod
    def generate(cls) -> Keyring:
        kid = _new_key_id()
        return cls({kid: AESGCM.generate_key(bit_length=256)}, kid)

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Keyring:
        """Load the keyring file, creating it (0600, fresh KEK) on first start."""
        p = Path(path)
        try:
            return cls.load(p)
        except FileNotFoundError:
            ring = cls.generate()
            ring.path = p
            ring.save()
            return ring

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Keyring:
        p = Path(path)
        st = p.stat()  # FileNotFoundError propagates: load_or_create relies on it
        if st.st_mode & 0o077:
            raise KeyringError(
                f"keyring {p} is accessible by group or others (mode {st.st_mode & 0o777:o}); "
                f"run: chmod 600 {p}"
            )
        try:
            doc = json.loads(p.read_bytes())
            keys = {str(k): base64.b64decode(v, validate=True) for k, v in doc["keys"].items()}
            return cls(keys, str(doc["active"]), p)
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
            raise KeyringError(f"keyring {p} is malformed: {type(e).__name__}") from None

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write atomically with mode 0600 (a temp file renamed over the old one)."""
        p = Path(path) if path is not None else self.path
        if p is None:
            raise KeyringError("keyring has no path to save to")
        doc = {
            "version": 1,
            "active": self.active,
            "keys": {k: _b64(v) for k, v in self.keys.items()},
        }
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(json.dumps(doc, indent=1).encode())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.path = p

    def rotate(self) -> str:
        """Add a new KEK and make it active; old ones stay for unwrapping. Returns its id."""
        kid = _new_key_id()
        self.keys[kid] = AESGCM.generate_key(bit_length=256)
        self.active = kid
        return kid

    def retire(self, key_id: str) -> None:
        """Drop an old KEK once no envelope references it (after ``rewrap`` of every Secret)."""
        if key_id == self.active:
            raise KeyringError("cannot retire the active key; rotate first")
        self.keys.pop(key_id, None)

    def _kek(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise DecryptionError(f"key {key_id!r} is not in the keyring (retired?)") from None


def _new_key_id() -> str:
    return "kek-" + _random.token_hex(6)


def seal(
    herd: str, name: str, version: int, data: Mapping[str, bytes], keyring: Keyring
) -> dict[str, Any]:
    """Encrypt ``data`` for Secret herd/name at ``version`` (>= 1, bound into the associated
    data: the server's counter of the Secret's data versions); the result holds no clear value."""
    if version < 1:
        raise errors.Invalid("secret version must be >= 1")
    plaintext = json.dumps({k: _b64(bytes(v)) for k, v in data.items()}, sort_keys=True).encode()
    dek = AESGCM.generate_key(bit_length=256)
    # Each data key encrypts exactly once, so a random 96-bit nonce can never repeat under it.
    nonce = os.urandom(12)
    ct = AESGCM(dek).encrypt(nonce, plaintext, _aad(herd, name, version))
    # Field names match runink.schemas EncryptedData (spec.encrypted); the algorithm is implied
    # by the format (an "algorithm" field is accepted on read for a future format change).
    return {
        "keyId": keyring.active,
        "wrappedKey": _b64(aes_key_wrap(keyring._kek(keyring.active), dek)),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ct),
        "version": version,
    }


def _unwrap(envelope: Mapping[str, Any], keyring: Keyring, what: str) -> bytes:
    if envelope.get("algorithm", ALGORITHM) != ALGORITHM:
        raise DecryptionError(f"{what}: unsupported algorithm {envelope.get('algorithm')!r}")
    kid = str(envelope.get("keyId"))
    try:
        return aes_key_unwrap(keyring._kek(kid), _unb64(envelope.get("wrappedKey"), "wrappedKey"))
    except InvalidUnwrap:
        raise DecryptionError(f"{what}: the data key does not unwrap with key {kid!r}") from None


def open(  # the counterpart of seal(); callers write _secrets.open(...)
    herd: str,
    name: str,
    envelope: Mapping[str, Any],
    keyring: Keyring,
    *,
    version: int | None = None,
) -> dict[str, bytes]:
    """Decrypt an envelope made by :func:`seal` for this herd/name (and ``version`` if given)."""
    what = f'Secret "{name}" in herd "{herd}"'
    env_version = envelope.get("version")
    if not isinstance(env_version, int) or (version is not None and env_version != version):
        raise DecryptionError(f"{what}: envelope version {env_version!r} does not match")
    dek = _unwrap(envelope, keyring, what)
    try:
        plaintext = AESGCM(dek).decrypt(
            _unb64(envelope.get("nonce"), "nonce"),
            _unb64(envelope.get("ciphertext"), "ciphertext"),
            _aad(herd, name, env_version),
        )
    except InvalidTag:
        # Fail closed with a generic message: this is a copy from another herd/name/version or
        # a tampered ciphertext; nothing about the content is known or shown.
        raise DecryptionError(
            f"{what}: ciphertext does not authenticate (copied from another secret or modified)"
        ) from None
    return {k: base64.b64decode(v) for k, v in json.loads(plaintext).items()}


def rewrap(envelope: Mapping[str, Any], keyring: Keyring) -> dict[str, Any]:
    """Re-wrap the data key with the active KEK; the data ciphertext is untouched.

    Used by ``runink secret rotate-key`` over every Secret, after ``Keyring.rotate``.
    """
    out = dict(envelope)
    if envelope.get("keyId") == keyring.active:
        return out
    dek = _unwrap(envelope, keyring, "envelope")
    out["keyId"] = keyring.active
    out["wrappedKey"] = _b64(aes_key_wrap(keyring._kek(keyring.active), dek))
    return out


# --- redaction -------------------------------------------------------------------------------

_VALUE_FIELDS: Final = ("data", "stringData")


def _size(field_name: str, v: object) -> int:
    if isinstance(v, bytes | bytearray):
        return len(v)
    if isinstance(v, str):
        if field_name == "data":  # manifest convention, as Kubernetes: data values are base64
            try:
                return len(base64.b64decode(v, validate=True))
            except binascii.Error:
                pass
        return len(v.encode())
    return len(json.dumps(v, default=str).encode())


def _value_maps(obj: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    holders: list[Mapping[str, Any]] = [obj]
    if isinstance(obj.get("spec"), Mapping):
        holders.append(obj["spec"])
    return [(f, h[f]) for h in holders for f in _VALUE_FIELDS if isinstance(h.get(f), Mapping)]


def secret_summary(obj: Mapping[str, Any]) -> dict[str, int]:
    """``{key: size in bytes}`` of a Secret's values (``data`` and ``stringData``, top or spec)."""
    out: dict[str, int] = {}
    for f, values in _value_maps(obj):
        for k, v in values.items():
            out[str(k)] = _size(f, v)
    return out


def redact(obj: Any) -> Any:
    """A deep copy with every Secret's values replaced by ``"<redacted N bytes>"``.

    Walks dicts and lists, so Lists, watch events and audit records holding Secrets are covered.
    """
    if isinstance(obj, Mapping):
        if obj.get("kind") != "Secret":
            return {k: redact(v) for k, v in obj.items()}
        out = {k: _redact_values(k, v) for k, v in obj.items()}
        if isinstance(obj.get("spec"), Mapping):
            out["spec"] = {k: _redact_values(k, v) for k, v in obj["spec"].items()}
        return out
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj  # scalars are immutable; nothing to copy


def _redact_values(key: str, v: Any) -> Any:
    if key not in _VALUE_FIELDS:
        return redact(v)
    if isinstance(v, Mapping):
        return {k: f"<redacted {_size(key, x)} bytes>" for k, x in v.items()}
    return "<redacted>"


# --- sealing for Git (runink seal) ---------------------------------------------------------------


def generate_sealing_key() -> tuple[bytes, bytes]:
    """A new cluster sealing key pair as (private PKCS#8 PEM, public SubjectPublicKeyInfo PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return priv, pub


def load_or_create_sealing_key(path: str | os.PathLike[str]) -> rsa.RSAPrivateKey:
    """The control plane's sealing key from the data dir (PEM, 0600), created on first start."""
    p = Path(path)
    if not p.exists():
        priv, _ = generate_sealing_key()
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(priv)
    if p.stat().st_mode & 0o077:
        raise KeyringError(f"sealing key {p} is accessible by group or others; run: chmod 600 {p}")
    return _private_key(p.read_bytes())


def _private_key(k: rsa.RSAPrivateKey | bytes) -> rsa.RSAPrivateKey:
    if isinstance(k, rsa.RSAPrivateKey):
        return k
    loaded = serialization.load_pem_private_key(k, password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise KeyringError("the sealing key must be an RSA private key")
    return loaded


def public_key_fingerprint(public_key_pem: bytes) -> str:
    pub = serialization.load_pem_public_key(public_key_pem)
    der = pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return "sha256:" + hashlib.sha256(der).hexdigest()


_OAEP: Final = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)


def _sealed_aad(herd: str, name: str) -> bytes:
    return _lp(_SEALED_TAG, herd.encode(), name.encode())


def seal_manifest(secret_obj: Mapping[str, Any], public_key_pem: bytes) -> dict[str, Any]:
    """A ``SealedSecret`` holding the Secret's whole ``spec`` (and top-level values) encrypted.

    Bound to the Secret's herd and name: renaming or moving the sealed manifest makes it fail to
    open. Labels and annotations stay readable for review in Git.
    """
    meta = secret_obj.get("metadata") or {}
    herd, name = meta.get("herd"), meta.get("name")
    if secret_obj.get("kind") != "Secret" or not isinstance(name, str) or not isinstance(herd, str):
        raise errors.Invalid("seal needs a Secret with metadata.name and metadata.herd")
    pub = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(pub, rsa.RSAPublicKey):
        raise errors.Invalid("the cluster sealing key must be an RSA public key")
    payload = {k: v for k, v in secret_obj.items() if k not in ("apiVersion", "kind", "metadata")}
    plaintext = json.dumps(payload, sort_keys=True, default=_json_bytes).encode()
    cek = AESGCM.generate_key(bit_length=256)
    nonce = os.urandom(12)
    ct = AESGCM(cek).encrypt(nonce, plaintext, _sealed_aad(herd, name))
    kept_meta = {k: meta[k] for k in ("name", "herd", "labels", "annotations") if k in meta}
    return {
        "apiVersion": secret_obj.get("apiVersion", "runink.io/v1"),
        "kind": "SealedSecret",
        "metadata": kept_meta,
        "spec": {
            "algorithm": SEALED_ALGORITHM,
            "keyFingerprint": public_key_fingerprint(public_key_pem),
            "encryptedKey": _b64(pub.encrypt(cek, _OAEP)),
            "nonce": _b64(nonce),
            "ciphertext": _b64(ct),
        },
    }


def _json_bytes(v: object) -> str:
    if isinstance(v, bytes | bytearray):
        return _b64(bytes(v))
    raise TypeError(f"cannot serialize {type(v).__name__}")


def unseal_manifest(
    sealed_obj: Mapping[str, Any], private_key: rsa.RSAPrivateKey | bytes
) -> dict[str, Any]:
    """The Secret sealed by :func:`seal_manifest`, if herd/name still match and nothing changed."""
    meta = sealed_obj.get("metadata") or {}
    herd, name = str(meta.get("herd")), str(meta.get("name"))
    spec = sealed_obj.get("spec") or {}
    what = f'SealedSecret "{name}" in herd "{herd}"'
    if sealed_obj.get("kind") != "SealedSecret" or spec.get("algorithm") != SEALED_ALGORITHM:
        raise DecryptionError(f"{what}: not a {SEALED_ALGORITHM} SealedSecret")
    key = _private_key(private_key)
    try:
        cek = key.decrypt(_unb64(spec.get("encryptedKey"), "encryptedKey"), _OAEP)
    except ValueError:
        raise DecryptionError(f"{what}: sealed for another cluster key") from None
    try:
        plaintext = AESGCM(cek).decrypt(
            _unb64(spec.get("nonce"), "nonce"),
            _unb64(spec.get("ciphertext"), "ciphertext"),
            _sealed_aad(herd, name),
        )
    except InvalidTag:
        raise DecryptionError(
            f"{what}: does not authenticate (renamed, moved to another herd, or modified)"
        ) from None
    out: dict[str, Any] = {
        "apiVersion": sealed_obj.get("apiVersion", "runink.io/v1"),
        "kind": "Secret",
        "metadata": dict(meta),
    }
    out.update(json.loads(plaintext))
    return out


__all__ = [
    "ALGORITHM",
    "SEALED_ALGORITHM",
    "DecryptionError",
    "Keyring",
    "KeyringError",
    "generate_sealing_key",
    "load_or_create_sealing_key",
    "open",
    "public_key_fingerprint",
    "redact",
    "rewrap",
    "seal",
    "seal_manifest",
    "secret_summary",
    "unseal_manifest",
]
