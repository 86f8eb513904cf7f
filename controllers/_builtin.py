"""The built-in controllers, assembled for a :class:`Manager` (``runink up`` and ``runink server``).

pipelines (cron -> runs, history) · runs (DAG -> Slices) · scheduler (Slices -> Nodes) ·
node-lifecycle (lost leases -> NotReady -> NodeLost) · herd-usage (usage vs quota) ·
garbage collector (ownerReferences; background, foreground, orphan).
"""

from __future__ import annotations

from runink.controllers import (
    _binder,
    _controller,
    _gc,
    _manager,
    _nodes,
    _pipelines,
    _runs,
    scheduling,
)


def builtin_controllers(
    manager: _manager.Manager,
    *,
    lineage: _runs.LineageSink | None = None,
    node_grace_period: float = 10.0,
    scheduler_policy: scheduling.Policy = "binpack",
) -> list[_controller.Controller]:
    """Every built-in controller, wired to the manager's client, clock, caches and recorder."""
    client, clock, informers, recorder = (
        manager.client,
        manager.clock,
        manager.informers,
        manager.recorder,
    )
    never = lambda old, new: False  # noqa: E731 - the scheduler is driven only by its watches
    return [
        _controller.Controller.builder("pipelines")
        .for_kind("Pipeline")
        .owns("PipelineRun")
        .max_concurrent(2)
        .build(_pipelines.PipelineReconciler(client, clock=clock, recorder=recorder)),
        _controller.Controller.builder("runs")
        .for_kind("PipelineRun")
        .owns("Slice")
        .max_concurrent(4)
        .rate_limits(qps=500.0, burst=1000)
        .build(
            _runs.RunReconciler(
                client, clock=clock, recorder=recorder, lineage=lineage, informers=informers
            )
        ),
        _controller.Controller.builder("scheduler")
        .for_kind("Slice")
        .with_predicates(never)
        .watches("Slice", _binder.to_scheduler)
        .watches("Node", _binder.to_scheduler)
        .watches("Herd", _binder.to_scheduler)
        .rate_limits(qps=500.0, burst=1000)
        .build(
            _binder.SchedulerReconciler(
                client, informers, clock=clock, recorder=recorder, policy=scheduler_policy
            )
        ),
        _controller.Controller.builder("node-lifecycle")
        .for_kind("Node")
        .max_concurrent(2)
        .build(
            _nodes.NodeLifecycleReconciler(
                client, informers, clock=clock, recorder=recorder, grace_period=node_grace_period
            )
        ),
        _controller.Controller.builder("herd-usage")
        .for_kind("Herd")
        .watches("Slice", _nodes.slices_to_herd)
        .rate_limits(qps=500.0, burst=1000)
        .build(_nodes.HerdUsageReconciler(client, informers)),
        *_gc.garbage_collector(
            client,
            owner_kinds=["Pipeline", "PipelineRun"],
            dependent_kinds=["PipelineRun", "Slice"],
        ),
    ]
