"""Which interpreter python: steps get, and which of the agent's directories they import from."""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

import pytest

from runink.agent import _launcher, _runtime

SYSTEM = "/usr/bin/python3"
needs_system_python = pytest.mark.skipif(
    not os.path.exists(SYSTEM), reason="no /usr/bin/python3 here"
)


@needs_system_python
def test_an_interpreter_of_another_minor_version_is_refused_naming_both() -> None:
    with pytest.raises(_launcher.LaunchError) as ei:
        _runtime.choose_python(SYSTEM, want=(3, 11), probe=lambda _p: (3, 9))
    msg = str(ei.value)
    assert "Python 3.9" in msg and "3.11" in msg and SYSTEM in msg


@needs_system_python
def test_same_minor_system_python_is_chosen_when_the_agents_is_out_of_reach(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/bin/python3")
    got = _runtime.choose_python(want=(3, 11), probe=lambda _p: (3, 11))
    assert os.path.realpath(got) == os.path.realpath(SYSTEM)


def test_version_probe(tmp_path: Path) -> None:
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    assert _runtime.python_version(str(fake)) is None
    assert _runtime.python_version(sys.executable) == sys.version_info[:2]


def test_site_dirs_follow_pth_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = tmp_path / "site-packages"
    extra = tmp_path / "vendored"
    pkg = tmp_path / "checkout"
    for d in (site, extra, pkg):
        d.mkdir()
    (site / "a.pth").write_text(f"# comment\n{extra}\nimport os\nmissing-dir\n{pkg}\n")
    (site / "b.pth").write_text("../vendored\n")  # relative to the site dir, a duplicate
    paths = {"purelib": str(site), "platlib": str(site)}
    monkeypatch.setattr(sysconfig, "get_paths", lambda: paths)
    # The checkout is served at LIB_DIR/runink already: not again through a .pth line.
    assert _runtime.python_path_dirs(pkg) == [str(site), str(extra)]
    assert _runtime.site_mount_points(2) == [_runtime.SITE_DIR, _runtime.SITE_DIR + "-1"]


def test_the_agents_own_site_packages_come_first() -> None:
    import pydantic

    dirs = _runtime.python_path_dirs()
    assert dirs and Path(pydantic.__file__).resolve().is_relative_to(dirs[0])
