"""runink.cli: the ``runink`` command (kubectl-like verbs over runink.api's client) and
``runink up``, the composition root that wires the Barn, the API server, the controllers and a
local agent into one process. ``main(argv, streams)`` returns the exit code (testable in-process).
"""

from runink.cli._app import amain, main
from runink.cli._output import Streams
from runink.cli._up import Cluster, Component, components

__all__ = ["Cluster", "Component", "Streams", "amain", "components", "main"]
