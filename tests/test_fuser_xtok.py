"""C2C fusers across two tokenizers: alignability, windows cut in text, aligned training and scoring.

Fast tests use the bundled BPE (4,096 words) against a 300-word byte-level BPE trained here, tiny random
Llama models, and the shipped one-tokenizer fuser (whose identity alignment the aligned path must
reproduce exactly). The slow tests need SmolLM2-135M built into the cache (`netsim models build
smollm2-135m`) and the shipped smollm2-135m → shakespeare-slm fuser.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as HfTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM

from netsim.lm.corpus import Work, corpus_cached, heldout_works
from netsim.lm.evaluate import next_token_passages
from netsim.lm.fuser import (
    FUSERS_SUBDIR,
    Fuser,
    align_tokens,
    aligned_window,
    aligned_windows,
    check_alignable,
    encode_with_ends,
    find_fuser_dir,
    fusion_nll,
    fusion_nll_aligned,
    heldout_windows,
    layer_map,
    start_token,
)
from netsim.lm.fuser_train import (
    AlignedTextTask,
    CacheFuser,
    FuserTrainConfig,
    collate_aligned,
    fused_loss,
    fused_loss_aligned,
    gather_aligned,
    prefill_cache,
    run_training,
    torch_lm_from_onnx,
)
from netsim.lm.onnx_lm import OnnxCausalLM
from netsim.lm.tokenizer import Tokenizer
from netsim.paths import PROJECT_ROOT, cache_dir

MODELS = PROJECT_ROOT / "models"
BUNDLED_TOKENIZER = MODELS / "shakespeare-slm" / "tokenizer.json"
SONNET = ("Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
          "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date;\n"
          "Sometime too hot the eye of heaven shines,\nAnd often is his gold complexion dimm'd;")
VERSES = [
    SONNET,
    "O Romeo, Romeo! wherefore art thou Romeo?\nDeny thy father and refuse thy name;\nOr, if thou wilt "
    "not, be but sworn my love,\nAnd I'll no longer be a Capulet. 'Tis but thy name that is my enemy;",
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\nThe slings "
    "and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\nAnd by opposing end them.",
    "Friends, Romans, countrymen, lend me your ears;\nI come to bury Caesar, not to praise him.\nThe evil "
    "that men do lives after them;\nThe good is oft interred with their bones;\nSo let it be with Caesar.",
]


@pytest.fixture(scope="module")
def bundled() -> Tokenizer:
    return Tokenizer.from_file(BUNDLED_TOKENIZER, eos_id=0, bos_id=0)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    """A second, much coarser byte-level BPE (300 words) with its own start token, id 0."""
    hf = HfTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    hf.train_from_iterator(["the cat sat upon the mat and sang\n", "a merry tune for the moon\n"] * 10,
                           trainer=trainer)
    path = tmp_path_factory.mktemp("bpe") / "small.json"
    hf.save(str(path))
    return Tokenizer.from_file(path, eos_id=0, bos_id=0)


# ---------------------------------------------------------------------------------------------------
# check_alignable
# ---------------------------------------------------------------------------------------------------


class _NoOffsets:
    """A tokenizer backend that reports every span as (0, 0), as some converted vocabularies do."""

    def __init__(self, hf: HfTokenizer) -> None:
        self.hf = hf

    def encode(self, text: str, add_special_tokens: bool = True) -> object:
        encoding = self.hf.encode(text, add_special_tokens=add_special_tokens)
        return type("Encoding", (), {"ids": encoding.ids, "tokens": encoding.tokens,
                                     "offsets": [(0, 0)] * len(encoding.ids)})()

    def get_vocab_size(self, with_added_tokens: bool = True) -> int:
        return self.hf.get_vocab_size(with_added_tokens=with_added_tokens)


def test_two_offset_reporting_tokenizers_are_alignable(bundled: Tokenizer, small: Tokenizer) -> None:
    assert check_alignable(small, bundled) is None
    assert check_alignable(bundled, small) is None
    assert check_alignable(bundled, bundled) is None


def test_a_tokenizer_without_offsets_is_not_alignable(bundled: Tokenizer) -> None:
    blind = Tokenizer(_NoOffsets(bundled.hf), eos_id=0, bos_id=0)  # type: ignore[arg-type]
    reason = check_alignable(blind, bundled)
    assert reason is not None and reason.startswith("sender tokenizer reports no character offsets")
    reason = check_alignable(bundled, blind)
    assert reason is not None and reason.startswith("receiver tokenizer")
    assert "\n" not in reason


def test_a_tokenizer_that_drops_characters_is_not_alignable(bundled: Tokenizer) -> None:
    """Punctuation removed by the pre-tokenizer: the two models would not read the same input."""
    hf = HfTokenizer.from_file(str(BUNDLED_TOKENIZER))
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(pattern="?", behavior="removed"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False)])
    lossy = Tokenizer(hf, eos_id=0, bos_id=0)
    reason = check_alignable(bundled, lossy)
    assert reason is not None and "'?'" in reason


# ---------------------------------------------------------------------------------------------------
# Windows cut in text
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_prefix", [2, 9, 23])
def test_aligned_window_reads_the_same_characters_with_both_tokenizers(bundled: Tokenizer, small: Tokenizer,
                                                                       n_prefix: int) -> None:
    window = aligned_window(small, bundled, SONNET, 30, n_prefix)
    assert window is not None
    # the receiver's window: its start token, then its own tokens of the text, as heldout_windows cuts it
    assert window.receiver_ids == heldout_windows(bundled, [SONNET], 30)[0]
    # the prefix ends at a character boundary; the receiver's prefix tokens spell exactly those characters
    prefix_text = SONNET[:window.prefix_chars]
    assert bundled.decode(window.receiver_ids[1:n_prefix]) == prefix_text
    # the sender reads those characters, no more, with its own tokenizer and start token
    assert window.sender_ids[0] == start_token(small) and small.decode(window.sender_ids[1:]) == prefix_text
    assert len(window.sender_ids) != n_prefix or n_prefix == 2  # genuinely different segmentations
    # the alignment is the rule on the two readings' character ends
    _, r_ends = encode_with_ends(bundled, SONNET, start_id=0)
    _, s_ends = encode_with_ends(small, prefix_text, start_id=0)
    assert window.alignment.tolist() == align_tokens(r_ends[:n_prefix], s_ends).tolist()
    assert window.alignment[0] == 0 and window.alignment[-1] == len(window.sender_ids) - 1


def test_one_tokenizer_gives_the_identity_window(bundled: Tokenizer) -> None:
    window = aligned_window(bundled, bundled, SONNET, 40, 17)
    assert window is not None
    assert window.sender_ids == window.receiver_ids[:17]
    assert window.alignment.tolist() == list(range(17))


def test_texts_shorter_than_the_window_are_left_out(bundled: Tokenizer, small: Tokenizer) -> None:
    assert aligned_window(small, bundled, "Shall I?", 30, 4) is None
    assert len(aligned_windows(small, bundled, ["Shall I?", SONNET], 30, 4)) == 1
    with pytest.raises(ValueError, match="prefix"):
        aligned_window(small, bundled, SONNET, 30, 30)


# ---------------------------------------------------------------------------------------------------
# Training side: gather, padding, loss
# ---------------------------------------------------------------------------------------------------


def tiny_llama(vocab: int, layers: int, kv_heads: int, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                         num_attention_heads=2 * kv_heads, num_key_value_heads=kv_heads, head_dim=8,
                         max_position_embeddings=256, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def random_fuser(sender: LlamaForCausalLM, receiver: LlamaForCausalLM, seed: int) -> CacheFuser:
    """A fuser whose projection is not zero (training starts it at zero), gates open."""
    torch.manual_seed(seed)
    s, r = sender.config, receiver.config
    fuser = CacheFuser(sender_layers=s.num_hidden_layers, sender_heads=s.num_key_value_heads,
                       sender_head_dim=s.head_dim, receiver_layers=r.num_hidden_layers,
                       receiver_heads=r.num_key_value_heads, receiver_head_dim=r.head_dim, hidden=16)
    with torch.no_grad():
        for layer in fuser.layers:
            for path in (layer.key, layer.value):
                torch.nn.init.normal_(path.projection.weight, std=2.0)
    return fuser.eval()


def test_right_padding_leaves_the_senders_real_positions_exact() -> None:
    """collate_aligned right-pads the sender's rows; a causal model's KV at a real position must not move."""
    sender = tiny_llama(300, 3, 2, seed=1)
    rows = [[0, 5, 9, 17, 42, 7], [0, 3, 8]]
    batch = torch.tensor([rows[0], rows[1] + [0, 0, 0]])
    padded = prefill_cache(sender, batch)
    for row, ids in enumerate(rows):
        alone = prefill_cache(sender, torch.tensor([ids]))
        for (k, v), (k1, v1) in zip(padded, alone, strict=True):
            assert torch.allclose(k[row:row + 1, :, :len(ids)], k1, atol=1e-6)
            assert torch.allclose(v[row:row + 1, :, :len(ids)], v1, atol=1e-6)


def test_gather_aligned_takes_each_receiver_positions_sender_state() -> None:
    generator = torch.Generator().manual_seed(0)
    cache = [(torch.randn(2, 3, 5, 4, generator=generator), torch.randn(2, 3, 5, 4, generator=generator))]
    alignment = torch.tensor([[-1, 0, 0, 2, 4], [0, 1, 1, 1, 3]])
    (key, value), = gather_aligned(cache, alignment)
    assert key.shape == value.shape == (2, 3, 5, 4)
    for b in range(2):
        for r, s in enumerate(alignment[b].clamp(min=0).tolist()):
            assert torch.equal(key[b, :, r], cache[0][0][b, :, s])
            assert torch.equal(value[b, :, r], cache[0][1][b, :, s])


def test_aligned_loss_with_one_tokenizer_equals_the_token_stream_loss(bundled: Tokenizer) -> None:
    """Same tokenizer: the aligned path (text → windows → alignment → gather) must be fused_loss exactly."""
    sender, receiver = tiny_llama(4096, 3, 2, seed=2), tiny_llama(4096, 2, 1, seed=3)
    fuser = random_fuser(sender, receiver, seed=4)
    windows = aligned_windows(bundled, bundled, VERSES, 30, 12)
    assert len(windows) == 4
    batch = collate_aligned(windows, pad_id=0)
    with torch.no_grad():
        got, got_alone = fused_loss_aligned(fuser, sender, receiver, batch)
        want, want_alone = fused_loss(fuser, sender, receiver, batch.receiver_ids, 12)
    assert float(got_alone) == pytest.approx(float(want_alone), abs=1e-6)
    assert float(got) == pytest.approx(float(want), abs=1e-6)
    assert abs(float(got) - float(got_alone)) > 1e-3  # the random fuser does change the receiver


def test_positions_without_a_sender_token_keep_the_receivers_own_cache(bundled: Tokenizer,
                                                                      small: Tokenizer) -> None:
    """Alignment −1 everywhere (no sender text before any receiver token): fusion must be the receiver."""
    sender, receiver = tiny_llama(300, 3, 2, seed=5), tiny_llama(4096, 2, 1, seed=6)
    fuser = random_fuser(sender, receiver, seed=7)
    batch = collate_aligned(aligned_windows(small, bundled, VERSES, 30, 12), pad_id=0)
    with torch.no_grad():
        fused, alone = fused_loss_aligned(fuser, sender, receiver, batch)
        assert abs(float(fused) - float(alone)) > 1e-3
        none = type(batch)(receiver_ids=batch.receiver_ids, sender_ids=batch.sender_ids,
                           alignment=torch.full_like(batch.alignment, -1), n_prefix=batch.n_prefix)
        fused_none, alone_none = fused_loss_aligned(fuser, sender, receiver, none)
    assert float(fused_none) == float(alone_none) == float(alone)


def test_aligned_training_is_repeatable_and_moves_the_fuser(bundled: Tokenizer, small: Tokenizer) -> None:
    """Three steps on text across the two tokenizers, twice from the same seed: the same weights."""
    sender, receiver = tiny_llama(300, 3, 2, seed=8), tiny_llama(4096, 2, 1, seed=9)
    works = [Work(title=f"w{i}", genre="poem", text="\n".join(VERSES[i:] + VERSES[:i]) * 6) for i in range(4)]
    heldout = [collate_aligned(aligned_windows(small, bundled, VERSES, 30, 12), pad_id=0)]
    cfg = FuserTrainConfig(hidden=16, batch_size=3, min_prefix=8, max_prefix=20, continuation=8, max_steps=3,
                           eval_every=3, warmup_steps=1, seed=3)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        fuser = CacheFuser(sender_layers=3, sender_heads=2, sender_head_dim=8, receiver_layers=2,
                           receiver_heads=1, receiver_head_dim=8, hidden=16)
        task = AlignedTextTask(sender, receiver, small, bundled, works, heldout, pad_id=0)
        state = run_training(fuser, task, cfg, log=lambda _: None)
        assert state.step == 3 and len(state.history) == 1
        assert np.isfinite(state.history[0]["heldout_fused"])
        weights.append([p.detach().clone() for p in fuser.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*weights, strict=True))
    projection = weights[0][[n for n, _ in fuser.named_parameters()].index("layers.0.key.projection.weight")]
    assert projection.abs().max() > 0  # it left its zero start


# ---------------------------------------------------------------------------------------------------
# Scoring with onnxruntime: the aligned path reproduces the one-tokenizer path exactly
# ---------------------------------------------------------------------------------------------------


def test_aligned_score_equals_the_identity_score_on_a_shipped_fuser() -> None:
    fuser = Fuser.load(find_fuser_dir("shakespeare-llm", "shakespeare-slm", [MODELS]))
    sender, receiver = (OnnxCausalLM.load(MODELS / n) for n in ("shakespeare-llm", "shakespeare-slm"))
    windows = aligned_windows(sender.tokenizer, receiver.tokenizer, VERSES, 40, 20)
    assert len(windows) == 4 and all(w.alignment.tolist() == list(range(20)) for w in windows)
    got = fusion_nll_aligned(sender, receiver, fuser, windows, control=True)
    same = heldout_windows(receiver.tokenizer, VERSES, 40)
    want = fusion_nll(sender, receiver, fuser, same, 20, control=True)
    assert got.keys() == want.keys() and got["tokens"] == 4 * 19
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-9)


# ---------------------------------------------------------------------------------------------------
# Slow: SmolLM2-135M (built into the cache) → shakespeare-slm, the shipped cross-tokenizer fuser
# ---------------------------------------------------------------------------------------------------

SMOLLM2 = cache_dir() / "models" / "smollm2-135m"
XTOK_PAIR = ("smollm2-135m", "shakespeare-slm")
needs_smollm2 = pytest.mark.skipif(not (SMOLLM2 / "model.onnx").is_file(),
                                   reason="needs SmolLM2-135M built into the cache: "
                                          "`netsim models build smollm2-135m`")


@pytest.mark.slow
@needs_smollm2
def test_torch_rebuild_of_smollm2_matches_its_onnx() -> None:
    """Tied embeddings, 30 layers, GQA 9/3 heads, RoPE θ = 100,000: all read from the ONNX and its config;
    the check inside (max |Δlogit| ≤ max(1e-4, 1e-5·max|logit|)) raises otherwise."""
    model = torch_lm_from_onnx(SMOLLM2)
    c = model.config
    assert (c.num_hidden_layers, c.num_attention_heads, c.num_key_value_heads) == (30, 9, 3)
    assert c.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()


@pytest.mark.slow
@needs_smollm2
@pytest.mark.skipif(not corpus_cached(), reason="needs the corpus (fetched by pip on first use)")
def test_shipped_cross_tokenizer_fuser_fuses_held_out_text() -> None:
    fuser_dir = MODELS / FUSERS_SUBDIR / "--".join(XTOK_PAIR)
    fuser = Fuser.load(fuser_dir)
    m = fuser.manifest
    assert m.alignment == "char_end" and m.sender.tokenizer_sha256 != m.receiver.tokenizer_sha256
    assert m.layer_map == list(layer_map(30, 2))
    sender, receiver = OnnxCausalLM.load(SMOLLM2), OnnxCausalLM.load(MODELS / XTOK_PAIR[1])
    fuser.check_pair(sender, receiver)  # the build in the cache is the one the fuser pins
    assert check_alignable(sender.tokenizer, receiver.tokenizer) is None
    texts = next_token_passages(heldout_works(), 256, seed=0)  # the manifest's passages
    windows = aligned_windows(sender.tokenizer, receiver.tokenizer, texts, 97 + 32 + 1, 97)
    # shapes: the fused cache is the receiver's, the sender's reading has its own length
    w = windows[0]
    _, own = receiver.prefill(w.receiver_ids[:97])
    _, theirs = sender.prefill(w.sender_ids)
    assert theirs.length == len(w.sender_ids) != own.length
    fused = fuser.fuse(theirs, own, w.alignment)
    for (k, v), (k0, v0) in zip(fused.layers, own.layers, strict=True):
        assert k.shape == k0.shape == (1, 1, 97, 64) and v.shape == v0.shape
    assert not np.array_equal(fused.layers[0][0], own.layers[0][0])  # open gates change the cache
    # NLL through the alignment path reproduces the manifest's record (rounded to 4 decimals) ...
    result = fusion_nll_aligned(sender, receiver, fuser, windows, control=True)
    recorded = m.provenance["heldout"]
    assert result["tokens"] == recorded["tokens"] == 256 * 32
    for key in ("nll_alone", "nll_fused", "nll_other_sender"):
        assert result[key] == pytest.approx(recorded[key], abs=5e-5)
    # ... and the receiver alone is the one-tokenizer path's alone on the same windows
    same_windows = heldout_windows(receiver.tokenizer, texts, 97 + 32 + 1)
    assert same_windows == [w.receiver_ids for w in windows]
    identity = Fuser.load(find_fuser_dir("shakespeare-llm", XTOK_PAIR[1], [MODELS]))
    llm = OnnxCausalLM.load(MODELS / "shakespeare-llm")
    one_tokenizer = fusion_nll(llm, receiver, identity, same_windows[:32], 97)
    alone_32 = fusion_nll_aligned(sender, receiver, fuser, windows[:32])["nll_alone"]
    assert alone_32 == pytest.approx(one_tokenizer["nll_alone"], rel=1e-12)
