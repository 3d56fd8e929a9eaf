"""A `World` is one simulation instance built from a `Scenario`: SimPy environment, network, nodes with
their emulated hardware and hosted models, and the recorder. No globals: two worlds never share state,
except the (read-only, memoised) language models a `ModelStore` hands out.

`check_scenario` runs the checks that need data beyond the YAML (profiles, model manifests, cost cards,
memory fit, routes); `netsim validate` and `netsim run` call it before anything is simulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import simpy

from netsim.errors import InputError, ScenarioError
from netsim.hardware.batching import BatchingCompute
from netsim.hardware.compute import Compute
from netsim.hardware.profile import DeviceProfile, load_profile
from netsim.lm.geometry import ModelGeometry
from netsim.lm.memo import LanguageModel
from netsim.lm.zoo import ModelStore
from netsim.network.network import Network, build_network
from netsim.network.topology import build_graph
from netsim.recorder import Recorder
from netsim.scenario import Scenario
from netsim.workload import check_workload_files

# Independent random streams, one per subsystem, so adding draws in one never shifts another.
STREAM_NETWORK = 1
STREAM_WORKLOAD = 2


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


@dataclass(frozen=True)
class HostedModel:
    """A model on a node: tokens come from `lm`; compute and bytes are charged as `charged`."""

    name: str
    lm: LanguageModel
    charged: ModelGeometry
    charged_as: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name} as {self.charged_as}" if self.charged_as else self.name


@dataclass
class Node:
    name: str
    role: str
    profile: DeviceProfile | None = None
    compute: Compute | BatchingCompute | None = None
    models: list[HostedModel] = field(default_factory=list)

    def model(self, name: str | None = None) -> HostedModel:
        """The hosted model called `name`, or the first one; scenario checks guarantee it exists."""
        if name is None:
            return self.models[0]
        return next(m for m in self.models if m.name == name)

    def hosts(self, name: str | None = None) -> bool:
        return bool(self.models) if name is None else any(m.name == name for m in self.models)

    def __repr__(self) -> str:
        models = ", ".join(m.label for m in self.models) or "no models"
        return f"Node({self.name!r}, {self.role}, {self.profile.name if self.profile else '-'}, {models})"


@dataclass
class World:
    env: simpy.Environment
    scenario: Scenario
    net: Network
    nodes: dict[str, Node]
    recorder: Recorder
    store: ModelStore

    def nearest(self, src: str, roles: tuple[str, ...], model: str | None = None) -> Node:
        """The reachable node of one of `roles` hosting `model` (any model if None) with least latency."""
        best: tuple[float, str] | None = None
        for node in self.nodes.values():
            if node.role in roles and node.hosts(model) and self.net.has_route(src, node.name):
                cost = (self.net.route_delay_s(src, node.name), node.name)
                best = cost if best is None or cost < best else best
        if best is None:
            raise InputError(
                f"no {'/'.join(roles)} node hosting {model or 'a model'} is reachable from {src}")
        return self.nodes[best[1]]


def build_world(scenario: Scenario, store: ModelStore | None = None) -> World:
    """Assemble everything; call `check_scenario` first — this trusts its input."""
    store = store or ModelStore()
    env = simpy.Environment()
    recorder = Recorder()
    topo = scenario.topology
    net = build_network(env, topo.nodes, topo.links, topo.cells, topo.transport,
                        rng_for(scenario.seed, STREAM_NETWORK), recorder)
    nodes: dict[str, Node] = {}
    for name, spec in topo.nodes.items():
        if spec.role == "router":
            nodes[name] = Node(name, spec.role)
            continue
        profile = load_profile(spec.profile)
        hosted = []
        for ref in spec.models:
            lm = store.load(ref.name)
            charged = store.card(ref.charged_as) if ref.charged_as else lm.geometry
            hosted.append(HostedModel(ref.name, lm, charged, ref.charged_as))
        compute = (BatchingCompute(env, name, profile, recorder, max_batch=spec.batching.max_batch)
                   if spec.batching else Compute(env, name, profile, recorder, slots=spec.slots))
        nodes[name] = Node(name, spec.role, profile, compute, hosted)
    return World(env, scenario, net, nodes, recorder, store)


def check_scenario(scenario: Scenario, store: ModelStore | None = None) -> None:
    """Raise ScenarioError listing every problem that needs more than the YAML to see."""
    from netsim.policies import POLICIES  # policies sit above the world; import at call time

    store = store or ModelStore()
    problems: list[str] = []
    topo = scenario.topology
    for name, spec in topo.nodes.items():
        where = f"topology.nodes.{name}"
        profile = None
        if spec.profile is not None:
            try:
                profile = load_profile(spec.profile)
            except InputError as exc:
                problems.append(f"{where}.profile: {exc}")
        charged: list[ModelGeometry] = []
        for i, ref in enumerate(spec.models):
            try:
                geometry = store.manifest(ref.name).geometry
                if ref.charged_as:
                    geometry = store.card(ref.charged_as)
                charged.append(geometry)
            except InputError as exc:
                field_name = "charged_as" if ref.charged_as and "card" in str(exc) else "name"
                problems.append(f"{where}.models[{i}].{field_name}: {exc}")
        if profile is not None and charged:
            # Weights plus the KV cache of every slot's generated tokens: a lower bound (prompts add more).
            problem = profile.fit_problem(charged, kv_tokens=spec.slots * scenario.workload.max_new_tokens)
            if problem:
                problems.append(f"{where}.models: {problem}")
    graph = build_graph(topo.nodes, topo.links, topo.cells)
    # Reachability is the policy's rule (device_only needs none; cloud_only needs a cloud): see policies.
    if not problems:
        problems += POLICIES[scenario.policy.name].check(scenario.policy, scenario, graph)
    problems += check_workload_files(scenario)  # prompt file and trace, read as the run would read them
    if not problems:  # the work must fit this machine; the estimate needs every other check passed
        from netsim.budget import budget_problems

        problems += budget_problems(scenario, store)
    if problems:
        raise ScenarioError(problems)
