"""runink.agent: the Runi Agent, which runs Slices on one node as isolated processes.

Start the fork server first, before heavy imports (``launcher = Launcher.start()``), then run
``SliceRuntime(state_dir, launcher)`` (start / wait / stop / usage / recover) directly, or the
whole daemon with ``Agent(client, runtime, AgentConfig(node_name=...)).run()``.
"""

from runink.agent._cgroups import Limits, Usage, detect as detect_cgroups
from runink.agent._daemon import Agent, AgentConfig, Client, run_agent, spec_from_slice
from runink.agent._datasets import DatasetError
from runink.agent._fluent import (
    Forwarder as FluentForwarder,
    parse_address as parse_fluentd_address,
)
from runink.agent._launcher import Launcher, LaunchError, LaunchRequest
from runink.agent._logs import SliceLogSource, follow as follow_logs, tail as tail_logs
from runink.agent._metrics import SliceCollector, make_registry
from runink.agent._runtime import (
    Outcome,
    Recovered,
    Resources,
    SliceRuntime,
    SliceSpec,
    choose_python,
)

__all__ = [
    "Agent",
    "AgentConfig",
    "Client",
    "DatasetError",
    "FluentForwarder",
    "LaunchError",
    "LaunchRequest",
    "Launcher",
    "Limits",
    "Outcome",
    "Recovered",
    "Resources",
    "SliceCollector",
    "SliceLogSource",
    "SliceRuntime",
    "SliceSpec",
    "Usage",
    "choose_python",
    "detect_cgroups",
    "follow_logs",
    "make_registry",
    "parse_fluentd_address",
    "run_agent",
    "spec_from_slice",
    "tail_logs",
]
