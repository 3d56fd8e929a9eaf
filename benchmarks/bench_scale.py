"""Scale: validation, world build and a whole `cloud_only` run at 1,000 and 10,000 devices.

The scenario is built in code: N phones as 10 device groups, one per 5G cell (N/10 members each,
drawn uniformly over the 40–600 m disc around their gNB), every gNB wired to one cloud A100 (64 slots)
hosting the bundled Shakespeare LLM charged as Qwen3-8B; each phone hosts the bundled SLM charged as
Qwen2.5-0.5B (unused by `cloud_only`, but it makes validation and the world build resolve a profile, a
manifest and a card per device, as a real fleet would). Workload: one request per device
(`n_requests = N`, round-robin), 16 new tokens, greedy, Poisson arrivals at N/60 per second (each
phone asks once, somewhere in about a minute), and ten prompts cut from the corpus written to a prompt
file — so the real models run ten distinct generations and every other request is answered from the
memo: the benchmark measures the simulator, not ONNX.

Each size runs in its own subprocess (a fresh interpreter, fresh ModelStore) that times
  parse       Scenario.model_validate of the dict (the schema, with the groups expanded into nodes)
  validate    netsim.validation.check_scenario (profiles, manifests, cards, memory, routes, policy,
              budget)
  build       netsim.world.build_world (network, media, nodes, hosted models; loads the ONNX models)
  run         netsim.run on the same scenario and store: its own validation and build, the simulation,
              the requests/events frames and the summary
and reports the process's peak RSS (`ru_maxrss`) at the end. Targets: validate + build ≤ 10 s at
10,000 devices, and 10× the devices ≤ 11× the time.

    python benchmarks/bench_scale.py [--sizes 1000 10000] [--profile N]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_CELLS = 10
NEW_TOKENS = 16
N_PROMPTS = 10
CLOUD_SLOTS = 64
ARRIVAL_SPAN_S = 60.0


def scenario_dict(n_devices: int, prompt_file: Path) -> dict[str, Any]:
    """N phones over N_CELLS cells, one cloud: one device group per cell, expanded at load."""
    nodes: dict[str, Any] = {
        "cloud": {"role": "cloud", "profile": "nvidia-a100-80gb", "slots": CLOUD_SLOTS,
                  "models": [{"name": "shakespeare-llm", "charged_as": "qwen3-8b"}]},
    }
    groups, cells, links = [], [], []
    width = len(str(n_devices // N_CELLS - 1))
    for c in range(N_CELLS):
        nodes[f"gnb{c}"] = {"role": "router"}
        groups.append({"name": f"phones{c}", "count": n_devices // N_CELLS,
                       "pattern": f"c{c}phone{{i:0{width}d}}", "profile": "oneplus-12",
                       "models": [{"name": "shakespeare-slm", "charged_as": "qwen2.5-0.5b"}],
                       "cell": f"cell{c}",
                       "placement": {"distribution": "uniform_disc", "min_m": 40, "max_m": 600}})
        cells.append({"name": f"cell{c}", "ap": f"gnb{c}", "carrier_ghz": 3.5, "bandwidth_mhz": 100,
                      "pathloss": "uma_nlos", "ap_antenna_gain_dbi": 17, "delay_ms": 5})
        links.append({"src": f"gnb{c}", "dst": "cloud", "rate_mbps": 10_000, "delay_ms": 20})
    return {
        "name": f"scale-{n_devices}",
        "seed": 1,
        "topology": {"nodes": nodes, "groups": groups, "cells": cells, "links": links},
        "workload": {"n_requests": n_devices, "max_new_tokens": NEW_TOKENS,
                     "arrival": {"process": "poisson", "rate_per_s": n_devices / ARRIVAL_SPAN_S},
                     "prompts": {"source": "file", "path": str(prompt_file)},
                     "sampling": {"temperature": 0.0}},
        "policy": {"name": "cloud_only"},
    }


def write_prompts(directory: Path) -> Path:
    from netsim.lm.corpus import prompt_texts

    path = directory / "prompts.txt"
    path.write_text("\n".join(prompt_texts(N_PROMPTS, seed=0, min_chars=80, max_chars=200)) + "\n",
                    encoding="utf-8")
    return path


def measure(n_devices: int, prompt_file: Path) -> dict[str, float]:
    """One size, in this process: phase wall times and peak RSS."""
    import netsim
    from netsim.lm.zoo import ModelStore
    from netsim.scenario import parse_scenario
    from netsim.validation import check_scenario
    from netsim.world import build_world

    raw = scenario_dict(n_devices, prompt_file)
    t0 = time.perf_counter()
    scenario = parse_scenario(raw)
    t1 = time.perf_counter()
    store = ModelStore()
    check_scenario(scenario, store)
    t2 = time.perf_counter()
    world = build_world(scenario, store)
    t3 = time.perf_counter()
    del world
    results = netsim.run(scenario, store)
    t4 = time.perf_counter()
    summary = results.summary
    assert summary["n_requests"] == n_devices, summary
    return {"devices": n_devices, "parse_s": t1 - t0, "validate_s": t2 - t1, "build_s": t3 - t2,
            "run_s": t4 - t3, "n_ok": summary["n_ok"], "n_events": results.events.height,
            "sim_end_s": summary["sim_end_s"],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def profile(n_devices: int, prompt_file: Path) -> None:
    """cProfile of parse + validation + world build at one size: the top 30 by cumulative time."""
    from netsim.lm.zoo import ModelStore
    from netsim.scenario import parse_scenario
    from netsim.validation import check_scenario
    from netsim.world import build_world

    raw = scenario_dict(n_devices, prompt_file)
    prof = cProfile.Profile()
    prof.enable()
    scenario = parse_scenario(raw)
    store = ModelStore()
    check_scenario(scenario, store)
    build_world(scenario, store)
    prof.disable()
    pstats.Stats(prof).sort_stats("cumulative").print_stats(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile validation + build at N devices")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--prompts", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(measure(args.child, args.prompts)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        prompts = write_prompts(Path(tmp))
        if args.profile is not None:
            profile(args.profile, prompts)
            return
        rows = []
        for n in args.sizes:
            proc = subprocess.run([sys.executable, __file__, "--child", str(n), "--prompts", str(prompts)],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                sys.exit(f"size {n} failed:\n{proc.stderr}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print("| devices | parse s | validate s | build s | validate + build s | whole run s | events | "
          "peak RSS MB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['devices']:,} | {r['parse_s']:.2f} | {r['validate_s']:.2f} | {r['build_s']:.2f} | "
              f"{r['validate_s'] + r['build_s']:.2f} | {r['run_s']:.1f} | {r['n_events']:,} | "
              f"{r['peak_rss_mb']:,.0f} |")
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        scale = b["devices"] / a["devices"]
        vb = (b["validate_s"] + b["build_s"]) / (a["validate_s"] + a["build_s"])
        print(f"\n{scale:g}× devices: validate + build ×{vb:.2f}, whole run ×{b['run_s'] / a['run_s']:.2f}, "
              f"peak RSS ×{b['peak_rss_mb'] / a['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
