"""Dataset reference resolution and the datasets-root checks (no slices needed)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from runink.agent import _daemon, _datasets


def test_refs_resolve_to_paths() -> None:
    root = Path("/srv/datasets")
    assert _datasets.resolve("raw-sales", "demo", root) == "/srv/datasets/demo/raw-sales"
    assert _datasets.resolve("file:///data/x%20y.csv", "demo", root) == "/data/x y.csv"
    assert _datasets.resolve("s3://bucket/key", "demo", root) == "s3://bucket/key"
    for bad in ("../etc", "a/b", "file://otherhost/x", ".."):
        with pytest.raises(_datasets.DatasetError):
            _datasets.resolve(bad, "demo", root)


def test_spec_from_slice_keeps_refs_for_the_runtime() -> None:
    obj = {
        "metadata": {"name": "s", "herd": "demo", "uid": "u1"},
        "spec": {
            "command": ["true"],
            "inputs": [{"name": "raw-sales"}, {"uri": "file:///data/ledger.csv"}],
            "outputs": [{"name": "report", "uri": "file:///srv/out/report.json"}],
        },
    }
    spec = _daemon.spec_from_slice(obj)
    assert spec.inputs == {
        "raw-sales": "raw-sales",
        "file:///data/ledger.csv": "file:///data/ledger.csv",
    }
    assert spec.outputs == {"report": "file:///srv/out/report.json"}


def test_root_under_tmp_is_refused() -> None:
    with pytest.raises(_datasets.DatasetError, match="private /tmp"):
        _datasets.check_root(Path("/tmp/x/datasets"))


def test_root_below_a_private_dir_names_it() -> None:
    # Not pytest's tmp_path: it is under /tmp, which is refused first.
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        os.chmod(d, 0o755)
        private = Path(d) / "home"
        private.mkdir(mode=0o700)
        with pytest.raises(_datasets.DatasetError, match=r"home \(mode 0700\).*chmod o\+x"):
            _datasets.check_root(private / "datasets")
