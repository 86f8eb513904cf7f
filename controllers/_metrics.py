"""Prometheus metrics of the controller runtime, with controller-runtime's and client-go's names.

One :class:`Metrics` per manager, each in its own ``CollectorRegistry`` (so tests and several managers
in one process never collide), served on ``/metrics`` by the manager. Names and labels follow
controller-runtime ``pkg/internal/controller/metrics`` and ``pkg/metrics/workqueue.go`` so existing
dashboards carry over; ``runink_*`` metrics are ours (plugin health, informer liveness).
"""

from __future__ import annotations

import prometheus_client as prom

# controller-runtime's reconcile-time buckets (5 ms .. 60 s) and client-go's workqueue buckets.
_RECONCILE_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8,
    0.9, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25,
    30, 40, 50, 60,
)  # fmt: skip
_QUEUE_BUCKETS = tuple(10.0**e for e in range(-8, 2))


class Metrics:
    """Every collector the runtime updates. Create one per manager."""

    def __init__(self, registry: prom.CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else prom.CollectorRegistry()
        r = self.registry
        self.reconcile_total = prom.Counter(
            "controller_runtime_reconcile_total",
            "Total number of reconciliations per controller",
            ["controller", "result"],
            registry=r,
        )
        self.reconcile_errors = prom.Counter(
            "controller_runtime_reconcile_errors_total",
            "Total number of reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.terminal_errors = prom.Counter(
            "controller_runtime_terminal_reconcile_errors_total",
            "Total number of terminal reconciliation errors per controller",
            ["controller"],
            registry=r,
        )
        self.reconcile_time = prom.Histogram(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            ["controller"],
            buckets=_RECONCILE_BUCKETS,
            registry=r,
        )
        self.max_concurrent = prom.Gauge(
            "controller_runtime_max_concurrent_reconciles",
            "Maximum number of concurrent reconciles per controller",
            ["controller"],
            registry=r,
        )
        self.active_workers = prom.Gauge(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            ["controller"],
            registry=r,
        )
        self.depth = prom.Gauge(
            "workqueue_depth", "Current depth of workqueue", ["name"], registry=r
        )
        self.adds = prom.Counter(
            "workqueue_adds_total",
            "Total number of adds handled by workqueue",
            ["name"],
            registry=r,
        )
        self.retries = prom.Counter(
            "workqueue_retries_total",
            "Total number of retries handled by workqueue",
            ["name"],
            registry=r,
        )
        self.queue_duration = prom.Histogram(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            ["name"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.work_duration = prom.Histogram(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            ["name"],
            buckets=_QUEUE_BUCKETS,
            registry=r,
        )
        self.plugin_errors = prom.Counter(
            "runink_controller_plugin_errors_total",
            "Plugins that failed to load or to build their controllers",
            ["plugin", "stage"],
            registry=r,
        )
        self.watch_restarts = prom.Counter(
            "runink_informer_watch_restarts_total",
            "Watch streams restarted by an informer, by cause",
            ["kind", "cause"],
            registry=r,
        )
        self.last_event_age = prom.Gauge(
            "runink_informer_last_event_age_seconds",
            "Seconds since the informer last received an event or bookmark",
            ["kind"],
            registry=r,
        )

    def exposition(self) -> bytes:
        """The text exposition format of every metric (what ``/metrics`` serves)."""
        data: bytes = prom.generate_latest(self.registry)
        return data
