"""What keeps ten thousand devices cheap: one search per server (nearest server, policy reachability)
equal to the per-pair brute force it replaced, profiles/manifests/cards parsed once per run however
many nodes name them, and validation sitting above the world with nothing below importing it."""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np
import pytest

import netsim.inputfile
import netsim.lm.cards
import netsim.lm.manifest
from netsim.errors import InputError
from netsim.lm.zoo import ModelStore
from netsim.network.topology import build_graph
from netsim.policies.remote import check_servers
from netsim.scenario import Scenario, parse_scenario
from netsim.simulation import run
from netsim.validation import check_scenario
from netsim.world import Catalog, build_world

MODELS = ("shakespeare-slm", "shakespeare-llm")


@pytest.fixture(scope="module")
def store() -> ModelStore:
    warm = ModelStore()
    for name in MODELS:  # loaded once here, so the tests below count only what a run parses
        warm.load(name)
    return warm


def random_scenario(seed: int, n_devices: int = 14, n_routers: int = 4, n_servers: int = 5) -> Scenario:
    """Devices, routers and edge/cloud servers joined by random links with random delays; a third of
    the links one-way, so some devices reach some servers in one direction only, and some not at all."""
    rng = np.random.default_rng(seed)
    devices = [f"d{i}" for i in range(n_devices)]
    routers = [f"r{i}" for i in range(n_routers)]
    servers = [f"s{i}" for i in range(n_servers)]
    nodes: dict[str, Any] = {d: {"role": "device", "profile": "oneplus-12"} for d in devices}
    nodes |= {r: {"role": "router"} for r in routers}
    for s in servers:
        hosted = [m for m in MODELS if rng.random() < 0.6] or [MODELS[int(rng.integers(2))]]
        role = str(rng.choice(["edge", "cloud"]))
        nodes[s] = {"role": role, "profile": "nvidia-a100-80gb", "models": hosted}
    pairs: set[frozenset[str]] = set()
    links = []

    def link(a: str, b: str) -> None:
        if a == b or frozenset((a, b)) in pairs:
            return
        pairs.add(frozenset((a, b)))
        links.append({"src": a, "dst": b, "rate_mbps": 100, "delay_ms": float(rng.uniform(0.5, 40.0)),
                      "duplex": bool(rng.random() > 0.33)})

    for d in devices[:-1]:  # the last device stays isolated: nothing reaches it
        link(d, str(rng.choice(routers)))
    for _ in range(n_routers + 2):
        link(str(rng.choice(routers)), str(rng.choice(routers)))
    for s in servers:
        for r in rng.choice(routers, size=int(rng.integers(1, 3)), replace=False):
            link(str(r), s)
    return parse_scenario({"name": "random", "topology": {"nodes": nodes, "links": links},
                           "workload": {"n_requests": 1}, "policy": {"name": "cloud_only"}})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nearest_server_equals_brute_force(seed: int, store: ModelStore) -> None:
    world = build_world(random_scenario(seed), store)
    net = world.net
    devices = [n for n in world.nodes.values() if n.role == "device"]
    asked = 0
    for roles in (("edge",), ("cloud",), ("edge", "cloud")):
        for model in (None, *MODELS):
            for device in devices:
                # The old way: every server, one route search per (device, server) pair.
                candidates = [(net.route_delay_s(device.name, s.name), s.name) for s in world.nodes.values()
                              if s.role in roles and s.hosts(model) and net.has_route(device.name, s.name)]
                if candidates:
                    assert world.nearest(device.name, roles, model).name == min(candidates)[1]
                    asked += 1
                else:
                    with pytest.raises(InputError, match=f"reachable from {device.name}"):
                        world.nearest(device.name, roles, model)
    assert asked > len(devices)  # the random graphs do connect most devices to something


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_policy_reachability_check_equals_brute_force(seed: int) -> None:
    scenario = random_scenario(seed)
    topo = scenario.topology
    graph = build_graph(topo.nodes, topo.links, topo.cells)
    for role in ("edge", "cloud"):
        servers = [n for n, s in topo.nodes.items() if s.role == role and s.models]
        if not servers:
            continue
        expected = [f"topology.nodes.{d}: no route to and from any cloud_only server ({', '.join(servers)})"
                    for d in scenario.request_devices
                    if not any(nx.has_path(graph, d, s) and nx.has_path(graph, s, d) for s in servers)]
        assert check_servers("cloud_only", role, None, None, scenario, graph) == expected
        assert expected  # the isolated device at least


def fleet(n_phones: int) -> Scenario:
    """`n_phones` phones of one kind (same profile, model and card) behind one router, one cloud."""
    phone = {"role": "device", "profile": "oneplus-12",
             "models": [{"name": "shakespeare-slm", "charged_as": "qwen3-0.6b"}]}
    nodes: dict[str, Any] = {f"phone{i}": phone for i in range(n_phones)}
    nodes["gw"] = {"role": "router"}
    nodes["cloud"] = {"role": "cloud", "profile": "nvidia-a100-80gb",
                      "models": [{"name": "shakespeare-llm", "charged_as": "qwen3-8b"}]}
    links = [{"src": f"phone{i}", "dst": "gw", "rate_mbps": 50, "delay_ms": 3} for i in range(n_phones)]
    links.append({"src": "gw", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 10})
    return parse_scenario({"name": "fleet", "topology": {"nodes": nodes, "links": links},
                           "workload": {"n_requests": 2, "max_new_tokens": 2},
                           "policy": {"name": "cloud_only"}})


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """File name → times a profile, manifest or card YAML was parsed (every parse goes through load_yaml;
    device and runtime profiles through inputfile.read_model, which calls it)."""
    counts: Counter[str] = Counter()
    for module in (netsim.inputfile, netsim.lm.manifest, netsim.lm.cards):
        real = module.load_yaml

        def counting(path: Path, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            counts[f"{Path(path).parent.name}/{Path(path).name}"] += 1
            return _real(path, *args, **kwargs)

        monkeypatch.setattr(module, "load_yaml", counting)
    return counts


def test_validation_and_build_parse_each_file_once(store: ModelStore, parses: Counter[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("netsim.validation.budget_problems", lambda *_: [])  # it reads per kind; see below
    catalog = Catalog(store)
    scenario = fleet(60)
    check_scenario(scenario, store, catalog=catalog)
    world = build_world(scenario, store, catalog=catalog)
    assert parses == {"device_profiles/oneplus-12.yaml": 1, "device_profiles/nvidia-a100-80gb.yaml": 1,
                      "runtime_profiles/executorch.yaml": 1, "runtime_profiles/llama.cpp.yaml": 1,
                      "shakespeare-slm/model.yaml": 1, "shakespeare-llm/model.yaml": 1,
                      "cards/qwen3-0.6b.yaml": 1, "cards/qwen3-8b.yaml": 1}
    assert catalog.reads == 8
    phones = [n for n in world.nodes.values() if n.role == "device"]
    assert all(p.profile is phones[0].profile and p.models[0] is phones[0].models[0] for p in phones)


def test_a_whole_run_parses_as_often_for_sixty_phones_as_for_two(store: ModelStore,
                                                                 parses: Counter[str]) -> None:
    run(fleet(2), store)
    few = Counter(parses)
    parses.clear()
    run(fleet(60), store)
    assert parses == few
    # Once through the run's Catalog (shared by validation and the world build), and at most once more
    # by the budget's estimate, which reads its own copy per kind of node (netsim/budget.py).
    assert max(parses.values()) <= 2


def test_a_bad_profile_is_read_once_and_blamed_on_every_node(store: ModelStore, parses: Counter[str],
                                                             tmp_path: Path) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\n")
    scenario = fleet(30)
    nodes = {n: (s.model_copy(update={"profile": str(bad)}) if s.role == "device" else s)
             for n, s in scenario.topology.nodes.items()}
    scenario = scenario.model_copy(update={"topology": scenario.topology.model_copy(update={"nodes": nodes})})
    with pytest.raises(InputError) as err:
        check_scenario(scenario, store)
    assert sum(".profile:" in p for p in err.value.problems) == 30  # type: ignore[attr-defined]
    assert parses[f"{tmp_path.name}/broken.yaml"] == 1


def _netsim_imports(path: Path) -> set[str]:
    """Modules of netsim a source file imports, at any level (TYPE_CHECKING blocks included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("netsim"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("netsim")}
    return found


def test_validation_sits_above_world_and_policies() -> None:
    """Only the entry points (the run, sweeps, the command line) import validation: the world, the
    policies and the schema never do, so no cycle runs through it, not even one under TYPE_CHECKING."""
    root = Path(netsim.hardware.profile.__file__).parents[1]
    importers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                       if "netsim.validation" in _netsim_imports(p))
    below = ("world.py", "scenario.py", "groups.py", "workload.py", "metrics.py", "context.py", "budget.py",
             "policies/", "network/", "hardware/", "lm/")
    assert "simulation.py" in importers and not [p for p in importers if p.startswith(below)]


def test_the_graph_check_lives_in_validation_not_the_schema(store: ModelStore) -> None:
    """A second hop in one direction needs the graph: the schema (no runtime imports) lets it through,
    validation names it with its YAML path."""
    scenario = fleet(2)
    links = [*scenario.topology.links, scenario.topology.links[-1].model_copy(update={"src": "cloud",
                                                                                     "dst": "gw"})]
    raw = scenario.model_dump(mode="json")
    raw["topology"]["links"] = [link.model_dump(mode="json") for link in links]
    doubled = parse_scenario(raw)  # the schema accepts it
    with pytest.raises(InputError, match=r"topology\.links\[3\]: a second hop cloud->gw"):
        check_scenario(doubled, store)


def test_a_group_is_blamed_once_not_per_member(store: ModelStore, tmp_path: Path) -> None:
    """Five hundred phones written as one group: a bad profile or a missing route is one line naming
    the group entry, not five hundred naming members the user never wrote."""
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\n")
    raw: dict[str, Any] = {
        "name": "groups",
        "topology": {
            "nodes": {"gw": {"role": "router"}, "island": {"role": "router"},
                      "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb",
                                "models": ["shakespeare-llm"]}},
            "groups": [{"name": "bad", "count": 500, "profile": str(bad),
                        "links": [{"to": "gw", "rate_mbps": 50}]},
                       {"name": "cut", "count": 500, "profile": "oneplus-12",
                        "links": [{"to": "island", "rate_mbps": 50}]}],
            "links": [{"src": "gw", "dst": "cloud", "rate_mbps": 1000}]},
        "workload": {"n_requests": 2}, "policy": {"name": "cloud_only"}}
    with pytest.raises(InputError) as err:
        check_scenario(parse_scenario(raw), store)
    problems = err.value.problems  # type: ignore[attr-defined]
    assert len(problems) == 1 and problems[0].startswith("topology.groups[0].profile: ")
    raw["topology"]["groups"][0]["profile"] = "oneplus-12"  # the profile fixed, the route check runs
    with pytest.raises(InputError) as err:
        check_scenario(parse_scenario(raw), store)
    assert err.value.problems == [  # type: ignore[attr-defined]
        "topology.groups[1]: no route to and from any cloud_only server (cloud)"]
