"""Per-request cost of the security building blocks, beside a raw primitive measured in the same run.

Each figure is printed with an anchor (the bare cryptographic operation it wraps, or a plain dict
lookup for RBAC) and the ratio, so the overhead of our code is visible despite machine noise.
Not a pass/fail test.

    .venv/bin/python bench/security_bench.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc import jwt

from runink.api import _apikeys, _rbac, _secrets, _tokens


def rate(fn: Callable[[], object], seconds: float = 0.5) -> float:
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(50):
            fn()
        n += 50
    return n / elapsed


def show(what: str, ours: float, anchor_name: str, anchor: float) -> None:
    print(
        f"{what:<38} {ours:>12,.0f}/s   {anchor_name:<30} {anchor:>12,.0f}/s   ratio {ours / anchor:.2f}"
    )


def main() -> None:
    # RBAC: 200 herds x 5 bindings; decision for a user with 3 group bindings.
    rbs = [
        {
            "kind": "RoleBinding",
            "metadata": {"name": f"b{i}", "herd": f"h{i // 5}"},
            "roleRef": {"kind": "ClusterRole", "name": ["view", "edit", "admin"][i % 3]},
            "subjects": [{"kind": "User", "name": f"u{i}"}, {"kind": "Group", "name": f"g{i % 7}"}],
        }
        for i in range(1000)
    ]
    policy = _rbac.PolicySnapshot.from_objects([], [], rbs, [])
    subj = _rbac.Subject("u7", frozenset({"g1", "g2", "g3"}))
    attrs = _rbac.RequestAttributes("update", "pipelines", herd="h1", name="p")
    table = {("u7", "h1"): True}
    show(
        "rbac authorize (1000 bindings)",
        rate(lambda: _rbac.authorize(subj, attrs, policy)),
        "dict lookup",
        rate(lambda: table.get(("u7", "h1"))),
    )

    ring = _secrets.Keyring.generate()
    data = {"password": os.urandom(32), "user": b"etl"}
    env = _secrets.seal("finance", "db", 1, data, ring)
    key, nonce, blob = AESGCM.generate_key(bit_length=256), os.urandom(12), os.urandom(64)
    gcm = AESGCM(key)
    ct = gcm.encrypt(nonce, blob, b"aad")
    show(
        "secrets seal",
        rate(lambda: _secrets.seal("finance", "db", 1, data, ring)),
        "AESGCM.encrypt 64 B",
        rate(lambda: gcm.encrypt(nonce, blob, b"aad")),
    )
    show(
        "secrets open",
        rate(lambda: _secrets.open("finance", "db", env, ring)),
        "AESGCM.decrypt 64 B",
        rate(lambda: gcm.decrypt(nonce, ct, b"aad")),
    )

    keys = _tokens.ServiceAccountKeys.generate()
    now = time.time()
    tok = _tokens.issue_sa_token(keys, herd="finance", name="etl", now=now)
    k = keys.keys[keys.active]
    show(
        "sa token verify (ES256 + claims)",
        rate(lambda: _tokens.verify_sa_token(tok, _tokens.DEFAULT_AUDIENCE, now, keys=keys)),
        "joserfc jwt.decode only",
        rate(lambda: jwt.decode(tok, k, algorithms=["ES256"])),
    )

    token, record = _apikeys.create_api_key("ana", ["team"], 3600, now=now)
    records = {record["id"]: record}
    show(
        "api key verify",
        rate(lambda: _apikeys.verify(token, records, now)),
        "dict lookup",
        rate(lambda: records.get(record["id"])),
    )


if __name__ == "__main__":
    main()
