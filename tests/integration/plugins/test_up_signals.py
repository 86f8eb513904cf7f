"""`runink up` with its local agent stays up until someone signals it, then stops cleanly.

A regression test for what broke the plugin tests' clusters: the agent's netns pool builds
namespaces with pyroute2, which forks helper children from a worker thread and SIGTERMs them.
With ``loop.add_signal_handler`` each child inherited asyncio's signal wakeup fd, so a child's
SIGTERM was read by the parent's loop as its own and ``runink up`` shut down a second after it
became ready.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.privileged]


def test_runink_up_with_an_agent_stays_up_until_signalled(broken_up: Any) -> None:
    up = broken_up  # a `runink up` with its agent (and, here, plugins)
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        assert up.proc.poll() is None, up.output()
        time.sleep(0.1)
    assert "shutting down" not in up.output()
    assert len(up.controllers()) >= 6  # and it still answers
