"""spec_fleet at ×1, ×10, ×100 the devices: simulated generated tokens per wall second, memo warm.

The scenario is scenarios/spec_fleet.yaml (80 draft devices in 10 groups of 8, 20 verifiers in 4 tiers
of 5, each group wired to 4 verifiers that serve exactly two groups each, closed-loop conversations,
speculative decoding with γ = 4 and join-shortest-queue). ×k has 10·k draft groups of 8 and tiers of
5·k verifiers, the groups' verifiers and link delays drawn by the same rule (numpy default_rng(9)), and
two turns per device (n_requests = 2 × devices), so the per-device work is the same at every scale.

Inference is memoised on disk (`ModelStore(disk_memo=...)`, .cache/spec_fleet_memo): prompts come from
32 distinct corpus passages and answers are greedy, so every scale asks the models the same questions
and a warm-up run at ×1 fills the memo; the measured runs then time the simulator, not ONNX. Each scale
runs in a fresh subprocess, which reports the wall time of `netsim.run` (validation, world build,
simulation, frames, summary), the generated tokens, the event rows, its peak RSS (`ru_maxrss`) and the
CPU time of the whole subprocess (start-up and scenario expansion included) — on a shared machine the
CPU time is the steadier figure.

    python benchmarks/bench_spec_fleet.py [--scales 1 10 100] [--memo DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = ROOT / "scenarios" / "spec_fleet.yaml"
TIERS = {"a": 12, "b": 12, "c": 14, "d": 11}
"""Verifier tier → its batch size, as in the scenario file."""


def fleet_raw(scale: int) -> dict[str, Any]:
    """The scenario file's mapping with its fleet multiplied by `scale` (×1 is the file's own fleet)."""
    from netsim.inputfile import load_yaml

    raw = load_yaml(SCENARIO, "scenario")
    groups = raw["topology"]["groups"]
    tiers, drafts = groups[:4], groups[4:]
    draft_template, link_template = dict(drafts[0]), dict(drafts[0]["links"][0])
    n_verifiers, n_groups = 5 * scale, 10 * scale
    for tier in tiers:
        tier["count"] = n_verifiers
        width = len(str(n_verifiers - 1))
        tier["pattern"] = tier["pattern"].replace("{i}", f"{{i:0{width}d}}")
    if scale > 1:
        names = [t["pattern"].format(i=i) for t in tiers for i in range(n_verifiers)]
        rng = np.random.default_rng(9)
        # every verifier serves exactly two groups, no group names one twice (as the file was drawn)
        while True:
            slots = rng.permutation(np.repeat(np.arange(len(names)), 2)).reshape(n_groups, 4)
            if all(len(set(row)) == 4 for row in slots):
                break
        delays = rng.uniform(5, 12, size=(n_groups, 4))
        drafts = []
        for g in range(n_groups):
            links = [{**link_template, "to": names[v], "delay_ms": round(float(d), 1)}
                     for v, d in zip(slots[g], delays[g], strict=True)]
            drafts.append({**draft_template, "name": f"draft{g}", "pattern": f"d{g}-{{i}}", "links": links})
    raw["topology"]["groups"] = [*tiers, *drafts]
    for group in raw["topology"]["groups"]:  # the runtime files sit beside the scenario file
        group["runtime"] = str(SCENARIO.parent / group["runtime"])
    n_devices = sum(g["count"] for g in drafts)
    raw["workload"]["n_requests"] = 2 * n_devices
    raw["name"] = f"spec_fleet-x{scale}"
    return raw


def one(scale: int, memo: Path, kv_memo_mib: int) -> dict[str, Any]:
    """One scale in this process: the run's wall time, tokens, events and the process's peak RSS."""
    from netsim.lm.zoo import ModelStore
    from netsim.scenario import parse_scenario
    from netsim.simulation import run

    scenario = parse_scenario(fleet_raw(scale))
    # Logits rows come from the disk memo; the in-memory KV memo only serves the rare miss (an answer
    # longer than any earlier one for its prompt), so it need not hold 512 MiB per model.
    store = ModelStore(disk_memo=memo, kv_memo_nbytes=kv_memo_mib << 20)
    t0 = time.perf_counter()
    results = run(scenario, store)
    wall_s = time.perf_counter() - t0
    summary = results.summary
    n_devices = sum(1 for s in scenario.topology.nodes.values() if s.role == "device")
    return {
        "scale": scale, "devices": n_devices, "verifiers": len(scenario.topology.nodes) - n_devices,
        "requests": summary["n_requests"], "ok": summary["n_ok"], "tokens": summary["n_output_tokens"],
        "events": results.events.height, "sim_s": summary["sim_end_s"], "wall_s": wall_s,
        "tokens_per_wall_s": summary["n_output_tokens"] / wall_s,
        "llm_calls": store.load("shakespeare-llm").n_model_calls,
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "cpu_s": (lambda u: u.ru_utime + u.ru_stime)(resource.getrusage(resource.RUSAGE_SELF)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--memo", type=Path, default=ROOT / ".cache" / "spec_fleet_memo")
    parser.add_argument("--kv-memo-mib", type=int, default=64, help="in-memory KV memo per model, MiB")
    parser.add_argument("--skip-warm-up", action="store_true", help="the disk memo is warm already")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one(args.one, args.memo, args.kv_memo_mib)))
        return
    rows = []
    warm_up = () if args.skip_warm_up else (1,)  # a first ×1 fills the disk memo: reported as `warm-up`
    for scale in (*warm_up, *args.scales):
        proc = subprocess.run([sys.executable, __file__, "--one", str(scale), "--memo", str(args.memo),
                               "--kv-memo-mib", str(args.kv_memo_mib)], capture_output=True, text=True,
                              check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        label = "warm-up" if warm_up and len(rows) == 1 else f"x{scale}"
        print(f"{label:>8}: {r['devices']:>5} devices {r['verifiers']:>5} verifiers "
              f"{r['requests']:>6} requests {r['tokens']:>9,} tokens {r['events']:>10,} events  "
              f"sim {r['sim_s']:7.1f} s  wall {r['wall_s']:8.1f} s  {r['tokens_per_wall_s']:8.0f} tok/wall-s "
              f"LLM calls {r['llm_calls']:>6}  RSS {r['rss_mb']:6.0f} MB  CPU {r['cpu_s']:.1f} s", flush=True)
    base = rows[len(warm_up)]
    for r in rows[len(warm_up) + 1:]:
        print(f"x{r['scale']}: {r['devices'] / base['devices']:.0f}x the devices -> "
              f"{r['wall_s'] / base['wall_s']:.1f}x the wall time, "
              f"{r['tokens'] / base['tokens']:.1f}x the tokens, "
              f"{r['rss_mb'] / base['rss_mb']:.1f}x the peak RSS")


if __name__ == "__main__":
    main()
