"""Prometheus metrics of the Runi Agent: its own process, and per-slice usage read from cgroups.

`SliceCollector` asks a `SliceSource` (the `SliceRuntime`) for a snapshot on every scrape and
emits ``runink_slice_*`` series labelled ``slice`` and ``herd``; gauges a step published through
``runink.sdk.Context.metric`` come out as ``runink_step_<name>`` with the same labels (a counter
when the name ends in ``_total``, else a gauge). `serve`
exposes a registry holding these and the standard process collector on ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import prometheus_client
from prometheus_client import core, registry

from runink.agent import _cgroups

_BAD = re.compile(r"[^a-zA-Z0-9_]")


@dataclass(frozen=True, slots=True)
class SliceStats:
    """One running slice at scrape time."""

    id: str
    name: str
    herd: str
    usage: _cgroups.Usage
    step_metrics: dict[str, float] = field(default_factory=dict)


class SliceSource(Protocol):
    def stats(self) -> list[SliceStats]: ...


class SliceCollector(registry.Collector):
    """Per-slice cpu, memory, pids and OOM kills, plus the steps' own gauges."""

    def __init__(self, source: SliceSource) -> None:
        self.source = source

    def collect(self) -> Iterator[core.Metric]:
        labels = ["slice", "herd"]
        cpu = core.CounterMetricFamily(
            "runink_slice_cpu_seconds", "CPU time used by the slice's cgroup.", labels=labels
        )
        mem = core.GaugeMetricFamily(
            "runink_slice_memory_bytes", "Memory charged to the slice's cgroup.", labels=labels
        )
        peak = core.GaugeMetricFamily(
            "runink_slice_memory_peak_bytes", "Peak memory of the slice's cgroup.", labels=labels
        )
        pids = core.GaugeMetricFamily(
            "runink_slice_pids", "Processes in the slice's cgroup.", labels=labels
        )
        ooms = core.CounterMetricFamily(
            "runink_slice_oom_kills", "OOM kills inside the slice.", labels=labels
        )
        steps: dict[str, core.GaugeMetricFamily | core.CounterMetricFamily] = {}
        for s in self.source.stats():
            lv = [s.name, s.herd]
            cpu.add_metric(lv, s.usage.cpu_seconds)
            mem.add_metric(lv, s.usage.memory_bytes)
            peak.add_metric(lv, s.usage.memory_peak_bytes)
            pids.add_metric(lv, s.usage.pids)
            ooms.add_metric(lv, s.usage.oom_kills)
            for name, value in s.step_metrics.items():
                mname = "runink_step_" + _BAD.sub("_", name)
                fam = steps.get(mname)
                if fam is None:
                    doc = f"Published by the step through runink.sdk ({name})."
                    # By convention (and promtool's lint) only counters end in _total.
                    fam = steps[mname] = (
                        core.CounterMetricFamily(mname.removesuffix("_total"), doc, labels=labels)
                        if mname.endswith("_total")
                        else core.GaugeMetricFamily(mname, doc, labels=labels)
                    )
                fam.add_metric(lv, value)
        yield from (cpu, mem, peak, pids, ooms)
        yield from steps.values()


def make_registry(source: SliceSource) -> prometheus_client.CollectorRegistry:
    reg = prometheus_client.CollectorRegistry()
    prometheus_client.ProcessCollector(registry=reg)
    reg.register(SliceCollector(source))
    return reg


def serve(reg: prometheus_client.CollectorRegistry, port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` from a daemon thread; returns the server (``.shutdown()`` to stop)."""
    server, _thread = prometheus_client.start_http_server(port, addr=addr, registry=reg)
    return server
