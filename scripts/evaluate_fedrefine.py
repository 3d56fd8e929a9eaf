"""Quality of FedRefine's collaboration on the bundled models (docs/policies/c2c.md's table).

    python scripts/evaluate_fedrefine.py [--passages 64] [--questions 100]

Receiver shakespeare-slm; senders shakespeare-llm and shakespeare-llm-qwen (the pairs with trained fusers).
Prints a markdown table; about two minutes on one core.
"""

from __future__ import annotations

import argparse
import time

from netsim.lm.refine_eval import evaluate_refinement
from netsim.lm.zoo import ModelStore


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=64)
    parser.add_argument("--questions", type=int, default=100)
    args = parser.parse_args()
    t0 = time.process_time()
    rows = evaluate_refinement(ModelStore(), "shakespeare-slm", ["shakespeare-llm", "shakespeare-llm-qwen"],
                               n_passages=args.passages, n_questions=args.questions)
    print("| condition | held-out NLL (nats/token) | Δ vs alone ± s.e. | MC accuracy |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['condition']} | {r['nll']:.4f} | {r['delta']:+.4f} ± {r['delta_se']:.4f} "
              f"| {r['mc_accuracy']:.3f} |")
    print(f"\n{rows[0]['passages']} passages × 32 scored tokens, {rows[0]['questions']} questions; "
          f"{time.process_time() - t0:.0f} CPU s")


if __name__ == "__main__":
    main()
