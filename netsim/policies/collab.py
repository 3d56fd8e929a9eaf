"""What the FedRefine policies share (t2t.py, c2c.py, adaptive.py): senders, the privacy rewrite, branches
that may be given up, and the receiver's decoding on the device.

FedRefine (../shared/papers/003) puts a receiver LLM on the requesting device and lets other LLMs — on
other devices, the edge or the cloud — help it answer: with text (T2T) or with their KV caches through
trained fusers (C2C, eqs. 1-4). Every sender works on the same input t_k, so the input is first shared:
it leaves the device as UTF-8 text, the one encoding every sender's tokenizer reads. In privacy mode the
input is rewritten on the device before it leaves (`rephrase`), and every model, the receiver included,
then works on the rewritten text, as in the paper ("the LLMs at both the transmitter and receiver receive
rephrased input tokens").

The receiver never waits forever: each sender's part runs as a branch, and branches still running
`timeout_s` after the input was shared are interrupted — their bytes in flight are counted as abandoned
by the network — and the request goes on with the senders that made it (`fallback` says with what).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import polars as pl
import simpy

from netsim.context import purpose_key
from netsim.lm.fusion import tokens_with_ends
from netsim.lm.rephrase import rephrase_text
from netsim.network.delivery import TransferFailed
from netsim.payload import Text, TokenIds
from netsim.policies.params import CollabParams

if TYPE_CHECKING:
    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node, World

COLLAB_COLUMNS: dict[str, Any] = {
    "mode": pl.Utf8,
    "senders_asked": pl.Int64,
    "senders_used": pl.Int64,
    "fallback": pl.Utf8,
    "rephrased_fraction": pl.Float64,
}
"""Per-request columns of every FedRefine policy: which protocol ran (t2t / c2c / alone), how many senders
were asked and how many contributed, the fallback taken ("" when none), the share of input tokens the
privacy rewrite changed."""

@dataclass(frozen=True)
class Sender:
    node: Node
    model: HostedModel


@dataclass(frozen=True)
class Given:
    """What a branch that did not finish ended with: a transfer failure, or the receiver gave up on it."""

    reason: str


def senders_for(world: World, params: CollabParams, device: str) -> list[Sender]:
    """The senders of a request from `device`: every listed one except the device itself (Co-C2C)."""
    return [Sender(world.nodes[s.node], world.nodes[s.node].model(s.model))
            for s in params.senders if s.node != device]


# -- branches ---------------------------------------------------------------------------------------


def branch(ctx: RequestContext, steps: ProcessGenerator) -> simpy.Process:
    """Run a sender's part concurrently; a transfer failure or the receiver giving up ends it with `Given`
    instead of failing the request."""

    def guarded() -> ProcessGenerator:
        try:
            return (yield from steps)
        except TransferFailed as exc:
            return Given(f"transfer failed: {exc}")
        except simpy.Interrupt as stop:
            return Given(str(stop.cause))

    return ctx.env.process(guarded())


def gather(ctx: RequestContext, branches: Sequence[simpy.Process], timeout_s: float) -> ProcessGenerator:
    """Wait for every branch or `timeout_s`, whichever comes first; interrupt the late ones (the network
    counts their bytes in flight as abandoned). Returns each branch's value, or its `Given`."""
    env = ctx.env
    if branches:
        pending = [b for b in branches if b.is_alive]
        if pending:
            yield env.all_of(pending) | env.timeout(timeout_s)
        late = [b for b in branches if b.is_alive]
        for b in late:
            b.interrupt(f"no answer within timeout_s = {timeout_s:g} s")
        if late:
            yield env.all_of(late)
    return [b.value for b in branches]


def share_input(ctx: RequestContext, sender: Sender, text: str) -> ProcessGenerator:
    """The (possibly rewritten) input goes from the device to the sender as UTF-8 text."""
    yield from ctx.send(ctx.device.name, sender.node.name, Text(text))


# -- privacy: the input rewritten on the device -------------------------------------------------------


def rephrase(ctx: RequestContext, model: HostedModel, text: str, fraction: float) -> ProcessGenerator:
    """Rewrite `text` on the device with `model` before it leaves (netsim/lm/rephrase.py); returns the new
    text and the share of tokens changed.

    A real generation step, charged as what an instruction-following rewriter does: a prefill that reads
    the input and one decode step per token it writes. Draws come from ctx.rng("rephrase"), so every
    policy rewrites a request alike (common random numbers).
    """
    new_text, changed, n = rephrase_text(model.lm, text, fraction, ctx.rng("rephrase"))
    device = ctx.device
    yield from ctx.charge_prefill(device, model, n + 1)
    for i in range(1, n):
        yield from ctx.charge_decode(device, model, past_len=n + i)
    return new_text, changed / max(1, n)


# -- T2T: a sender's text answer --------------------------------------------------------------------


def text_answer(ctx: RequestContext, sender: Sender, text: str, params: CollabParams) -> ProcessGenerator:
    """A sender's T2T part: receive the input, generate an answer of `answer_tokens` tokens, send it to
    the device. Returns the answer text."""
    node, model = sender.node, sender.model
    yield from share_input(ctx, sender, text)
    prompt_ids = list(tokens_with_ends(model.lm, text)[0])
    seed = (*ctx.seed, purpose_key(f"t2t-answer:{node.name}"))
    sampling = ctx.world.scenario.workload.sampling
    answer = model.lm.generate(prompt_ids, params.answer_tokens, sampling, seed=seed)
    yield from ctx.charge_prefill(node, model, len(prompt_ids))
    for i in range(1, len(answer)):
        yield from ctx.charge_decode(node, model, past_len=len(prompt_ids) + i - 1)
    answer_text = model.lm.tokenizer.decode(answer)
    payload = TokenIds(tuple(answer)) if params.text_wire == "token_ids" else Text(answer_text)
    yield from ctx.send(node.name, ctx.device.name, payload)
    return answer_text


def with_hints(text: str, hints: Sequence[str]) -> str:
    """The receiver's T2T input: the senders' answers as context, then the input it continues."""
    return "".join(f"{h.strip()}\n\n" for h in hints if h.strip()) + text


# -- the receiver decodes on the device ------------------------------------------------------------


def play_out(ctx: RequestContext, model: HostedModel, prompt_len: int, first_call_tokens: int,
             output: Sequence[int]) -> ProcessGenerator:
    """Charge the receiver's calls on the device and record each token as it exists there.

    The first call feeds `first_call_tokens` tokens on a cache of prompt_len − first_call_tokens (the whole
    prompt for T2T and the receiver alone; the last prompt token on the fused cache for C2C) and yields the
    first token; every further token is one decode step over the growing context.
    """
    device, rec = ctx.device, ctx.record
    past = prompt_len - first_call_tokens
    if first_call_tokens == 1:
        yield from ctx.charge_decode(device, model, past_len=past)
    else:
        yield from ctx.charge_prefill(device, model, first_call_tokens, past_len=past)
    if output:
        rec.token_arrived(ctx.env.now)
    for i in range(1, len(output)):
        yield from ctx.charge_decode(device, model, past_len=prompt_len + i - 1)
        rec.token_arrived(ctx.env.now)
    rec.tokens_local = len(output)
    rec.output_ids = list(output)
    rec.output_text = model.lm.tokenizer.decode(list(output))
    rec.n_prompt_tokens = prompt_len
    rec.server, rec.model, rec.charged_as = device.name, model.name, model.charged_as or ""


def t2t_receive(ctx: RequestContext, model: HostedModel, text: str, hints: Sequence[str]) -> ProcessGenerator:
    """The receiver prefills the senders' answers and the input, then decodes (T2T; with no hints, alone)."""
    ids = list(tokens_with_ends(model.lm, with_hints(text, hints))[0])  # start token first, as for C2C
    wl = ctx.world.scenario.workload
    output = model.lm.generate(ids, wl.max_new_tokens, wl.sampling, seed=ctx.seed)
    yield from play_out(ctx, model, len(ids), len(ids), output)


# -- checks -----------------------------------------------------------------------------------------


def check_collab(policy: str, params: CollabParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    """Senders exist and host their model, every requesting device hosts the receiver (and rewriting)
    model and has at least one sender other than itself, and each sender is reachable both ways."""
    nodes = scenario.topology.nodes
    where = scenario.topology.yaml_paths()
    problems: list[str] = []
    for i, s in enumerate(params.senders):
        if s.node not in nodes:
            problems.append(f"policy.senders[{i}].node: unknown node {s.node!r}")
            continue
        hosted = [m.name for m in nodes[s.node].models]
        if not (s.model in hosted if s.model else hosted):
            problems.append(f"policy.senders[{i}].model: {s.node} hosts no model {s.model or ''}".rstrip())
    if problems:
        return problems
    for d in scenario.request_devices:
        hosted = [m.name for m in nodes[d].models]
        for field, model in (("receiver_model", params.receiver_model),
                             ("privacy.model", params.privacy.model if params.privacy else None)):
            if field == "privacy.model" and params.privacy is None:
                continue
            if not (model in hosted if model else hosted):
                problems.append(f"policy.{field}: {policy} needs {model or 'a model'} on the requesting "
                                f"device ({where[d]})")
        others = [s.node for s in params.senders if s.node != d]
        if not others:
            problems.append(f"policy.senders: {where[d]} is the only sender listed for its own requests")
        for node in others:
            if not (nx.has_path(graph, d, node) and nx.has_path(graph, node, d)):
                problems.append(f"{where[d]}: no route to and from sender {node}")
    return list(dict.fromkeys(problems))


def model_of(scenario: Scenario, node: str, model: str | None) -> str:
    """The model name a node's entry resolves to (its first model when unnamed)."""
    hosted = scenario.topology.nodes[node].models
    return model if model else hosted[0].name
