"""API keys: only hashes stored, expiry, revocation, and refusals that never echo the secret."""

from __future__ import annotations

import json

import pytest

from runink.api import _apikeys
from runink.schemas import errors

NOW = 1_800_000_000.0


def test_create_and_verify() -> None:
    token, record = _apikeys.create_api_key("ana", ["data-team"], 3600, now=NOW)
    assert token.startswith("rk_" + record["id"] + "_")
    secret = token.split("_", 2)[2]
    assert secret not in json.dumps(record)  # only the hash is stored
    subj = _apikeys.verify(token, {record["id"]: record}, NOW + 10)
    assert subj.user == "ana" and subj.groups == {"data-team", "system:authenticated"}
    assert _apikeys.key_id_of(token) == record["id"]


def test_keys_are_unique() -> None:
    tokens = {_apikeys.create_api_key("ana", [], 60, now=NOW)[0] for _ in range(50)}
    assert len(tokens) == 50


def test_expired() -> None:
    token, record = _apikeys.create_api_key("ana", [], 60, now=NOW)
    with pytest.raises(errors.Unauthenticated, match="expired at"):
        _apikeys.verify(token, {record["id"]: record}, NOW + 60)


def test_revoked() -> None:
    token, record = _apikeys.create_api_key("ana", [], 60, now=NOW)
    revoked = _apikeys.revoke(record, now=NOW + 1)
    assert revoked["revokedAt"] and not record["revoked"]
    with pytest.raises(errors.Unauthenticated, match="revoked"):
        _apikeys.verify(token, {record["id"]: revoked}, NOW + 2)


def test_wrong_secret_and_unknown_id_look_the_same() -> None:
    token, record = _apikeys.create_api_key("ana", [], 60, now=NOW)
    other, _ = _apikeys.create_api_key("ana", [], 60, now=NOW)
    forged = f"rk_{record['id']}_{other.split('_', 2)[2]}"
    errs = []
    for t, recs in ((forged, {record["id"]: record}), (token, {})):
        with pytest.raises(errors.Unauthenticated) as ei:
            _apikeys.verify(t, recs, NOW)
        errs.append(str(ei.value).replace(record["id"], "ID"))
        assert t.split("_", 2)[2] not in str(ei.value)
    assert errs[0] == errs[1]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "rk_",
        "rk_abc_def",
        "Bearer rk_0123456789abcdef_" + "a" * 43,
        "rk_0123456789ABCDEF_" + "a" * 43,
    ],
)
def test_malformed(token: str) -> None:
    with pytest.raises(errors.Unauthenticated, match="malformed"):
        _apikeys.verify(token, {}, NOW)


def test_bad_ttl() -> None:
    with pytest.raises(errors.Invalid):
        _apikeys.create_api_key("ana", [], 0, now=NOW)


def test_record_round_trips_through_json() -> None:
    token, record = _apikeys.create_api_key("ana", ["b", "a", "a"], 60, now=NOW)
    stored = json.loads(json.dumps(record))
    assert stored["groups"] == ["a", "b"]
    assert _apikeys.verify(token, {stored["id"]: stored}, NOW).user == "ana"
