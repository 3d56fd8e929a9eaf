"""The memo never changes a result: identical outputs with memo on, off and on disk, in any call order;
and it saves work: repeated prefixes cost no model call, stepping a sequence costs one per token."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from runtime_models import export_netsim, tiny_model, train_tokenizer, vocab_size

from netsim.lm.memo import LanguageModel
from netsim.lm.onnx_lm import OnnxCausalLM
from netsim.lm.sampling import SamplingSpec
from netsim.paths import PROJECT_ROOT, cache_dir

SAMPLED = SamplingSpec(temperature=0.9, top_k=40)


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def lm(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> OnnxCausalLM:
    tokenizer_json = train_tokenizer(tmp_path_factory.mktemp("tok") / "tokenizer.json")
    model = tiny_model(request.param, vocab_size(tokenizer_json))
    out_dir = tmp_path_factory.mktemp(request.param)
    return OnnxCausalLM.load(export_netsim(model, out_dir, tokenizer_json, f"memo-{request.param}"))


def _no_memo(lm: OnnxCausalLM) -> LanguageModel:
    """Memo off: nothing kept, every query recomputes its prefix from scratch."""
    return LanguageModel(lm, logits_memo_nbytes=0, kv_memo_nbytes=0, generate_memo_entries=0)


def _prompts(lm: OnnxCausalLM) -> list[list[int]]:
    rng = np.random.default_rng(5)
    return [rng.integers(1, lm.geometry.vocab_size, n).tolist() for n in (1, 2, 7, 19)]


def _bundled_lms() -> list[Path]:
    root = PROJECT_ROOT / "models"
    return sorted(p for p in root.iterdir() if (p / "model.yaml").is_file()) if root.is_dir() else []


def _cached_lms() -> list[Path]:
    """Models built or imported into the cache (e.g. `netsim models build smollm2-135m`)."""
    root = cache_dir() / "models"
    return sorted(p for p in root.iterdir() if (p / "model.yaml").is_file()) if root.is_dir() else []


def _fed_lengths(memo: LanguageModel, prefix: list[int]) -> tuple[np.ndarray, list[int]]:
    """`memo.next_logits(prefix)` and the number of tokens each model call it made was fed."""
    fed: list[int] = []
    verify = memo.lm.verify

    def spy(tokens: list[int], cache: object) -> object:
        fed.append(len(tokens))
        return verify(tokens, cache)

    memo.lm.verify = spy  # type: ignore[method-assign]
    try:
        return memo.next_logits(prefix), fed
    finally:
        del memo.lm.verify


def _assert_path_independent(lm: OnnxCausalLM, ids: list[int]) -> None:
    """Logits of every prefix are bitwise the same whether the prefix came from one long forward pass,
    from stepping token by token through the memo, or from a chunked verify on a reused cache."""
    full, _ = lm.prefill(ids)
    stepped = LanguageModel(lm)
    for n in range(1, len(ids) + 1):
        np.testing.assert_array_equal(stepped.next_logits(ids[:n]), full[n - 1])
    chunked = LanguageModel(lm)
    chunked.next_logits(ids[:5])
    block = chunked.block_logits(ids[:5], ids[5:])
    np.testing.assert_array_equal(block, full[5:])


def test_logits_do_not_depend_on_how_the_prefix_was_computed(lm: OnnxCausalLM) -> None:
    ids = np.random.default_rng(1).integers(1, lm.geometry.vocab_size, 40).tolist()
    _assert_path_independent(lm, ids)


@pytest.mark.parametrize("model_dir", _bundled_lms(), ids=lambda p: p.name)
def test_bundled_model_logits_are_path_independent(model_dir: Path) -> None:
    lm = OnnxCausalLM.load(model_dir)
    _assert_path_independent(lm, lm.tokenizer.encode("JULIET. O Romeo, Romeo, wherefore art thou Romeo?"))


@pytest.mark.slow
@pytest.mark.parametrize("model_dir", _cached_lms(), ids=lambda p: p.name)
def test_cached_model_logits_are_path_independent(model_dir: Path) -> None:
    """The memo's exactness on real pretrained weights (SmolLM2-135M: 30 layers, 49,152 logits)."""
    lm = OnnxCausalLM.load(model_dir, threads=2)
    _assert_path_independent(lm, lm.tokenizer.encode("The capital of France is Paris, and the capital of"))


def test_memo_on_off_and_disk_give_identical_results(lm: OnnxCausalLM, tmp_path: Path) -> None:
    on, off = LanguageModel(lm), _no_memo(lm)
    first_disk = LanguageModel(lm, disk_dir=tmp_path)
    outputs = []
    for model in (on, off, first_disk):
        outputs.append([model.generate(p, 12, SAMPLED, seed=(3, i), stop_at_eos=False)
                        for i, p in enumerate(_prompts(lm))])
    assert outputs[0] == outputs[1] == outputs[2]
    first_disk.close()
    second_disk = LanguageModel(lm, disk_dir=tmp_path)  # another process, same disk memo
    again = [second_disk.generate(p, 12, SAMPLED, seed=(3, i), stop_at_eos=False)
             for i, p in enumerate(_prompts(lm))]
    assert again == outputs[0] and second_disk.n_model_calls == 0
    prefix = _prompts(lm)[2] + outputs[0][2][:5]
    np.testing.assert_array_equal(second_disk.next_logits(prefix), off.next_logits(prefix))
    assert second_disk.n_model_calls == 0


def test_call_order_does_not_change_results(lm: OnnxCausalLM) -> None:
    prompts = _prompts(lm)
    forward, backward = LanguageModel(lm), LanguageModel(lm)
    a = [forward.generate(p, 10, SAMPLED, seed=i) for i, p in enumerate(prompts)]
    b = [backward.generate(p, 10, SAMPLED, seed=i) for i, p in reversed(list(enumerate(prompts)))]
    assert a == b[::-1]
    # interleaving a greedy decode of a shared prefix between them changes nothing either
    mixed = LanguageModel(lm)
    mixed.generate(prompts[3][:4], 30, SamplingSpec(), seed=0)
    assert [mixed.generate(p, 10, SAMPLED, seed=i) for i, p in enumerate(prompts)] == a


def test_repeated_prefixes_cost_no_model_call(lm: OnnxCausalLM) -> None:
    model = LanguageModel(lm)
    prompt = _prompts(lm)[3]
    model.next_logits(prompt)
    assert model.n_model_calls == 1
    model.next_logits(prompt)
    model.next_logits(list(prompt))
    assert model.n_model_calls == 1
    out = model.generate(prompt, 15, SamplingSpec(), seed=0, stop_at_eos=False)
    assert model.n_model_calls == 1 + 14  # the first token's logits were already memoised
    model.generate(prompt, 15, SamplingSpec(), seed=0, stop_at_eos=False)
    assert model.n_model_calls == 15
    # a different seed with greedy sampling walks the same memoised prefixes
    assert model.generate(prompt, 15, SamplingSpec(), seed=99, stop_at_eos=False) == out
    assert model.n_model_calls == 15


def test_block_logits_match_next_logits_and_roll_back(lm: OnnxCausalLM) -> None:
    prompt, drafts = _prompts(lm)[3], [3, 9, 27, 81]
    model, reference = LanguageModel(lm), _no_memo(lm)
    block = model.block_logits(prompt, drafts)
    assert block.shape == (4, lm.geometry.vocab_size) and model.n_model_calls == 1
    for i in range(4):
        np.testing.assert_array_equal(block[i], reference.next_logits(prompt + drafts[: i + 1]))
    model.next_logits(prompt)  # the first draft's distribution came with the block
    assert model.n_model_calls == 1
    # two drafts accepted, the third replaced: continues from the block's cache, one more call
    corrected = [*prompt, *drafts[:2], 5]
    np.testing.assert_array_equal(model.next_logits(corrected), reference.next_logits(corrected))
    assert model.n_model_calls == 2


def test_kv_cache_of_a_prefix(lm: OnnxCausalLM) -> None:
    prompt = _prompts(lm)[3]
    model = LanguageModel(lm)
    cache = model.kv_cache(prompt)
    _, direct = lm.prefill(prompt)
    assert cache.length == len(prompt)
    for (k1, v1), (k2, v2) in zip(cache.layers, direct.layers, strict=True):
        np.testing.assert_array_equal(k1, k2)
        np.testing.assert_array_equal(v1, v2)
    assert model.kv_cache([]).length == 0


def test_memo_stays_within_its_budgets(lm: OnnxCausalLM) -> None:
    row_nbytes = 4 * lm.geometry.vocab_size
    model = LanguageModel(lm, logits_memo_nbytes=10 * row_nbytes, kv_memo_nbytes=20_000)
    model.generate(_prompts(lm)[3], 30, SAMPLED, seed=1, stop_at_eos=False)
    assert model._logits.used <= 10 * row_nbytes and len(model._logits.items) == 10
    assert model._kv.used <= 20_000


def test_returned_logits_are_read_only(lm: OnnxCausalLM) -> None:
    row = LanguageModel(lm).next_logits([1, 2, 3])
    with pytest.raises(ValueError):
        row[0] = 0.0


def test_thread_count_does_not_change_memoised_logits(lm: OnnxCausalLM) -> None:
    """A disk memo is shared by processes that may run different thread counts."""
    two = LanguageModel(OnnxCausalLM.load(lm.model_dir, threads=2))
    one = LanguageModel(lm)
    ids = np.random.default_rng(9).integers(1, lm.geometry.vocab_size, 30).tolist()
    for n in (1, 2, 17, 30):
        np.testing.assert_array_equal(one.next_logits(ids[:n]), two.next_logits(ids[:n]))


def test_generation_stops_at_eos_inclusive(lm: OnnxCausalLM) -> None:
    import copy

    from netsim.lm.tokenizer import Tokenizer

    prompt = _prompts(lm)[2]
    free = LanguageModel(lm).generate(prompt, 12, SamplingSpec(), seed=0, stop_at_eos=False)
    eos = free[3]
    stopping_lm = copy.copy(lm)
    stopping_lm.tokenizer = Tokenizer(lm.tokenizer.hf, eos_id=eos, bos_id=None)
    stopped = LanguageModel(stopping_lm).generate(prompt, 12, SamplingSpec(), seed=0)
    assert stopped == free[: free.index(eos) + 1]
    assert LanguageModel(stopping_lm).generate(prompt, 12, SamplingSpec(), seed=0, stop_at_eos=False) == free


def test_a_long_shared_prefix_is_found_among_many_sequences_in_flight(lm: OnnxCausalLM) -> None:
    """With more sequences in flight than the recent-entries scan covers, a query that shares 40 tokens
    with an old entry still starts from that entry's cache (the prefix index): one call of the few new
    tokens, and the same logits as from scratch."""
    memo = LanguageModel(lm)
    rng = np.random.default_rng(5)
    vocab = lm.geometry.vocab_size
    shared = [int(t) for t in rng.integers(1, vocab, size=40)]
    memo.next_logits([*shared, 7])
    for _ in range(50):  # fifty unrelated sequences push the first out of the recent 32
        memo.next_logits([int(t) for t in rng.integers(1, vocab, size=30)])
    row, fed = _fed_lengths(memo, [*shared, 9])
    assert fed == [2]  # the previous token re-fed beside the new one (module doc), not 41 tokens
    np.testing.assert_array_equal(row, _no_memo(lm).next_logits([*shared, 9]))


def test_prefetched_answers_are_the_bits_a_direct_call_gives(lm: OnnxCausalLM) -> None:
    """`prefetch` runs the call on a worker thread; taking its answer writes the same rows and the same
    KV cache into the memo as computing on demand, from whichever cached prefix the plan started."""
    prompt = _prompts(lm)[3]
    ahead, direct, reference = LanguageModel(lm), LanguageModel(lm), _no_memo(lm)
    sequence = list(prompt)
    for step in range(12):
        ahead.prefetch(sequence)
        if step % 3 == 0:  # another sequence's call between the plan and the answer moves the memo on
            ahead.next_logits([*sequence[:5], 11 + step])
            direct.next_logits([*sequence[:5], 11 + step])
        row = ahead.next_logits(sequence)
        np.testing.assert_array_equal(row, direct.next_logits(sequence))
        np.testing.assert_array_equal(row, reference.next_logits(sequence))
        sequence.append(int(np.argmax(row)))
    assert ahead.n_prefetched == 12
    assert ahead.n_model_calls == direct.n_model_calls
    for a, b in zip(ahead.kv_cache(sequence[:-1]).flat(), direct.kv_cache(sequence[:-1]).flat(), strict=True):
        np.testing.assert_array_equal(a, b)
    ahead.prefetch(sequence[:-1])  # memoised already: nothing starts
    assert not ahead._pending
    ahead.close()


def test_a_prefetch_nobody_asks_for_changes_nothing(lm: OnnxCausalLM) -> None:
    prompt = _prompts(lm)[3]
    memo = LanguageModel(lm)
    memo.prefetch([*prompt, 5])  # the draft went elsewhere: this question is never asked
    row = memo.next_logits([*prompt, 6])
    np.testing.assert_array_equal(row, _no_memo(lm).next_logits([*prompt, 6]))
    assert memo.n_prefetched == 0 and memo.n_model_calls == 1
    memo.close()


def test_a_stepped_sequence_stays_indexed_under_the_prefixes_it_took_over(lm: OnnxCausalLM) -> None:
    """Stepping a sequence token by token replaces each parent's KV entry with the child's (the index
    moves the parent's prefixes to the child); after fifty unrelated sequences a branch off its middle
    still starts from that cache: one call of two tokens."""
    memo = LanguageModel(lm)
    rng = np.random.default_rng(7)
    vocab = lm.geometry.vocab_size
    sequence = [int(t) for t in rng.integers(1, vocab, size=30)]
    for _ in range(20):  # 30 → 50 tokens, crossing the 32- and 48-token prefixes
        sequence.append(int(np.argmax(memo.next_logits(sequence))))
    for _ in range(50):
        memo.next_logits([int(t) for t in rng.integers(1, vocab, size=30)])
    row, fed = _fed_lengths(memo, [*sequence[:40], 3])
    assert fed == [2]
    np.testing.assert_array_equal(row, _no_memo(lm).next_logits([*sequence[:40], 3]))
    assert all(key in memo._kv.items for bucket in memo._kv_index.values() for key in bucket)
