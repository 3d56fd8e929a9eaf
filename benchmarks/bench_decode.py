"""Decode-step overhead of netsim's runtime against a bare onnxruntime loop, measured in one run.

For each model: one InferenceSession (netsim's own), one prompt, one fixed sequence of next tokens; the
bare loop builds its feed dict by hand and calls `session.run`, netsim calls `OnnxCausalLM.decode`.
The loops run in lockstep, so background load hits them alike; the ratio is of total times. The memo
row is `LanguageModel.next_logits` stepping a fresh sequence (no hits: every step runs the model, with
the previous token re-fed — see netsim/lm/memo.py).

    python benchmarks/bench_decode.py [MODEL ...] [--steps 64] [--reps 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from netsim.lm.memo import LanguageModel
from netsim.lm.onnx_lm import OnnxCausalLM
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore

PROMPT = ("KING HENRY. Once more unto the breach, dear friends, once more; or close the wall up with our "
          "English dead. In peace there's nothing so becomes a man as modest stillness and humility.")


Step = Callable[[int], None]


def bare_stepper(lm: OnnxCausalLM, prompt: list[int]) -> Step:
    """A hand-written `session.run` decode loop (the reference): feed dict built by hand each step."""
    session, io = lm.session, lm.io
    empty = np.zeros((1, lm.geometry.n_kv_heads, 0, lm.geometry.head_dim), dtype=io.kv_dtype)
    feed = {name: empty for name in io.past_names}
    feed["input_ids"] = np.asarray([prompt], dtype=np.int64)
    feed["attention_mask"] = np.ones((1, len(prompt)), dtype=np.int64)
    if io.has_position_ids:
        feed["position_ids"] = np.arange(len(prompt), dtype=np.int64)[None]
    state = {"present": session.run(None, feed)[1:], "length": len(prompt)}

    def step(token: int) -> None:
        length = state["length"]
        feed = dict(zip(io.past_names, state["present"], strict=True))
        feed["input_ids"] = np.array([[token]], dtype=np.int64)
        feed["attention_mask"] = np.ones((1, length + 1), dtype=np.int64)
        if io.has_position_ids:
            feed["position_ids"] = np.array([[length]], dtype=np.int64)
        state["present"], state["length"] = session.run(None, feed)[1:], length + 1

    return step


def netsim_stepper(lm: OnnxCausalLM, prompt: list[int]) -> Step:
    state = {"cache": lm.prefill(prompt)[1]}

    def step(token: int) -> None:
        state["cache"] = lm.decode(token, state["cache"])[1]

    return step


def memo_stepper(lm: OnnxCausalLM, prompt: list[int]) -> Step:
    """`LanguageModel.next_logits` on a fresh memo: every step runs the model (two query tokens)."""
    model = LanguageModel(lm)
    sequence = list(prompt)
    model.next_logits(sequence)

    def step(token: int) -> None:
        sequence.append(token)
        model.next_logits(sequence)

    return step


def bench(name: str, store: ModelStore, steps: int, reps: int, threads: int) -> dict:
    """Seconds per step of each loop. Within a repetition the three loops advance in lockstep — step i
    of each is timed back to back, in an order that rotates with i — so load from other processes
    falls on all of them alike."""
    lm = OnnxCausalLM.load(store.path(name), threads=threads, name=name)
    prompt = lm.tokenizer.encode(PROMPT)
    # the tokens a greedy decode produces, fixed up front so every loop feeds the same inputs
    tokens = LanguageModel(lm).generate(prompt, steps, SamplingSpec(), seed=0, stop_at_eos=False)
    tokens += [tokens[-1]] * (steps - len(tokens))
    makers = {"bare": bare_stepper, "netsim": netsim_stepper, "memo": memo_stepper}
    totals = dict.fromkeys(makers, 0.0)
    for rep in range(reps + 1):  # repetition 0 warms up allocator, thread pool and caches
        steppers = {key: make(lm, prompt) for key, make in makers.items()}
        keys = list(steppers)
        for i, token in enumerate(tokens):
            for key in keys[i % 3:] + keys[:i % 3]:
                started = time.perf_counter()
                steppers[key](token)
                if rep:
                    totals[key] += time.perf_counter() - started
    per_step = {k: v / (reps * steps) for k, v in totals.items()}
    return {"model": name, "params_m": lm.geometry.n_params / 1e6, "threads": threads,
            "prompt_tokens": len(prompt), "steps": steps, "bare_ms": 1e3 * per_step["bare"],
            "netsim_ms": 1e3 * per_step["netsim"], "memo_ms": 1e3 * per_step["memo"],
            "ratio": per_step["netsim"] / per_step["bare"], "memo_ratio": per_step["memo"] / per_step["bare"],
            "tok_s": 1 / per_step["netsim"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", help="model names (default: every model in the store)")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    args = parser.parse_args()
    store = ModelStore()
    rows = [bench(name, store, args.steps, args.reps, threads)
            for name in (args.models or store.names()) for threads in args.threads]
    print("| model | params | threads | bare session.run ms/step | netsim decode ms/step | ratio "
          "| memo step ms | memo ratio | netsim tok/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params_m']:.1f}M | {r['threads']} | {r['bare_ms']:.3f} | "
              f"{r['netsim_ms']:.3f} | {r['ratio']:.3f} | {r['memo_ms']:.3f} | {r['memo_ratio']:.3f} | "
              f"{r['tok_s']:,.0f} |")
    print(f"\nprompt {rows[0]['prompt_tokens'] if rows else 0} tokens (first model's tokenizer), "
          f"{args.steps} decode steps, {args.reps} repetitions, loops in lockstep")


if __name__ == "__main__":
    main()
