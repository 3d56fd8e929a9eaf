"""The checks a scenario must pass before anything is simulated, beyond what its schema can see.

`netsim.scenario` checks the YAML alone (types, ranges, names that refer to nodes) and imports no
runtime code. What needs more lives here, one layer above the world and the policies: the topology
as a graph (one hop per direction, unique cell names), device profiles, model manifests, cost cards,
whether the hosted models fit in memory, the prompt file and trace, each policy's own rules (routes
are the rule of the policies that send, not a global one) and the work budget. `netsim validate` and
`netsim run` call `check_scenario`; every problem is one `yaml.path: message` line.

Files are read through a `Catalog`, so a fleet of one device kind reads its profile, manifest and card
once; hand the same catalog to `build_world` and the run reads none of them again.
"""

from __future__ import annotations

from netsim.budget import budget_problems
from netsim.errors import InputError, ScenarioError
from netsim.hardware.profile import DeviceProfile
from netsim.hardware.quant import PLAIN_FORMATS
from netsim.hardware.runtime import RuntimeProfile
from netsim.lm.geometry import ModelGeometry
from netsim.lm.zoo import ModelStore
from netsim.network.topology import build_graph
from netsim.policies.registry import POLICIES
from netsim.scenario import NodeSpec, Scenario
from netsim.workload import check_workload_files
from netsim.world import Catalog

__all__ = ["check_scenario"]

PLAIN_FORMAT_OF = {dtype: name for name, dtype in PLAIN_FORMATS.items()}
"""A geometry dtype as the plain format a runtime lists (bfloat16 → bf16)."""


def check_scenario(scenario: Scenario, store: ModelStore | None = None, *, catalog: Catalog | None = None
                   ) -> None:
    """Raise ScenarioError listing every problem that needs more than the YAML to see.

    The policy's checks and the budget run only when the nodes are sound: both read the graph and the
    hosted models, and a line blaming a route for what is really a missing profile would mislead.
    """
    store = store or (catalog.store if catalog is not None else ModelStore())
    catalog = catalog or Catalog(store)
    problems: list[str] = []
    topo = scenario.topology
    kv_tokens_per_slot = scenario.workload.max_new_tokens
    fit: dict[tuple[str, tuple[ModelGeometry, ...], int], str | None] = {}
    where_is = topo.yaml_paths()  # a group's member is blamed on the group entry the user wrote
    for name, spec in topo.nodes.items():
        where = where_is[name]
        node_problems, profile, charged = _node_problems(where, spec, catalog)
        problems += node_problems
        if profile is None or spec.profile is None or not charged:
            continue
        # Weights plus the KV cache of every slot's generated tokens: a lower bound (prompts add more).
        # Nodes of one kind give one answer: ten thousand phones are one memory check.
        kind = (spec.profile, tuple(charged), spec.slots)
        if kind not in fit:
            fit[kind] = profile.fit_problem(charged, kv_tokens=spec.slots * kv_tokens_per_slot)
        if fit[kind]:
            problems.append(f"{where}.models: {fit[kind]}")
    try:
        graph = build_graph(topo.nodes, topo.links, topo.cells)
    except InputError as exc:  # a second hop in one direction, two cells of one name
        problems.append(f"topology.{exc}")
        graph = None
    if not problems and graph is not None:
        problems += POLICIES[scenario.policy.name].check(scenario.policy, scenario, graph)
    problems += check_workload_files(scenario)  # prompt file and trace, read as the run would read them
    if not problems:  # the work must fit this machine; the estimate needs every other check passed
        problems += budget_problems(scenario, store)
    if problems:  # ten thousand members of one group share their lines: each is said once
        raise ScenarioError(list(dict.fromkeys(problems)))


def _node_problems(where: str, spec: NodeSpec, catalog: Catalog
                   ) -> tuple[list[str], DeviceProfile | None, list[ModelGeometry]]:
    """One node's profile, runtime and models: the problem lines, the profile bound to its runtime if
    both read, and the geometry of each model that reads, as billed (its card's if it has one)."""
    problems: list[str] = []
    profile = None
    runtime: RuntimeProfile | None = None
    if spec.profile is not None:
        try:
            device = catalog.device(spec.profile)
        except InputError as exc:
            problems.append(f"{where}.profile: {exc}")
        else:
            # a runtime the node names is its own line; the profile's default runtime is the profile's
            blame = f"{where}.runtime" if spec.runtime else f"{where}.profile"
            try:
                runtime = catalog.runtime(spec.runtime or device.runtime)
                profile = catalog.profile(spec.profile, spec.runtime)
            except InputError as exc:
                problems.append(f"{blame}: {exc}")
    charged: list[ModelGeometry] = []
    for i, ref in enumerate(spec.models):
        try:  # the model first: a card bills a model that must exist
            geometry = catalog.manifest(ref.name).geometry
            if ref.charged_as:
                geometry = catalog.card(ref.charged_as)
            geometry = geometry.charged_with(ref.format, ref.kv_dtype)  # as the world will charge it
        except ValueError as exc:  # InputError: the model or card; else a format that cannot pack
            field_name = ("format" if not isinstance(exc, InputError)
                          else "charged_as" if ref.charged_as and "card" in str(exc) else "name")
            problems.append(f"{where}.models[{i}].{field_name}: {exc}")
            continue
        charged.append(geometry)
        if runtime is not None:
            problems += _runtime_problems(f"{where}.models[{i}]", ref.format is not None,
                                          ref.kv_dtype is not None, geometry, runtime)
    return problems, profile, charged


def _runtime_problems(where: str, format_given: bool, kv_given: bool, geometry: ModelGeometry,
                      runtime: RuntimeProfile) -> list[str]:
    """A weight format or KV dtype the node's runtime cannot run is a line on the field that set it:
    the model's `format` (or the runtime, when the card's own dtype is what it cannot run), `kv_dtype`."""
    problems = []
    weights = geometry.format or PLAIN_FORMAT_OF[geometry.dtype]
    if not runtime.runs_format(weights):
        runs = ", ".join(runtime.formats)
        if format_given:
            problems.append(f"{where}.format: runtime {runtime.name!r} does not run {weights} weights "
                            f"(it runs: {runs})")
        else:
            problems.append(f"{where}: runtime {runtime.name!r} does not run the model's {weights} "
                            f"weights; give it a `format` the runtime runs ({runs})")
    if kv_given and not runtime.keeps_kv(geometry.kv_cache_dtype):
        problems.append(f"{where}.kv_dtype: runtime {runtime.name!r} keeps no {geometry.kv_cache_dtype} "
                        f"KV cache (it keeps: {', '.join(runtime.kv_dtypes)})")
    return problems
