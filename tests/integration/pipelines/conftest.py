"""A real single-node cluster in-process: Barn on LMDB, TLS gRPC API, controllers, a local agent.

The data dir lives under /var/tmp, not /tmp: every slice gets a private /tmp, so an agent state dir
or dataset there would be invisible to the slices it runs.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runink import api
from runink.cli import _up


@pytest.fixture
def data_dir() -> AsyncIterator[Path]:
    # mkdtemp makes it 0700, like a fresh data dir: serve() must open it up for the slices.
    path = Path(tempfile.mkdtemp(prefix="runink-test-", dir="/var/tmp"))
    try:
        yield path  # type: ignore[misc]
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def cluster(data_dir: Path) -> AsyncIterator[tuple[_up.Cluster, api.Client]]:
    if os.geteuid() != 0:
        pytest.skip("slices need root for cgroups and namespaces")
    async with (
        _up.serve(data_dir, port=0, config=data_dir / "config", say=lambda _: None) as c,
        api.Client.from_config(data_dir / "config") as client,
    ):
        yield c, client
