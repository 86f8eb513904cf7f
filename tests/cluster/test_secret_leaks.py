"""A Secret's value never appears in clear on a replicated cluster: not in the Raft journals, the
LMDB files, the audit logs, the replicas' logs, nor in anything the CLI prints about it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _up

pytestmark = [pytest.mark.cluster, pytest.mark.slow, pytest.mark.timeout(300)]

VALUE = "s3cr3t-Value-7d1f0a42c9"  # distinctive, so a match cannot be a coincidence

SECRET = f"""apiVersion: runink.io/v1
kind: Secret
metadata:
  name: db
  herd: leak
spec:
  stringData:
    password: {VALUE}
"""


def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


def test_a_secret_value_is_nowhere_in_clear() -> None:
    with _up.replicas(3) as root:
        (root / "herd.yaml").write_text(
            "apiVersion: runink.io/v1\nkind: Herd\nmetadata:\n  name: leak\nspec: {}\n"
        )
        (root / "secret.yaml").write_text(SECRET)
        outputs: list[str] = []
        steps = [
            ("apply", "-f", str(root / "herd.yaml")),
            ("apply", "-f", str(root / "secret.yaml")),
            ("apply", "-f", str(root / "secret.yaml")),  # a second write: a new version
            ("get", "secrets", "-n", "leak"),
            ("get", "secret", "db", "-n", "leak", "-o", "yaml"),
            ("get", "secret", "db", "-n", "leak", "-o", "json"),
            ("describe", "secret", "db", "-n", "leak"),
            ("diff", "-f", str(root / "secret.yaml")),
            ("secret", "rotate-key"),
            ("get", "secret", "db", "-n", "leak", "-o", "yaml"),
        ]
        for argv in steps:
            r = _up.cli(root, *argv)
            outputs += [r.stdout, r.stderr]
            assert argv[0] == "diff" or r.returncode == 0, (argv, r.stderr)
        # The value is there, for whoever may reveal it...
        revealed = _up.cli(root, "secret", "reveal", "db", "-n", "leak", "--key", "password")
        assert revealed.returncode == 0, revealed.stderr
        assert VALUE in revealed.stdout
        # ...and nowhere else.
        for i, text in enumerate(outputs):
            assert VALUE not in text, f"CLI output of {steps[i // 2]} shows the value"
        # Journals, LMDB, audit logs and process logs, on every replica (the data dir holds the
        # replicas' data dirs, the shared PKI and keyring, and their logs).
        files = [p for p in _files(root) if p.name not in ("secret.yaml",)]
        journals = [p for p in files if "journal" in p.name or "raft" in str(p)]
        assert journals, "expected Raft journal files under the data dir"
        needle = VALUE.encode()
        leaked = [str(p) for p in files if needle in p.read_bytes()]
        assert not leaked, f"the value is in clear in {leaked}"
