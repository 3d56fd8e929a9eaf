"""A `World` is one simulation instance built from a `Scenario`: SimPy environment, network, nodes with
their emulated hardware and hosted models, and the recorder. No globals: two worlds never share state,
except the (read-only, memoised) language models a `ModelStore` hands out.

The checks that need data beyond the YAML live one layer up, in `netsim.validation`; `build_world`
trusts a scenario that passed them. Both read profiles, manifests and cost cards through one `Catalog`
per run, so a fleet of ten thousand phones of one kind costs one read of each file, not ten thousand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from itertools import pairwise
from typing import TypeVar

import networkx as nx
import numpy as np
import simpy

from netsim.errors import InputError
from netsim.hardware.batching import BatchingCompute
from netsim.hardware.compute import Compute
from netsim.hardware.profile import DeviceProfile, load_device
from netsim.hardware.runtime import RuntimeProfile, load_runtime
from netsim.lm.geometry import ModelGeometry
from netsim.lm.manifest import Manifest
from netsim.lm.memo import LanguageModel
from netsim.lm.zoo import ModelStore
from netsim.network.network import Network, build_network
from netsim.network.topology import route_weight
from netsim.recorder import Recorder
from netsim.scenario import ModelRef, Scenario

# Independent random streams, one per subsystem, so adding draws in one never shifts another.
STREAM_NETWORK = 1
STREAM_WORKLOAD = 2

T = TypeVar("T")


def rng_for(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream])


class Catalog:
    """Device and runtime profiles, model manifests and cost cards of one run, each read and validated
    once (and each device bound to each runtime it runs once).

    A scenario names the same profile and card on every node of a kind; validation and the world build
    ask the catalog, which parses a file on first use and hands the same frozen object out after. A
    failure is remembered as well, so a bad reference repeated on ten thousand nodes costs one read
    (validation still blames each node that names it; a group's members share one line). One catalog
    lives for one run (or one `netsim validate`), never longer: a profile edited or a model rebuilt
    between two runs of a process is read afresh.
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._entries: dict[tuple[str, str], object] = {}
        self.reads = 0
        """Files parsed so far (cache misses): what the scale tests count."""

    def profile(self, name: str, runtime: str | None = None) -> DeviceProfile:
        """The device profile `name` (a bundled name or a file path) bound to `runtime` (a bundled
        runtime's name or a runtime file's path; None: the profile's own): what the node computes on.
        A failure of the runtime names it: validation blames `runtime`, not `profile`, for it."""
        def bind(_: str) -> DeviceProfile:
            device = self.device(name)
            return device.with_runtime(self.runtime(runtime or device.runtime), runtime)
        return self._get("profile", f"{name}\0{runtime or ''}", bind, counts=False)

    def device(self, name: str) -> DeviceProfile:
        """A device profile as written, not bound to a runtime (`load_device`)."""
        return self._get("device", name, load_device)

    def runtime(self, name: str) -> RuntimeProfile:
        """A bundled runtime profile by name or a runtime file by path (`load_runtime`)."""
        return self._get("runtime", name, load_runtime)

    def manifest(self, model: str) -> Manifest:
        return self._get("manifest", model, self.store.manifest)

    def card(self, name: str) -> ModelGeometry:
        """Geometry of a bundled cost card or of a card file (`ModelStore.card`)."""
        return self._get("card", name, self.store.card)

    def _get(self, kind: str, name: str, read: Callable[[str], T], *, counts: bool = True) -> T:
        key = (kind, name)
        if key not in self._entries:
            self.reads += counts  # a binding of two files already read is no read
            try:
                self._entries[key] = read(name)
            except InputError as exc:
                self._entries[key] = exc
        entry = self._entries[key]
        if isinstance(entry, InputError):
            raise entry.with_traceback(None)  # no traceback piling up when one bad file is met N times
        return entry  # type: ignore[return-value]  # stored by the `read` of this kind

    def __repr__(self) -> str:
        return f"Catalog({len(self._entries)} entries, {self.reads} files read)"


@dataclass(frozen=True)
class HostedModel:
    """A model on a node: tokens come from `lm`; compute and bytes are charged as `charged`."""

    name: str
    lm: LanguageModel
    charged: ModelGeometry
    charged_as: str | None = None

    @cached_property
    def label(self) -> str:
        """`name as card`: the detail of every compute event, so built once, not once per call."""
        return f"{self.name} as {self.charged_as}" if self.charged_as else self.name


@dataclass
class Node:
    name: str
    role: str
    profile: DeviceProfile | None = None
    compute: Compute | BatchingCompute | None = None
    models: list[HostedModel] = field(default_factory=list)
    profile_ref: str | None = None
    """The scenario's `profile:` as written (a bundled name or a file path): what summaries group by."""

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
    _nearest: dict[tuple[tuple[str, ...], str | None], dict[str, str]] = field(default_factory=dict,
                                                                           repr=False)
    """(roles, model) → requesting node → its nearest server's name, filled on first ask per key."""

    def nearest(self, src: str, roles: tuple[str, ...], model: str | None = None) -> Node:
        """The node of one of `roles` hosting `model` (any model if None) that `src` reaches with the
        least route latency (ties: the first name).

        One Dijkstra per candidate server, run once per (roles, model) for every node at once: asking
        for each of N devices would otherwise cost N searches per server.
        """
        key = (roles, model)
        table = self._nearest.get(key)
        if table is None:
            table = self._nearest[key] = self._nearest_table(roles, model)
        name = table.get(src)
        if name is None:
            raise InputError(
                f"no {'/'.join(roles)} node hosting {model or 'a model'} is reachable from {src}")
        return self.nodes[name]

    def _nearest_table(self, roles: tuple[str, ...], model: str | None) -> dict[str, str]:
        graph = self.net.graph
        towards = graph.reverse(copy=False)  # a search from the server over reversed edges: every src → it
        best: dict[str, tuple[float, str]] = {}
        for server in self.nodes.values():
            if server.role not in roles or not server.hosts(model):
                continue
            _, paths = nx.single_source_dijkstra(towards, server.name, weight=route_weight)
            for src, path in paths.items():
                # The route's own latency, summed from src along the path as Network.path sums it, so
                # the ranking matches `net.route_delay_s` exactly.
                delay_s = sum(graph.edges[a, b]["delay_s"] for a, b in pairwise(reversed(path)))
                cost = (delay_s, server.name)
                if src not in best or cost < best[src]:
                    best[src] = cost
        return {src: name for src, (_, name) in best.items()}


def build_world(scenario: Scenario, store: ModelStore | None = None, *, catalog: Catalog | None = None
                ) -> World:
    """Assemble everything; run `netsim.validation.check_scenario` first — this trusts its input.

    Nodes alike share their profile and `HostedModel` objects (both frozen), so ten thousand phones
    hold one of each rather than ten thousand copies.
    """
    store = store or (catalog.store if catalog is not None else ModelStore())
    catalog = catalog or Catalog(store)
    env = simpy.Environment()
    recorder = Recorder()
    topo = scenario.topology
    net = build_network(env, topo.nodes, topo.links, topo.cells, topo.transport,
                        rng_for(scenario.seed, STREAM_NETWORK), recorder)
    hosted_by_ref: dict[ModelRef, HostedModel] = {}
    nodes: dict[str, Node] = {}
    for name, spec in topo.nodes.items():
        if spec.role == "router" or spec.profile is None:
            nodes[name] = Node(name, spec.role)
            continue
        profile = catalog.profile(spec.profile, spec.runtime)  # the device × its runtime
        hosted = []
        for ref in spec.models:
            if ref not in hosted_by_ref:
                lm = store.load(ref.name)
                charged = catalog.card(ref.charged_as) if ref.charged_as else lm.geometry
                charged = charged.charged_with(ref.format, ref.kv_dtype)  # the node's weight format, KV dtype
                hosted_by_ref[ref] = HostedModel(ref.name, lm, charged, ref.charged_as)
            hosted.append(hosted_by_ref[ref])
        compute = (BatchingCompute(env, name, profile, recorder, max_batch=spec.batching.max_batch)
                   if spec.batching else Compute(env, name, profile, recorder, slots=spec.slots))
        nodes[name] = Node(name, spec.role, profile, compute, hosted, spec.profile)
    return World(env, scenario, net, nodes, recorder, store)
