"""How much work a scenario asks for, estimated before anything runs, and whether this machine can do it.

A scenario can be valid field by field and still impossible: a million requests of a thousand tokens
are 3·10⁹ event records (≈ 1.5 TB), a day of 0.1 ms fading blocks is 10⁹ medium events, and requests
spread over 10¹² s of simulated time leave float64 clocks too coarse for the media to finish a flow.
`netsim validate` should say so in one line within milliseconds, instead of `run` hanging or being
killed for memory hours later. So `estimate` counts, from the scenario alone (plus the prompt and trace
files it names, and the hardware profiles and model geometries it hosts):

    model token steps  = requests × (prompt tokens + max_new_tokens)
    cache reads        = requests × (max_new_tokens × prompt tokens + max_new_tokens² / 2)
    model wall time    = requests × REQUEST_WALL_S + generated tokens × TOKEN_WALL_S
                         + cache reads × CACHE_READ_WALL_S
    records            = requests × (request_start + request_end + prefill + decode calls
                                     + messages × hops)
    messages × hops    = hops up × 1 (the prompt) + hops down × max_new_tokens (one message per token)
    fading blocks      = Σ over a faded cell's media of Σ over members' requests of (air time ×
                         FADING_STALL / coherence time + messages), each at most horizon / coherence
    events             = records + fading blocks
    horizon            = max(arrival span, queueing for compute) + time of one request
    memory             = runtime + records × RECORD_BYTES + requests × (REQUEST_BYTES
                                                                      + max_new_tokens × TOKEN_BYTES)

The traffic term assumes the streaming pattern of `cloud_only` and `edge_only` (the prompt up, every
token down the route to the farther of the nearest edge and the nearest cloud server), the heaviest of
today's policies; a policy that keeps tokens on the device costs less. Estimates are rough (a factor of
two either way), which is why the ceilings below sit well inside what breaks.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import networkx as nx

from netsim.errors import InputError
from netsim.hardware.cost import call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import load_profile
from netsim.lm.geometry import ModelGeometry
from netsim.lm.memo import DEFAULT_KV_MEMO_NBYTES, DEFAULT_LOGITS_MEMO_NBYTES
from netsim.lm.zoo import ModelStore
from netsim.network.channel import fixed_rate_bps
from netsim.network.spec import TIME_MAX_S, CellSpec
from netsim.network.topology import build_graph, route_weight
from netsim.payload import MESSAGE_HEADER_BYTES, tokens_nbytes
from netsim.scenario import FilePrompts, ModelRef, Poisson, Scenario, Trace
from netsim.workload import read_prompts, read_trace

CHARS_PER_TOKEN = 3.0
"""Characters per prompt token: the bundled Shakespeare BPE cuts held-out passages at 2.9 characters
per token (English web text under GPT-style BPEs: ~4), so 3 errs towards more tokens."""

RECORD_BYTES = 512
"""Peak bytes per event record: 173 B while the run holds it as a slotted dataclass, 389 B at the peak
of turning the list into columns (tuples and the column lists coexist), 57 B in the polars frame;
measured with tracemalloc on 2·10⁵ records of the quickstart's mix, rounded up for the parquet writer."""

REQUEST_BYTES = 2048
"""Per request: the Request with its prompt text, the RequestRecord (≈ 1 kB before tokens) and its row
of the requests frame."""

TOKEN_BYTES = 80
"""Per generated token: its arrival time and id in the request's record (a float and an int object plus
two list slots, 68 B) and its characters of output text."""

RUNTIME_BYTES = 256 << 20
"""The interpreter with numpy, polars, onnxruntime and SimPy imported: a quickstart run peaks at 267 MB
resident. Each hosted model adds its memo budgets on top (DEFAULT_*_MEMO_NBYTES, 768 MiB)."""

MEMORY_FRACTION = 0.5
"""Share of this machine's memory a run may plan to use: the estimate is rough, and the user's other
programs (and the page cache that makes the parquet writer fast) need the rest."""

MAX_EVENTS = 1e8
"""Ceiling on estimated events. A record costs 5–20 µs of SimPy and bookkeeping and a generated token
1–2 ms of real model time on one core, so 10⁸ events are hours of wall time: a run past it is a
scenario written by mistake far more often than an intent, and a sweep splits it into smaller runs."""

REQUEST_WALL_S = 0.03
TOKEN_WALL_S = 1e-3
CACHE_READ_WALL_S = 5e-6
"""Wall time of the real models on one CPU core, fitted to runs of the bundled Shakespeare models
(quickstart, 1 request of 1000/2000/4000 tokens: 3.7/12.7/44.5 s; 200 requests of 24 tokens: 11 s):
per request (tokenising, prefill), per generated token, and per cached position a decode step reads.
The last term is quadratic in the answer length and dominates past ~400 tokens: each step re-reads
and extends the whole KV cache. Larger imported models are slower; this is the floor."""

MAX_MODEL_WALL_S = 86_400.0
"""Ceiling on the estimated model wall time: a day. A run longer than that on one core is nearly always
a slip (an extra zero in max_new_tokens), and a real study of that size is a sweep of smaller runs."""

FADING_STALL = 4.0
"""How much longer a message stays on a faded medium than at the rate of the mean SNR. Rayleigh fading
costs ~0.8 bit/s/Hz of mean Shannon rate at high SNR (E[log₂ |h|²] = −γ/ln 2), ~27% at 3 bit/s/Hz, and a
member 10 dB above the SNR floor spends ~10% of blocks in outage, waiting; 4× covers both with room."""

MAX_HORIZON_S = TIME_MAX_S
"""Latest simulated time a run may reach (1e7 s, 116 days): float64 time steps there are 1.9 ns, still
within the media's 1 ns finishing tolerance by rounding; past 2²⁴ s they are not, and flows stop
finishing."""

MAX_FADING_BLOCK_INDEX = 1e7
"""Fading block indices must stay below 2²⁴ ≈ 1.7e7: a block edge k·T_c, divided back by T_c, lands
within one float64 step of k, and only below 2²⁴ does the 1e-9 nudge of `channel.block_index` round it
back to k; past that a timer can fire at the edge and find itself still in the old block, forever.
Measured: no edge of 20,000 near k = 2·10⁷ misrounds, 9% near 10⁸ do, and a run whose one request
comes 10⁴ s in with 0.1 ms blocks (k ≈ 10⁸) never finishes."""


@dataclass(frozen=True)
class Budget:
    """The estimated work of one run; `str` is the one-line summary `netsim validate` prints."""

    n_requests: int
    token_steps: float
    """Token positions the models process: requests × (prompt tokens + max_new_tokens)."""
    cache_reads: float
    """Cached positions read by all decode steps together (attention's quadratic term)."""
    model_wall_s: float
    """Wall time the real models need on one core (REQUEST_WALL_S, TOKEN_WALL_S, CACHE_READ_WALL_S)."""
    records: float
    """Rows of events.parquet: request start/end, prefill, decode and one `tx` per message-hop."""
    fading_blocks: float
    """Fading-block edges the media re-plan at while flows are on them (events, but no records)."""
    horizon_s: float
    """Simulated time the run is expected to span."""
    memory_bytes: float
    """Peak memory of the run: runtime and model memos, records, requests."""
    machine_bytes: float
    """Physical memory of this machine (or its cgroup limit, if lower)."""

    @property
    def events(self) -> float:
        return self.records + self.fading_blocks

    @property
    def usable_bytes(self) -> float:
        return self.machine_bytes * MEMORY_FRACTION

    def __str__(self) -> str:
        fading = f", {_count(self.fading_blocks)} fading blocks" if self.fading_blocks else ""
        return (f"about {_count(self.events)} events ({_count(self.records)} records{fading}), "
                f"{_count(self.token_steps)} model token steps (~{_duration(self.model_wall_s)} of model "
                f"time), ~{_duration(self.horizon_s)} simulated, "
                f"~{_gb(self.memory_bytes)} of memory ({_gb(self.usable_bytes)} usable)")


@dataclass(frozen=True)
class _Route:
    """The route a request's traffic takes, as far as the estimate needs it."""

    hops_up: int = 0
    hops_down: int = 0
    delay_s: float = 0.0
    """Propagation up and down: one round trip."""
    wire_s: float = 0.0
    """Transmission time of one request's prompt and tokens at the bottleneck hops."""


@dataclass(frozen=True)
class _Parts:
    """The estimate and the terms a problem line points at."""

    budget: Budget
    arrival_s: float
    queue_s: float
    request_s: float
    blocks_by_cell: dict[int, tuple[float, float]]
    """Cell index → (fading blocks its media re-plan at, coherence time in s)."""


def estimate(scenario: Scenario, store: ModelStore | None = None) -> Budget:
    """The work `scenario` asks for (see the module docstring for the formula)."""
    return _estimate(scenario, store or ModelStore()).budget


def budget_problems(scenario: Scenario, store: ModelStore | None = None) -> list[str]:
    """One `yaml.path: why` line per cause the estimate finds; empty when the run fits this machine.

    The size of the work gets one line, for the first limit it crosses (memory, then events, then
    model time: shrinking the run for the first usually fixes the others); the simulated horizon and
    fading-block indices get their own, since they have other fixes.

    Meant for a scenario whose other checks passed: profiles, models and files that cannot be read are
    left out of the estimate (their own checks report them).
    """
    parts = _estimate(scenario, store or ModelStore())
    b = parts.budget
    problems: list[str] = []
    cell_i, (cell_blocks, coherence_s) = max(parts.blocks_by_cell.items(), key=lambda kv: kv[1][0],
                                            default=(-1, (0.0, 0.0)))
    if b.memory_bytes > b.usable_bytes:  # records and requests hold the memory, not fading blocks
        problems.append(f"workload.n_requests: about {_count(b.records)} event records and "
                        f"{_gb(b.memory_bytes)} of memory; this machine has {_gb(b.machine_bytes)} and a run "
                        f"may plan on {MEMORY_FRACTION:.0%} of it — reduce n_requests or max_new_tokens")
    blamed_fading = b.events > MAX_EVENTS and cell_blocks > b.records
    if blamed_fading:
        problems.append(f"topology.cells[{cell_i}].coherence_ms: about {_count(b.events)} events, over the "
                        f"{_count(MAX_EVENTS)} a run may take, mostly fading blocks of "
                        f"{coherence_s * 1e3:g} ms — raise coherence_ms, turn fading off or shorten the run")
    elif b.events > MAX_EVENTS and not problems:
        problems.append(f"workload.n_requests: about {_count(b.events)} events, over the "
                        f"{_count(MAX_EVENTS)} a run may take — reduce n_requests or max_new_tokens")
    quadratic = b.cache_reads * CACHE_READ_WALL_S > b.model_wall_s / 2
    field, fix = (("max_new_tokens", "reduce max_new_tokens") if quadratic
                  else ("n_requests", "reduce n_requests or max_new_tokens"))
    if b.model_wall_s > MAX_MODEL_WALL_S and not problems:  # one line for the size of the work
        problems.append(f"workload.{field}: the models need ~{_duration(b.model_wall_s)} of wall time on "
                        f"one core ({_count(b.token_steps)} token steps, {_count(b.cache_reads)} cached "
                        f"positions read), over the {_duration(MAX_MODEL_WALL_S)} a run may take — {fix}")
    if b.horizon_s > MAX_HORIZON_S:
        problems.append(_horizon_problem(scenario, parts))
        return problems  # the horizon line names the cause; block indices follow from it
    for i, (_, cell_coherence_s) in parts.blocks_by_cell.items():
        index = b.horizon_s / cell_coherence_s
        if index > MAX_FADING_BLOCK_INDEX and not (blamed_fading and i == cell_i):  # one line per cell
            problems.append(
                f"topology.cells[{i}].coherence_ms: ~{_duration(b.horizon_s)} simulated is {_count(index)} "
                f"fading blocks of {cell_coherence_s * 1e3:g} ms; block edges lose float64 precision past "
                f"{_count(MAX_FADING_BLOCK_INDEX)} — raise coherence_ms or shorten the run")
    return problems


def machine_memory_bytes() -> float:
    """Physical memory, or the cgroup's memory limit when a container sets a lower one.

    Read without psutil: POSIX sysconf for the machine, the cgroup v2 or v1 limit file for a container
    (v1 writes a huge number, v2 the word `max`, when there is no limit).
    """
    try:
        physical = float(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # not POSIX: no ceiling from memory
        physical = math.inf
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text(encoding="ascii").strip()
        except (OSError, UnicodeDecodeError):
            continue
        if text.isdigit():
            physical = min(physical, float(text))
    return physical


# ------------------------------------------------------------------------------------------ estimating


def _estimate(scenario: Scenario, store: ModelStore) -> _Parts:
    wl = scenario.workload
    n, new_tokens = wl.n_requests, wl.max_new_tokens
    prompt_chars = _prompt_chars(scenario)
    prompt_tokens = math.ceil(prompt_chars / CHARS_PER_TOKEN)

    topo = scenario.topology
    graph = build_graph(topo.nodes, topo.links, topo.cells)
    routes = _routes(scenario, graph, prompt_chars)
    hops_per_request = (sum(r.hops_up + r.hops_down * new_tokens for r in routes) / len(routes)
                        if routes else 0.0)
    records = n * (3 + (new_tokens - 1) + hops_per_request)  # start, end, prefill; decodes; message-hops

    request_compute_s, slots_per_s = _compute(scenario, store, prompt_tokens)
    arrival_s = _arrival_span_s(scenario)
    queue_s = n / slots_per_s if slots_per_s > 0 else 0.0
    request_s = max((r.delay_s + r.wire_s for r in routes), default=0.0) + request_compute_s
    horizon_s = max(arrival_s, queue_s) + request_s

    blocks_by_cell = {i: (_fading_blocks(scenario, graph, cell, prompt_chars, horizon_s),
                          cell.coherence_ms * 1e-3)
                      for i, cell in enumerate(topo.cells) if cell.fading == "rayleigh"}
    fading_blocks = sum(blocks for blocks, _ in blocks_by_cell.values())

    n_models = len({ref.name for spec in scenario.topology.nodes.values() for ref in spec.models})
    memory = (RUNTIME_BYTES + n_models * (DEFAULT_LOGITS_MEMO_NBYTES + DEFAULT_KV_MEMO_NBYTES)
              + records * RECORD_BYTES + n * (REQUEST_BYTES + new_tokens * TOKEN_BYTES))
    cache_reads = n * (new_tokens * prompt_tokens + new_tokens * new_tokens / 2)
    model_wall_s = n * (REQUEST_WALL_S + new_tokens * TOKEN_WALL_S) + cache_reads * CACHE_READ_WALL_S
    budget = Budget(n_requests=n, token_steps=float(n * (prompt_tokens + new_tokens)),
                    cache_reads=cache_reads, model_wall_s=model_wall_s, records=records,
                    fading_blocks=fading_blocks, horizon_s=horizon_s, memory_bytes=memory,
                    machine_bytes=machine_memory_bytes())
    return _Parts(budget, arrival_s, queue_s, request_s, blocks_by_cell)


def _fading_blocks(scenario: Scenario, graph: nx.DiGraph, cell: CellSpec, prompt_chars: float,
                   horizon_s: float) -> float:
    """Block edges the cell's media re-plan at: one timer per medium per edge, and only while a faded
    member has a flow on it.

    Per request of a member, each faded direction is busy for its messages' air time at the member's
    nominal rate × FADING_STALL, plus one edge per message (a short message still crosses one now and
    then); a medium (the uplink, the downlink, or the one shared medium of `duplex_mode: shared`) never
    re-plans at more edges than the horizon holds. Requests go round-robin over the requesting devices.
    """
    wl = scenario.workload
    devices = set(scenario.request_devices)
    coherence_s = cell.coherence_ms * 1e-3
    per_device = wl.n_requests / len(devices)
    payload = {"up": (1, MESSAGE_HEADER_BYTES + prompt_chars), "down": (wl.max_new_tokens, tokens_nbytes(1))}
    edges_in_horizon = horizon_s / coherence_s
    busy_edges = {"up": 0.0, "down": 0.0}
    for member in cell.members:
        if member not in devices:
            continue
        for direction, (n_messages, nbytes) in payload.items():
            if fixed_rate_bps(cell, member, direction) is not None:
                continue  # a fixed rate does not fade
            hop = (member, cell.ap) if direction == "up" else (cell.ap, member)
            rate_bps = graph.edges[hop]["rate_bps"]  # the nominal (median-budget) PHY rate
            if rate_bps <= 0:  # below the SNR floor at the median: flows wait for good blocks
                busy_edges[direction] = math.inf
                continue
            air_s = n_messages * 8 * (nbytes + cell.header_bytes) / rate_bps * FADING_STALL
            busy_edges[direction] += per_device * (air_s / coherence_s + n_messages)
    if cell.duplex_mode == "shared":
        return min(busy_edges["up"] + busy_edges["down"], edges_in_horizon)
    return sum(min(edges, edges_in_horizon) for edges in busy_edges.values())


def _prompt_chars(scenario: Scenario) -> float:
    """Characters of a typical prompt: the corpus's longest allowed, or the prompt file's mean line."""
    prompts = scenario.workload.prompts
    if not isinstance(prompts, FilePrompts):
        return float(prompts.max_chars)
    try:
        lines = read_prompts(prompts.path)
    except InputError:  # reported by the workload file checks
        return 0.0
    return sum(map(len, lines)) / len(lines)


def _arrival_span_s(scenario: Scenario) -> float:
    """Simulated time of the last arrival: the trace's last time, or for Poisson arrivals a time the last
    one exceeds with probability ~2% (for one request) to 0.1% (for many), so a horizon check holds for
    the actual draws, not just on average."""
    wl = scenario.workload
    if isinstance(wl.arrival, Poisson):
        n = wl.n_requests  # the last arrival is Gamma(n, λ): mean n/λ, σ √n/λ; plan on mean + 3σ
        return (n + 3 * math.sqrt(n)) / wl.arrival.rate_per_s
    if isinstance(wl.arrival, Trace):
        try:
            times, _ = read_trace(wl.arrival.path, wl.n_requests, scenario.request_devices)
        except InputError:  # reported by the workload file checks
            return 0.0
        return max(times, default=0.0)
    return 0.0


def _compute(scenario: Scenario, store: ModelStore, prompt_tokens: int) -> tuple[float, float]:
    """(compute time of one request on the slowest hosting node, requests per second all hosting
    nodes serve together). Each node runs its first model's prefill and decode calls at mid-answer
    context, by the roofline of its profile; nodes whose profile or model cannot be read are skipped.
    Nodes alike (profile, model, card) are costed once: ten thousand phones are one roofline."""
    new_tokens = scenario.workload.max_new_tokens
    per_kind: dict[tuple[str, str | None, ModelRef], float | None] = {}
    slowest_s, rate_per_s = 0.0, 0.0
    for spec in scenario.topology.nodes.values():
        if not spec.models or spec.profile is None:
            continue
        kind = (spec.profile, spec.runtime, spec.models[0])
        if kind not in per_kind:
            per_kind[kind] = _request_compute_s(store, *kind, prompt_tokens, new_tokens)
        request_s = per_kind[kind]
        if request_s is None:
            continue
        slowest_s = max(slowest_s, request_s)
        rate_per_s += spec.slots / request_s
    return slowest_s, rate_per_s


def _request_compute_s(store: ModelStore, profile_name: str, runtime: str | None, ref: ModelRef,
                       prompt_tokens: int, new_tokens: int) -> float | None:
    """Prefill plus decode calls of one request on one kind of node (its device under its runtime, the
    model as charged: card, weight format, KV dtype), or None if it cannot be read."""
    try:
        profile = load_profile(profile_name, runtime=runtime)
        geometry: ModelGeometry = store.card(ref.charged_as) if ref.charged_as else \
            store.manifest(ref.name).geometry
        geometry = geometry.charged_with(ref.format, ref.kv_dtype)
    except ValueError:  # InputError included: reported by the node checks
        return None
    step_s = call_time_s(profile, decode_cost(geometry, prompt_tokens + new_tokens // 2))
    prefill_s = call_time_s(profile, prefill_cost(geometry, max(prompt_tokens, 1)))
    return prefill_s + (new_tokens - 1) * step_s


def _routes(scenario: Scenario, graph: nx.DiGraph, prompt_chars: float) -> list[_Route]:
    """Per requesting device, the route to the farther of its nearest edge and nearest cloud server.

    One multi-source Dijkstra per server role and direction (least latency, as requests are routed),
    not one search per device: the estimate must stay cheap at ten thousand devices.
    """
    topo = scenario.topology
    transport = topo.transport
    prompt_nbytes = MESSAGE_HEADER_BYTES + prompt_chars
    token_nbytes = tokens_nbytes(1)
    per_role: list[tuple[dict[str, list[str]], dict[str, list[str]]]] = []
    for role in ("edge", "cloud"):
        servers = [name for name, spec in topo.nodes.items() if spec.role == role and spec.models]
        if not servers:
            continue
        _, to_device = nx.multi_source_dijkstra(graph, servers, weight=route_weight)
        _, from_device = nx.multi_source_dijkstra(graph.reverse(copy=False), servers, weight=route_weight)
        per_role.append((from_device, to_device))
    routes = []
    for device in scenario.request_devices:
        best = _Route()
        for from_device, to_device in per_role:
            if device not in from_device or device not in to_device:
                continue
            up = list(reversed(from_device[device]))  # device -> server, in the direction data flows
            down = to_device[device]
            delay_s = _delay_s(graph, up) + _delay_s(graph, down)
            if transport.kind == "tcp":
                delay_s *= 2  # the handshake's round trip before the first byte
            wire_s = (_wire_s(graph, up, prompt_nbytes)
                      + scenario.workload.max_new_tokens * _wire_s(graph, down, token_nbytes))
            route = _Route(len(up) - 1, len(down) - 1, delay_s, wire_s)
            if _weight(route) > _weight(best):
                best = route
        routes.append(best)
    return routes


def _weight(route: _Route) -> tuple[int, float]:
    """Which of two routes costs the run more: hops first (records), then latency (horizon)."""
    return route.hops_up + route.hops_down, route.delay_s + route.wire_s


def _delay_s(graph: nx.DiGraph, path: list[str]) -> float:
    return sum(graph.edges[u, v]["delay_s"] for u, v in pairwise(path))


def _wire_s(graph: nx.DiGraph, path: list[str], nbytes: float) -> float:
    """Time `nbytes` (plus one packet header) spend on the slowest hop of `path` with a usable rate."""
    slowest_s = 0.0
    for u, v in pairwise(path):
        attrs = graph.edges[u, v]
        if attrs["rate_bps"] > 0:
            slowest_s = max(slowest_s, 8 * (nbytes + attrs["spec"].header_bytes) / attrs["rate_bps"])
    return slowest_s


def _horizon_problem(scenario: Scenario, parts: _Parts) -> str:
    """The horizon line, pointed at the term that makes it long."""
    wl = scenario.workload
    beyond = f"beyond the {_duration(MAX_HORIZON_S)} a run may simulate (float64 time resolution)"
    term = max(("arrival", parts.arrival_s), ("queue", parts.queue_s), ("request", parts.request_s),
               key=lambda kv: kv[1])[0]
    if term == "arrival" and isinstance(wl.arrival, Poisson):
        return (f"workload.arrival.rate_per_s: {wl.n_requests} requests at {wl.arrival.rate_per_s:g}/s span "
                f"up to ~{_duration(parts.arrival_s)} of simulated time, {beyond} — raise rate_per_s or "
                "reduce n_requests")
    if term == "arrival":
        return (f"workload.arrival.path: the trace's times reach {_duration(parts.arrival_s)}, {beyond} — "
                "shift or compress the trace")
    if term == "queue":
        return (f"workload.n_requests: {wl.n_requests} requests queue for ~{_duration(parts.queue_s)} of "
                f"simulated compute, {beyond} — reduce n_requests or add slots")
    return (f"workload.max_new_tokens: one request takes ~{_duration(parts.request_s)} of simulated time, "
            f"{beyond} — reduce max_new_tokens or speed up the slowest link")


# ------------------------------------------------------------------------------------------ formatting


def _count(x: float) -> str:
    return f"{x:,.0f}" if x < 1e6 else f"{x:.2g}"


def _gb(nbytes: float) -> str:
    return "unlimited" if math.isinf(nbytes) else f"{nbytes / 1e9:.3g} GB"


def _duration(seconds: float) -> str:
    if seconds < 1e4:
        return f"{seconds:.3g} s"
    return f"{seconds:.2g} s ({seconds / 86400:.3g} days)"
