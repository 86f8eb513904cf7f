"""Plugins: third-party controllers (and kinds) found through the entry-point group ``runink.controllers``.

An entry point names either a callable ``(PluginContext) -> Iterable[Controller]`` or an object with
a ``controllers(PluginContext)`` method. Importing it may register the plugin's own kinds with
``runink.schemas`` (so the API and CLI serve them with no core change). Whatever goes wrong (import,
building the controllers) is caught per plugin, logged, counted in
``runink_controller_plugin_errors_total`` and returned in :class:`PluginInfo.error`; the other
plugins and the built-ins carry on. Failures inside reconciles are isolated by the controller
runtime itself (counted, retried, recorded as Events).
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from runink.controllers import _client, _controller, _metrics

log = logging.getLogger("runink.controllers.plugins")

GROUP = "runink.controllers"


@dataclass(frozen=True, slots=True)
class PluginContext:
    """What a plugin receives to build its controllers."""

    client: _client.Client


class PluginProvider(Protocol):
    def controllers(self, ctx: PluginContext) -> Iterable[_controller.Controller]: ...


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """One entry point and what came of it. ``error`` is set (and ``controllers`` empty) on failure."""

    name: str
    value: str
    distribution: str | None
    controllers: list[_controller.Controller] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _build(target: Any, ctx: PluginContext) -> list[_controller.Controller]:
    provider = getattr(target, "controllers", None)
    produced = provider(ctx) if callable(provider) else target(ctx)
    out = list(produced)
    for c in out:
        if not isinstance(c, _controller.Controller):
            raise TypeError(f"expected Controller objects, got {type(c).__name__}")
    return out


def load_plugins(
    client: _client.Client,
    *,
    group: str = GROUP,
    entry_points: Iterable[importlib.metadata.EntryPoint] | None = None,
    metrics: _metrics.Metrics | None = None,
) -> list[PluginInfo]:
    """Load every plugin of ``group``; never raises for a broken plugin (see the module docstring)."""
    eps = (
        list(entry_points)
        if entry_points is not None
        else list(importlib.metadata.entry_points(group=group))
    )
    ctx = PluginContext(client)
    infos = []
    for ep in sorted(eps, key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else None
        stage = "import"
        try:
            target = ep.load()
            stage = "build"
            controllers = _build(target, ctx)
        except Exception as e:  # isolation: a broken plugin is reported, not fatal
            log.exception("plugin %s (%s) failed at %s", ep.name, ep.value, stage)
            if metrics is not None:
                metrics.plugin_errors.labels(ep.name, stage).inc()
            infos.append(
                PluginInfo(ep.name, ep.value, dist, [], f"{stage}: {type(e).__name__}: {e}")
            )
            continue
        log.info("plugin %s loaded %d controllers", ep.name, len(controllers))
        infos.append(PluginInfo(ep.name, ep.value, dist, controllers))
    return infos
