"""A controller: sources -> mappers -> predicates -> work queue -> N reconcile workers.

Built with a small fluent builder (controller-runtime's ``builder``)::

    Controller.builder("pipelines").for_kind("Pipeline").owns("PipelineRun")
        .watches("Node", mapper).with_predicates(generation_changed).max_concurrent(4)
        .build(reconciler)

Event handlers only enqueue :class:`Request` keys ("controllers do not handle events directly");
the queue guarantees one worker per key and retries failures with backoff. Each reconcile's outcome
maps to controller-runtime's four cases: error -> rate-limited requeue; TerminalError -> counted,
forgotten; ``requeue_after`` -> forget + delayed add; success -> forget.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from runink.controllers import _clock, _informer, _metrics, _types, _workqueue
from runink.schemas import errors, selectors

log = logging.getLogger("runink.controllers")

Obj = dict[str, Any]


# -- predicates ---------------------------------------------------------------------------------


def _gen(obj: Obj) -> Any:
    return (obj.get("metadata") or {}).get("generation")


def generation_changed(old: Obj | None, new: Obj | None) -> bool:
    """Adds and deletes pass; updates pass only when ``metadata.generation`` moved (spec changed).
    Caveat (as in controller-runtime): the controller will not notice its status being wiped."""
    if old is None or new is None:
        return True
    return bool(_gen(old) != _gen(new))


def resource_version_changed(old: Obj | None, new: Obj | None) -> bool:
    """Filters out periodic resyncs (same object delivered again)."""
    if old is None or new is None:
        return True
    return bool(
        (old.get("metadata") or {}).get("resourceVersion")
        != (new.get("metadata") or {}).get("resourceVersion")
    )


def labels_match(selector: str) -> _types.Predicate:
    """Passes events whose object (the new one, or the old one on delete) matches ``selector``."""
    selectors.parse_selector(selector)  # fail fast on a bad selector, at build time

    def predicate(old: Obj | None, new: Obj | None) -> bool:
        obj = new if new is not None else old
        labels = ((obj or {}).get("metadata") or {}).get("labels") or {}
        return selectors.matches(selector, labels)

    return predicate


def all_of(*predicates: _types.Predicate) -> _types.Predicate:
    return lambda old, new: all(p(old, new) for p in predicates)


def any_of(*predicates: _types.Predicate) -> _types.Predicate:
    return lambda old, new: any(p(old, new) for p in predicates)


# -- the controller -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Watch:
    """A secondary source: objects of ``kind`` mapped to requests (``mapper=None``: via the
    controller ownerReference pointing to the primary kind)."""

    kind: str
    mapper: _types.Mapper | None
    predicates: tuple[_types.Predicate, ...] = ()


@dataclass(slots=True)
class ControllerStats:
    """Live counters of one controller, for ``runink controllers`` and health checks."""

    running: bool = False
    synced: bool = False
    reconciles: int = 0
    errors: int = 0
    crashes: int = 0
    last_error: str | None = None
    active: set[_types.Request] = field(default_factory=set)


EventSink = Callable[[_types.Request, str, str], Any]
"""``(request, reason, message)``: where failures are reported (the manager records an Event)."""


class Controller:
    """One reconcile loop. Build it with :meth:`builder`; the manager runs it."""

    def __init__(
        self,
        name: str,
        kind: str,
        reconciler: _types.Reconciler,
        *,
        predicates: tuple[_types.Predicate, ...] = (),
        watches: tuple[Watch, ...] = (),
        max_concurrent: int = 1,
        leader_only: bool = True,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
    ) -> None:
        if max_concurrent < 1:
            raise errors.Invalid(f"controller {name}: max_concurrent must be >= 1")
        self.name = name
        self.kind = kind
        self.reconciler = reconciler
        self.predicates = predicates
        self.watches = watches
        self.max_concurrent = max_concurrent
        self.leader_only = leader_only
        self._limits = (base_delay, max_delay, qps, burst)
        self.stats = ControllerStats()
        self.queue: _workqueue.WorkQueue[_types.Request] | None = None

    @staticmethod
    def builder(name: str) -> ControllerBuilder:
        return ControllerBuilder(name)

    @property
    def kinds(self) -> list[str]:
        return [self.kind, *(w.kind for w in self.watches)]

    def __repr__(self) -> str:
        return f"Controller({self.name!r}, kind={self.kind!r})"

    # -- running --------------------------------------------------------------------------------

    def make_queue(
        self, clock: _clock.Clock, metrics: _metrics.Metrics | None
    ) -> _workqueue.WorkQueue[_types.Request]:
        base, mx, qps, burst = self._limits
        limiter: _workqueue.RateLimiter[_types.Request] = _workqueue.RateLimiter(
            clock, base_delay=base, max_delay=mx, qps=qps, burst=burst
        )
        self.queue = _workqueue.WorkQueue(
            self.name, clock=clock, rate_limiter=limiter, metrics=metrics
        )
        return self.queue

    async def run(
        self,
        informers: _informer.InformerSet,
        *,
        clock: _clock.Clock,
        metrics: _metrics.Metrics | None = None,
        on_failure: EventSink | None = None,
    ) -> None:
        """Register handlers, wait for the caches, run the workers until the queue shuts down."""
        queue = self.queue if self.queue is not None else self.make_queue(clock, metrics)
        registered: list[tuple[_informer.Informer, _informer.Handler]] = []
        primary = informers.for_kind(self.kind)

        def enqueue_primary(old: Obj | None, new: Obj | None) -> None:
            if all(p(old, new) for p in self.predicates):
                queue.add(_types.Request.of(new if new is not None else old or {}))

        registered.append((primary, enqueue_primary))
        for w in self.watches:
            mapper = w.mapper if w.mapper is not None else _owner_mapper(self.kind, primary)
            registered.append((informers.for_kind(w.kind), _mapped(queue, mapper, w.predicates)))
        if metrics is not None:
            metrics.max_concurrent.labels(self.name).set(self.max_concurrent)
        try:
            for inf, handler in registered:
                inf.add_handler(handler)
            for inf, _ in registered:
                await inf.wait_synced()
            self.stats.synced = True
            self.stats.running = True
            async with asyncio.TaskGroup() as tg:
                for _ in range(self.max_concurrent):
                    tg.create_task(self._worker(queue, clock, metrics, on_failure))
        finally:
            self.stats.running = False
            for inf, handler in registered:
                inf.remove_handler(handler)

    async def _worker(
        self,
        queue: _workqueue.WorkQueue[_types.Request],
        clock: _clock.Clock,
        metrics: _metrics.Metrics | None,
        on_failure: EventSink | None,
    ) -> None:
        while True:
            try:
                request = await queue.get()
            except _workqueue.QueueShutDown:
                return
            try:
                await self._reconcile_one(queue, request, clock, metrics, on_failure)
            finally:
                queue.done(request)

    async def _reconcile_one(
        self,
        queue: _workqueue.WorkQueue[_types.Request],
        request: _types.Request,
        clock: _clock.Clock,
        metrics: _metrics.Metrics | None,
        on_failure: EventSink | None,
    ) -> None:
        if request in self.stats.active:  # the queue's invariant; cheap to check
            raise AssertionError(f"{request} handed to two workers at once")
        self.stats.active.add(request)
        if metrics is not None:
            metrics.active_workers.labels(self.name).inc()
        started = clock.now()
        outcome = "success"
        try:
            result = await self.reconciler.reconcile(request)
        except _types.TerminalError as e:
            outcome = "terminal_error"
            self._failed(request, e, metrics)
            if metrics is not None:
                metrics.terminal_errors.labels(self.name).inc()
            queue.forget(request)
            await self._report(on_failure, request, "ReconcileTerminalError", e)
        except Exception as e:  # noqa: BLE001 - the isolation boundary: any reconcile failure is retried
            outcome = "error"
            self._failed(request, e, metrics)
            queue.add_rate_limited(request)
            await self._report(on_failure, request, "ReconcileError", e)
        else:
            if result.requeue_after is not None and result.requeue_after > 0:
                outcome = "requeue_after"
                queue.forget(request)
                queue.add_after(request, result.requeue_after)
            else:
                queue.forget(request)
        finally:
            self.stats.active.discard(request)
            self.stats.reconciles += 1
            if metrics is not None:
                metrics.active_workers.labels(self.name).dec()
                metrics.reconcile_time.labels(self.name).observe(max(0.0, clock.now() - started))
        if metrics is not None:
            metrics.reconcile_total.labels(self.name, outcome).inc()

    def _failed(
        self, request: _types.Request, exc: BaseException, metrics: _metrics.Metrics | None
    ) -> None:
        self.stats.errors += 1
        self.stats.last_error = f"{request}: {type(exc).__name__}: {exc}"
        if metrics is not None:
            metrics.reconcile_errors.labels(self.name).inc()
        log.warning(
            "controller %s: reconcile of %s failed: %s",
            self.name,
            request,
            exc,
            exc_info=not isinstance(exc, _types.TerminalError),
        )

    async def _report(
        self, sink: EventSink | None, request: _types.Request, reason: str, exc: BaseException
    ) -> None:
        if sink is None:
            return
        try:
            await sink(request, reason, f"controller {self.name}: {type(exc).__name__}: {exc}")
        except errors.RuninkError as e:  # reporting is best effort; the failure is already counted
            log.info("could not record an Event for %s: %s", request, e)


def _mapped(
    queue: _workqueue.WorkQueue[_types.Request],
    mapper: _types.Mapper,
    predicates: tuple[_types.Predicate, ...],
) -> _informer.Handler:
    def handler(old: Obj | None, new: Obj | None) -> None:
        if not all(p(old, new) for p in predicates):
            return
        seen: set[_types.Request] = set()
        # On an update that moved the object between owners, both the old and the new owner care.
        for obj in (old, new):
            if obj is not None:
                for req in mapper(obj):
                    if req not in seen:
                        seen.add(req)
                        queue.add(req)

    return handler


def owner_requests(
    obj: Obj, owner_kind: str, *, controller_only: bool = True
) -> list[_types.Request]:
    """The requests for ``obj``'s owners of ``owner_kind`` (same herd as ``obj``)."""
    meta = obj.get("metadata") or {}
    out = []
    for ref in meta.get("ownerReferences") or []:
        if ref.get("kind") != owner_kind or (controller_only and not ref.get("controller")):
            continue
        out.append(_types.Request(owner_kind, meta.get("herd"), str(ref.get("name", ""))))
    return out


def _owner_mapper(owner_kind: str, owners: _informer.Informer) -> _types.Mapper:
    def mapper(obj: Obj) -> Iterable[_types.Request]:
        for req in owner_requests(obj, owner_kind):
            # ownerReferences carry no herd: a namespaced child may have a cluster-scoped owner.
            if owners.get(req.name, req.herd) is None and owners.get(req.name, None) is not None:
                yield _types.Request(owner_kind, None, req.name)
            else:
                yield req

    return mapper


class ControllerBuilder:
    """Fluent, typed construction of a :class:`Controller`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._kind: str | None = None
        self._predicates: list[_types.Predicate] = []
        self._watches: list[Watch] = []
        self._max_concurrent = 1
        self._leader_only = True
        self._limits: dict[str, Any] = {}

    def for_kind(self, kind: str) -> ControllerBuilder:
        self._kind = kind
        return self

    def owns(self, kind: str, *predicates: _types.Predicate) -> ControllerBuilder:
        """A change to a ``kind`` object requeues its controller owner of the primary kind."""
        self._watches.append(Watch(kind, None, predicates))
        return self

    def watches(
        self, kind: str, mapper: _types.Mapper, *predicates: _types.Predicate
    ) -> ControllerBuilder:
        self._watches.append(Watch(kind, mapper, predicates))
        return self

    def with_predicates(self, *predicates: _types.Predicate) -> ControllerBuilder:
        """Filters for the primary kind's events."""
        self._predicates.extend(predicates)
        return self

    def max_concurrent(self, n: int) -> ControllerBuilder:
        self._max_concurrent = n
        return self

    def leader_only(self, value: bool = True) -> ControllerBuilder:
        """Run only while this replica leads (default True, as controller-runtime)."""
        self._leader_only = value
        return self

    def rate_limits(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 1000.0,
        qps: float = 10.0,
        burst: int = 100,
    ) -> ControllerBuilder:
        self._limits = {
            "base_delay": base_delay,
            "max_delay": max_delay,
            "qps": qps,
            "burst": burst,
        }
        return self

    def build(self, reconciler: _types.Reconciler) -> Controller:
        if self._kind is None:
            raise errors.Invalid(f"controller {self._name}: for_kind() is required")
        return Controller(
            self._name,
            self._kind,
            reconciler,
            predicates=tuple(self._predicates),
            watches=tuple(self._watches),
            max_concurrent=self._max_concurrent,
            leader_only=self._leader_only,
            **self._limits,
        )
