"""Requests drawn from a scenario: traces, prompt files, device subsets and the arrival processes, checked
against hand-built expectations and, for Poisson arrivals, the Gamma law of the n-th arrival time."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from netsim.errors import InputError
from netsim.scenario import Scenario, parse_scenario
from netsim.workload import Request, make_requests
from netsim.world import STREAM_WORKLOAD, rng_for

PHONES = ("phone1", "phone2", "phone3", "phone4")


def _scenario(tmp_path: Path, *, prompts: list[str] | None = None, seed: int = 0,
              **workload: Any) -> Scenario:
    """Four phones, a router, an edge server (not a requester); prompts from a file under tmp_path."""
    prompt_file = tmp_path / "prompts.txt"
    prompt_file.write_text("\n".join(prompts if prompts is not None else ["only prompt"]) + "\n")
    nodes: dict[str, Any] = {p: {"role": "device", "profile": "oneplus-12"} for p in PHONES}
    nodes["gnb"] = {"role": "router"}
    nodes["edge"] = {"role": "edge", "profile": "nvidia-l4", "models": ["shakespeare-llm"]}
    raw = {
        "name": "wl",
        "seed": seed,
        "topology": {"nodes": nodes,
                     "links": [{"src": p, "dst": "gnb", "rate_mbps": 100} for p in PHONES]
                     + [{"src": "gnb", "dst": "edge", "rate_mbps": 1000}]},
        "workload": {"prompts": {"source": "file", "path": str(prompt_file)}, **workload},
        "policy": {"name": "edge_only"},
    }
    return parse_scenario(raw)


def _requests(scenario: Scenario) -> list[Request]:
    return make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD))


def _trace(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "trace.csv"
    path.write_text(text)
    return {"process": "trace", "path": str(path)}


# -- traces ---------------------------------------------------------------------------------------------


def test_trace_times_and_named_devices_are_honoured_in_order(tmp_path: Path) -> None:
    # Rows with an empty device fall back to round-robin by request index (devices[i % 4]); a blank
    # line is skipped; the columns may come in any order; rows after n_requests are not read.
    arrival = _trace(tmp_path, "device,t_s\n"
                               "phone3,0.5\n"
                               ",1.25\n"
                               "\n"
                               "phone3,1.25\n"
                               "phone1,7\n"
                               ",9.5\n"
                               "phone2,not read\n")
    reqs = _requests(_scenario(tmp_path, prompts=["a", "b", "c", "d", "e", "f"], n_requests=5,
                               arrival=arrival))
    assert [r.request_id for r in reqs] == [0, 1, 2, 3, 4]
    assert [r.t_arrival_s for r in reqs] == [0.5, 1.25, 1.25, 7.0, 9.5]
    assert [r.device for r in reqs] == ["phone3", "phone2", "phone3", "phone1", "phone1"]
    assert [r.prompt for r in reqs] == ["a", "b", "c", "d", "e"]  # prompts follow the trace's order


def test_trace_without_device_column_round_robins(tmp_path: Path) -> None:
    arrival = _trace(tmp_path, "t_s\n0\n0\n3.5\n4\n4\n")
    reqs = _requests(_scenario(tmp_path, n_requests=5, arrival=arrival))
    assert [r.t_arrival_s for r in reqs] == [0.0, 0.0, 3.5, 4.0, 4.0]
    assert [r.device for r in reqs] == ["phone1", "phone2", "phone3", "phone4", "phone1"]


def test_trace_may_not_name_a_device_outside_the_subset(tmp_path: Path) -> None:
    arrival = _trace(tmp_path, "t_s,device\n0,phone2\n1,phone4\n")
    scenario = _scenario(tmp_path, n_requests=2, devices=["phone2", "phone3"], arrival=arrival)
    with pytest.raises(InputError, match=r"trace\.csv:3: device 'phone4' is not a requesting device"):
        _requests(scenario)


# -- prompt files ---------------------------------------------------------------------------------------


def test_one_prompt_per_non_empty_line_stripped_and_cycled(tmp_path: Path) -> None:
    lines = ["  To be, or not to be  ", "", "   ", "\tNow is the winter", "Friends, Romans"]
    reqs = _requests(_scenario(tmp_path, prompts=lines, n_requests=7))
    expected = ["To be, or not to be", "Now is the winter", "Friends, Romans"]
    assert [r.prompt for r in reqs] == [expected[i % 3] for i in range(7)]


def test_more_prompts_than_requests_uses_the_first_ones(tmp_path: Path) -> None:
    reqs = _requests(_scenario(tmp_path, prompts=[f"p{i}" for i in range(10)], n_requests=4))
    assert [r.prompt for r in reqs] == ["p0", "p1", "p2", "p3"]


# -- devices --------------------------------------------------------------------------------------------


def test_default_devices_are_every_device_node_round_robin(tmp_path: Path) -> None:
    reqs = _requests(_scenario(tmp_path, n_requests=9))
    assert [r.device for r in reqs] == [PHONES[i % 4] for i in range(9)]  # router and edge never ask


def test_device_subset_round_robins_only_over_the_subset_in_its_order(tmp_path: Path) -> None:
    reqs = _requests(_scenario(tmp_path, n_requests=7, devices=["phone4", "phone2"]))
    assert [r.device for r in reqs] == ["phone4", "phone2"] * 3 + ["phone4"]


# -- arrival processes ----------------------------------------------------------------------------------


def test_all_at_once_puts_every_request_at_zero(tmp_path: Path) -> None:
    reqs = _requests(_scenario(tmp_path, n_requests=6))
    assert [r.t_arrival_s for r in reqs] == [0.0] * 6


def test_poisson_mean_rate(tmp_path: Path) -> None:
    """The n-th arrival of a rate-λ Poisson process is Gamma(n, 1/λ): mean n/λ, sd √n/λ. 4 sd leaves a
    false alarm rate of ~6e-5 for one seed; the gaps must also be positive and the first one drawn."""
    n, rate = 20_000, 7.5
    reqs = _requests(_scenario(tmp_path, seed=11, n_requests=n,
                               arrival={"process": "poisson", "rate_per_s": rate}))
    times = np.array([r.t_arrival_s for r in reqs])
    assert len(times) == n
    assert times[0] > 0.0 and np.all(np.diff(times) > 0.0)
    mean, sd = n / rate, math.sqrt(n) / rate
    assert abs(times[-1] - mean) < 4 * sd, (times[-1], mean, sd)
    # memorylessness: the gaps are exponential, so their sd equals their mean (1/λ). The sample sd of n
    # Exp(λ) gaps has sd ≈ √(μ4 − σ⁴)/(2σ√n) = √8/(2√n)·(1/λ) = √(2/n)/λ.
    gaps = np.diff(np.concatenate([[0.0], times]))
    assert abs(gaps.std() - 1 / rate) < 4 * math.sqrt(2 / n) / rate


def test_same_seed_same_requests_and_other_seed_other_times(tmp_path: Path) -> None:
    prompts = ["x", "y", "z"]
    poisson = {"process": "poisson", "rate_per_s": 3.0}
    a = _requests(_scenario(tmp_path, prompts=prompts, seed=5, n_requests=50, arrival=poisson))
    b = _requests(_scenario(tmp_path, prompts=prompts, seed=5, n_requests=50, arrival=poisson))
    c = _requests(_scenario(tmp_path, prompts=prompts, seed=6, n_requests=50, arrival=poisson))
    assert a == b
    times_a, times_c = [r.t_arrival_s for r in a], [r.t_arrival_s for r in c]
    assert all(x != y for x, y in zip(times_a, times_c, strict=True))
    # the seed moves only the times: devices and prompts do not depend on it
    assert [(r.device, r.prompt) for r in a] == [(r.device, r.prompt) for r in c]
