"""Quality tasks with ground truth, built from held-out works, that every policy's quality columns use.

(a) Teacher-forced next-token prediction on held-out passages: top-1 accuracy, mean NLL per token, and
    bits per character (total NLL / ln 2 / characters), the last comparable across tokenizers.
(b) Four-way multiple-choice continuation: a few lines of a held-out work, then the true next line and
    three distractor lines from elsewhere in the held-out text; the model picks the candidate with the
    highest log-likelihood given the context (also length-normalised per character, as lm-eval-harness's
    acc_norm does, so long candidates are not penalised). Chance is 25%. Small models score a line mostly
    by how common its words are, whatever the context ("surface form competition", Holtzman et al. 2021),
    so a third score, `accuracy_pmi`, ranks by log P(line | context) − log P(line | document start): how
    much the context raises the line's likelihood (their domain-conditional PMI, eq. 3).

Tasks are defined on *text* (deterministic in the seed), and each model tokenizes them with its own
tokenizer, so models with different vocabularies answer the same questions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from netsim.lm.corpus import Work, heldout_works
from netsim.lm.onnx_lm import OnnxCausalLM

N_CHOICES = 4
MIN_LINE_CHARS = 20
"""Answer and distractor lines at least this long: speaker tags ("Hor.") are too easy to tell apart."""
DISTRACTOR_GAP_LINES = 20
"""Distractors from the same work come from at least this many lines away from the answer."""


@dataclass(frozen=True)
class Question:
    context: str
    choices: tuple[str, ...]
    answer: int
    """Index of the true next line in `choices`."""


def next_token_passages(works: Sequence[Work], n: int, *, seed: int, passage_chars: int = 768) -> list[str]:
    """`n` passages of whole lines, about `passage_chars` long, starting at random line starts."""
    rng = np.random.default_rng(seed)
    lengths = np.array([len(w.text) for w in works], dtype=float)
    out: list[str] = []
    while len(out) < n:
        # 1. a work in proportion to its length, then a line start inside it
        text = works[int(rng.choice(len(works), p=lengths / lengths.sum()))].text
        if len(text) <= 2 * passage_chars:
            continue
        start = int(rng.integers(0, len(text) - 2 * passage_chars))
        start = text.find("\n", start) + 1
        # 2. extend to the end of the line that crosses `passage_chars`
        end = text.find("\n", start + passage_chars)
        passage = text[start:end].strip("\n")
        if passage.strip():
            out.append(passage)
    return out


def multiple_choice_questions(works: Sequence[Work], n: int, *, seed: int,
                              context_lines: int = 4) -> list[Question]:
    """`n` questions; the answer's position cycles through 0..3 in a shuffled order (balanced)."""
    lines = [[line for line in w.text.split("\n") if line.strip()] for w in works]
    # Every line long enough to be a candidate: (work index, line index).
    pool = [(wi, li) for wi, ls in enumerate(lines) for li, line in enumerate(ls)
            if len(line.strip()) >= MIN_LINE_CHARS]
    answerable = [(wi, li) for wi, li in pool if li >= context_lines]
    rng = np.random.default_rng(seed)
    positions = rng.permutation(np.resize(np.arange(N_CHOICES), n))
    picks = rng.choice(len(answerable), size=n, replace=n > len(answerable))
    questions: list[Question] = []
    for position, pick in zip(positions, picks, strict=True):
        wi, li = answerable[int(pick)]
        truth = lines[wi][li]
        distractors: list[str] = []
        while len(distractors) < N_CHOICES - 1:
            dw, dl = pool[int(rng.integers(len(pool)))]
            candidate = lines[dw][dl]
            near = dw == wi and abs(dl - li) < DISTRACTOR_GAP_LINES
            if not near and candidate.strip() != truth.strip() and candidate not in distractors:
                distractors.append(candidate)
        choices = [*distractors]
        choices.insert(int(position), truth)
        questions.append(Question(context="\n".join(lines[wi][li - context_lines : li]),
                                  choices=tuple(choices), answer=int(position)))
    return questions


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _start_ids(model: OnnxCausalLM) -> list[int]:
    """Condition on the document-start token the model was trained with, when it has one."""
    start = model.tokenizer.bos_id if model.tokenizer.bos_id is not None else model.tokenizer.eos_id
    return [] if start is None else [start]


def score_passage(model: OnnxCausalLM, text: str) -> tuple[float, int, int, int]:
    """(total NLL in nats, tokens scored, correct top-1 predictions, characters scored) for one passage."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    start = _start_ids(model)
    full = start + ids
    logits, _ = model.prefill(full)  # (T, V): row t predicts token t+1
    logp = _log_softmax(logits[:-1])
    targets = np.asarray(full[1:])
    nll = -float(logp[np.arange(len(targets)), targets].sum())
    correct = int((logits[:-1].argmax(axis=-1) == targets).sum())
    # Without a start token the first token is not predicted; leave its characters out of bits/char.
    chars = len(text) if start else len(text) - len(model.tokenizer.decode(ids[:1]))
    return nll, len(targets), correct, chars


def choice_logprobs(model: OnnxCausalLM, question: Question) -> list[tuple[float, int]]:
    """(log P(candidate | context), characters) per choice; the context is prefilled once and each
    candidate verified on top of its KV cache. An empty context conditions on the start token alone
    (or, for a model without one, on a newline)."""
    context_ids = _start_ids(model) + model.tokenizer.encode(question.context, add_special_tokens=False)
    if not context_ids:
        context_ids = model.tokenizer.encode("\n", add_special_tokens=False)
    context_logits, cache = model.prefill(context_ids)
    first = _log_softmax(context_logits[-1])
    out: list[tuple[float, int]] = []
    for choice in question.choices:
        text = "\n" + choice
        ids = model.tokenizer.encode(text, add_special_tokens=False)
        logits, _ = model.verify(ids, cache)  # row i predicts ids[i+1]
        rest = _log_softmax(logits[:-1])
        total = float(first[ids[0]]) + float(rest[np.arange(len(ids) - 1), ids[1:]].sum())
        out.append((total, len(text)))
    return out


def _row(model: str, task: str, metric: str, value: float, n: int) -> dict:
    return {"model": model, "task": task, "metric": metric, "value": float(value), "n": int(n)}


def evaluate_models(models: Sequence[OnnxCausalLM], *, n_passages: int = 64, n_questions: int = 200,
                    seed: int = 0) -> list[dict]:
    """Rows {model, task, metric, value, n}; `n` counts what `value` averages over (tokens, characters,
    questions)."""
    works = heldout_works()
    passages = next_token_passages(works, n_passages, seed=seed)
    questions = multiple_choice_questions(works, n_questions, seed=seed)
    rows: list[dict] = []
    for model in models:
        nll = 0.0
        tokens = correct = chars = 0
        for passage in passages:
            p_nll, p_tokens, p_correct, p_chars = score_passage(model, passage)
            nll, tokens, correct, chars = nll + p_nll, tokens + p_tokens, correct + p_correct, chars + p_chars
        right = right_norm = right_pmi = 0
        for question in questions:
            scores = choice_logprobs(model, question)
            prior = choice_logprobs(model, replace(question, context=""))
            right += int(np.argmax([s for s, _ in scores]) == question.answer)
            right_norm += int(np.argmax([s / c for s, c in scores]) == question.answer)
            pmi = [s - p for (s, _), (p, _) in zip(scores, prior, strict=True)]
            right_pmi += int(np.argmax(pmi) == question.answer)
        n_q = len(questions)
        rows += [
            _row(model.name, "next_token", "accuracy", correct / tokens, tokens),
            _row(model.name, "next_token", "nll", nll / tokens, tokens),
            _row(model.name, "next_token", "bits_per_char", nll / math.log(2) / chars, chars),
            _row(model.name, "multiple_choice", "accuracy", right / n_q, n_q),
            _row(model.name, "multiple_choice", "accuracy_norm", right_norm / n_q, n_q),
            _row(model.name, "multiple_choice", "accuracy_pmi", right_pmi / n_q, n_q),
        ]
    return rows


TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("next_token", "accuracy", "next-token acc"), ("next_token", "nll", "NLL nats/token"),
    ("next_token", "bits_per_char", "bits/char"), ("multiple_choice", "accuracy", "MC acc"),
    ("multiple_choice", "accuracy_norm", "MC acc (norm)"),
    ("multiple_choice", "accuracy_pmi", "MC acc (PMI)"),
)
"""(task, metric, column title) of the evaluation table, shared by the CLI and models/README.md."""


def format_table(rows: Sequence[dict]) -> str:
    """A Markdown table, one row per model, for the CLI and models/README.md."""
    columns = TABLE_COLUMNS
    values = {(r["model"], r["task"], r["metric"]): r["value"] for r in rows}
    models = list(dict.fromkeys(r["model"] for r in rows))
    lines = ["| model | " + " | ".join(title for *_, title in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for model in models:
        cells = []
        for task, metric, _ in columns:
            value = values.get((model, task, metric))
            cells.append("–" if value is None else f"{value:.1%}" if "acc" in metric else f"{value:.3f}")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
