"""Fixtures for tests that run real slices (root, cgroups, namespaces); cleanup even on failure."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from runink.agent import _cgroups, _launcher, _runtime

if os.geteuid() != 0:
    pytest.skip("privileged tests need root (cgroups, namespaces)", allow_module_level=True)


def remove_parent(layout: _cgroups.Layout, parent: str) -> None:
    for name in _cgroups.list_slices(layout, parent):
        _cgroups.SliceCgroup(layout, name, parent).remove()
    bases = [p / parent for p in layout.v1.values()]
    if layout.unified is not None:
        bases.append(layout.unified / parent)
    for b in bases:
        with contextlib.suppress(FileNotFoundError):
            b.rmdir()


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    parent = f"runink-test-{uuid.uuid4().hex[:8]}"
    yield parent
    remove_parent(_cgroups.detect(), parent)


@pytest.fixture
def launcher() -> Iterator[_launcher.Launcher]:
    lau = _launcher.Launcher.start()
    yield lau
    lau.close()


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A temp dir the slices' unprivileged host uids can traverse (pytest's tmp_path is 0700)."""
    # Not under /tmp: every slice has its own private /tmp.
    d = Path(tempfile.mkdtemp(prefix="runink-agent-test-", dir="/var/tmp"))
    os.chmod(d, 0o755)
    yield d
    # Runtimes with a state dir in here keep their slices' scratch dirs on tmpfs, named after it:
    # remove those of a test that failed before its runtime cleaned up.
    for sub in [d, *(p for p in d.glob("**/*") if p.is_dir())]:
        shutil.rmtree(_runtime.default_scratch_dir(sub), ignore_errors=True)
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def runtime(
    shared_dir: Path, launcher: _launcher.Launcher, cgroup_parent: str
) -> AsyncIterator[_runtime.SliceRuntime]:
    # No netns pool: tests of `network: isolated` build their own (tests/privileged/test_network.py).
    rt = _runtime.SliceRuntime(
        shared_dir / "state", launcher, cgroup_parent=cgroup_parent, netns_pool_size=0
    )
    async with rt:
        try:
            yield rt
        finally:
            for sid in rt.running():
                await rt.stop(sid, grace=0.1)
