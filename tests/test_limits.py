"""Numbers at the edge: every float finite, every physical field inside its documented range, and a work
estimate that refuses what this machine cannot run — each refusal one line naming its YAML path.

The hang cases of issue 11 (an infinite or 1e308 ms delay, a 1e-9 Mbit/s link, 1e-9 ms fading blocks,
a 1e-300/s Poisson rate, an infinite trace time) go through the real CLI with a timeout, and the
boundary values that remain legal must run to completion within seconds.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from netsim import budget as budget_mod
from netsim.budget import (
    CACHE_READ_WALL_S,
    FADING_STALL,
    RECORD_BYTES,
    REQUEST_BYTES,
    REQUEST_WALL_S,
    RUNTIME_BYTES,
    TOKEN_BYTES,
    TOKEN_WALL_S,
    budget_problems,
    estimate,
)
from netsim.errors import ScenarioError
from netsim.hardware.cost import call_time_s, decode_cost, prefill_cost
from netsim.hardware.profile import load_profile
from netsim.lm.memo import DEFAULT_KV_MEMO_NBYTES, DEFAULT_LOGITS_MEMO_NBYTES
from netsim.lm.zoo import ModelStore
from netsim.payload import MESSAGE_HEADER_BYTES, tokens_nbytes
from netsim.scenario import Scenario, parse_scenario, scenario_json_schema
from netsim.validation import check_scenario

# phone ──cell (uma_nlos, 120 m)── gnb ──1 Gbit/s, 10 ms── cloud
BASE: dict[str, Any] = {
    "name": "limits",
    "seed": 1,
    "topology": {
        "nodes": {
            "phone": {"role": "device", "profile": "oneplus-12", "models": ["shakespeare-slm"]},
            "gnb": {"role": "router"},
            "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]},
        },
        "cells": [{"name": "c", "ap": "gnb", "members": {"phone": 120}}],
        "links": [{"src": "gnb", "dst": "cloud", "rate_mbps": 1000, "delay_ms": 10}],
    },
    "workload": {"n_requests": 2, "max_new_tokens": 4},
    "policy": {"name": "cloud_only"},
}

INF, NAN = math.inf, math.nan


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    """BASE with `dotted.path[i]` → value replaced (mappings created on the way)."""
    raw = copy.deepcopy(BASE)
    for path, value in edits.items():
        steps = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]
        node: Any = raw
        for step in steps[:-1]:
            node = node[step] if isinstance(node, list) or step in node else node.setdefault(step, {})
        node[steps[-1]] = value
    return raw


def problems_of(raw: dict[str, Any], check: bool = False) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        scenario = parse_scenario(raw)
        if check:
            check_scenario(scenario)
    return info.value.problems


# ------------------------------------------------------------------------------- schema: one line each

LINK = "topology.links[0]"
CELL = "topology.cells[0]"
SCHEMA_CASES: list[tuple[str, Any, str]] = [
    # floats must be finite wherever they are
    (f"{LINK}.rate_mbps", INF, "finite"), (f"{LINK}.rate_mbps", NAN, "finite"),
    (f"{LINK}.delay_ms", INF, "finite"), (f"{LINK}.delay_ms", NAN, "finite"),
    (f"{CELL}.carrier_ghz", INF, "finite"), (f"{CELL}.bandwidth_mhz", NAN, "finite"),
    (f"{CELL}.uplink_mbps", INF, "finite"), ("topology.transport.outage_timeout_s", INF, "finite"),
    ("workload.sampling.temperature", INF, "finite"), ("workload.sampling.top_p", NAN, "finite"),
    # wired link
    (f"{LINK}.rate_mbps", 1e-9, "greater than or equal to 0.001"),
    (f"{LINK}.rate_mbps", 0, "greater than or equal to 0.001"),
    (f"{LINK}.rate_mbps", 1e30, "less than or equal to 10000000"),
    (f"{LINK}.delay_ms", 1e308, "less than or equal to 100000"),
    (f"{LINK}.delay_ms", -1, "greater than or equal to 0"),
    (f"{LINK}.loss", 1.0, "less than 1"),
    (f"{LINK}.mtu_bytes", 67, "greater than or equal to 68"),
    (f"{LINK}.mtu_bytes", 70_000, "less than or equal to 65535"),
    (f"{LINK}.header_bytes", 2000, "less than or equal to 1024"),
    (f"{LINK}.outages[0].end_s", INF, "finite"),
    (f"{LINK}.outages[0].start_s", 1e8, "less than or equal to 10000000"),
    # cell
    (f"{CELL}.carrier_ghz", 1e30, "less than or equal to 100"),
    (f"{CELL}.carrier_ghz", 0.1, "greater than or equal to 0.4"),
    (f"{CELL}.bandwidth_mhz", 1e30, "less than or equal to 2000"),
    (f"{CELL}.bandwidth_mhz", 0.01, "greater than or equal to 0.1"),
    (f"{CELL}.ue_tx_power_dbm", 1e30, "less than or equal to 80"),
    (f"{CELL}.ap_tx_power_dbm", -100, "greater than or equal to -50"),
    (f"{CELL}.ue_antenna_gain_dbi", 1e30, "less than or equal to 50"),
    (f"{CELL}.ap_antenna_gain_dbi", -1e30, "greater than or equal to -20"),
    (f"{CELL}.ue_noise_figure_db", 31, "less than or equal to 30"),
    (f"{CELL}.h_bs_m", 1e30, "less than or equal to 1000"),
    (f"{CELL}.h_ut_m", 0.1, "greater than or equal to 0.5"),
    (f"{CELL}.coherence_ms", 1e-9, "greater than or equal to 0.1"),
    (f"{CELL}.min_snr_db", -1e30, "greater than or equal to -50"),
    (f"{CELL}.max_spectral_efficiency_bps_hz", 1e30, "less than or equal to 100"),
    (f"{CELL}.delay_ms", 1e308, "less than or equal to 100000"),
    (f"{CELL}.uplink_mbps", 1e-9, "greater than or equal to 0.001"),
    (f"{CELL}.members.phone", 1e30, "less than or equal to 100000"),
    (f"{CELL}.members.phone", {"distance_m": 120, "uplink_mbps": 1e-9}, "greater than or equal to 0.001"),
    (f"{CELL}.members.phone", {"distance_m": 120, "ue_tx_power_dbm": INF}, "finite"),
    # transport
    ("topology.transport.init_cwnd_segments", 10**6, "less than or equal to 1000"),
    ("topology.transport.rcv_buffer_bytes", 2**31, "less than or equal to 1073741824"),
    ("topology.transport.rto_min_s", 0, "greater than or equal to 0.001"),
    ("topology.transport.max_retx", 1000, "less than or equal to 100"),
    # integers
    ("seed", -1, "greater than or equal to 0"),
    ("seed", 2**63, "less than or equal to 9223372036854775807"),
    ("seed", 2**70, "less than or equal to 9223372036854775807"),
    ("seed", 1e30, "integer"),
    ("workload.n_requests", 10**30, "less than or equal to 1000000"),
    ("workload.n_requests", 1e30, "integer"),
    ("workload.n_requests", 10**9, "less than or equal to 1000000"),
    ("workload.max_new_tokens", 200_000, "less than or equal to 100000"),
    ("topology.nodes.cloud.slots", 5000, "less than or equal to 4096"),
    # workload
    ("workload.arrival", {"process": "poisson", "rate_per_s": 1e-300}, "greater than or equal to 0.000001"),
    ("workload.arrival", {"process": "poisson", "rate_per_s": INF}, "finite"),
    ("workload.prompts", {"source": "corpus", "min_chars": 80, "max_chars": 50},
     "must be at least min_chars (80), got 50"),
    ("workload.prompts", {"source": "corpus", "max_chars": 10**6}, "less than or equal to 100000"),
    ("workload.sampling.temperature", 1e-300, "must be 0 (greedy) or at least 0.01"),
    ("workload.sampling.temperature", 1000, "less than or equal to 100"),
    ("workload.sampling.top_k", 10**7, "less than or equal to 1000000"),
]


def _where(path: str, value: Any) -> str:
    """The YAML path the problem must name: the field inside a replaced mapping, if that is one."""
    if path == "workload.arrival":
        return "workload.arrival.rate_per_s"
    if path == "workload.prompts":
        return "workload.prompts.max_chars"
    if path.endswith("members.phone"):
        field = next((k for k in value if k != "distance_m"), "distance_m") if isinstance(value, dict) else (
            "distance_m")
        return f"{path}.{field}"
    return path


@pytest.mark.parametrize(("path", "value", "expected"), SCHEMA_CASES,
                         ids=[f"{p}={v!r}"[:60] for p, v, _ in SCHEMA_CASES])
def test_out_of_range_numbers_are_one_line_naming_the_yaml_path(path: str, value: Any, expected: str) -> None:
    edits = {path: value}
    if ".outages[0]." in path:
        edits = {f"{LINK}.outages": [{"start_s": 0.0, "end_s": 1.0, path.rsplit(".", 1)[1]: value}]}
    problems = problems_of(edited(edits))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{_where(path, value)}: "), problems
    assert expected in problems[0], problems


def test_every_range_is_in_the_schema_users_read() -> None:
    """The JSON schema is the reference: the bounds are machine-readable and the description says them."""
    defs = scenario_json_schema()["$defs"]
    rate = defs["LinkSpec"]["properties"]["rate_mbps"]
    assert (rate["minimum"], rate["maximum"]) == (1e-3, 1e7)
    assert "1 kbit/s" in rate["description"] and "10 Tbit/s" in rate["description"]
    coherence = defs["CellSpec"]["properties"]["coherence_ms"]
    assert coherence["minimum"] == 0.1 and "0.1 to 1e5" in coherence["description"]
    seed = scenario_json_schema()["properties"]["seed"]
    assert seed["maximum"] == 2**63 - 1


def test_boundary_values_are_accepted() -> None:
    """The ranges are closed where they say so: the extremes themselves are legal."""
    raw = edited({f"{LINK}.rate_mbps": 1e-3, f"{LINK}.delay_ms": 1e5, f"{CELL}.coherence_ms": 0.1,
                  f"{CELL}.carrier_ghz": 0.4, "seed": 2**63 - 1, "workload.sampling.temperature": 0.01,
                  "workload.arrival": {"process": "poisson", "rate_per_s": 1e-6}})
    sc = parse_scenario(raw)
    assert sc.seed == 2**63 - 1 and sc.topology.links[0].rate_mbps == 1e-3


# ------------------------------------------------------------------------------------ budget: refusals


@pytest.mark.parametrize(
    ("edits", "expected"),
    [
        ({"workload.n_requests": 1_000_000, "workload.max_new_tokens": 1000}, "workload.n_requests: about "),
        ({f"{CELL}.fading": "rayleigh", f"{CELL}.coherence_ms": 0.1, f"{CELL}.bandwidth_mhz": 0.1,
          "workload.n_requests": 40_000, "workload.max_new_tokens": 100},
         "topology.cells[0].coherence_ms: about "),
        ({f"{CELL}.fading": "rayleigh", f"{CELL}.coherence_ms": 0.1,
          "workload.arrival": {"process": "poisson", "rate_per_s": 1e-3}},
         "topology.cells[0].coherence_ms: ~"),
        ({"workload.arrival": {"process": "poisson", "rate_per_s": 1e-6}, "workload.n_requests": 1000},
         "workload.arrival.rate_per_s: 1000 requests at 1e-06/s"),
        ({"workload.max_new_tokens": 100_000, "workload.n_requests": 10},
         "workload.max_new_tokens: the models need "),
    ],
    ids=["events-and-memory", "fading-events", "fading-block-index", "poisson-horizon", "model-time"],
)
def test_work_beyond_the_machine_is_refused_in_one_line(edits: dict[str, Any], expected: str) -> None:
    problems = problems_of(edited(edits), check=True)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_a_trace_beyond_the_horizon_names_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s\n0\n2e7\n")
    problems = problems_of(edited({"workload.arrival": {"process": "trace", "path": str(trace)}}),
                           check=True)
    assert len(problems) == 1, problems
    assert problems[0].startswith("workload.arrival.path: the trace's times reach 2e+07")


def test_budget_refuses_n_requests_for_the_memory_this_machine_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory line compares with the machine's memory: on a 1 GB machine even 10⁴ requests fail."""
    monkeypatch.setattr(budget_mod, "machine_memory_bytes", lambda: 1e9)
    problems = budget_problems(parse_scenario(edited({"workload.n_requests": 10_000})))
    assert len(problems) == 1, problems
    assert problems[0].startswith("workload.n_requests: about ")
    assert "this machine has 1 GB" in problems[0] and "reduce n_requests or max_new_tokens" in problems[0]


def test_bundled_scenarios_fit(scenarios_dir: Path) -> None:
    from netsim.scenario import load_scenario

    for path in sorted(scenarios_dir.glob("*.yaml")):
        assert budget_problems(load_scenario(path)) == [], path


# ------------------------------------------------------------------------------- budget: hand-computed


def test_estimate_matches_a_hand_computed_small_case() -> None:
    """BASE: 2 requests × 4 tokens, corpus prompts of ≤ 400 characters, phone → gnb → cloud and back.

    prompt tokens   ⌈400 / 3⌉ = 134
    records         2 × (start + end + prefill + 3 decodes + 2 hops × (1 prompt + 4 tokens)) = 2 × 16
    token steps     2 × (134 + 4) = 276
    cache reads     2 × (4 × 134 + 4² / 2) = 1088
    """
    scenario = parse_scenario(BASE)
    b = estimate(scenario)
    assert b.records == 32
    assert b.token_steps == 276
    assert b.cache_reads == 1088
    assert b.model_wall_s == pytest.approx(2 * (REQUEST_WALL_S + 4 * TOKEN_WALL_S) + 1088 * CACHE_READ_WALL_S)
    assert b.fading_blocks == 0 and b.events == 32
    two_models = 2 * (DEFAULT_LOGITS_MEMO_NBYTES + DEFAULT_KV_MEMO_NBYTES)
    per_request = REQUEST_BYTES + 4 * TOKEN_BYTES
    assert b.memory_bytes == RUNTIME_BYTES + two_models + 32 * RECORD_BYTES + 2 * per_request
    assert b.horizon_s == pytest.approx(_hand_horizon_s(scenario, arrival_s=0.0), rel=1e-9)
    assert "about 32 events (32 records), 276 model token steps" in str(b)


def _hand_horizon_s(scenario: Scenario, arrival_s: float) -> float:
    """max(arrival span, queue) + one request: round trip + bottleneck wire time + slowest compute."""
    store = ModelStore()
    up_rate_bps = _graph_rate(scenario, "phone", "gnb")
    down_rate_bps = _graph_rate(scenario, "gnb", "phone")
    rtt_s = 2 * (5e-3 + 10e-3)  # cell delay 5 ms (default) + link 10 ms, both ways
    wire_s = (8 * (MESSAGE_HEADER_BYTES + 400 + 52) / min(up_rate_bps, 1e9)
              + 4 * 8 * (tokens_nbytes(1) + 52) / min(down_rate_bps, 1e9))
    compute = []
    for node, model in (("phone", "shakespeare-slm"), ("cloud", "shakespeare-llm")):
        profile = load_profile(scenario.topology.nodes[node].profile or "")
        geometry = store.manifest(model).geometry
        compute.append(call_time_s(profile, prefill_cost(geometry, 134))
                       + 3 * call_time_s(profile, decode_cost(geometry, 134 + 2)))
    queue_s = 2 / sum(1 / c for c in compute)  # one slot each
    return max(arrival_s, queue_s) + rtt_s + wire_s + max(compute)


def _graph_rate(scenario: Scenario, src: str, dst: str) -> float:
    from netsim.network.topology import build_graph

    topo = scenario.topology
    return build_graph(topo.nodes, topo.links, topo.cells).edges[src, dst]["rate_bps"]


def test_poisson_arrivals_stretch_the_horizon_to_mean_plus_three_sigma() -> None:
    """Two arrivals at 0.01/s: the last is Gamma(2, 0.01/s), mean 200 s, σ √2 · 100 s."""
    scenario = parse_scenario(edited({"workload.arrival": {"process": "poisson", "rate_per_s": 0.01}}))
    expected = _hand_horizon_s(scenario, arrival_s=(2 + 3 * math.sqrt(2)) / 0.01)
    assert estimate(scenario).horizon_s == pytest.approx(expected)


def test_fading_blocks_count_the_air_time_of_faded_directions() -> None:
    """2 requests from the one member: the prompt up (1 message) and 4 tokens down, each busy for its
    air time at the nominal rate × FADING_STALL, plus one edge per message."""
    scenario = parse_scenario(edited({f"{CELL}.fading": "rayleigh", f"{CELL}.coherence_ms": 0.5}))
    up_bps, down_bps = _graph_rate(scenario, "phone", "gnb"), _graph_rate(scenario, "gnb", "phone")
    coherence_s = 0.5e-3
    up = 2 * (8 * (MESSAGE_HEADER_BYTES + 400 + 52) / up_bps * FADING_STALL / coherence_s + 1)
    down = 2 * (4 * 8 * (tokens_nbytes(1) + 52) / down_bps * FADING_STALL / coherence_s + 4)
    assert estimate(scenario).fading_blocks == pytest.approx(up + down)
    fixed_up = parse_scenario(edited({f"{CELL}.fading": "rayleigh", f"{CELL}.coherence_ms": 0.5,
                                      f"{CELL}.uplink_mbps": 5}))
    assert estimate(fixed_up).fading_blocks == pytest.approx(down)  # a fixed rate does not fade


def test_machine_memory_is_read_without_psutil() -> None:
    assert 1e8 < budget_mod.machine_memory_bytes() < 1e15


# --------------------------------------------------------------------------- through the CLI: no hangs


def _write(tmp_path: Path, raw: dict[str, Any], name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _netsim(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "netsim", *args], capture_output=True, text=True,
                          timeout=timeout_s)


HANGS: list[tuple[str, str, str]] = [
    # the --set value is read as YAML, as a user would write it in the file
    ("topology.links[0].delay_ms=.inf", "topology.links[0].delay_ms", "finite"),
    ("topology.links[0].delay_ms=1.0e+308", "topology.links[0].delay_ms", "100000"),
    ("topology.links[0].rate_mbps=1.0e-9", "topology.links[0].rate_mbps", "0.001"),
    ("topology.cells[0].coherence_ms=1.0e-9", "topology.cells[0].coherence_ms", "0.1"),
    ("workload.arrival={process: poisson, rate_per_s: 1.0e-300}", "workload.arrival.rate_per_s", "0.000001"),
    ("seed=1.0e+30", "seed", "integer"),
    (f"seed={2**70}", "seed", "less than or equal"),
    ("workload.n_requests=1.0e+30", "workload.n_requests", "integer"),
    ("workload.n_requests=1000000000", "workload.n_requests", "1000000"),
    ("topology.cells[0].ap_antenna_gain_dbi=1.0e+30", "topology.cells[0].ap_antenna_gain_dbi", "50"),
    ("topology.links[0].delay_ms=-.inf", "topology.links[0].delay_ms", "finite"),
]


@pytest.mark.parametrize(("setting", "where", "expected"), HANGS, ids=[h[0][:50] for h in HANGS])
def test_former_hangs_and_crashes_exit_2_in_one_line(tmp_path: Path, setting: str, where: str,
                                                     expected: str) -> None:
    """Issue 11's hangs and crashes, on a TCP scenario (infinite delays used to crash TCP's RTT)."""
    path = _write(tmp_path, edited({"topology.transport": {"kind": "tcp"}}))
    proc = _netsim("validate", str(path), "--set", setting, timeout_s=30)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and f"{where}: " in lines[0] and expected in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_infinite_trace_time_exits_2(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s\n0\ninf\n")
    path = _write(tmp_path, edited({"workload.arrival": {"process": "trace", "path": str(trace)}}))
    proc = _netsim("validate", str(path), timeout_s=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "workload.arrival.path: " in proc.stderr


def test_n_requests_beyond_memory_is_refused_by_validate_quickly(tmp_path: Path) -> None:
    path = _write(tmp_path, edited({"workload.n_requests": 1_000_000, "workload.max_new_tokens": 2000}))
    proc = _netsim("validate", str(path), timeout_s=30)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "workload.n_requests: about " in proc.stderr and "reduce n_requests" in proc.stderr


@pytest.mark.parametrize(
    ("edits", "arrival_s"),
    [
        ({f"{CELL}.fading": "rayleigh", f"{CELL}.coherence_ms": 0.1}, 100.0),
        ({}, 9e6),
    ],
    ids=["fading-0.1ms", "request-at-9e6s"],
)
def test_the_slowest_legal_values_run_to_completion_in_seconds(tmp_path: Path, edits: dict[str, Any],
                                                                arrival_s: float) -> None:
    """The floor of every range that stretches time, at once, on TCP: a 1 kbit/s link with 100 s
    delays, and either 0.1 ms fading blocks or a request late in the 1e7 s horizon. Finish, not hang."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Shall I compare thee to a summer's day?\n")
    (tmp_path / "t.csv").write_text(f"t_s\n{arrival_s}\n")
    raw = edited({
        "topology.transport": {"kind": "tcp"},
        f"{LINK}.rate_mbps": 1e-3, f"{LINK}.delay_ms": 1e5,
        "workload.n_requests": 1, "workload.max_new_tokens": 16,
        "workload.arrival": {"process": "trace", "path": str(tmp_path / "t.csv")},
        "workload.prompts": {"source": "file", "path": str(prompts)},
        **edits,
    })
    proc = _netsim("run", str(_write(tmp_path, raw)), "-o", str(tmp_path / "run"), timeout_s=120)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "run" / "summary.json").is_file()


# ------------------------------------------------------------------------------------ device profiles


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("mem_bw_bytes_per_s", "68Gb/s", "is a bit rate"),
        ("mem_bw_bytes_per_s", "68gb/s", "ambiguous unit 'gb/s'"),
        ("mem_bw_bytes_per_s", "1e400GB/s", "not a finite"),
        ("memory_bytes", "8Gb", "counts bits"),
        ("memory_bytes", "8PiB", "unknown unit 'PiB'"),
        ("memory_bytes", 2**60, "less than or equal to 1125899906842624"),
        ("power_active_w", INF, "not a finite"),
        ("overhead_per_call_s", "2h", "less than or equal to 60"),
        ("peak_flops", {"float32": "1e30TFLOPS"}, "peak_flops.float32: Input should be less than or equal"),
    ],
)
def test_a_profile_with_an_impossible_number_is_one_line_naming_the_field(
        tmp_path: Path, field: str, value: Any, expected: str) -> None:
    from netsim.errors import InputError
    from netsim.paths import profiles_dir

    raw = yaml.safe_load((profiles_dir() / "oneplus-12.yaml").read_text())
    raw[field] = value
    path = tmp_path / "phone.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(InputError) as info:
        load_profile(str(path))
    message = str(info.value)
    assert "\n" not in message and f"{field}" in message and expected in message, message
