"""C2C fusers: the gate, shapes, ONNX = torch, token alignment, manifest hashes, the shipped fusers' gain."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from netsim.errors import ModelError
from netsim.lm.corpus import corpus_cached, heldout_works
from netsim.lm.evaluate import next_token_passages
from netsim.lm.fuser import (
    FUSER_FILE,
    FUSERS_SUBDIR,
    Fuser,
    FuserManifest,
    PairSide,
    align_tokens,
    encode_with_ends,
    find_fuser_dir,
    fusion_nll,
    heldout_windows,
    layer_map,
    write_fuser_manifest,
)
from netsim.lm.fuser_train import CacheFuser, export_fuser, onnx_vs_torch, torch_lm_from_onnx
from netsim.lm.manifest import sha256_file
from netsim.lm.onnx_lm import KVCache, OnnxCausalLM
from netsim.lm.tokenizer import Tokenizer
from netsim.paths import PROJECT_ROOT

MODELS = PROJECT_ROOT / "models"
FUSERS = MODELS / FUSERS_SUBDIR
SHIPPED = sorted(p.name for p in FUSERS.iterdir() if p.is_dir()
                 and all((MODELS / n).is_dir() for n in p.name.split("--"))) if FUSERS.is_dir() else []
"""Fusers between bundled models; smollm2-135m--shakespeare-slm (its sender is built into the cache) is
tested in tests/test_fuser_xtok.py."""
ACCEPTANCE_PAIR = ("shakespeare-llm", "shakespeare-slm")
"""Issue 7: held-out NLL of the receiver with C2C from the bundled LLM is lower than alone."""

# A tiny pair: sender 3 layers × 2 heads × 8, receiver 2 layers × 1 head × 16.
SENDER_SHAPE, RECEIVER_SHAPE = (2, 8), (1, 16)


def tiny_fuser(seed: int = 0, *, gates: float = 1.0) -> CacheFuser:
    """Random weights everywhere (the projection too, which training starts at zero), gates set open (> 0)
    or closed (≤ 0) by `gates`."""
    torch.manual_seed(seed)
    fuser = CacheFuser(sender_layers=3, sender_heads=SENDER_SHAPE[0], sender_head_dim=SENDER_SHAPE[1],
                       receiver_layers=2, receiver_heads=RECEIVER_SHAPE[0],
                       receiver_head_dim=RECEIVER_SHAPE[1], hidden=16)
    with torch.no_grad():
        for layer in fuser.layers:
            for path in (layer.key, layer.value):
                torch.nn.init.normal_(path.projection.weight, std=0.3)
            layer.gate_logit.fill_(gates)
    return fuser.eval()


def side(name: str, shape: tuple[int, int], n_layers: int) -> PairSide:
    return PairSide(name=name, model_sha256="0" * 64, tokenizer_sha256="1" * 64, n_layers=n_layers,
                    n_kv_heads=shape[0], head_dim=shape[1])


def write_tiny(fuser: CacheFuser, out_dir: Path) -> Fuser:
    """Export `fuser` with a manifest into `out_dir` and load it through the runtime."""
    out_dir.mkdir(parents=True, exist_ok=True)
    export_fuser(fuser, out_dir / FUSER_FILE, sender_shape=SENDER_SHAPE, receiver_shape=RECEIVER_SHAPE,
                 store_fp16=False)
    manifest = FuserManifest(
        name="tiny-sender--tiny-receiver", description="test", sender=side("tiny-sender", SENDER_SHAPE, 3),
        receiver=side("tiny-receiver", RECEIVER_SHAPE, 2), layer_map=list(fuser.layer_map),
        alignment="identity", hidden_size=16, n_params=sum(p.numel() for p in fuser.parameters()),
        open_gates=fuser.open_gates(), files={"fuser": FUSER_FILE},
        sha256={FUSER_FILE: sha256_file(out_dir / FUSER_FILE)}, weights_storage_dtype="float32",
        license="test")
    write_fuser_manifest(out_dir, manifest)
    return Fuser.load(out_dir)


def random_cache(n_layers: int, shape: tuple[int, int], n_positions: int, seed: int) -> KVCache:
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal((1, shape[0], n_positions, shape[1])).astype(np.float32)
              for _ in range(2 * n_layers)]
    return KVCache.from_present(arrays)


def torch_fused(fuser: CacheFuser, sender: KVCache, receiver: KVCache) -> list[np.ndarray]:
    as_torch = [(torch.from_numpy(k.copy()), torch.from_numpy(v.copy())) for k, v in sender.layers]
    own = [(torch.from_numpy(k.copy()), torch.from_numpy(v.copy())) for k, v in receiver.layers]
    with torch.no_grad():
        return [t.numpy() for pair in fuser(as_torch, own) for t in pair]


# ---------------------------------------------------------------------------------------------------
# Layer map and gate
# ---------------------------------------------------------------------------------------------------


def test_layer_map_is_bottom_up_and_spreads_by_depth() -> None:
    assert layer_map(6, 6) == (0, 1, 2, 3, 4, 5)  # equal depths: layer by layer from the bottom
    assert layer_map(6, 2) == (0, 5)  # LLM → SLM: bottom with bottom, top with top
    assert layer_map(2, 6) == (0, 0, 0, 1, 1, 1)  # SLM → LLM: every receiver layer gets one
    assert layer_map(6, 8) == (0, 1, 1, 2, 3, 4, 4, 5)  # llm → qwen: 5/7 = 0.714 per layer, half up
    assert layer_map(8, 6) == (0, 1, 3, 4, 6, 7)
    assert layer_map(4, 1) == (0,)


def test_closed_gates_leave_the_receiver_cache_exactly_unchanged(tmp_path: Path) -> None:
    fuser = tiny_fuser(gates=-1.0)
    sender, receiver = random_cache(3, SENDER_SHAPE, 9, 1), random_cache(2, RECEIVER_SHAPE, 9, 2)
    for got, own in zip(torch_fused(fuser, sender, receiver), receiver.flat(), strict=True):
        assert np.array_equal(got, own)  # bitwise: receiver + 0 · weight · projection
    fused = write_tiny(fuser, tmp_path / "closed").fuse(sender, receiver)
    for got, own in zip(fused.flat(), receiver.flat(), strict=True):
        assert np.array_equal(got, own)
    # the same weights with open gates do change the cache, so the equality above is the gate's doing
    opened = write_tiny(tiny_fuser(gates=1.0), tmp_path / "open").fuse(sender, receiver)
    assert not np.allclose(opened.layers[0][0], receiver.layers[0][0])


def test_an_untrained_fuser_starts_as_the_receiver() -> None:
    """The projection starts at zero, so step 0 of training is the receiver alone (gates open or not)."""
    fuser = CacheFuser(sender_layers=3, sender_heads=2, sender_head_dim=8, receiver_layers=2,
                       receiver_heads=1, receiver_head_dim=16, hidden=16).eval()
    with torch.no_grad():
        for layer in fuser.layers:
            layer.gate_logit.fill_(1.0)
    sender, receiver = random_cache(3, SENDER_SHAPE, 5, 3), random_cache(2, RECEIVER_SHAPE, 5, 4)
    for got, own in zip(torch_fused(fuser, sender, receiver), receiver.flat(), strict=True):
        assert np.array_equal(got, own)


# ---------------------------------------------------------------------------------------------------
# ONNX = torch
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("store_fp16", [False, True])
def test_onnx_fuser_equals_torch_on_random_caches(tmp_path: Path, store_fp16: bool) -> None:
    fuser = tiny_fuser(seed=5)
    path = tmp_path / FUSER_FILE
    record = export_fuser(fuser, path, sender_shape=SENDER_SHAPE, receiver_shape=RECEIVER_SHAPE,
                          store_fp16=store_fp16)
    assert record["onnx_vs_torch_max_abs_diff"] <= 1e-5
    for n_positions, seed in ((1, 11), (3, 12), (64, 13)):  # dynamic positions, batch 1
        assert onnx_vs_torch(fuser, path, SENDER_SHAPE, RECEIVER_SHAPE, n_positions=n_positions,
                             seed=seed) <= 1e-5


def test_fused_cache_from_onnxruntime_equals_torch(tmp_path: Path) -> None:
    fuser = tiny_fuser(seed=6)
    runtime = write_tiny(fuser, tmp_path / "f")
    sender, receiver = random_cache(3, SENDER_SHAPE, 17, 7), random_cache(2, RECEIVER_SHAPE, 17, 8)
    fused = runtime.fuse(sender, receiver)
    expected = torch_fused(fuser, sender, receiver)
    assert max(float(np.abs(a - b).max()) for a, b in zip(fused.flat(), expected, strict=True)) <= 1e-5
    assert fused.length == receiver.length and not fused.layers[0][0].flags.writeable


def test_fuse_refuses_caches_that_do_not_fit(tmp_path: Path) -> None:
    runtime = write_tiny(tiny_fuser(), tmp_path / "f")
    sender, receiver = random_cache(3, SENDER_SHAPE, 5, 1), random_cache(2, RECEIVER_SHAPE, 6, 2)
    with pytest.raises(ValueError, match="pass an alignment"):
        runtime.fuse(sender, receiver)
    with pytest.raises(ValueError, match="does not match tiny-sender"):
        runtime.fuse(random_cache(2, SENDER_SHAPE, 6, 1), receiver)


def test_runtime_module_does_not_import_torch() -> None:
    code = "import sys, netsim.lm.fuser; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ---------------------------------------------------------------------------------------------------
# Token alignment
# ---------------------------------------------------------------------------------------------------


def test_alignment_on_hand_made_offsets() -> None:
    # receiver tokens end at chars 0 (start token), 3, 5, 9; sender tokens at 0, 2, 5, 6, 9
    assert align_tokens([0, 3, 5, 9], [0, 2, 5, 6, 9]).tolist() == [0, 1, 2, 4]
    # ties: the last sender token with that end (a start token and an empty-span token both end at 0)
    assert align_tokens([0, 4, 7], [0, 0, 4, 7]).tolist() == [1, 2, 3]
    # fractional ends of a split character (bytes read so far): half a character takes no whole one
    assert align_tokens([3.5, 4, 7], [3, 4, 7]).tolist() == [0, 1, 2]
    # no sender token ends before the receiver's first: −1 (the receiver keeps its own KV there)
    assert align_tokens([1, 4], [2, 4]).tolist() == [-1, 1]
    assert align_tokens([3, 6, 8], [3, 6, 8]).tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="non-decreasing"):
        align_tokens([3, 2], [1, 2])


def _small_bpe(tmp_path: Path) -> Tokenizer:
    """A second, much coarser byte-level BPE trained here on a few made-up sentences."""
    hf = HfTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["the cat sat upon the mat and sang\n", "a merry tune for the moon\n"] * 10,
                           trainer=trainer)
    path = tmp_path / "small.json"
    hf.save(str(path))
    return Tokenizer.from_file(path)


@pytest.mark.parametrize("text", [
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:",
    "the cat sat upon the mat — naïve façade, 日本 🙂\n\n  spaced  out",
])
def test_alignment_between_two_real_tokenizers(tmp_path: Path, text: str) -> None:
    bundled = Tokenizer.from_file(MODELS / "shakespeare-slm" / "tokenizer.json")
    small = _small_bpe(tmp_path)
    r_ids, r_ends = encode_with_ends(bundled, text, start_id=0)
    s_ids, s_ends = encode_with_ends(small, text, start_id=0)
    assert len(r_ids) != len(s_ids)  # genuinely different segmentations
    index = align_tokens(r_ends, s_ends)
    assert index[0] == 0  # start tokens align with each other
    for r, s in enumerate(index):
        assert s >= 0 and s_ends[s] <= r_ends[r]  # the sender state has read no further than the receiver
        assert s + 1 == len(s_ends) or s_ends[s + 1] > r_ends[r]  # and it is the last such state
    assert index[-1] == len(s_ids) - 1  # both end where the text ends
    assert np.all(np.diff(index) >= 0)
    # one tokenizer: the identity
    assert align_tokens(r_ends, r_ends).tolist() == list(range(len(r_ids)))


def test_split_characters_end_by_the_bytes_read() -> None:
    bundled = Tokenizer.from_file(MODELS / "shakespeare-slm" / "tokenizer.json")
    ids, ends = encode_with_ends(bundled, "wörld 日")
    pieces = [bundled.hf.id_to_token(i) for i in ids]
    # "ö" (2 bytes) and "日" (3 bytes) come as single-byte pieces in this vocabulary
    assert pieces[:4] == ["w", "Ã", "¶", "r"] and ends[:4].tolist() == [1, 1.5, 2, 3]
    assert np.allclose(ends[-3:], [6 + 1 / 3, 6 + 2 / 3, 7])


def test_fuse_with_alignment_keeps_unaligned_positions(tmp_path: Path) -> None:
    fuser = tiny_fuser(seed=9)
    runtime = write_tiny(fuser, tmp_path / "f")
    sender, receiver = random_cache(3, SENDER_SHAPE, 4, 1), random_cache(2, RECEIVER_SHAPE, 6, 2)
    index = np.array([-1, 0, 0, 1, 3, 3])
    fused = runtime.fuse(sender, receiver, index)
    gathered = KVCache.from_present([np.take(a, np.maximum(index, 0), axis=2) for a in sender.flat()])
    expected = torch_fused(fuser, gathered, receiver)
    for got, want, own in zip(fused.flat(), expected, receiver.flat(), strict=True):
        assert np.array_equal(got[:, :, 0], own[:, :, 0])  # no sender text before it: its own KV
        assert float(np.abs(got[:, :, 1:] - want[:, :, 1:]).max()) <= 1e-5


# ---------------------------------------------------------------------------------------------------
# Loading: manifests and hashes
# ---------------------------------------------------------------------------------------------------


def test_a_corrupt_fuser_file_is_one_model_error_line(tmp_path: Path) -> None:
    source = FUSERS / "--".join(ACCEPTANCE_PAIR)
    broken = tmp_path / source.name
    shutil.copytree(source, broken)
    data = bytearray((broken / FUSER_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (broken / FUSER_FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"sha256 .* does not match fuser\.yaml") as info:
        Fuser.load(broken)
    assert "\n" not in str(info.value)
    (broken / FUSER_FILE).unlink()
    with pytest.raises(ModelError, match=r"fuser\.onnx missing"):
        Fuser.load(broken)
    with pytest.raises(ModelError, match="no fuser manifest"):
        Fuser.load(tmp_path)


def test_a_pair_without_a_fuser_names_the_pair() -> None:
    with pytest.raises(ModelError, match="no fuser for the pair shakespeare-slm → shakespeare-slm"):
        find_fuser_dir("shakespeare-slm", "shakespeare-slm", [MODELS])


def test_a_fuser_refuses_models_it_was_not_trained_with() -> None:
    fuser = Fuser.load(find_fuser_dir(*ACCEPTANCE_PAIR, [MODELS]))
    sender, receiver = (OnnxCausalLM.load(MODELS / n) for n in ACCEPTANCE_PAIR)
    fuser.check_pair(sender, receiver)
    with pytest.raises(ModelError, match="is not the model it was trained with"):
        fuser.check_pair(receiver, receiver)


def test_torch_rebuild_of_a_bundled_model_matches_its_onnx() -> None:
    """Training runs the frozen models in torch; they must be the ONNX models (checked inside, < 1e-4)."""
    model = torch_lm_from_onnx(MODELS / "shakespeare-slm")
    assert not any(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------------
# The shipped fusers (onnxruntime only, as simulations run them)
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_fuser_fuses_real_caches_layer_by_layer(name: str) -> None:
    fuser = Fuser.load(FUSERS / name)
    m = fuser.manifest
    sender, receiver = OnnxCausalLM.load(MODELS / m.sender.name), OnnxCausalLM.load(MODELS / m.receiver.name)
    fuser.check_pair(sender, receiver)
    assert m.layer_map == list(layer_map(m.sender.n_layers, m.receiver.n_layers))
    ids = receiver.tokenizer.encode("Shall I compare thee to a summer's day?")
    _, own = receiver.prefill(ids)
    _, theirs = sender.prefill(ids)
    fused = fuser.fuse(theirs, own)
    assert len(fused.layers) == receiver.geometry.n_layers
    for (k, v), (k0, v0) in zip(fused.layers, own.layers, strict=True):
        assert k.shape == k0.shape == (1, receiver.geometry.n_kv_heads, len(ids), receiver.geometry.head_dim)
        assert v.shape == v0.shape and k.dtype == k0.dtype
    assert (FUSERS / name / FUSER_FILE).stat().st_size < 4e6  # "a few MB at most"


@pytest.mark.skipif(not corpus_cached(), reason="needs the corpus (fetched by pip on first use)")
def test_shipped_fuser_lowers_the_receivers_heldout_nll() -> None:
    """64 held-out passages (the first 64 of the manifest's 256; ~4 s): a 96-token fused prefix after the
    start token, then 32 scored tokens. The sample is fixed, so the check is exact, and the margin must
    exceed two standard errors of the paired per-window difference, not just be below zero."""
    fuser = Fuser.load(find_fuser_dir(*ACCEPTANCE_PAIR, [MODELS]))
    sender, receiver = (OnnxCausalLM.load(MODELS / n) for n in ACCEPTANCE_PAIR)
    texts = next_token_passages(heldout_works(), 64, seed=0)
    windows = heldout_windows(receiver.tokenizer, texts, 97 + 32 + 1)
    result = fusion_nll(sender, receiver, fuser, windows, 97)
    assert result["tokens"] == 64 * 32
    assert result["nll_alone"] - result["nll_fused"] > 2 * result["delta_stderr"]
    recorded = fuser.manifest.provenance["heldout"]  # the manifest's 8,192 tokens, same code path
    assert recorded["tokens"] >= 8192 and -recorded["delta"] > 2 * recorded["delta_stderr"]
    # and the gain needs the sender's cache of the same text: another passage's cache gains less
    gap = recorded["nll_other_sender"] - recorded["nll_fused"]
    assert gap > 2 * recorded["other_sender_gap_stderr"]
