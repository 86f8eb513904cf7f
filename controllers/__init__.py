"""runink.controllers: the reconcile runtime, the built-in controllers' toolkit and the plugin SDK.

Plugin authors import from here (and ``runink.controllers.testing`` in tests) only. The pipeline
of a controller is controller-runtime's: informers (list + watch per kind, shared) -> mappers and
predicates -> a deduplicating, rate-limited work queue -> ``Reconciler.reconcile(Request)``.
The :class:`Manager` runs them all in one TaskGroup, gates leader-only controllers on a
:class:`LeaderElection`, and serves ``/metrics``, ``/healthz`` and ``/readyz``.
The scheduler's pure core lives in ``runink.controllers.scheduling``.
"""

from runink.controllers._builtin import builtin_controllers
from runink.controllers._client import Client
from runink.controllers._clock import Clock, SystemClock, Timer
from runink.controllers._controller import (
    Controller,
    ControllerBuilder,
    all_of,
    any_of,
    generation_changed,
    labels_match,
    owner_requests,
    resource_version_changed,
)
from runink.controllers._gc import FOREGROUND, ORPHAN, GarbageCollector, garbage_collector
from runink.controllers._gitops import ApplyClient, GitOps, GitSourceReconciler
from runink.controllers._helpers import (
    EventRecorder,
    add_finalizer,
    get_condition,
    has_finalizer,
    is_controlled_by,
    owner_reference,
    remove_finalizer,
    set_condition,
    set_controller_reference,
)
from runink.controllers._informer import Informer, InformerSet
from runink.controllers._manager import (
    AlwaysLeader,
    ControllerStatus,
    LeaderElection,
    Manager,
    StaticLeadership,
    list_controllers,
)
from runink.controllers._metrics import Metrics
from runink.controllers._pipelines import make_run
from runink.controllers._plugins import GROUP, PluginContext, PluginInfo, load_plugins
from runink.controllers._runs import LineageSink
from runink.controllers._types import Mapper, Predicate, Reconciler, Request, Result, TerminalError
from runink.controllers._workqueue import QueueShutDown, RateLimiter, WorkQueue

__all__ = [
    "FOREGROUND",
    "GROUP",
    "ORPHAN",
    "AlwaysLeader",
    "ApplyClient",
    "Client",
    "Clock",
    "Controller",
    "ControllerBuilder",
    "ControllerStatus",
    "EventRecorder",
    "GarbageCollector",
    "GitOps",
    "GitSourceReconciler",
    "Informer",
    "InformerSet",
    "LeaderElection",
    "LineageSink",
    "Manager",
    "Mapper",
    "Metrics",
    "PluginContext",
    "PluginInfo",
    "Predicate",
    "QueueShutDown",
    "RateLimiter",
    "Reconciler",
    "Request",
    "Result",
    "StaticLeadership",
    "SystemClock",
    "TerminalError",
    "Timer",
    "WorkQueue",
    "add_finalizer",
    "all_of",
    "any_of",
    "builtin_controllers",
    "garbage_collector",
    "generation_changed",
    "get_condition",
    "has_finalizer",
    "is_controlled_by",
    "labels_match",
    "list_controllers",
    "load_plugins",
    "make_run",
    "owner_reference",
    "owner_requests",
    "remove_finalizer",
    "resource_version_changed",
    "set_condition",
    "set_controller_reference",
]
