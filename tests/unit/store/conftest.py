"""The Barn fixture: every semantic test runs on the memory and the LMDB backend alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from runink import store


@pytest.fixture(params=["memory", "lmdb"])
async def barn(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[store.LocalBarn]:
    b = store.open_memory() if request.param == "memory" else store.open_local(tmp_path / "barn")
    try:
        yield b
    finally:
        await b.close()
