"""adaptive — per request, cache or token communication, whichever the network allows (FedRefine's
"Possible Variants": "the decision to use cache or token communication could be dynamically determined
based on both the current network status and the specific QoS requirements").

When a request arrives the device estimates both protocols' completion times from the links' state at
that instant (`Network.estimate_transfer_s`: current rates shared with the flows already there, handshakes,
slow-start rounds) and from the nodes' compute for the charged models (roofline, no queueing foreseen):

  T_c2c = max(own prefill [+ own cache up], max_j (input up + sender prefill + KV cache to the fusers))
          + fuser runs [+ fused cache down] + the first token on the fused cache + decode steps
  T_t2t = max_j (input up + sender prefill + answer_tokens decodes + answer down)
          + receiver prefill of answers + input + decode steps

With a deadline it takes C2C (the better answers, docs/policies/c2c.md) when T_c2c meets it, else T2T
when that does, else the faster; without one, the faster. The estimate is made in no simulated time, so
the decision costs nothing but its errors. The choice, both estimates and the reason are recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import networkx as nx
import polars as pl

from netsim.hardware.cost import Cost, call_time_s, decode_cost, prefill_cost
from netsim.lm.fusion import tokens_with_ends
from netsim.payload import KVCache, Text, TokenIds
from netsim.policies.base import Policy
from netsim.policies.c2c import C2C_COLUMNS, check_c2c, fuser_cost, serve_c2c
from netsim.policies.collab import Sender, senders_for
from netsim.policies.params import AdaptiveParams, CollabParams
from netsim.policies.t2t import serve_t2t

if TYPE_CHECKING:
    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node

ANSWER_BYTES_PER_TOKEN = 4
"""Expected UTF-8 bytes of one token of a sender's answer before it exists (≈ 4 characters per BPE token
of English text; the answer's real size is charged when it is sent)."""


def _call_s(node: Node, cost: Cost) -> float:
    return call_time_s(node.profile, cost)


def _decode_s(node: Node, model: HostedModel, past: int, n: int) -> float:
    return sum(_call_s(node, decode_cost(model.charged, past + i)) for i in range(n))


def estimate_c2c_s(ctx: RequestContext, p: CollabParams, senders: Sequence[Sender], text: str) -> float:
    world, device = ctx.world, ctx.device
    net = world.net
    receiver = device.model(p.receiver_model)
    r_ids, _ = tokens_with_ends(receiver.lm, text)
    n = len(r_ids)
    fuser_node = device if p.fuser_at == "receiver" else world.nodes[p.fuser_at]
    text_bytes = Text(text).nbytes
    own_kv = KVCache(receiver.charged, n - 1, dtype=p.wire_dtype, group_size=p.group_size)
    ready = _call_s(device, prefill_cost(receiver.charged, max(n - 1, 1)))
    if fuser_node is not device:
        ready += net.estimate_transfer_s(device.name, fuser_node.name, own_kv.nbytes)
    fuse_s = 0.0
    for s in senders:
        s_ids, _ = tokens_with_ends(s.model.lm, text)
        kv = KVCache(s.model.charged, len(s_ids), dtype=p.wire_dtype, group_size=p.group_size)
        ready = max(ready, net.estimate_transfer_s(device.name, s.node.name, text_bytes)
                    + _call_s(s.node, prefill_cost(s.model.charged, len(s_ids)))
                    + net.estimate_transfer_s(s.node.name, fuser_node.name, kv.nbytes))
        fuser = world.store.fuser(s.model.name, receiver.name)
        fuse_s += _call_s(fuser_node, fuser_cost(fuser, s.model.charged, receiver.charged, n - 1))
    if fuser_node is not device:
        fuse_s += net.estimate_transfer_s(fuser_node.name, device.name, own_kv.nbytes)
    return ready + fuse_s + _decode_s(device, receiver, n - 1, world.scenario.workload.max_new_tokens)


def estimate_t2t_s(ctx: RequestContext, p: CollabParams, senders: Sequence[Sender], text: str) -> float:
    world, device = ctx.world, ctx.device
    net = world.net
    receiver = device.model(p.receiver_model)
    text_bytes = Text(text).nbytes
    answer = (TokenIds((0,) * p.answer_tokens).nbytes if p.text_wire == "token_ids"
              else Text("x" * (ANSWER_BYTES_PER_TOKEN * p.answer_tokens)).nbytes)
    ready = 0.0
    for s in senders:
        n_s = len(tokens_with_ends(s.model.lm, text)[0])
        ready = max(ready, net.estimate_transfer_s(device.name, s.node.name, text_bytes)
                    + _call_s(s.node, prefill_cost(s.model.charged, n_s))
                    + _decode_s(s.node, s.model, n_s, p.answer_tokens - 1)
                    + net.estimate_transfer_s(s.node.name, device.name, answer))
    n = len(tokens_with_ends(receiver.lm, text)[0]) + p.answer_tokens * len(senders)
    wl = world.scenario.workload
    return (ready + _call_s(device, prefill_cost(receiver.charged, n))
            + _decode_s(device, receiver, n, wl.max_new_tokens - 1))


def choose(est_c2c: float, est_t2t: float, deadline_s: float | None) -> tuple[str, str]:
    """The protocol and why (the rule in the module doc)."""
    faster = "c2c" if est_c2c <= est_t2t else "t2t"
    if deadline_s is None:
        return faster, "faster"
    if est_c2c <= deadline_s:
        return "c2c", "c2c meets the deadline"
    if est_t2t <= deadline_s:
        return "t2t", "only t2t meets the deadline"
    return faster, "neither meets the deadline: faster"


class Adaptive(Policy[AdaptiveParams]):
    name = "adaptive"
    Params = AdaptiveParams
    columns: ClassVar = {**C2C_COLUMNS, "choice": pl.Utf8, "reason": pl.Utf8, "est_c2c_s": pl.Float64,
                         "est_t2t_s": pl.Float64}

    @classmethod
    def check(cls, params: AdaptiveParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        return check_c2c(cls.name, params, scenario, graph)

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        p = self.params
        senders = senders_for(self.world, p, ctx.device.name)
        # The estimate uses the input as it will leave the device; the privacy rewrite keeps its length.
        est_c2c = estimate_c2c_s(ctx, p, senders, ctx.request.prompt)
        est_t2t = estimate_t2t_s(ctx, p, senders, ctx.request.prompt)
        choice, reason = choose(est_c2c, est_t2t, p.deadline_s)
        ctx.record.extra.update(choice=choice, reason=reason, est_c2c_s=est_c2c, est_t2t_s=est_t2t)
        if choice == "c2c":
            yield from serve_c2c(ctx, p, senders)
        else:
            ctx.record.extra["kv_bytes"] = 0
            yield from serve_t2t(ctx, p, senders)
