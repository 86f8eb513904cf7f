"""`runink cluster join --token-file`: the cluster secret from a file, not the command line."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from runink.cli import _cluster
from runink.schemas import errors


def test_the_secret_comes_from_the_file_and_lands_in_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("s3cret-from-file\n")
    args = argparse.Namespace(token=None, token_file=str(tmp_path / "token"), init=False)
    assert _cluster._secret(tmp_path / "data", args) == "s3cret-from-file"
    assert (tmp_path / "data" / "cluster.secret").read_text() == "s3cret-from-file"
    assert (tmp_path / "data" / "cluster.secret").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", [None, ""], ids=["missing", "empty"])
def test_a_bad_token_file_is_named(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "token"
    if content is not None:
        path.write_text(content)
    args = argparse.Namespace(token=None, token_file=str(path), init=False)
    with pytest.raises(errors.Invalid, match=f"--token-file {path}"):
        _cluster._secret(tmp_path / "data", args)
    assert not (tmp_path / "data" / "cluster.secret").exists()
