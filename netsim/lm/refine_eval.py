"""How much FedRefine's collaboration helps the receiver's answers: held-out NLL and multiple-choice accuracy
of the receiver alone, with T2T hints, and with C2C fusion from 1..k senders, with and without the privacy
rewrite — on the model zoo's evaluation tasks (netsim.lm.evaluate), through the same content code the
policies run (netsim.lm.fusion, netsim.policies.collab.with_hints, netsim.lm.rephrase).

Next-token task: each held-out passage is cut after its first `prompt_tokens` receiver tokens; the receiver
reads the prompt (fused, hinted, or alone) and is scored on the next `score_tokens` tokens of the true text,
teacher forced. T2T hints are each sender's greedy answer of `answer_tokens` tokens to the prompt. In the
private variants every model reads the rewritten prompt; the scored continuation is the true one.
Multiple choice: the question's context is the shared input; each choice is scored as in evaluate.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from netsim.lm.corpus import heldout_works
from netsim.lm.evaluate import multiple_choice_questions, next_token_passages
from netsim.lm.fusion import FusionMode, SenderInput, tokens_with_ends
from netsim.lm.memo import LanguageModel
from netsim.lm.rephrase import rephrase_text
from netsim.lm.sampling import SamplingSpec
from netsim.lm.zoo import ModelStore
from netsim.policies.collab import with_hints


@dataclass(frozen=True)
class Condition:
    label: str
    protocol: str  # alone | t2t | c2c
    senders: tuple[str, ...] = ()
    mode: FusionMode = "mean"
    private: bool = False


def conditions(senders: Sequence[str]) -> list[Condition]:
    """Alone, T2T and C2C with each sender and all of them, both fusion modes, and the private variants."""
    out = [Condition("receiver alone", "alone")]
    groups = [(s,) for s in senders] + ([tuple(senders)] if len(senders) > 1 else [])
    out += [Condition(f"T2T from {' + '.join(g)}", "t2t", g) for g in groups]
    out += [Condition(f"C2C from {' + '.join(g)}", "c2c", g) for g in groups if len(g) == 1]
    if len(senders) > 1:
        out += [Condition(f"C2C from {' + '.join(senders)} ({mode})", "c2c", tuple(senders), mode)
                for mode in ("parallel", "mean", "sequential")]
    everyone = tuple(senders)
    out += [Condition("receiver alone, rephrased input", "alone", private=True),
            Condition(f"T2T from {' + '.join(everyone)}, rephrased", "t2t", everyone, private=True),
            Condition(f"C2C from {' + '.join(everyone)} (mean), rephrased", "c2c", everyone, private=True)]
    return out


class Refiner:
    """Scores a receiver under one condition; hints and rewrites computed once per prompt."""

    def __init__(self, store: ModelStore, receiver: str, fraction: float, answer_tokens: int,
                 seed: int) -> None:
        self.store = store
        self.receiver = store.load(receiver)
        self.fraction = fraction
        self.answer_tokens = answer_tokens
        self.seed = seed

    def prompt(self, text: str, private: bool, key: int) -> str:
        if not private:
            return text
        rng = np.random.default_rng([self.seed, key])
        return rephrase_text(self.receiver, text, self.fraction, rng)[0]

    def hint(self, sender: LanguageModel, prompt: str) -> str:
        ids = list(tokens_with_ends(sender, prompt)[0])
        answer = sender.generate(ids, self.answer_tokens, SamplingSpec(), seed=0)
        return sender.tokenizer.decode(answer)

    def nll(self, cond: Condition, prompt: str, continuation: Sequence[int]) -> float:
        """Summed NLL of `continuation` after `prompt` under `cond`."""
        senders = [self.store.load(s) for s in cond.senders]
        if cond.protocol == "t2t":
            prompt = with_hints(prompt, [self.hint(s, prompt) for s in senders])
        r_ids, r_ends = tokens_with_ends(self.receiver, prompt)
        inputs = []
        if cond.protocol == "c2c":
            for name, lm in zip(cond.senders, senders, strict=True):
                ids, ends = tokens_with_ends(lm, prompt)
                inputs.append(SenderInput(self.store.fuser(name, self.receiver.name), lm, ids, ends))
        return self.store.fusion.continuation_nll(self.receiver, r_ids, r_ends, inputs, continuation,
                                                  cond.mode)


def evaluate_refinement(store: ModelStore, receiver: str, senders: Sequence[str], *, n_passages: int = 64,
                        n_questions: int = 100, prompt_tokens: int = 96, score_tokens: int = 32,
                        answer_tokens: int = 32, fraction: float = 0.3, seed: int = 0) -> list[dict]:
    """One row per condition: next-token NLL (nats/token) with its paired s.e. against the receiver alone,
    and multiple-choice accuracy."""
    refiner = Refiner(store, receiver, fraction, answer_tokens, seed)
    works = heldout_works()
    cuts = []
    for passage in next_token_passages(works, n_passages * 2, seed=seed):
        ids, ends = tokens_with_ends(refiner.receiver, passage)
        if len(ids) > prompt_tokens + score_tokens + 1:
            scored = ids[prompt_tokens + 1: prompt_tokens + 1 + score_tokens]
            cuts.append((passage[: round(ends[prompt_tokens])], scored))
        if len(cuts) == n_passages:
            break
    questions = multiple_choice_questions(works, n_questions, seed=seed)
    rows: list[dict] = []
    baseline: list[float] | None = None
    for cond in conditions(senders):
        per = [refiner.nll(cond, refiner.prompt(text, cond.private, i), cont) / len(cont)
               for i, (text, cont) in enumerate(cuts)]
        if baseline is None:
            baseline = per
        diff = np.asarray(per) - np.asarray(baseline)
        right = 0
        for q_index, question in enumerate(questions):
            context = refiner.prompt(question.context, cond.private, 10_000 + q_index)
            scores = [-refiner.nll(cond, context, refiner.receiver.tokenizer.encode("\n" + c,
                                                                                    add_special_tokens=False))
                      for c in question.choices]
            right += int(np.argmax(scores) == question.answer)
        rows.append({"condition": cond.label, "protocol": cond.protocol, "senders": len(cond.senders),
                     "nll": float(np.mean(per)), "delta": float(diff.mean()),
                     "delta_se": float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else 0.0,
                     "mc_accuracy": right / len(questions), "passages": len(cuts),
                     "questions": len(questions)})
    return rows
