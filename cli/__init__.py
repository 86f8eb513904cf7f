"""runink.cli: the ``runink`` command (kubectl-like verbs over runink.api's client) and
``runink up``, the composition root that wires the Barn, the API server, the controllers and a
local agent into one process. ``main(argv, streams)`` returns the exit code (testable in-process).
"""

import os

# The agent forks small helpers (pyroute2, ctypes) beside gRPC's threads; gRPC's fork handlers
# then only print warnings, and none of those children use gRPC. Set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

from runink.cli._app import amain, main
from runink.cli._output import Streams
from runink.cli._up import Cluster, Component, components

__all__ = ["Cluster", "Component", "Streams", "amain", "components", "main"]
