"""The audit log: JSON lines, rotation by size, redaction, concurrent appends."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
import threading
from pathlib import Path
from typing import Any

from runink.api import _audit

SECRET = "s3cr3t-value-do-not-log"


def entry(**kw: Any) -> _audit.AuditEntry:
    base: dict[str, Any] = {
        "user": "ana",
        "groups": ("oidc:team", "system:authenticated"),
        "verb": "create",
        "resource": "secrets",
        "herd": "finance",
        "name": "db",
        "decision": "allow",
        "code": "OK",
        "latency_ms": 1.5,
        "time": 1_800_000_000.0,
    }
    base.update(kw)
    return _audit.AuditEntry(**base)


def lines(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text().splitlines()]


def test_writes_one_json_line_per_request(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with _audit.AuditLog(p) as log:
        log.record(entry())
        log.record(
            entry(verb="reveal", decision="deny", code="PERMISSION_DENIED", reason="RBAC: no")
        )
    got = lines(p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert got[0] == {
        "user": "ana",
        "groups": ["oidc:team", "system:authenticated"],
        "verb": "create",
        "resource": "secrets",
        "herd": "finance",
        "name": "db",
        "decision": "allow",
        "code": "OK",
        "latency_ms": 1.5,
        "time": 1_800_000_000.0,
    }
    assert got[1]["decision"] == "deny" and got[1]["reason"] == "RBAC: no"


def test_values_and_credentials_never_reach_the_file(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    obj = {
        "kind": "Secret",
        "metadata": {"name": "db", "herd": "finance"},
        "spec": {
            "data": {"pw": base64.b64encode(SECRET.encode()).decode()},
            "stringData": {"x": SECRET},
        },
    }
    with _audit.AuditLog(p) as log:
        log.record(
            entry(
                object=obj,
                reason="bad header Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln and rk_0123456789abcdef_"
                + "A" * 43,
                extra={"metadata": {"authorization": "Bearer abc.def.ghi"}, "blob": b"\x00" * 4},
            )
        )
    text = p.read_text()
    for leaked in (
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        "A" * 43,
        "abc.def.ghi",
        "eyJhbGciOi",
    ):
        assert leaked not in text
    got = lines(p)[0]
    assert got["object"]["spec"]["data"] == {"pw": f"<redacted {len(SECRET)} bytes>"}
    assert "rk_0123456789abcdef_<redacted>" in got["reason"]
    assert got["extra"]["blob"] == "<4 bytes>"


def test_scrub_pem() -> None:
    text = "key: -----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY----- done"
    assert _audit.scrub(text) == "key: <redacted pem> done"


def test_rotation_by_size_keeps_n_backups(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    one = len(_audit.AuditLog(p).format(entry(name="x0000")))
    with _audit.AuditLog(p, max_bytes=one * 3, backups=2) as log:
        for i in range(10):
            log.record(entry(name=f"x{i:04d}"))
    files = sorted(x.name for x in tmp_path.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    assert all(x.stat().st_size <= one * 3 for x in tmp_path.iterdir())
    names = [
        e["name"] for f in ("audit.log.2", "audit.log.1", "audit.log") for e in lines(tmp_path / f)
    ]
    assert names == [f"x{i:04d}" for i in range(10 - len(names), 10)]  # newest kept, in order


def test_reopen_appends_and_counts_existing_size(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with _audit.AuditLog(p) as log:
        log.record(entry(name="a"))
    with _audit.AuditLog(p) as log:
        log.record(entry(name="b"))
    assert [e["name"] for e in lines(p)] == ["a", "b"]


def test_concurrent_threads_never_interleave_lines(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with _audit.AuditLog(p, max_bytes=20_000, backups=50) as log:

        def work(t: int) -> None:
            for i in range(200):
                log.record(entry(name=f"t{t}-{i}", reason="x" * (i % 50)))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    got = [e["name"] for f in tmp_path.iterdir() for e in lines(f)]
    assert sorted(got) == sorted(f"t{t}-{i}" for t in range(4) for i in range(200))


async def test_usable_from_asyncio_tasks(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with _audit.AuditLog(p) as log:

        async def one(i: int) -> None:
            await asyncio.sleep(0)
            log.record(entry(name=f"n{i}"))

        async with asyncio.TaskGroup() as tg:
            for i in range(50):
                tg.create_task(one(i))
    assert len(lines(p)) == 50


def test_time_defaults_to_clock(tmp_path: Path) -> None:
    p = tmp_path / "audit.log"
    with _audit.AuditLog(p, clock=lambda: 42.0) as log:
        log.record(entry(time=None))
    assert lines(p)[0]["time"] == 42.0
