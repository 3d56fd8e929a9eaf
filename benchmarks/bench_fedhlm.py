"""FedHLM at scale: N devices × 64 tokens with the bundled models, wall time and peak RSS.

    python benchmarks/bench_fedhlm.py                      # 1,000 devices: wall ≤ 120 s, RSS ≤ 4 GB
    python benchmarks/bench_fedhlm.py --devices 100,1000   # and the time ratio of 10× the devices (≤ 11×)
    python benchmarks/bench_fedhlm.py --no-prefetch        # ablation: every model call on demand

Each point runs in a fresh process (peak RSS is per process; the model memo starts cold, as a user's first
run does). Topology, per 100 devices: an aggregation router with a 1 Gbit/s edge server and a 10 Gbit/s
uplink to the core; devices on 100 Mbit/s, 2 ms wires; the core 20 ms from a cloud with 64 slots.
Clusters of 5 devices under one router; each device asks one request of 64 tokens (free-running,
sampled at T = 0.8), 2 federated rounds, entropy uncertainty, no agreement scoring (it would add an LLM
forward per token that no policy decision needs). Prompts: the device's own held-out passages of a
Dirichlet(1) partition. The thresholds start at 0.8, where ~5 % of the bundled SLM's drafts leave the
device — FedHLM's operating point in the paper's Table III (3.9 % to the LLM, 1.6 % P2P); `--threshold`
changes it (each LLM verification costs ~5 ms of CPU in onnxruntime, the SLM step ~0.6 ms).
Reported: wall time, CPU time of the process (all its threads: the models' prefetched calls run on a
worker threads beside the event loop, netsim/lm/memo.py, so on an idle machine CPU exceeds wall; wall
exceeds CPU when other work shares the cores) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from itertools import pairwise
from typing import Any

CLUSTER = 5
PER_ROUTER = 100


def scenario(n_devices: int, tokens: int = 64, threshold: float = 0.8) -> dict[str, Any]:
    n_routers = -(-n_devices // PER_ROUTER)
    nodes: dict[str, Any] = {"core": {"role": "router"},
                             "cloud": {"role": "cloud", "profile": "nvidia-h100-sxm", "slots": 64,
                                       "models": [{"name": "shakespeare-llm", "charged_as": "qwen3-8b"}]}}
    links: list[dict[str, Any]] = [{"src": "core", "dst": "cloud", "rate_mbps": 100_000, "delay_ms": 20}]
    groups = []
    clusters = []
    for j in range(n_routers):
        nodes[f"agg{j}"] = {"role": "router"}
        nodes[f"edge{j}"] = {"role": "edge", "profile": "jetson-agx-orin"}
        links += [{"src": f"agg{j}", "dst": f"edge{j}", "rate_mbps": 1000, "delay_ms": 1},
                  {"src": f"agg{j}", "dst": "core", "rate_mbps": 10_000, "delay_ms": 5}]
        count = min(PER_ROUTER, n_devices - j * PER_ROUTER)
        groups.append({"name": f"g{j}", "count": count, "pattern": f"d{j}x{{i}}", "profile": "oneplus-12",
                       "models": [{"name": "shakespeare-slm", "charged_as": "qwen2.5-0.5b"}],
                       "links": [{"to": f"agg{j}", "rate_mbps": 100, "delay_ms": 2}]})
        members = [f"d{j}x{i}" for i in range(count)]
        clusters += [{"devices": members[k:k + CLUSTER], "edge": f"edge{j}"}
                     for k in range(0, count, CLUSTER)]
    return {
        "name": f"bench-fedhlm-{n_devices}", "seed": 1,
        "topology": {"nodes": nodes, "groups": groups, "links": links},
        "workload": {"n_requests": n_devices, "max_new_tokens": tokens,
                     "prompts": {"source": "partition", "alpha": 1.0},
                     "sampling": {"temperature": 0.8}},
        "policy": {"name": "fedhlm", "rounds": 2, "threshold": threshold, "uncertainty": "entropy",
                   "agreement": False, "clusters": clusters},
    }


def one_point(n_devices: int, tokens: int, threshold: float, prefetch: bool = True) -> dict[str, Any]:
    from netsim.lm.memo import LanguageModel
    from netsim.scenario import parse_scenario
    from netsim.simulation import run

    if not prefetch:  # the ablation: the policy's hints ignored, every call made when its answer is needed
        LanguageModel.prefetch = lambda self, prefix: None  # type: ignore[method-assign]

    start, cpu = time.perf_counter(), time.process_time()
    results = run(parse_scenario(scenario(n_devices, tokens, threshold)))
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu
    s = results.summary
    r = results.requests
    return {"devices": n_devices, "tokens": int(s["n_output_tokens"]), "wall_s": round(wall_s, 2),
            "cpu_s": round(cpu_s, 2),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
            "n_failed": s["n_failed"], "tokens_llm": int(r["tokens_llm"].sum()),
            "tokens_p2p": int(r["tokens_p2p"].sum()), "tokens_edge": int(r["tokens_edge"].sum()),
            "tokens_local": int(r["tokens_local"].sum()), "events": results.events.height}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000", help="comma-separated device counts")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--threshold", type=float, default=0.8, help="initial u_th of every client")
    parser.add_argument("--no-prefetch", action="store_true", help="run every model call on demand")
    parser.add_argument("--point", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.point is not None:
        print(json.dumps(one_point(args.point, args.tokens, args.threshold, not args.no_prefetch)))
        return
    points = []
    for n in (int(x) for x in args.devices.split(",")):
        command = [sys.executable, __file__, "--point", str(n), "--tokens", str(args.tokens),
                   "--threshold", str(args.threshold), *(["--no-prefetch"] if args.no_prefetch else [])]
        out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        points.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(points[-1]), flush=True)
    for p in points:
        verdict = "ok" if p["wall_s"] <= 120 and p["peak_rss_gb"] <= 4 else "over"
        print(f"{p['devices']:>6} devices × {args.tokens} tokens: {p['wall_s']:.1f} s wall, "
              f"{p['cpu_s']:.1f} s CPU, {p['peak_rss_gb']:.2f} GB peak RSS ({verdict} the 120 s / 4 GB bar, "
              "on wall time)")
    for a, b in pairwise(points):
        scale = b["devices"] / a["devices"]
        print(f"{scale:g}× the devices: {b['wall_s'] / a['wall_s']:.2f}× the wall time, "
              f"{b['cpu_s'] / a['cpu_s']:.2f}× the CPU time (bar: ≤ {1.1 * scale:g}×)")


if __name__ == "__main__":
    main()
