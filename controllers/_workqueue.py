"""The deduplicating, rate-limited work queue between event handlers and reconcile workers.

client-go's ``workqueue`` semantics, in asyncio:

- **dedup**: a key already waiting is not queued twice (1,000 changes -> one pending reconcile);
- **exclusivity**: a key handed to a worker is not handed to another until ``done``; a key re-added
  meanwhile is marked dirty and queued again at ``done`` (so the last state is always reconciled);
- **rate limiting**: ``add_rate_limited`` delays by max(per-key exponential backoff 5 ms -> 1000 s,
  an overall token bucket, 10 qps / burst 100 by default); ``forget`` resets a key's backoff;
- **delayed adds**: ``add_after`` (earliest deadline wins for a key already waiting);
- **shutdown**: ``shut_down`` stops accepting keys; ``get`` keeps serving what is queued only when
  ``drain=True``, then raises :class:`QueueShutDown`; ``wait_drained`` returns once in-flight work ends.

Time comes from a Clock, so tests run backoff with a fake clock.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable
from typing import Generic, TypeVar

from runink.controllers import _clock, _metrics

K = TypeVar("K", bound=Hashable)


class QueueShutDown(Exception):
    """``get`` on a queue that is shut down (and drained)."""


class RateLimiter(Generic[K]):
    """max(per-key exponential backoff, overall token bucket): client-go's
    ``DefaultControllerRateLimiter``."""

    def __init__(
        self,
        clock: _clock.Clock,
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
    ) -> None:
        self._clock = clock
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.qps = qps
        self.burst = burst
        self._failures: dict[K, int] = {}
        self._tokens = float(burst)
        self._last: float | None = None

    def when(self, key: K) -> float:
        """The delay before ``key`` may be retried; counts one more failure for it."""
        n = self._failures.get(key, 0)
        self._failures[key] = n + 1
        # Cap the exponent: 2**n overflows floats long before it matters.
        per_key = min(self.max_delay, self.base_delay * 2.0 ** min(n, 64))
        return max(per_key, self._bucket_delay())

    def _bucket_delay(self) -> float:
        now = self._clock.now()
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        # Reserve a token even when none is left: the debt is paid by waiting (golang.org/x/time/rate).
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def failures(self, key: K) -> int:
        return self._failures.get(key, 0)

    def forget(self, key: K) -> None:
        self._failures.pop(key, None)


class WorkQueue(Generic[K]):
    """See the module docstring. Not thread-safe: use from one event loop."""

    def __init__(
        self,
        name: str,
        *,
        clock: _clock.Clock | None = None,
        rate_limiter: RateLimiter[K] | None = None,
        metrics: _metrics.Metrics | None = None,
    ) -> None:
        self.name = name
        self._clock: _clock.Clock = clock if clock is not None else _clock.SystemClock()
        self.rate_limiter: RateLimiter[K] = (
            rate_limiter if rate_limiter is not None else RateLimiter(self._clock)
        )
        self._metrics = metrics
        self._queue: collections.deque[K] = collections.deque()
        self._dirty: set[K] = set()
        self._processing: set[K] = set()
        self._added_at: dict[K, float] = {}
        self._started_at: dict[K, float] = {}
        self._waiting: dict[K, tuple[float, _clock.Timer]] = {}
        self._waiters: list[asyncio.Future[None]] = []
        self._shutting_down = False
        self._drain = True

    # -- adding ---------------------------------------------------------------------------------

    def add(self, key: K) -> None:
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        self._added_at.setdefault(key, self._clock.now())
        if self._metrics is not None:
            self._metrics.adds.labels(self.name).inc()
        if key in self._processing:
            return  # queued again by done(): never two workers on one key
        self._queue.append(key)
        self._set_depth()
        self._notify()

    def add_after(self, key: K, delay: float) -> None:
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(key)
            return
        when = self._clock.now() + delay
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= when:
                return  # an earlier wake-up is already scheduled
            pending[1].cancel()
        self._waiting[key] = (when, self._clock.call_at(when, lambda: self._fire(key)))

    def add_rate_limited(self, key: K) -> None:
        if self._metrics is not None:
            self._metrics.retries.labels(self.name).inc()
        self.add_after(key, self.rate_limiter.when(key))

    def forget(self, key: K) -> None:
        self.rate_limiter.forget(key)

    def num_requeues(self, key: K) -> int:
        return self.rate_limiter.failures(key)

    def _fire(self, key: K) -> None:
        self._waiting.pop(key, None)
        self.add(key)

    # -- consuming ------------------------------------------------------------------------------

    async def get(self) -> K:
        """The next key, marked as processing. Raises QueueShutDown once shut down (and drained)."""
        while not self._queue or (self._shutting_down and not self._drain):
            if self._shutting_down:
                raise QueueShutDown(self.name)
            await self._wait()
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        now = self._clock.now()
        added = self._added_at.pop(key, now)
        self._started_at[key] = now
        if self._metrics is not None:
            self._metrics.queue_duration.labels(self.name).observe(max(0.0, now - added))
        self._set_depth()
        return key

    def done(self, key: K) -> None:
        self._processing.discard(key)
        started = self._started_at.pop(key, None)
        if self._metrics is not None and started is not None:
            self._metrics.work_duration.labels(self.name).observe(
                max(0.0, self._clock.now() - started)
            )
        if key in self._dirty:
            self._queue.append(key)
            self._set_depth()
        self._notify()

    # -- lifecycle ------------------------------------------------------------------------------

    def shut_down(self, *, drain: bool = True) -> None:
        """Stop accepting keys; cancel delayed adds. With ``drain`` queued keys are still served."""
        self._shutting_down = True
        self._drain = drain
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._notify()

    async def wait_drained(self) -> None:
        """Return once nothing is queued (or draining is off) and nothing is being processed."""
        while self._processing or (self._queue and self._drain and self._shutting_down):
            await self._wait()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def processing(self) -> int:
        return len(self._processing)

    @property
    def delayed(self) -> int:
        return len(self._waiting)

    def idle(self) -> bool:
        """Nothing queued and nothing in flight (delayed adds may still be pending)."""
        return not self._queue and not self._processing

    def _set_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.depth.labels(self.name).set(len(self._queue))

    async def _wait(self) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._waiters:
                self._waiters.remove(fut)

    def _notify(self) -> None:
        # Wake every waiter; each re-checks its own condition (a level-triggered wake-up).
        waiters, self._waiters = self._waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
