"""c2c — FedRefine's cache communication: senders share KV caches, fused into the receiver's (eqs. 1-4).

Read beside ../shared/papers/003 ("From Self-Refine to Cache-to-Cache", "Federated Refinement"):

1. The receiver on the requesting device shares the input t_k (rewritten first in privacy mode,
   collab.rephrase) with every sender, and meanwhile prefills its own cache C(M_i) of the input.
2. Each sender M_j prefills t_k and sends its KV cache C(M_j) as a typed payload: its tokens of the input ×
   2 · layers · kv_heads · head_dim × the wire dtype's bytes (+ one fp16 scale per group for int8/int4),
   sized from the sender's cost card (netsim.payload.KVCache).
3. The fusers F_ji run where the scenario puts them: on the receiver, or on an edge server that hosts the
   fusers (FedRefine's server "maintains all pre-trained fusers"): the receiver's own cache then goes up
   and the fused cache comes back. Fuser compute is charged there: 2 FLOPs per parameter per position, the
   parameters of this fuser architecture sized for the charged pair (fuser.fuser_n_params).
4. The receiver decodes on C(F_j1i, M_j1) ∘ … ∘ C(M_i) (eq. 1 for one sender, eq. 4 for several; how
   several combine: netsim/lm/fusion.py). Co-C2C (eqs. 2-3) is this policy on a scenario where two
   participants each send requests and each lists the other as sender: every participant receives for its
   own task and sends for the other's.

Senders later than `timeout_s` are given up (their bytes in flight abandoned); with none left the receiver
decodes alone or falls back to T2T (`fallback`). Content: the real receiver model decoding on the real
fused cache (fusers run by onnxruntime), memoised by (fusers, sender models and prefixes, receiver prefix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import networkx as nx
import polars as pl

from netsim.errors import InputError, ModelError
from netsim.hardware.cost import Cost
from netsim.lm.fuser import check_alignable, find_fuser_dir, fuser_n_params, layer_map, read_fuser_manifest
from netsim.lm.fusion import FusionMode, SenderInput, tokens_with_ends
from netsim.lm.geometry import ModelGeometry
from netsim.lm.tokenizer import Tokenizer
from netsim.lm.zoo import ModelStore
from netsim.payload import KVCache, element_nbytes
from netsim.policies import collab
from netsim.policies.base import Policy
from netsim.policies.collab import COLLAB_COLUMNS, Given, Sender, branch, gather, senders_for
from netsim.policies.params import C2CParams, CollabParams

if TYPE_CHECKING:
    from netsim.context import ProcessGenerator, RequestContext
    from netsim.lm.fuser import Fuser
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node

C2C_COLUMNS = {**COLLAB_COLUMNS, "kv_bytes": pl.Int64}
"""`kv_bytes`: KV-cache payload bytes this request put on the wire (senders' caches, and with the fusers on
a server the receiver's cache up and the fused one down)."""


def fuser_cost(fuser: Fuser, sender: ModelGeometry, receiver: ModelGeometry, n_positions: int) -> Cost:
    """One fuser run over `n_positions` receiver positions, billed for the charged pair's geometry.

    FLOPs = 2 · P · n (every parameter a multiply-add per position); bytes = the fp16 weights once, the
    sender's K/V of the layers it reads and the receiver's K/V read and written, in the KV dtypes.
    """
    sender_layers = layer_map(sender.n_layers, receiver.n_layers)
    sender_dim = sender.n_kv_heads * sender.head_dim
    n_params = fuser_n_params([sender_dim] * len(sender_layers), receiver.n_kv_heads, receiver.head_dim,
                              fuser.manifest.hidden_size)
    weight_bytes = 2.0 * n_params
    sender_kv = 2 * len(set(sender_layers)) * sender_dim * sender.kv_bytes_per_element
    bytes_moved = weight_bytes + n_positions * (sender_kv + 2 * receiver.kv_bytes_per_token)
    return Cost(flops=2.0 * n_params * n_positions, bytes_moved=bytes_moved, dtype=receiver.dtype,
                n_tokens=n_positions, batch=1, weight_bytes=weight_bytes)


class C2C(Policy[C2CParams]):
    name = "c2c"
    Params = C2CParams
    columns: ClassVar = C2C_COLUMNS

    @classmethod
    def check(cls, params: C2CParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        return check_c2c(cls.name, params, scenario, graph)

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        yield from serve_c2c(ctx, self.params, senders_for(self.world, self.params, ctx.device.name))


def serve_c2c(ctx: RequestContext, p: CollabParams, senders: Sequence[Sender]) -> ProcessGenerator:
    device, rec, world = ctx.device, ctx.record, ctx.world
    receiver = device.model(p.receiver_model)
    rec.extra.update(mode="c2c", senders_asked=len(senders), fallback="", rephrased_fraction=0.0, kv_bytes=0)
    text = ctx.request.prompt
    if p.privacy is not None:
        text, rec.extra["rephrased_fraction"] = yield from collab.rephrase(
            ctx, device.model(p.privacy.model or p.receiver_model), text, p.privacy.fraction)
    r_ids, r_ends = tokens_with_ends(receiver.lm, text)
    fuser_node = device if p.fuser_at == "receiver" else world.nodes[p.fuser_at]

    # 1-2. Own prefill (and, with the fusers on a server, the own cache going up) beside every sender's part.
    own = branch(ctx, _own_cache(ctx, p, receiver, len(r_ids) - 1, fuser_node))
    parts = [branch(ctx, _sender_cache(ctx, p, s, text, fuser_node)) for s in senders]
    results = yield from gather(ctx, [own, *parts], p.timeout_s)
    own_result, arrived = results[0], [r for r in results[1:] if not isinstance(r, Given)]
    rec.extra["senders_used"] = len(arrived)
    if isinstance(own_result, Given) or not arrived:
        # The receiver's cache never reached the fusers, or no sender's did.
        if p.fallback == "t2t" and senders and not isinstance(own_result, Given):
            rec.extra.update(fallback="t2t", mode="t2t")
            asked = [branch(ctx, collab.text_answer(ctx, s, text, p)) for s in senders]
            hints = yield from gather(ctx, asked, p.timeout_s)
            hints = [h for h in hints if not isinstance(h, Given)]
            rec.extra["senders_used"] = len(hints)
            yield from collab.t2t_receive(ctx, receiver, text, hints)
            return
        rec.extra.update(fallback="alone" if senders else "", mode="alone", senders_used=0)
        yield from _decode(ctx, receiver, r_ids, r_ends, [], p.fusion)
        return
    if len(arrived) < len(senders):
        rec.extra["fallback"] = "partial"

    # 3. The fusers: one run per sender where they live; the fused cache comes down if that is a server.
    inputs = [a for a, _ in arrived]
    for sender_input, sender in zip(inputs, (s for _, s in arrived), strict=True):
        cost = fuser_cost(sender_input.fuser, sender.model.charged, receiver.charged, len(r_ids) - 1)
        yield from fuser_node.compute.run(cost, request_id=ctx.request.request_id, kind="fuse",
                                          detail=sender_input.fuser.name)
    if fuser_node is not device:
        fused = KVCache(receiver.charged, len(r_ids) - 1, dtype=p.wire_dtype, group_size=p.group_size)
        yield from ctx.send(fuser_node.name, device.name, fused)
        rec.extra["kv_bytes"] += fused.nbytes
    # 4. The receiver decodes on the fused cache.
    yield from _decode(ctx, receiver, r_ids, r_ends, inputs, p.fusion)


def _own_cache(ctx: RequestContext, p: CollabParams, receiver: HostedModel, n_positions: int,
               fuser_node: Node) -> ProcessGenerator:
    device = ctx.device
    if n_positions > 0:
        yield from ctx.charge_prefill(device, receiver, n_positions)
    if fuser_node is not device:
        payload = KVCache(receiver.charged, n_positions, dtype=p.wire_dtype, group_size=p.group_size)
        yield from ctx.send(device.name, fuser_node.name, payload)
        ctx.record.extra["kv_bytes"] += payload.nbytes
    return True


def _sender_cache(ctx: RequestContext, p: CollabParams, sender: Sender, text: str, fuser_node: Node
                  ) -> ProcessGenerator:
    """A sender's C2C part: receive the input, prefill it, send the cache to the fusers."""
    receiver = ctx.device.model(p.receiver_model)
    yield from collab.share_input(ctx, sender, text)
    ids, ends = tokens_with_ends(sender.model.lm, text)
    yield from ctx.charge_prefill(sender.node, sender.model, len(ids))
    payload = KVCache(sender.model.charged, len(ids), dtype=p.wire_dtype, group_size=p.group_size)
    yield from ctx.send(sender.node.name, fuser_node.name, payload)
    ctx.record.extra["kv_bytes"] += payload.nbytes
    fuser = ctx.world.store.fuser(sender.model.name, receiver.name)
    return SenderInput(fuser, sender.model.lm, ids, ends), sender


def _decode(ctx: RequestContext, receiver: HostedModel, r_ids: Sequence[int], r_ends: Sequence[float],
            inputs: Sequence[SenderInput], mode: FusionMode) -> ProcessGenerator:
    wl = ctx.world.scenario.workload
    output = ctx.world.store.fusion.generate(receiver.lm, r_ids, r_ends, inputs, wl.max_new_tokens,
                                             wl.sampling, seed=ctx.seed, mode=mode)
    # The last prompt token goes on the (fused) cache of the rest: one decode call yields the first token.
    yield from collab.play_out(ctx, receiver, len(r_ids), 1, output)


def check_c2c(policy: str, p: CollabParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
    """collab's checks, then: the fuser node, a trained fuser for every (sender, receiver) pair that will
    meet, pinned to these very models, and int8/int4 group sizes that divide the sender's head_dim."""
    problems = collab.check_collab(policy, p, scenario, graph)
    if problems:
        return problems
    nodes = scenario.topology.nodes
    if p.fuser_at != "receiver":
        if p.fuser_at not in nodes:
            return [f"policy.fuser_at: unknown node {p.fuser_at!r} (or `receiver`)"]
        if nodes[p.fuser_at].profile is None:
            return [f"policy.fuser_at: {p.fuser_at} has no hardware profile to run the fusers on"]
        for d in scenario.request_devices:
            if not (nx.has_path(graph, d, p.fuser_at) and nx.has_path(graph, p.fuser_at, d)):
                problems.append(f"policy.fuser_at: no route between {d} and {p.fuser_at}")
    if p.group_size is not None and p.wire_dtype in ("fp32", "fp16", "bf16"):
        problems.append(f"policy.group_size: applies to int8/int4, not {p.wire_dtype}")
    element_nbytes(p.wire_dtype)
    pairs: dict[tuple[str, str], int] = {}
    for d in scenario.request_devices:
        receiver = collab.model_of(scenario, d, p.receiver_model)
        for i, s in enumerate(p.senders):
            if s.node != d:
                pairs.setdefault((collab.model_of(scenario, s.node, s.model), receiver), i)
    for (sender, receiver), i in pairs.items():
        line = _fuser_problem(sender, receiver)
        if line:
            problems.append(f"policy.senders[{i}]: {line}")
    return list(dict.fromkeys(problems))


def _fuser_problem(sender: str, receiver: str) -> str | None:
    """Why `sender → receiver` cannot be fused, or None: no fuser on the search path, or one trained
    against other weights, or tokenizers that differ without an alignment."""
    try:
        manifest = read_fuser_manifest(find_fuser_dir(sender, receiver))
    except (ModelError, InputError) as exc:
        return str(exc).splitlines()[0]
    store = ModelStore()  # for manifests only: no model is loaded here
    for side, name in (("sender", sender), ("receiver", receiver)):
        try:
            model_manifest = store.manifest(name)
        except (ModelError, InputError) as exc:
            return str(exc).splitlines()[0]
        pinned = getattr(manifest, side).model_sha256
        actual = model_manifest.sha256.get(model_manifest.files.get("model", ""), "")
        if actual and actual != pinned:
            return (f"fuser {manifest.name} was trained against another {name} (sha256 {pinned[:12]}…, "
                    f"this one {actual[:12]}…)")
    if manifest.alignment != "identity":  # two tokenizers: the character-offset rule must apply to both
        tokenizers = [Tokenizer.from_file(store.path(n) / store.manifest(n).files["tokenizer"])
                      for n in (sender, receiver)]
        reason = check_alignable(*tokenizers)
        if reason is not None:
            return f"the tokenizers of {sender} and {receiver} cannot be aligned: {reason}"
    return None
