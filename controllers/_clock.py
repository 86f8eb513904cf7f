"""Time as a parameter: the work queue, informers and manager read time only through a Clock.

The system clock is the event loop's monotonic time; runink.controllers.testing.FakeClock moves only
when a test says so, which makes backoff and stall-detection tests exact and instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """Monotonic seconds, a sleep, and a callback timer (all in the same time base)."""

    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer: ...

    def wall(self) -> float:
        """Epoch seconds: what controllers compare with stored timestamps (creationTimestamp,
        heartbeatTime, completionTime). ``now()`` may be monotonic and is for delays only."""
        ...


class SystemClock:
    """The running event loop's monotonic clock; ``wall()`` is the epoch time."""

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        return asyncio.get_running_loop().call_at(when, callback)
