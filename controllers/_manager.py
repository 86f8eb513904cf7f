"""The manager: runs every informer and controller of a process in one TaskGroup.

    Manager.run()
      ├── informers (one per kind, shared)           always
      ├── controllers with leader_only=False         always
      ├── leadership loop ── controllers with leader_only=True, started when this replica gains
      │                      leadership and cancelled when it loses it (LeaderElection Protocol;
      │                      embedded mode: AlwaysLeader; the Raft adapter implements it for HA)
      └── HTTP: /metrics (Prometheus text), /healthz, /readyz    when ``http_port`` is set

A controller that crashes outside a reconcile (a broken mapper, a plugin bug) is restarted with
backoff and reported, never taking the others down. ``stop()`` drains: queues stop accepting keys,
in-flight reconciles finish, then informers are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from runink.controllers import (
    _client,
    _clock,
    _controller,
    _helpers,
    _informer,
    _metrics,
    _types,
)

log = logging.getLogger("runink.controllers.manager")


class LeaderElection(Protocol):
    """Leadership of this replica. ``changes()`` yields the current state first, then every change."""

    def changes(self) -> AsyncIterator[bool]: ...


class AlwaysLeader:
    """The embedded, single-replica mode: this process always leads."""

    async def changes(self) -> AsyncIterator[bool]:
        yield True
        await asyncio.Event().wait()  # leadership never changes


class StaticLeadership:
    """A leadership switch driven by code (tests, or an adapter over another mechanism)."""

    def __init__(self, leading: bool = False) -> None:
        self._leading = leading
        self._changed = asyncio.Event()

    def set(self, leading: bool) -> None:
        self._leading = leading
        self._changed.set()

    async def changes(self) -> AsyncIterator[bool]:
        current = self._leading
        yield current
        while True:
            await self._changed.wait()
            self._changed.clear()
            if self._leading != current:
                current = self._leading
                yield current


@dataclass(frozen=True, slots=True)
class ControllerStatus:
    """One row of ``runink controllers``."""

    name: str
    kind: str
    plugin: str | None
    leader_only: bool
    running: bool
    synced: bool
    healthy: bool
    reconciles: int
    errors: int
    queue_depth: int
    last_error: str | None


class Manager:
    """Owns the informers and controllers of one process. See the module docstring."""

    def __init__(
        self,
        client: _client.Client,
        *,
        clock: _clock.Clock | None = None,
        election: LeaderElection | None = None,
        metrics: _metrics.Metrics | None = None,
        resync_period: float | None = 600.0,
        stall_timeout: float = 30.0,
        http_host: str = "127.0.0.1",
        http_port: int | None = None,
        record_events: bool = True,
        component: str = "runink-controller-manager",
    ) -> None:
        self.client = client
        self.clock: _clock.Clock = clock if clock is not None else _clock.SystemClock()
        self.election: LeaderElection = election if election is not None else AlwaysLeader()
        self.metrics = metrics if metrics is not None else _metrics.Metrics()
        self.informers = _informer.InformerSet(
            client,
            lambda kind: _informer.Informer(
                client,
                kind,
                clock=self.clock,
                resync_period=resync_period,
                stall_timeout=stall_timeout,
                metrics=self.metrics,
            ),
        )
        self.recorder = _helpers.EventRecorder(client, component, clock=self.clock)
        self._record_events = record_events
        self._controllers: list[_controller.Controller] = []
        self._plugin_of: dict[str, str | None] = {}
        self.broken_plugins: dict[str, str] = {}
        self._http_host = http_host
        self._http_port = http_port
        self.http_port: int | None = None
        self.leading = False
        self._stop = asyncio.Event()
        self._started = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()

    # -- configuration --------------------------------------------------------------------------

    def add(self, *controllers: _controller.Controller, plugin: str | None = None) -> None:
        for c in controllers:
            if c.name in self._plugin_of:
                raise ValueError(f"a controller named {c.name!r} is already registered")
            self._controllers.append(c)
            self._plugin_of[c.name] = plugin

    def add_broken_plugin(self, name: str, error: str) -> None:
        """Record a plugin that failed to load, so ``runink controllers`` shows it (unhealthy)."""
        self.broken_plugins[name] = error

    @property
    def controllers(self) -> list[_controller.Controller]:
        return list(self._controllers)

    # -- health ---------------------------------------------------------------------------------

    def status(self) -> list[ControllerStatus]:
        """Every controller's state (the data behind ``runink controllers``)."""
        out = []
        for c in self._controllers:
            stalled = any(
                inf.stalled_for() > 2 * inf.stall_timeout
                for inf in (self.informers.for_kind(k) for k in c.kinds)
            )
            expected = self.leading or not c.leader_only
            out.append(
                ControllerStatus(
                    name=c.name,
                    kind=c.kind,
                    plugin=self._plugin_of.get(c.name),
                    leader_only=c.leader_only,
                    running=c.stats.running,
                    synced=c.stats.synced,
                    healthy=(c.stats.running or not expected) and not stalled,
                    reconciles=c.stats.reconciles,
                    errors=c.stats.errors,
                    queue_depth=len(c.queue) if c.queue is not None else 0,
                    last_error=c.stats.last_error,
                )
            )
        return out

    def healthy(self) -> bool:
        """Liveness: every controller that should run does, and no informer is stalled."""
        return self._started.is_set() and all(s.healthy for s in self.status())

    def ready(self) -> bool:
        """Readiness: every informer has listed its kind once."""
        return self._started.is_set() and all(inf.has_synced for inf in self.informers)

    def idle(self) -> bool:
        """Nothing queued or in flight, and informers have seen the store's latest revision.

        Used by the testing kit's ``run_until_idle``: a client offering ``kind_revision(kind)`` (the
        last write of a kind) lets it wait for the informers to see every write.
        """
        kind_revision = getattr(self.client, "kind_revision", None)
        for inf in self.informers:
            if not inf.has_synced:
                return False
            if callable(kind_revision) and inf.last_revision < kind_revision(inf.kind):
                return False
        # A stopped controller's queue is dropped (a fresh one is made when it starts again).
        return all(
            c.queue is None or not c.stats.running or c.queue.idle() for c in self._controllers
        )

    # -- running --------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until :meth:`stop` (graceful drain) or cancellation."""
        for c in self._controllers:
            c.make_queue(self.clock, self.metrics)
            for kind in c.kinds:
                self.informers.for_kind(kind)
        async with asyncio.TaskGroup() as tg:
            background = [tg.create_task(inf.run()) for inf in self.informers]
            if self._http_port is not None:
                ready = asyncio.Event()
                background.append(tg.create_task(self._serve_http(ready)))
                await ready.wait()
            always = [c for c in self._controllers if not c.leader_only]
            gated = [c for c in self._controllers if c.leader_only]
            workers = [tg.create_task(self._supervise(c)) for c in always]
            leader_loop = tg.create_task(self._leadership(gated))
            self._started.set()
            await self._stop.wait()
            # Drain: no new keys, in-flight reconciles finish, then the sources go.
            for c in self._controllers:
                if c.queue is not None:
                    c.queue.shut_down(drain=False)
            pending = [*workers, *self._running]
            if pending:
                await asyncio.wait(pending)
            leader_loop.cancel()
            for t in background:
                t.cancel()

    def stop(self) -> None:
        self._stop.set()

    async def wait_started(self) -> None:
        await self._started.wait()

    async def _leadership(self, gated: list[_controller.Controller]) -> None:
        scope: asyncio.Task[None] | None = None
        async with asyncio.TaskGroup() as tg:
            async for leading in self.election.changes():
                self.leading = leading
                if leading and scope is None and gated and not self._stop.is_set():
                    log.info("leading: starting %d leader-only controllers", len(gated))
                    scope = tg.create_task(self._run_gated(gated))
                    self._running.add(scope)
                    scope.add_done_callback(self._running.discard)
                elif not leading and scope is not None:
                    log.info("lost leadership: stopping leader-only controllers")
                    scope.cancel()
                    await asyncio.wait([scope])
                    scope = None

    async def _run_gated(self, gated: list[_controller.Controller]) -> None:
        for c in gated:
            # A fresh queue per term: keys queued under the old term are re-derived from the cache.
            c.make_queue(self.clock, self.metrics)
        async with asyncio.TaskGroup() as tg:
            for c in gated:
                tg.create_task(self._supervise(c))

    async def _supervise(self, c: _controller.Controller) -> None:
        delay = 1.0
        while not self._stop.is_set():
            try:
                await c.run(
                    self.informers,
                    clock=self.clock,
                    metrics=self.metrics,
                    on_failure=self._report if self._record_events else None,
                )
                return  # the queue was shut down: a graceful stop
            except Exception as e:  # isolation: one broken controller must not stop the rest
                c.stats.crashes += 1
                c.stats.last_error = f"crashed: {type(e).__name__}: {e}"
                log.exception("controller %s crashed; restarting in %.0fs", c.name, delay)
                await self.clock.sleep(delay)
                delay = min(delay * 2, 300.0)
                if c.queue is None or c.queue.shutting_down:
                    return

    async def _report(self, request: _types.Request, reason: str, message: str) -> None:
        await self.recorder.record_for(request, "Warning", reason, message)

    # -- HTTP: /metrics, /healthz, /readyz, /controllers -------------------------------------------------------

    async def _serve_http(self, ready: asyncio.Event) -> None:
        server = await asyncio.start_server(self._handle_http, self._http_host, self._http_port)
        self.http_port = int(server.sockets[0].getsockname()[1])
        ready.set()
        async with server:
            await server.serve_forever()

    async def _handle_http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            async with asyncio.timeout(10):
                request_line = await reader.readline()
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # headers are not needed
            parts = request_line.decode("latin-1").split()
            path = parts[1].split("?", 1)[0] if len(parts) >= 2 else "/"
            status, ctype, body = self._http_response(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass  # a slow or vanished scraper: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _http_response(self, path: str) -> tuple[str, str, bytes]:
        if path == "/metrics":
            return "200 OK", "text/plain; version=0.0.4; charset=utf-8", self.metrics.exposition()
        if path == "/controllers":
            body = json.dumps(list_controllers(self), indent=2).encode() + b"\n"
            return "200 OK", "application/json", body
        if path in ("/healthz", "/livez"):
            ok = self.healthy()
        elif path == "/readyz":
            ok = self.ready()
        else:
            return "404 Not Found", "text/plain", b"not found\n"
        return (
            ("200 OK" if ok else "503 Service Unavailable"),
            "text/plain",
            (b"ok\n" if ok else b"not ok\n"),
        )


def list_controllers(manager: Manager) -> list[dict[str, Any]]:
    """``runink controllers``: one JSON-able row per loaded controller, with its health."""
    return [
        {
            "name": s.name,
            "kind": s.kind,
            "plugin": s.plugin or "(built-in)",
            "leaderOnly": s.leader_only,
            "running": s.running,
            "synced": s.synced,
            "healthy": s.healthy,
            "reconciles": s.reconciles,
            "errors": s.errors,
            "queueDepth": s.queue_depth,
            "lastError": s.last_error,
        }
        for s in manager.status()
    ] + [
        {
            "name": name,
            "kind": "-",
            "plugin": name,
            "leaderOnly": False,
            "running": False,
            "synced": False,
            "healthy": False,
            "reconciles": 0,
            "errors": 1,
            "queueDepth": 0,
            "lastError": f"plugin failed to load: {error}",
        }
        for name, error in sorted(manager.broken_plugins.items())
    ]
