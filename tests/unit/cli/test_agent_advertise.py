"""Where `runink agent` tells the API server to dial its log endpoint (cli/_agent.py)."""

from __future__ import annotations

from runink.api import _agentlogs
from runink.cli import _agent


def test_api_host_of_each_target_form() -> None:
    assert _agent._api_host("10.0.0.5:7443") == "10.0.0.5"
    assert _agent._api_host("ipv4:10.0.0.5:7443,10.0.0.6:7453") == "10.0.0.5"
    assert _agent._api_host("[::1]:7443") == "::1"
    assert _agent._api_host("dns:///api.example:7443") == "api.example"


def test_advertised_address_explicit_then_bind_then_route_to_the_api() -> None:
    assert _agent.advertise_address("0.0.0.0", "10.1.2.3", "127.0.0.1:7443") == "10.1.2.3"
    assert _agent.advertise_address("10.9.9.9", None, "127.0.0.1:7443") == "10.9.9.9"
    assert _agent.advertise_address("0.0.0.0", None, "127.0.0.1:7443") == "127.0.0.1"
    assert _agent.node_addresses("127.0.0.1")[0] == {"type": "InternalIP", "address": "127.0.0.1"}
    assert _agent.node_addresses("node-a.lan") == [{"type": "Hostname", "address": "node-a.lan"}]


def test_node_log_target_prefers_internal_ip_and_needs_a_port() -> None:
    status = {
        "addresses": [
            {"type": "Hostname", "address": "a"},
            {"type": "ExternalIP", "address": "203.0.113.1"},
            {"type": "InternalIP", "address": "fd00::1"},
        ],
        "daemonEndpoints": {"logs": {"port": 10250}},
    }
    assert _agentlogs.node_log_target({"status": status}) == "[fd00::1]:10250"
    assert _agentlogs.node_log_target({"status": {**status, "daemonEndpoints": {}}}) is None
    assert (
        _agentlogs.node_log_target({"status": {"daemonEndpoints": status["daemonEndpoints"]}})
        is None
    )
