"""Envelope encryption, key rotation, sealing for Git and redaction of Secret values."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from runink import schemas
from runink.api import _secrets
from runink.schemas import errors

VALUE = b"hunter2-very-secret-password"
DATA = {"password": VALUE, "user": b"etl"}


@pytest.fixture
def ring(tmp_path: Path) -> _secrets.Keyring:
    return _secrets.Keyring.load_or_create(tmp_path / "keyring.json")


def test_round_trip_and_no_clear_value_in_envelope(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("finance", "db", 3, DATA, ring)
    blob = json.dumps(env).encode()
    assert VALUE not in blob and base64.b64encode(VALUE) not in blob
    assert set(env) == {"keyId", "wrappedKey", "nonce", "ciphertext", "version"}
    assert env["keyId"] == ring.active and env["version"] == 3
    assert _secrets.open("finance", "db", env, ring) == DATA
    assert _secrets.open("finance", "db", env, ring, version=3) == DATA


def test_envelope_validates_as_the_schema_encrypted_data(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("finance", "db", 2, DATA, ring)
    model = schemas.EncryptedData.model_validate(env)
    assert model.key_id == ring.active


def test_each_version_gets_a_fresh_data_key(ring: _secrets.Keyring) -> None:
    a = _secrets.seal("finance", "db", 1, DATA, ring)
    b = _secrets.seal("finance", "db", 1, DATA, ring)
    assert a["wrappedKey"] != b["wrappedKey"] and a["ciphertext"] != b["ciphertext"]


@pytest.mark.parametrize(
    ("herd", "name", "version"),
    [("marketing", "db", None), ("finance", "db2", None), ("finance", "db", 4)],
    ids=["other herd", "other name", "other version"],
)
def test_copied_ciphertext_does_not_open(
    ring: _secrets.Keyring, herd: str, name: str, version: int | None
) -> None:
    env = _secrets.seal("finance", "db", 3, DATA, ring)
    with pytest.raises(_secrets.DecryptionError) as ei:
        _secrets.open(herd, name, env, ring, version=version)
    assert isinstance(ei.value, errors.Invalid)
    assert VALUE.decode() not in str(ei.value) and name in str(ei.value)


def test_version_field_tampering_is_detected(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("finance", "db", 3, DATA, ring)
    with pytest.raises(_secrets.DecryptionError, match="does not authenticate"):
        _secrets.open("finance", "db", {**env, "version": 4}, ring)


def test_aad_is_length_prefixed(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("ab", "c", 1, DATA, ring)
    with pytest.raises(_secrets.DecryptionError):
        _secrets.open("a", "bc", env, ring)


def test_flipped_ciphertext_bit_fails_closed(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("finance", "db", 1, DATA, ring)
    ct = bytearray(base64.b64decode(env["ciphertext"]))
    ct[0] ^= 1
    with pytest.raises(_secrets.DecryptionError):
        _secrets.open("finance", "db", {**env, "ciphertext": base64.b64encode(ct).decode()}, ring)


def test_other_keyring_cannot_open(ring: _secrets.Keyring) -> None:
    env = _secrets.seal("finance", "db", 1, DATA, ring)
    with pytest.raises(_secrets.DecryptionError, match="not in the keyring"):
        _secrets.open("finance", "db", env, _secrets.Keyring.generate())
    other = _secrets.Keyring({env["keyId"]: os.urandom(32)}, env["keyId"])
    with pytest.raises(_secrets.DecryptionError, match="does not unwrap"):
        _secrets.open("finance", "db", env, other)


def test_keyring_file_is_0600_and_persists(tmp_path: Path) -> None:
    p = tmp_path / "keyring.json"
    ring = _secrets.Keyring.load_or_create(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    env = _secrets.seal("finance", "db", 1, DATA, ring)
    again = _secrets.Keyring.load_or_create(p)
    assert again.active == ring.active
    assert _secrets.open("finance", "db", env, again) == DATA


def test_keyring_refuses_a_world_readable_file(tmp_path: Path) -> None:
    p = tmp_path / "keyring.json"
    _secrets.Keyring.load_or_create(p)
    p.chmod(0o644)
    with pytest.raises(_secrets.KeyringError, match="chmod 600"):
        _secrets.Keyring.load(p)


def test_keyring_refuses_a_malformed_file(tmp_path: Path) -> None:
    p = tmp_path / "keyring.json"
    p.write_text('{"active": "x"}')
    p.chmod(0o600)
    with pytest.raises(_secrets.KeyringError, match="malformed"):
        _secrets.Keyring.load(p)


def test_rotation_rewraps_without_touching_data(tmp_path: Path) -> None:
    p = tmp_path / "keyring.json"
    ring = _secrets.Keyring.load_or_create(p)
    old = ring.active
    envs = {n: _secrets.seal("finance", n, 1, {"k": n.encode()}, ring) for n in ("a", "b", "c")}
    new = ring.rotate()
    ring.save()
    assert new != old and ring.active == new
    # Before re-wrap, old envelopes still open (old KEK is decrypt-only).
    assert _secrets.open("finance", "a", envs["a"], ring) == {"k": b"a"}
    rewrapped = {n: _secrets.rewrap(e, ring) for n, e in envs.items()}
    for n, e in rewrapped.items():
        assert e["keyId"] == new and e["ciphertext"] == envs[n]["ciphertext"]
        assert e["wrappedKey"] != envs[n]["wrappedKey"]
    ring.retire(old)
    ring.save()
    reloaded = _secrets.Keyring.load(p)
    assert list(reloaded.keys) == [new]
    for n, e in rewrapped.items():
        assert _secrets.open("finance", n, e, reloaded) == {"k": n.encode()}
    with pytest.raises(_secrets.DecryptionError, match="retired"):
        _secrets.open("finance", "a", envs["a"], reloaded)
    assert _secrets.rewrap(rewrapped["a"], reloaded) == rewrapped["a"]


def test_cannot_retire_active_key(ring: _secrets.Keyring) -> None:
    with pytest.raises(_secrets.KeyringError):
        ring.retire(ring.active)


def secret_obj(**extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "runink.io/v1",
        "kind": "Secret",
        "metadata": {"name": "db", "herd": "finance", "labels": {"team": "fin"}},
        "spec": {
            "data": {"password": base64.b64encode(VALUE).decode()},
            "stringData": {"user": "etl"},
            **extra,
        },
    }


def test_redact_replaces_values_everywhere_a_secret_appears() -> None:
    listing = {
        "kind": "List",
        "items": [secret_obj(), {"kind": "Pipeline", "spec": {"data": {"x": "keep"}}}],
    }
    event = {"type": "MODIFIED", "object": {**secret_obj(), "data": {"token": b"abc"}}}
    red = _secrets.redact([listing, event])
    text = json.dumps(red)
    assert VALUE.decode() not in text and base64.b64encode(VALUE).decode() not in text
    assert red[0]["items"][0]["spec"]["data"] == {"password": f"<redacted {len(VALUE)} bytes>"}
    assert red[0]["items"][0]["spec"]["stringData"] == {"user": "<redacted 3 bytes>"}
    assert red[0]["items"][1]["spec"]["data"] == {"x": "keep"}  # not a Secret: untouched
    assert red[1]["object"]["data"] == {"token": "<redacted 3 bytes>"}
    assert red[0]["items"][0]["metadata"]["labels"] == {"team": "fin"}


def test_redact_does_not_mutate_its_input() -> None:
    obj = secret_obj()
    _secrets.redact(obj)
    assert obj["spec"]["stringData"] == {"user": "etl"}


def test_secret_summary_shows_sizes_only() -> None:
    assert _secrets.secret_summary(secret_obj()) == {"password": len(VALUE), "user": 3}


@pytest.fixture(scope="module")
def sealing_keys() -> tuple[bytes, bytes]:
    return _secrets.generate_sealing_key()


def test_seal_manifest_round_trip(sealing_keys: tuple[bytes, bytes]) -> None:
    priv, pub = sealing_keys
    obj = secret_obj()
    sealed = _secrets.seal_manifest(obj, pub)
    text = json.dumps(sealed)
    assert sealed["kind"] == "SealedSecret" and VALUE.decode() not in text and "etl" not in text
    assert base64.b64encode(VALUE).decode() not in text
    assert sealed["metadata"]["labels"] == {"team": "fin"}
    assert sealed["spec"]["keyFingerprint"] == _secrets.public_key_fingerprint(pub)
    assert _secrets.unseal_manifest(sealed, priv) == obj


@pytest.mark.parametrize("change", ["name", "herd"])
def test_sealed_manifest_is_bound_to_herd_and_name(
    sealing_keys: tuple[bytes, bytes], change: str
) -> None:
    priv, pub = sealing_keys
    sealed = _secrets.seal_manifest(secret_obj(), pub)
    sealed["metadata"][change] = "elsewhere"
    with pytest.raises(_secrets.DecryptionError, match="renamed, moved"):
        _secrets.unseal_manifest(sealed, priv)


def test_sealed_for_another_cluster(sealing_keys: tuple[bytes, bytes]) -> None:
    _, pub = sealing_keys
    other_priv, _ = _secrets.generate_sealing_key()
    sealed = _secrets.seal_manifest(secret_obj(), pub)
    with pytest.raises(_secrets.DecryptionError, match="another cluster key"):
        _secrets.unseal_manifest(sealed, other_priv)


def test_seal_manifest_needs_a_named_secret(sealing_keys: tuple[bytes, bytes]) -> None:
    with pytest.raises(errors.Invalid):
        _secrets.seal_manifest(
            {"kind": "Pipeline", "metadata": {"name": "x", "herd": "h"}}, sealing_keys[1]
        )


def test_sealing_key_file_created_0600(tmp_path: Path) -> None:
    p = tmp_path / "sealing.pem"
    k1 = _secrets.load_or_create_sealing_key(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    k2 = _secrets.load_or_create_sealing_key(p)
    assert k1.private_numbers() == k2.private_numbers()
