"""The scenario file: YAML → one immutable, validated `Scenario`.

This is the edge of the program. Everything a user can get wrong is caught here and reported as
`path.in.yaml: what is wrong`, one line per problem; inner code trusts a `Scenario`. A scenario reads
like an ns-3 script: topology (nodes, links, cells), then the workload, then the policy.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, cast

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from netsim.errors import InputError, ScenarioError
from netsim.groups import PLACEMENT_TAGS, GroupSpec, contract, expand
from netsim.hardware.quant import KvDtype, canonical_format
from netsim.inputfile import load_yaml, parse_yaml, show_key, show_path
from netsim.lm.sampling import SamplingSpec
from netsim.network.spec import CellSpec, LinkSpec, TransportSpec
from netsim.paths import is_file_reference
from netsim.policies.params import ALL_PARAMS, POLICY_NAMES, PolicySpec

Role = Literal["device", "edge", "cloud", "router"]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1)]


class _Strict(BaseModel):
    # Every float finite: YAML's .inf/.nan would otherwise pass `gt`/`le` checks (nan compares false).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelRef(_Strict):
    """A model hosted on a node; `charged_as` bills its compute and bytes as a public model's cost card,
    `format` and `kv_dtype` say how that node stores its weights and KV cache (docs/hardware.md)."""

    name: str = Field(min_length=1, description="bundled or cached model (see `netsim models list`)")
    charged_as: str | None = Field(
        None, min_length=1,
        description="cost card name (e.g. qwen3-0.6b) or a card file path; tokens still come from `name`")
    format: str | None = Field(
        None, min_length=1,
        description="weight format charged: a GGUF type (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K_S, Q4_K_M, "
                    "Q5_K_S, Q5_K_M, Q6_K), awq-g32/64/128, gptq-g32/64/128, fp8, q4f16_1 (MLC), 8da4w-g32 "
                    "(ExecuTorch), or a plain dtype (fp32, "
                    "fp16, bf16, int8, int4); default: the card's (or model's) dtype")
    kv_dtype: KvDtype | None = Field(
        None, description="KV cache dtype charged: float32, float16, bfloat16, fp8, int8, q8_0 or q4_0; "
                          "default: the weights' float dtype, float16 for int8/int4 weights")

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        return None if value is None else canonical_format(value)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data


class BatchingSpec(_Strict):
    """Orca/vLLM-style batching: calls arriving while a step runs join the next step (docs/hardware.md)."""

    max_batch: int = Field(
        gt=0, le=4096, description="most sequences in one forward step, 1 to 4096 (vLLM max_num_seqs)")


class NodeSpec(_Strict):
    role: Role = Field(description="device issues requests; edge/cloud serve models; router only forwards")
    profile: str | None = Field(None, description="device profile (see `netsim profiles list`)")
    runtime: str | None = Field(
        None, min_length=1, description="inference runtime on the device: a bundled runtime profile's "
                                        "name or a runtime file path (`netsim profiles runtimes`); "
                                        "default: the device profile's own")
    models: list[ModelRef] = Field(default_factory=list, description="models hosted on this node")
    slots: int = Field(  # 4096: well past the concurrent sequences of any one serving engine
        1, gt=0, le=4096, description="concurrent model calls the node runs, 1 to 4096; more requests queue")
    batching: BatchingSpec | None = Field(
        None, description="serve model calls with continuous (iteration-level) batching, as vLLM does")

    @model_validator(mode="after")
    def _compute_needs_profile(self) -> NodeSpec:
        if self.batching is not None and self.slots != 1:
            raise ValueError("a batching node runs one engine: leave `slots` at 1 and set batching.max_batch")
        if self.role != "router" and self.profile is None:
            raise ValueError(f"a {self.role} node needs a `profile`")
        if self.role == "router" and self.models:
            raise ValueError("a router hosts no models")
        return self


class DeviceGroupSpec(NodeSpec, GroupSpec):
    """`count` like nodes from one entry (netsim/groups.py); any role, devices by default.

    Expanded at load into plain nodes, cell members and links, so that nothing past the schema sees a
    group; `scenario.resolved.yaml` keeps the group rather than its members.
    """

    role: Role = Field("device", description="role of every member (default device)")

    def node(self) -> NodeSpec:
        """The one node spec every member shares (frozen, so sharing it is safe and cheap)."""
        return NodeSpec(**{name: getattr(self, name) for name in NodeSpec.model_fields})


class TopologySpec(_Strict):
    """The effective topology: `nodes`, `cells` and `links` already hold every group's members.

    `Scenario` expands the groups (their draws need its seed) before this is validated, and keeps
    `groups` so that `dump_scenario` can write them instead of their members. Build a Scenario from
    `dump_scenario` output, not from `model_dump()`, which holds both and would expand twice.
    """

    nodes: dict[str, NodeSpec] = Field(min_length=1)
    groups: list[DeviceGroupSpec] = Field(
        default_factory=list,
        description="fleets of like nodes, each expanded at load into `count` nodes (with their cell "
                    "memberships and links) appended after the written ones, group by group")
    links: list[LinkSpec] = Field(default_factory=list)
    cells: list[CellSpec] = Field(default_factory=list)
    transport: TransportSpec = Field(default_factory=TransportSpec)

    def yaml_paths(self) -> dict[str, str]:
        """Where each node is written: `topology.nodes.<name>`, or `topology.groups[k]` for a member of
        a group, so that a problem found on an expanded node names the entry a user can edit."""
        paths = {name: f"topology.nodes.{name}" for name in self.nodes}
        for k, group in enumerate(self.groups):
            paths.update(dict.fromkeys(group.member_names(), f"topology.groups[{k}]"))
        return paths


class CorpusPrompts(_Strict):
    """Prompts cut from held-out works of the corpus (deterministic in the scenario seed)."""

    source: Literal["corpus"] = "corpus"
    min_chars: int = Field(
        80, gt=0, le=10_000, description="shortest prompt, characters: 1 to 10000 (merged paragraphs)")
    max_chars: int = Field(
        400, gt=0, le=100_000,
        description="longest prompt, characters: min_chars to 100000 (~33k tokens at 3 characters per "
                    "token; no held-out passage of the corpus is that long)")
    distinct: int | None = Field(
        None, gt=0, le=1_000_000,
        description="cut only this many passages and cycle through them, 1 to 1e6: a large fleet then asks "
                    "the models a bounded set of questions, which the inference memo answers once; default: "
                    "one passage per request")

    @field_validator("max_chars")
    @classmethod
    def _at_least_min(cls, value: int, info: ValidationInfo) -> int:
        """Checked on the field, so the error names `workload.prompts.max_chars` rather than no path."""
        low = info.data.get("min_chars")
        if low is not None and value < low:
            raise ValueError(f"must be at least min_chars ({low}), got {value}")
        return value


class FilePrompts(_Strict):
    """One prompt per non-empty line of a UTF-8 text file (path relative to the scenario file)."""

    source: Literal["file"]
    path: Path


class PartitionPrompts(_Strict):
    """Each requesting device draws its prompts from its own held-out passages of a Dirichlet(α) genre
    partition of the corpus (netsim/lm/partition.py): device i of the requesting devices is client i."""

    source: Literal["partition"]
    alpha: float = Field(
        1.0, gt=0, le=1000, description="Dirichlet concentration: 10 near IID, 0.1 strongly non-IID; above 0 "
                                        "to 1000")
    passage_chars: int = Field(
        512, ge=64, le=100_000, description="characters of a passage (cut at the next line end), 64 to 1e5")

    @property
    def max_chars(self) -> int:
        """About the longest prompt: a passage ends at the first line end past `passage_chars`."""
        return self.passage_chars + 200


class AllAtOnce(_Strict):
    process: Literal["all_at_once"] = "all_at_once"


class Poisson(_Strict):
    process: Literal["poisson"]
    rate_per_s: float = Field(
        ge=1e-6, le=1e6,
        description="mean arrivals per second over all devices: 1e-6 (one in 11.6 days) to 1e6")


class Trace(_Strict):
    """CSV with a `t_s` column and optionally `device`; one request per row."""

    process: Literal["trace"]
    path: Path


class ClosedLoop(_Strict):
    """Conversations: each requesting device asks, waits for the whole answer, thinks, asks again.

    Requests go to the devices round-robin; a device's next request is issued a think time after its
    previous one ended (its first, a think time after the start). Think times are lognormal with the
    given mean: ln T ~ N(ln mean − σ²/2, σ²), drawn from the workload's stream.
    """

    process: Literal["closed_loop"]
    think_mean_s: float = Field(gt=0, le=1e5, description="mean think time, s: above 0 to 1e5")
    think_sigma: float = Field(
        1.0, ge=0, le=4, description="σ of ln(think time), 0 (always the mean) to 4; 1 gives a median "
                                     "of 0.61 × the mean")


class TokenRange(_Strict):
    """A per-request length drawn uniformly from the integers min..max."""

    min: int = Field(gt=0, le=100_000, description="fewest tokens, 1 to 1e5")
    max: int = Field(gt=0, le=100_000, description="most tokens, min to 1e5")

    @field_validator("max")
    @classmethod
    def _at_least_min(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("min")
        if low is not None and value < low:
            raise ValueError(f"must be at least min ({low}), got {value}")
        return value


class WorkloadSpec(_Strict):
    n_requests: int = Field(
        gt=0, le=1_000_000,
        description="requests to issue: 1 to 1e6 (validate also estimates the events and memory they need)")
    max_new_tokens: int = Field(
        32, gt=0, le=100_000, description="tokens generated per request at most: 1 to 100000")
    devices: list[str] | None = Field(None, description="devices that issue requests (default: all)")
    prompts: Annotated[CorpusPrompts | FilePrompts | PartitionPrompts,
                       Field(discriminator="source")] = Field(
        default_factory=CorpusPrompts
    )
    arrival: Annotated[AllAtOnce | Poisson | Trace | ClosedLoop, Field(discriminator="process")] = Field(
        default_factory=AllAtOnce
    )
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    answer_tokens: TokenRange | None = Field(
        None, description="draw each request's answer length from min..max tokens (at most max_new_tokens); "
                          "default: every answer may run to max_new_tokens")
    prompt_tokens: TokenRange | None = Field(
        None, description="keep the first n tokens of each prompt, n drawn from min..max (prompts shorter "
                          "than n stay whole: pick min_chars ≳ 4 × max); default: whole prompts")

    @field_validator("answer_tokens")
    @classmethod
    def _within_max_new(cls, value: TokenRange | None, info: ValidationInfo) -> TokenRange | None:
        """Memory checks and the work budget plan on max_new_tokens, so no answer may run past it."""
        ceiling = info.data.get("max_new_tokens")
        if value is not None and ceiling is not None and value.max > ceiling:
            raise ValueError(f"max ({value.max}) must be at most max_new_tokens ({ceiling})")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_tags(cls, data: Any) -> Any:
        """`prompts: {min_chars: 50}` means the corpus, `arrival: {}` all at once: the tags' defaults."""
        if isinstance(data, dict):
            data = dict(data)
            for key, tag, default in (("prompts", "source", "corpus"), ("arrival", "process", "all_at_once")):
                if isinstance(data.get(key), dict) and tag not in data[key]:
                    data[key] = {tag: default, **data[key]}
        return data


class OutputsSpec(_Strict):
    """Where and what a run writes; `netsim run -o DIR` overrides `dir`."""

    dir: Path | None = Field(None, description="run directory (default: runs/<name> under the working dir)")
    output_text: bool = Field(True, description="keep each answer's text in requests.parquet")


class Scenario(_Strict):
    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", max_length=64,
        description="short slug naming the run and its default run dir runs/<name>: letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit, at most 64 characters; never a path")
    description: str = ""
    seed: Seed = Field(
        0,
        description="seed of every random draw: 0 to 2^63-1 (fits the 64-bit words of numpy's seeds)")
    topology: TopologySpec
    workload: WorkloadSpec
    policy: PolicySpec
    outputs: OutputsSpec = Field(default_factory=OutputsSpec)
    sweep: dict[str, Any] | None = Field(
        None, description="axes for `netsim sweep` (grid, zip, repeat; docs/sweeps.md); `netsim run` and "
        "`validate` take the scenario as written, without the sweep")

    @model_validator(mode="before")
    @classmethod
    def _expand_groups(cls, data: Any) -> Any:
        """Groups become plain nodes, members and links before anything refers to them.

        Problems of the groups are raised here, every group's at once; the rest of the scenario is
        checked once they are fixed (its cells and references may depend on the groups' members).
        """
        if not isinstance(data, dict) or not isinstance(data.get("topology"), dict):
            return data
        if not data["topology"].get("groups"):
            return data
        try:  # an invalid seed is reported by its own field; draw with 0 meanwhile
            seed = _SEED.validate_python(data.get("seed", 0))
        except ValidationError:
            seed = 0
        return {**data, "topology": _expanded(data["topology"], seed)}

    @model_validator(mode="after")
    def _references(self) -> Scenario:
        """Cross-references that no single field can check, each raised with its YAML path."""
        problems: list[str] = []
        nodes = self.topology.nodes
        for i, link in enumerate(self.topology.links):
            for end in ("src", "dst"):
                if getattr(link, end) not in nodes:
                    problems.append(f"topology.links[{i}].{end}: unknown node {getattr(link, end)!r}")
        for i, cell in enumerate(self.topology.cells):
            if cell.ap not in nodes:
                problems.append(f"topology.cells[{i}].ap: unknown node {cell.ap!r}")
            problems += [f"topology.cells[{i}].members.{m}: unknown node {m!r}"
                         for m in cell.members if m not in nodes]
        devices = [n for n, spec in nodes.items() if spec.role == "device"]
        if not devices:
            problems.append("topology.nodes: no node has role `device`")
        for d in self.workload.devices or []:
            if d not in nodes:
                problems.append(f"workload.devices: unknown node {d!r}")
            elif nodes[d].role != "device":
                problems.append(f"workload.devices: {d!r} is a {nodes[d].role}, not a device")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @property
    def request_devices(self) -> list[str]:
        return self.workload.devices or [n for n, s in self.topology.nodes.items() if s.role == "device"]


# ---------------------------------------------------------------------------------------------- loading


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, merge `extends:`, apply `--set` overrides, validate. Raises ScenarioError (one line each).

    Every file is read through `netsim.inputfile.load_yaml`, so a FIFO, /dev/zero, a huge or non-UTF-8
    file, a duplicate key, runaway nesting or an alias bomb is one line naming the file, never a hang.
    """
    path = Path(path)
    raw = _read_with_extends(path, seen=())
    if _sweeps_policy_name(raw):  # the block serves every swept policy; the base run takes its own part
        _retarget_policy(raw["policy"])
    for item in overrides:
        _apply_override(raw, item)
    scenario = parse_scenario(raw)
    return _resolve_paths(scenario, path.parent)


def parse_scenario(raw: Any) -> Scenario:
    if not isinstance(raw, dict):
        raise ScenarioError([f"scenario: expected a mapping at the top level, got {type(raw).__name__}"])
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        raise ScenarioError(_problems(exc)) from None


def scenario_json_schema() -> dict[str, Any]:
    schema = Scenario.model_json_schema()
    schema["properties"]["extends"] = {"type": "string", "description": "base scenario file to merge over"}
    return schema


def dump_scenario(scenario: Scenario) -> str:
    """The scenario as YAML that loads back equal: groups written as groups, not as their members.

    If the effective topology no longer is what its groups expand to (a program edited a member or the
    seed after loading), every node is written out and the groups dropped: longer, but still exact.
    """
    data = json.loads(scenario.model_dump_json())
    topo = scenario.topology
    if topo.groups:
        written = contract(data["topology"], topo.groups)
        try:
            again = TopologySpec.model_validate(_expanded(written, scenario.seed))
        except (ValueError, ValidationError):
            again = None
        data["topology"] = written if again == topo else {**data["topology"], "groups": []}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _expanded(topology: dict[str, Any], seed: int) -> dict[str, Any]:
    """The raw topology with its groups expanded (netsim/groups.py); ValueError lists what stops that."""
    try:
        groups = _GROUPS.validate_python(topology.get("groups"))
    except ValidationError as exc:
        raise ValueError("\n".join(_problems(exc, ("topology", "groups")))) from None
    out, problems = expand(topology, groups, [g.node() for g in groups], seed)
    if problems:
        raise ValueError("\n".join(problems))
    return out


_GROUPS = TypeAdapter(list[DeviceGroupSpec])
_SEED = TypeAdapter(Seed)


_EXTENDS_MAX_CHAIN = 16
"""Files one scenario may stack through `extends:`; real chains are two or three deep."""


def _read_yaml(path: Path, extended_by: Path | None = None) -> dict[str, Any]:
    """One scenario file as a mapping of field names; any other content is refused without echoing it.

    Top-level keys that are not identifiers are counted, not named: pointed at /etc/shadow, pydantic
    would otherwise print each line as an "unknown field". A base file's problems also name the file
    whose `extends:` led there, since that is the file the user is looking at.
    """
    via = f"scenario {show_path(extended_by)}: extends: " if extended_by is not None else ""
    try:
        data = load_yaml(path, "scenario")
    except InputError as exc:
        raise ScenarioError([f"{via}{exc}"]) from None
    shown = f"{via}scenario {show_path(path)}"
    if data is None:
        raise ScenarioError([f"{shown}: the file is empty"])
    if not isinstance(data, dict):
        raise ScenarioError([f"{shown}: expected a mapping at the top level, got {type(data).__name__}"])
    strange = sum(1 for key in data if not (isinstance(key, str) and show_key(key) == key))
    if strange:
        raise ScenarioError([f"{shown}: {strange} top-level key{'s' if strange > 1 else ''} not spelled "
                             "like a field name; is this a scenario file?"])
    return data


def _read_with_extends(path: Path, seen: tuple[Path, ...], extended_by: Path | None = None
                       ) -> dict[str, Any]:
    data = _read_yaml(path, extended_by)
    data.pop("provenance", None)  # written by `netsim run` into scenario.resolved.yaml; informational
    base_name = data.pop("extends", None)
    if base_name is None:
        return data
    shown = f"scenario {show_path(path)}"
    if not isinstance(base_name, str) or not base_name.strip() or "\0" in base_name:
        raise ScenarioError([f"{shown}: extends: expected a file name"])
    if len(seen) + 1 >= _EXTENDS_MAX_CHAIN:
        raise ScenarioError([f"{shown}: extends: more than {_EXTENDS_MAX_CHAIN} files in the chain"])
    base_path = (path.parent / base_name).resolve()
    if base_path in seen or base_path == path.resolve():
        raise ScenarioError([f"{shown}: extends: cycle through {show_path(base_path.name)}"])
    return _deep_merge(_read_with_extends(base_path, (*seen, path.resolve()), path), data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else (lists included) in `over` replaces the base value."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _apply_override(raw: dict[str, Any], item: str) -> None:
    """`a.b[2].c=value` or `a.b.2.c=value`; the value is read as YAML (numbers, lists, booleans)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ScenarioError([f"--set {item!r}: expected dotted.path=value"])
    steps: list[str | int] = []
    for part in _STEP.finditer(key.strip()):
        name, index = part.groups()
        steps.append(int(index) if index is not None else int(name) if name.isdigit() else name)
    try:  # the same guards as a scenario file (depth, alias expansion); plain text when not YAML
        value = parse_yaml(text, f"--set {key.strip()}") if text.strip() else ""
    except InputError as exc:
        if "unreadable YAML" not in str(exc):
            raise ScenarioError([str(exc)]) from None
        value = text
    node: Any = raw
    for depth, step in enumerate(steps[:-1]):
        nxt = steps[depth + 1]
        if isinstance(node, dict):
            node = node.setdefault(step, [] if isinstance(nxt, int) else {})
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            node = node[step]
        else:
            raise ScenarioError([f"--set {key}: no such path ({_path(steps[: depth + 1])})"])
    last = steps[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int) and last < len(node)):
        node[last] = value
    else:
        raise ScenarioError([f"--set {key}: no such path"])
    if steps == ["policy", "name"] and isinstance(node, dict):
        _retarget_policy(node)


def _sweeps_policy_name(raw: dict[str, Any]) -> bool:
    """The scenario's `sweep:` block has a `policy.name` axis (then its `policy:` block may hold the
    parameters of several policies)."""
    sweep = raw.get("sweep")
    if not isinstance(sweep, dict) or not isinstance(raw.get("policy"), dict):
        return False
    axes = [k for part in ("grid", "zip") if isinstance(sweep.get(part), dict) for k in sweep[part]]
    return "policy.name" in axes


def _retarget_policy(policy: dict[str, Any]) -> None:
    """`--set policy.name=X` (or a sweep's policy.name axis) keeps the parameters policy X takes and drops
    those only other policies take, so one `policy:` block serves a comparison of several policies. A key
    no policy takes stays, so a misspelling is still refused by name."""
    target = next((p for p in ALL_PARAMS if p.model_fields["name"].annotation == Literal[policy.get("name")]),
                  None)
    if target is None:
        return
    others = {f for p in ALL_PARAMS for f in p.model_fields}
    for field in [k for k in policy if k not in target.model_fields and k in others]:
        del policy[field]


_Node = TypeVar("_Node", bound=NodeSpec)


def _resolve_paths(scenario: Scenario, base: Path) -> Scenario:
    """Make relative file paths absolute against the scenario's folder (`base`).

    A user keeps their prompts, traces, device profiles and cost cards beside the scenario and runs it
    from anywhere; the absolute paths also let scenario.resolved.yaml run from its run directory. A
    profile or a card is a file only when spelled like one (`is_file_reference`); a bundled name stays.
    """

    def absolute(value: str) -> str:
        path = Path(value)
        return str(path if path.is_absolute() else (base / path).resolve())

    done: dict[int, NodeSpec] = {}  # by id: a group's members share one spec, resolved once, still shared

    def absolute_node(spec: _Node) -> _Node:
        if id(spec) in done:
            return cast(_Node, done[id(spec)])
        node_update: dict[str, Any] = {}
        if spec.profile is not None and is_file_reference(spec.profile):
            node_update["profile"] = absolute(spec.profile)
        if spec.runtime is not None and is_file_reference(spec.runtime):
            node_update["runtime"] = absolute(spec.runtime)
        if any(ref.charged_as and is_file_reference(ref.charged_as) for ref in spec.models):
            node_update["models"] = [
                ref.model_copy(update={"charged_as": absolute(ref.charged_as)})
                if ref.charged_as and is_file_reference(ref.charged_as) else ref
                for ref in spec.models]
        done[id(spec)] = out = spec.model_copy(update=node_update) if node_update else spec
        return out

    topo = scenario.topology
    nodes = {name: absolute_node(spec) for name, spec in topo.nodes.items()}
    groups = [absolute_node(group) for group in topo.groups]  # the written form must resolve alike
    update: dict[str, Any] = {}
    if nodes != topo.nodes or groups != topo.groups:
        update["topology"] = topo.model_copy(update={"nodes": nodes, "groups": groups})

    wl = scenario.workload
    wl_update: dict[str, Any] = {}
    if isinstance(wl.prompts, FilePrompts) and not wl.prompts.path.is_absolute():
        wl_update["prompts"] = wl.prompts.model_copy(update={"path": (base / wl.prompts.path).resolve()})
    if isinstance(wl.arrival, Trace) and not wl.arrival.path.is_absolute():
        wl_update["arrival"] = wl.arrival.model_copy(update={"path": (base / wl.arrival.path).resolve()})
    if wl_update:
        update["workload"] = wl.model_copy(update=wl_update)
    return scenario.model_copy(update=update) if update else scenario


def _path(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _problems(exc: ValidationError, at: Sequence[str | int] = ()) -> list[str]:
    """pydantic errors → `yaml.path: message` (under the path `at`), dropping the union-branch names
    pydantic inserts."""
    lines: list[str] = []
    for err in exc.errors(include_url=False):
        full = [*at, *err["loc"]]
        loc = [p for k, p in enumerate(full) if not _is_branch_tag(p, full[k - 1] if k else None)]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field (not in the schema; check spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
        if not loc and err["type"] == "value_error":  # cross-references already carry their own paths
            lines += msg.splitlines()
            continue
        lines.append(f"{_path(loc) or 'scenario'}: {msg}")
    return list(dict.fromkeys(lines))


_BRANCH_TAGS = {"prompts": frozenset({"corpus", "file", "partition"}),
                "arrival": frozenset({"all_at_once", "poisson", "trace", "closed_loop"}),
                "policy": frozenset(POLICY_NAMES),
                "placement": PLACEMENT_TAGS}
"""Tags pydantic puts after a tagged-union field; only there, so a node called `file` keeps its name."""


def _is_branch_tag(part: str | int, after: str | int | None) -> bool:
    if not isinstance(part, str):
        return False
    return part in _BRANCH_TAGS.get(str(after), ()) or part.startswith(("function-", "tagged-union"))
