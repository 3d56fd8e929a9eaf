"""Decode-step overhead of netsim's runtime against a bare onnxruntime loop, measured in one run.

For each model: one InferenceSession (netsim's own), one prompt, one fixed sequence of next tokens; the
bare loop builds its feed dict by hand and calls `session.run`, netsim calls `OnnxCausalLM.decode`.
Repetitions alternate (bare, netsim, memo, bare, netsim, memo, …) so background load hits all three
alike; the ratio is of medians. The memo row is `LanguageModel.next_logits` stepping a fresh sequence
(no hits: every step runs the model, with the previous token re-fed — see netsim/lm/memo.py).

    python benchmarks/bench_decode.py [MODEL ...] [--steps 64] [--reps 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

from netsim.lm.memo import LanguageModel
from netsim.lm.onnx_lm import OnnxCausalLM
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore

PROMPT = ("KING HENRY. Once more unto the breach, dear friends, once more; or close the wall up with our "
          "English dead. In peace there's nothing so becomes a man as modest stillness and humility.")


def bare_loop(lm: OnnxCausalLM, prompt: list[int], tokens: list[int]) -> Callable[[], float]:
    """Seconds per decode step of a hand-written `session.run` loop (the reference)."""
    session, io = lm.session, lm.io
    n_layers, kv_heads, head_dim = lm.geometry.n_layers, lm.geometry.n_kv_heads, lm.geometry.head_dim
    empty = np.zeros((1, kv_heads, 0, head_dim), dtype=io.kv_dtype)

    def run() -> float:
        feed = {name: empty for name in io.past_names}
        feed["input_ids"] = np.asarray([prompt], dtype=np.int64)
        feed["attention_mask"] = np.ones((1, len(prompt)), dtype=np.int64)
        if io.has_position_ids:
            feed["position_ids"] = np.arange(len(prompt), dtype=np.int64)[None]
        present = session.run(None, feed)[1:]
        length = len(prompt)
        started = time.perf_counter()
        for token in tokens:
            feed = dict(zip(io.past_names, present, strict=True))
            feed["input_ids"] = np.array([[token]], dtype=np.int64)
            feed["attention_mask"] = np.ones((1, length + 1), dtype=np.int64)
            if io.has_position_ids:
                feed["position_ids"] = np.array([[length]], dtype=np.int64)
            out = session.run(None, feed)
            present, length = out[1:], length + 1
        assert len(present) == 2 * n_layers
        return (time.perf_counter() - started) / len(tokens)

    return run


def netsim_loop(lm: OnnxCausalLM, prompt: list[int], tokens: list[int]) -> Callable[[], float]:
    def run() -> float:
        _, cache = lm.prefill(prompt)
        started = time.perf_counter()
        for token in tokens:
            _, cache = lm.decode(token, cache)
        return (time.perf_counter() - started) / len(tokens)

    return run


def memo_loop(lm: OnnxCausalLM, prompt: list[int], tokens: list[int]) -> Callable[[], float]:
    def run() -> float:
        model = LanguageModel(lm)  # fresh memo: no hits
        model.next_logits(prompt)
        sequence = list(prompt)
        started = time.perf_counter()
        for token in tokens:
            sequence.append(token)
            model.next_logits(sequence)
        return (time.perf_counter() - started) / len(tokens)

    return run


def bench(name: str, store: ModelStore, steps: int, reps: int, threads: int) -> dict:
    lm = OnnxCausalLM.load(store.path(name), threads=threads, name=name)
    prompt = lm.tokenizer.encode(PROMPT)
    # the tokens a greedy decode would produce, fixed up front so every loop feeds the same inputs
    tokens = LanguageModel(lm).generate(prompt, steps, SamplingSpec(), seed=0, stop_at_eos=False)
    tokens += [tokens[-1]] * (steps - len(tokens))
    loops = {"bare": bare_loop(lm, prompt, tokens), "netsim": netsim_loop(lm, prompt, tokens),
             "memo": memo_loop(lm, prompt, tokens)}
    for loop in loops.values():  # warm-up: allocator, thread pool, caches
        loop()
    times: dict[str, list[float]] = {k: [] for k in loops}
    for _ in range(reps):
        for key, loop in loops.items():
            times[key].append(loop())
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"model": name, "params_m": lm.geometry.n_params / 1e6, "threads": threads,
            "prompt_tokens": len(prompt), "steps": steps, "bare_ms": 1e3 * median["bare"],
            "netsim_ms": 1e3 * median["netsim"], "memo_ms": 1e3 * median["memo"],
            "ratio": median["netsim"] / median["bare"], "memo_ratio": median["memo"] / median["bare"],
            "tok_s": 1 / median["netsim"]}


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
          f"{args.steps} decode steps, median of {args.reps} alternating repetitions")


if __name__ == "__main__":
    main()
