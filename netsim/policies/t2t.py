"""t2t — FedRefine's token communication: senders answer in text, the receiver reads their answers.

Read beside ../shared/papers/003 ("From Self-Refine to Cache-to-Cache": "collaboration occurs at the output
level via T2T communication, where LLMs communicate with natural language tokens"):

1. The receiver on the requesting device shares the input t_k (rewritten first in privacy mode) with every
   sender as UTF-8 text.
2. Each sender prefills t_k, generates an answer of `answer_tokens` tokens (real tokens of its model, one
   decode call each, charged on its node) and sends it back as text or as token ids (`text_wire`).
3. The receiver prefills the answers followed by the input (collab.with_hints: the answers as context, the
   input last so the receiver continues it) and decodes its own answer on the device.

Cheap on the wire (a few bytes per token against tens of kilobytes per token of KV cache), but the
senders' answers are generated token by token before the receiver can start: the latency C2C avoids.
Senders later than `timeout_s` are given up; the receiver then reads the answers that arrived, or none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import networkx as nx

from netsim.lm.zoo import ModelStore
from netsim.policies import collab
from netsim.policies.base import Policy
from netsim.policies.collab import COLLAB_COLUMNS, Given, Sender, branch, gather, senders_for
from netsim.policies.params import CollabParams, T2TParams

if TYPE_CHECKING:
    from collections.abc import Sequence

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario


class T2T(Policy[T2TParams]):
    name = "t2t"
    Params = T2TParams
    columns: ClassVar = COLLAB_COLUMNS

    @classmethod
    def check(cls, params: T2TParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        return check_t2t(cls.name, params, scenario, graph)

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        yield from serve_t2t(ctx, self.params, senders_for(self.world, self.params, ctx.device.name))


def serve_t2t(ctx: RequestContext, p: CollabParams, senders: Sequence[Sender]) -> ProcessGenerator:
    device, rec = ctx.device, ctx.record
    receiver = device.model(p.receiver_model)
    rec.extra.update(mode="t2t", senders_asked=len(senders), fallback="", rephrased_fraction=0.0)
    text = ctx.request.prompt
    if p.privacy is not None:
        text, rec.extra["rephrased_fraction"] = yield from collab.rephrase(
            ctx, device.model(p.privacy.model or p.receiver_model), text, p.privacy.fraction)
    answers = yield from gather(ctx, [branch(ctx, collab.text_answer(ctx, s, text, p)) for s in senders],
                                p.timeout_s)
    hints = [a for a in answers if not isinstance(a, Given)]
    rec.extra["senders_used"] = len(hints)
    if len(hints) < len(senders):
        rec.extra["fallback"] = "partial" if hints else "alone"
        if not hints:
            rec.extra["mode"] = "alone"
    yield from collab.t2t_receive(ctx, receiver, text, hints)


def check_t2t(policy: str, p: CollabParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    """collab's checks, then: token ids on the wire need the sender's and the receiver's tokenizer to be
    one (text needs nothing: every tokenizer reads it)."""
    problems = collab.check_collab(policy, p, scenario, graph)
    if problems or p.text_wire != "token_ids":
        return problems
    store = ModelStore()  # for manifests only: no model is loaded here
    for d in scenario.request_devices:
        receiver = collab.model_of(scenario, d, p.receiver_model)
        for i, s in enumerate(p.senders):
            if s.node == d:
                continue
            sender = collab.model_of(scenario, s.node, s.model)
            a, b = store.manifest(sender), store.manifest(receiver)
            if a.sha256[a.files["tokenizer"]] != b.sha256[b.files["tokenizer"]]:
                problems.append(f"policy.text_wire: token_ids need one tokenizer, but {sender} "
                                f"(senders[{i}]) and {receiver} differ; use `text`")
    return list(dict.fromkeys(problems))
