"""Each policy's own `check`: the one-line problems a scenario has for that policy, naming the YAML path,
and none for a scenario the policy can serve. The topologies are drawn in each test; reachability is
decided by hand from the arrows (a link with `duplex: false` goes one way only)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from netsim.network.topology import build_graph
from netsim.policies.cloud_only import CloudOnly
from netsim.policies.device_only import DeviceOnly
from netsim.policies.edge_only import EdgeOnly
from netsim.policies.registry import POLICIES
from netsim.scenario import parse_scenario

SLM, LLM = "shakespeare-slm", "shakespeare-llm"
EDGE_HINT = "; the device's own model is `device_only` (called edge_only before netsim 0.2)"


def _raw(policy: dict[str, Any]) -> dict[str, Any]:
    """phone1, phone2 ── gnb ──┬── edge  (LLM)
                               └── cloud (LLM); every link both ways. phone1 hosts the SLM, phone2 nothing."""
    return {
        "name": "checks",
        "topology": {
            "nodes": {
                "phone1": {"role": "device", "profile": "oneplus-12", "models": [SLM]},
                "phone2": {"role": "device", "profile": "oneplus-12"},
                "gnb": {"role": "router"},
                "edge": {"role": "edge", "profile": "nvidia-l4", "models": [LLM]},
                "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": [LLM]},
            },
            "links": [
                {"src": "phone1", "dst": "gnb", "rate_mbps": 100},
                {"src": "phone2", "dst": "gnb", "rate_mbps": 100},
                {"src": "gnb", "dst": "edge", "rate_mbps": 1000, "delay_ms": 2},
                {"src": "gnb", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 20},
            ],
        },
        "workload": {"n_requests": 1},
        "policy": policy,
    }


def _check(raw: dict[str, Any]) -> list[str]:
    scenario = parse_scenario(copy.deepcopy(raw))
    topo = scenario.topology
    graph = build_graph(topo.nodes, topo.links, topo.cells)
    problems = POLICIES[scenario.policy.name].check(scenario.policy, scenario, graph)
    for line in problems:
        assert "\n" not in line and line.split(":")[0].startswith(("policy.", "topology.")), line
    return problems


def _link(raw: dict[str, Any], src: str, dst: str) -> dict[str, Any]:
    return next(link for link in raw["topology"]["links"] if (link["src"], link["dst"]) == (src, dst))


def test_registry_holds_the_three_policy_classes() -> None:
    assert POLICIES["device_only"] is DeviceOnly
    assert POLICIES["edge_only"] is EdgeOnly
    assert POLICIES["cloud_only"] is CloudOnly


# -- device_only ----------------------------------------------------------------------------------------


def test_device_only_needs_a_model_on_every_requesting_device() -> None:
    raw = _raw({"name": "device_only"})
    assert _check(raw) == ["topology.nodes.phone2.models: device_only needs a model here"]
    raw["topology"]["nodes"]["phone2"]["models"] = [SLM]
    assert _check(raw) == []


def test_device_only_checks_only_the_devices_that_ask() -> None:
    raw = _raw({"name": "device_only"})
    raw["workload"]["devices"] = ["phone1"]
    assert _check(raw) == []  # phone2 has no model but issues no request


def test_device_only_named_model_must_be_on_the_device() -> None:
    raw = _raw({"name": "device_only", "model": LLM})
    raw["topology"]["nodes"]["phone2"]["models"] = [LLM]
    assert _check(raw) == [f"topology.nodes.phone1.models: device_only needs {LLM} here"]
    raw["policy"]["model"] = SLM
    assert _check(raw) == [f"topology.nodes.phone2.models: device_only needs {SLM} here"]


def test_device_only_needs_no_network() -> None:
    raw = _raw({"name": "device_only"})
    raw["topology"]["nodes"]["phone2"]["models"] = [SLM]
    raw["topology"]["links"] = []  # nobody reaches anybody
    assert _check(raw) == []


# -- edge_only / cloud_only: which server ---------------------------------------------------------------


def test_valid_server_policies_have_no_problems() -> None:
    for name in ("edge_only", "cloud_only"):
        assert _check(_raw({"name": name})) == []
        assert _check(_raw({"name": name, "model": LLM})) == []
    assert _check(_raw({"name": "edge_only", "server": "edge"})) == []
    assert _check(_raw({"name": "cloud_only", "server": "cloud", "model": LLM, "wire": "api_text"})) == []


def test_edge_only_without_an_edge_model_points_to_device_only() -> None:
    raw = _raw({"name": "edge_only"})
    raw["topology"]["nodes"]["edge"]["models"] = []  # an edge server with nothing to run
    problems = _check(raw)
    assert problems == [f"policy.name: edge_only needs an edge node hosting a model{EDGE_HINT}"]
    assert "device_only" in problems[0]
    # no edge node at all: the scenario an old `edge_only` (now device_only) file describes
    del raw["topology"]["nodes"]["edge"]
    raw["topology"]["links"] = [link for link in raw["topology"]["links"] if link["dst"] != "edge"]
    assert _check(raw) == problems


def test_edge_only_named_model_must_be_on_some_edge() -> None:
    assert _check(_raw({"name": "edge_only", "model": SLM})) == [
        f"policy.name: edge_only needs an edge node hosting {SLM}{EDGE_HINT}"]


def test_cloud_only_without_a_cloud_model() -> None:
    raw = _raw({"name": "cloud_only", "model": SLM})
    assert _check(raw) == [f"policy.name: cloud_only needs a cloud node hosting {SLM}"]  # no edge hint
    raw["policy"] = {"name": "cloud_only"}
    raw["topology"]["nodes"]["cloud"]["models"] = []
    assert _check(raw) == ["policy.name: cloud_only needs a cloud node hosting a model"]


@pytest.mark.parametrize("name", ["edge_only", "cloud_only"])
def test_unknown_server(name: str) -> None:
    assert _check(_raw({"name": name, "server": "nowhere"})) == ["policy.server: unknown node 'nowhere'"]


@pytest.mark.parametrize("name", ["edge_only", "cloud_only"])
def test_server_without_the_model(name: str) -> None:
    assert _check(_raw({"name": name, "server": "edge", "model": SLM})) == [
        f"policy.model: edge hosts no model {SLM}"]
    assert _check(_raw({"name": name, "server": "gnb"})) == ["policy.model: gnb hosts no model"]


# -- edge_only / cloud_only: reachability ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "server"), [("edge_only", "edge"), ("cloud_only", "cloud")])
def test_a_one_way_link_leaves_a_device_without_a_route(name: str, server: str) -> None:
    raw = _raw({"name": name})
    _link(raw, "phone2", "gnb")["duplex"] = False  # phone2 → gnb only: answers never come back
    assert _check(raw) == [f"topology.nodes.phone2: no route to and from any {name} server ({server})"]
    # the other way round (gnb → phone2 only): the prompt cannot go up
    raw["topology"]["links"] = [link for link in raw["topology"]["links"] if link["src"] != "phone2"]
    raw["topology"]["links"].append({"src": "gnb", "dst": "phone2", "rate_mbps": 100, "duplex": False})
    assert _check(raw) == [f"topology.nodes.phone2: no route to and from any {name} server ({server})"]
    # ... and with the named server too
    raw["policy"]["server"] = server
    assert _check(raw) == [f"topology.nodes.phone2: no route to and from any {name} server ({server})"]


def test_every_unreachable_requesting_device_is_listed() -> None:
    raw = _raw({"name": "cloud_only"})
    _link(raw, "gnb", "cloud")["duplex"] = False  # gnb → cloud only: no device hears back from the cloud
    assert _check(raw) == [f"topology.nodes.{d}: no route to and from any cloud_only server (cloud)"
                           for d in ("phone1", "phone2")]
    raw["workload"]["devices"] = ["phone2"]
    assert _check(raw) == ["topology.nodes.phone2: no route to and from any cloud_only server (cloud)"]


def test_edge_only_does_not_need_the_cloud_and_cloud_only_does_not_need_the_edge() -> None:
    raw = _raw({"name": "edge_only"})
    raw["topology"]["links"] = [link for link in raw["topology"]["links"] if link["dst"] != "cloud"]
    assert _check(raw) == []  # the cloud is cut off, which edge_only does not care about
    raw["policy"] = {"name": "cloud_only"}
    assert _check(raw) == ["topology.nodes.phone1: no route to and from any cloud_only server (cloud)",
                           "topology.nodes.phone2: no route to and from any cloud_only server (cloud)"]
    raw = _raw({"name": "cloud_only"})
    raw["topology"]["links"] = [link for link in raw["topology"]["links"] if link["dst"] != "edge"]
    assert _check(raw) == []


def test_one_reachable_server_of_the_tier_is_enough() -> None:
    """Two edge servers, one cut off: every device still reaches the other, so nothing is wrong; cut both
    and the problem lists both servers."""
    raw = _raw({"name": "edge_only"})
    raw["topology"]["nodes"]["edge2"] = {"role": "edge", "profile": "nvidia-l4", "models": [LLM]}
    assert _check(raw) == []  # edge2 has no link at all
    raw["topology"]["links"] = [link for link in raw["topology"]["links"] if link["dst"] != "edge"]
    assert _check(raw) == [f"topology.nodes.{d}: no route to and from any edge_only server (edge, edge2)"
                           for d in ("phone1", "phone2")]
