"""Per-token hybrid SLM/LLM routing: the machinery U-HLM, Rand-HLM and FedHLM share
(../shared/papers/004: FedHLM, Algorithm 1, eqs. 1-14).

For every output position of a request on device k:
1. the device's SLM drafts x_t ~ x^(t) (eq. 1) from the real model's logits, with the workload's sampling;
2. uncertainty u_t: the disagreement of K temperature-scaled samples with x_t (sec. IV-B) or the entropy of
   x^(t) over ln|V| (sec. III-B);
3. the policy decides δ_t (U-HLM/FedHLM: u_t > u_th,k; Rand-HLM: a coin). δ_t = 0 keeps x_t on the device;
4. otherwise, in order, each stage may resolve the token, and a stage that is down or answers after its
   timeout passes the token on (its bytes in flight are abandoned, never lost from the count):
   a. the client's token cache (sec. V-A-3): a draft whose embedding is within cos θ of the token resolved
      before in the same context is kept;
   b. P2P (eqs. 9-10): the cluster's peers predict the position with their own SLMs on their own nodes (node
      services started in `setup`) and answer with the embedding of their token; the draft is kept if its
      embedding is within cos θ of the peers' centroid; eq. 13 may skip this stage (opportunistic P2P);
   c. the edge server: a cache of the cluster's LLM verdicts, keyed by context, accepting on cos θ;
   d. the cloud LLM: accept with probability 1 − β, β = max(1 − y[x_t]/x[x_t], 0) (eq. 3), else resample
      from the residual max(y − x̂, 0), the speculative-sampling rule. x̂ is the draft distribution as far as
      the wire format carries it (exact for `dense`, the top-k entries for `top_k`, x[x_t] alone for
      `token_prob`), so the cheap formats resample from an approximate residual.
Every token lands in exactly one of tokens_local (cache hits included, counted again in tokens_cache),
tokens_p2p, tokens_edge, tokens_llm.

Time and bytes: the device's SLM is charged a prefill and one decode per position; peers a prefill over the
context they have not seen; the cloud LLM a verify over the tokens it has not yet run. The context travels
incrementally: each party holds what it was sent before and gets only the tokens since (int32 ids).

Requests are issued in `rounds` (request i in round ⌊i·R / n⌋; a round's requests start together once the
previous round's have ended): FedHLM learns between rounds (`end_of_round`), the baselines only pace.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import polars as pl
import simpy

from netsim.lm.sampling import probabilities, sample
from netsim.network.delivery import TransferFailed
from netsim.payload import DenseLogits, Embeddings, Payload, TokenIds, TopKLogits
from netsim.policies.base import Policy
from netsim.policies.params import HlmParams
from netsim.policies.remote import check_servers

if TYPE_CHECKING:
    import networkx as nx

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node, World

P = TypeVar("P", bound=HlmParams)

EDGE_CACHE_ENTRIES = 65_536
"""Entries of an edge server's cluster cache (LRU); far more than a cluster resolves in a bundled run."""

_TIMED_OUT = object()


# -- 2. uncertainty ----------------------------------------------------------------------------------


def sampling_uncertainty(logits: np.ndarray, draft: int, k: int, temperature: float,
                         rng: np.random.Generator) -> float:
    """Disagreement of K samples d_i ~ softmax(z/T) with the draft (sec. IV-B), with half a count added on
    each side: u = (Σ 1[d_i ≠ x_t] + ½) / (K + 1), the Krichevsky–Trofimov estimate of the disagreement
    probability. It orders tokens as the raw rate does but lies strictly inside (0, 1), so threshold 0
    sends every token on and threshold 1 keeps every token, whatever K."""
    z = logits.astype(np.float64) / temperature
    w = np.exp(z - z.max())
    cdf = np.cumsum(w)
    draws = np.searchsorted(cdf, rng.random(k) * cdf[-1], side="right")
    return (float(np.count_nonzero(draws != draft)) + 0.5) / (k + 1)


def entropy_uncertainty(logits: np.ndarray) -> float:
    """Entropy of softmax(z) over ln|V| (sec. III-B), in [0, 1]: H = ln Σe^z' − Σ e^z' z' / Σ e^z'
    with z' = z − max z (one exponential per entry)."""
    z = logits - logits.max()
    w = np.exp(z, dtype=np.float64)
    total = float(w.sum())
    return (math.log(total) - float(w @ z) / total) / math.log(z.shape[-1])


def draw(q: np.ndarray, greedy: bool, rng: np.random.Generator) -> int:
    """One token from the distribution q (eq. 1), exactly as `netsim.lm.sampling.sample` draws it from the
    logits q came from (argmax when greedy, else one uniform and the inverse CDF), without computing q
    twice."""
    if greedy:
        return int(np.argmax(q))
    cdf = np.cumsum(q)
    return min(int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")), q.size - 1)


# -- 4d. the LLM's verdict ---------------------------------------------------------------------------


def rejection_probability(x_draft: float, y_draft: float) -> float:
    """β = max(1 − y[x_t] / x[x_t], 0) (eq. 3)."""
    return max(1.0 - y_draft / x_draft, 0.0) if x_draft > 0 else 1.0


def known_draft(q: np.ndarray, draft: int, wire: str, top_k: int) -> np.ndarray:
    """x̂: what the cloud knows of the draft distribution after the uplink (dense: all of it)."""
    if wire == "dense":
        return q
    x_hat = np.zeros_like(q)
    if wire == "top_k":
        keep = np.argpartition(-q, min(top_k, q.size) - 1)[:top_k]
        x_hat[keep] = q[keep]
    x_hat[draft] = q[draft]
    return x_hat


def verdict(q: np.ndarray, y: np.ndarray, draft: int, x_hat: np.ndarray, rng: np.random.Generator
            ) -> tuple[int, float]:
    """(final token, β): keep the draft with probability 1 − β (eq. 3), else draw from the residual
    norm(max(y − x̂, 0)) (speculative sampling; exact when x̂ = x). Two uniforms per call, always."""
    beta = rejection_probability(float(q[draft]), float(y[draft]))
    keep_u, resample_u = rng.random(2)
    if keep_u < 1.0 - beta:
        return draft, beta
    residual = np.maximum(y - x_hat, 0.0)
    if residual.sum() <= 0.0:  # y ≤ x̂ everywhere (x̂ = y): the residual is empty, fall back to y
        residual = y
    cdf = np.cumsum(residual)
    token = int(np.searchsorted(cdf, resample_u * cdf[-1], side="right"))
    return min(token, q.size - 1), beta


def uplink(wire: str, dtype: str, top_k: int, delta: Sequence[int], draft: int, q: np.ndarray,
           vocab_size: int) -> list[Payload]:
    """Messages a transmitted draft takes up: the context the receiver lacks (int32 ids) and the draft in
    the wire format. `token_prob` carries the draft id with x[x_t]; `top_k` and `dense` carry the draft id
    with the context and the distribution beside it (`vocab_size`: the charged card's)."""
    if wire == "token_prob":
        msgs: list[Payload] = [TokenIds(tuple(delta))] if delta else []
        return [*msgs, TokenIds((draft,), (float(q[draft]),), prob_dtype=dtype)]  # type: ignore[arg-type]
    context = TokenIds((*delta, draft))
    if wire == "top_k":
        k = min(top_k, q.size)
        keep = np.argsort(-q, kind="stable")[:k]
        dist: Payload = TopKLogits((tuple(int(i) for i in keep),), (tuple(float(q[i]) for i in keep),), k,
                                   dtype)  # type: ignore[arg-type]
    else:
        dist = DenseLogits(1, vocab_size, dtype)  # type: ignore[arg-type]
    return [context, dist]


# -- 4a. token cache with eq. 14 ---------------------------------------------------------------------


class TokenCache:
    """A client's LRU cache: context (last tokens) → the token resolved there upstream (sec. V-A-3).

    Every lookup is logged with the cache's size at that moment, so `fit_hit_curve` fits H(S) = 1 − e^(−αS)
    (eq. 14) to the hit ratio observed at each size.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[tuple[int, ...], int] = OrderedDict()
        self.lookups: list[tuple[int, bool]] = []

    def get(self, key: tuple[int, ...]) -> int | None:
        token = self.entries.get(key)
        if token is not None:
            self.entries.move_to_end(key)
        return token

    def log(self, hit: bool) -> None:
        self.lookups.append((len(self.entries), hit))

    def put(self, key: tuple[int, ...], token: int) -> None:
        if self.capacity <= 0:
            return
        self.entries[key] = token
        self.entries.move_to_end(key)
        if len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


def fit_hit_curve(sizes: np.ndarray, hits: np.ndarray) -> float | None:
    """α of H(S) = 1 − e^(−αS) (eq. 14), least squares over the lookups (S, hit ∈ {0, 1}); None when no
    lookup found a non-empty cache."""
    mask = sizes > 0
    if not mask.any():
        return None
    s, h = sizes[mask].astype(np.float64), hits[mask].astype(np.float64)
    from scipy.optimize import minimize_scalar  # only when a cache was used

    def sse(log_alpha: float) -> float:
        return float(((h - (1.0 - np.exp(-np.exp(log_alpha) * s))) ** 2).sum())

    best = minimize_scalar(sse, bounds=(-20.0, 5.0), method="bounded")
    return float(np.exp(best.x))


# -- per-client and per-request state ----------------------------------------------------------------


@dataclass
class ClientState:
    """What one client (a requesting device) keeps across its requests."""

    device: str
    index: int
    threshold: float
    cluster: int = -1
    peers: tuple[str, ...] = ()
    edge: str | None = None
    cache: TokenCache = field(default_factory=lambda: TokenCache(0))
    feedback: list[tuple[float, float]] = field(default_factory=list)
    """(u_t, β_t) of this round's tokens the LLM judged: the data of eqs. 4-6."""
    tokens: int = 0
    transmitted: int = 0
    p2p_attempts: int = 0
    p2p_hits: int = 0


@dataclass
class Sync:
    """How much of the request's sequence each remote party already holds (ids sent) or has run (model)."""

    cloud_known: int = 0
    cloud_ran: int = 0
    peer_known: dict[str, int] = field(default_factory=dict)


@dataclass
class PeerQuery:
    """One P2P question, put in the peer's mailbox once its message has arrived."""

    ctx: RequestContext
    device: str
    prefix: tuple[int, ...]
    position: int
    answered: simpy.Event
    handler: simpy.Process | None = None
    cancelled: bool = False
    replying: bool = False
    """The answer is on the wire: the only phase an asker that gives up interrupts (the peer's compute
    runs to its end, so the peer holds the context for the next question)."""


@dataclass
class Counts:
    local: int = 0
    cache: int = 0
    p2p: int = 0
    edge: int = 0
    llm: int = 0
    probe: int = 0
    uncertain: int = 0
    llm_timeouts: int = 0
    p2p_timeouts: int = 0
    edge_timeouts: int = 0
    correct: int = 0
    agree: int = 0


class HlmPolicy(Policy[P]):
    """Base of the three policies; subclasses say which drafts go on (`transmits`) and which stages exist."""

    columns: ClassVar[dict[str, Any]] = {
        "tokens_p2p": pl.Int64, "tokens_edge": pl.Int64, "tokens_cache": pl.Int64, "tokens_probe": pl.Int64,
        "tokens_uncertain": pl.Int64, "llm_timeouts": pl.Int64, "p2p_timeouts": pl.Int64,
        "edge_timeouts": pl.Int64, "transmission_reduction": pl.Float64, "accuracy": pl.Float64,
        "agreement": pl.Float64, "threshold": pl.Float64, "cluster": pl.Int64, "round": pl.Int64,
    }
    uses_uncertainty: ClassVar[bool] = True

    def __init__(self, params: P, world: World) -> None:
        super().__init__(params, world)
        devices = world.scenario.request_devices
        self.clients: dict[str, ClientState] = {
            d: ClientState(d, i, self.initial_threshold()) for i, d in enumerate(devices)}
        slm = world.nodes[devices[0]].model(params.slm)
        table = slm.lm.embed(np.arange(slm.lm.geometry.vocab_size))  # (V, hidden): e_t of every token
        norms = np.linalg.norm(table, axis=1, keepdims=True)
        self.unit_embeddings = table / np.where(norms > 0, norms, 1.0)
        self.embeddings = table
        self.mailboxes: dict[str, simpy.Store] = {}
        self.peer_ran: dict[tuple[str, int], int] = {}
        """(peer, request id) → context tokens the peer's SLM has run for that request (its KV cache)."""
        self.edge_caches: dict[str, OrderedDict[tuple[int, ...], int]] = {}
        # Rounds: request i belongs to round ⌊i·R / n⌋; a round's requests start together when it begins.
        n_requests, rounds = world.scenario.workload.n_requests, params.rounds
        self.round_of = [i * rounds // n_requests for i in range(n_requests)]
        self.started = [world.env.event() for _ in range(rounds)]
        self.done = [world.env.event() for _ in range(rounds)]
        self.remaining = [0] * rounds
        for r in self.round_of:
            self.remaining[r] += 1

    # -- what subclasses decide -----------------------------------------------------------------------

    def initial_threshold(self) -> float:
        return 1.0

    def transmits(self, client: ClientState, u: float, rng: np.random.Generator) -> bool:
        """δ_t: whether the draft leaves the device (U-HLM, FedHLM: u_t > u_th,k)."""
        return u > client.threshold

    def probes(self, rng: np.random.Generator) -> bool:
        """Whether a kept draft is sent anyway, to observe its β (FedHLM's corrected objective)."""
        return False

    def end_of_round(self, r: int) -> ProcessGenerator:
        """After the last request of round r has ended, before round r + 1 begins (FedHLM learns here)."""
        return
        yield

    # -- rounds: requests issued in batches -----------------------------------------------------------

    def enter(self, ctx: RequestContext) -> ProcessGenerator:
        """The request waits for its round and arrives when the round begins (Algorithm 1, line 1)."""
        r = self.round_of[ctx.request.request_id]
        yield self.started[r]
        ctx.record.t_arrival_s = ctx.env.now
        ctx.record.extra["round"] = r

    def leave(self, ctx: RequestContext) -> None:
        r = self.round_of[ctx.request.request_id]
        self.remaining[r] -= 1
        if self.remaining[r] == 0:
            self.done[r].succeed()

    def _rounds(self) -> ProcessGenerator:
        for r in range(self.params.rounds):
            self.started[r].succeed()
            if self.remaining[r] > 0:
                yield self.done[r]
            yield from self.end_of_round(r)

    def p2p_enabled(self) -> bool:
        return False

    def edge_enabled(self) -> bool:
        return False

    def theta(self) -> float:
        return 1.0

    # -- checks --------------------------------------------------------------------------------------

    @classmethod
    def check(cls, params: P, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        """Every client hosts the SLM, a cloud hosts the LLM, and both share one tokenizer."""
        from netsim.errors import InputError
        from netsim.lm.zoo import ModelStore

        nodes = scenario.topology.nodes
        where = scenario.topology.yaml_paths()
        problems: list[str] = []
        slms: set[str] = set()
        for d in scenario.request_devices:
            hosted = [m.name for m in nodes[d].models]
            if not (params.slm in hosted if params.slm else hosted):
                problems.append(f"{where[d]}.models: {cls.name} needs an SLM ({params.slm or 'any model'}) "
                                "on every requesting device")
            else:
                slms.add(params.slm or hosted[0])
        problems += check_servers(cls.name, "cloud", params.cloud, params.llm, scenario, graph)
        if problems:
            return list(dict.fromkeys(problems))
        cloud = params.cloud or next(n for n, s in nodes.items() if s.role == "cloud"
                                     and any(params.llm in (None, m.name) for m in s.models))
        llm = params.llm or nodes[cloud].models[0].name
        store = ModelStore()
        try:
            digests = {}
            for name in sorted({*slms, llm}):
                manifest = store.manifest(name)
                digests[name] = manifest.sha256[manifest.files["tokenizer"]]
        except InputError:
            return []  # the node checks name the unknown model
        for name in sorted(slms):
            if digests[name] != digests[llm]:
                problems.append(f"policy.llm: {llm}'s tokenizer differs from the SLM {name}'s; per-token "
                                "routing needs one vocabulary")
        return problems

    # -- lifecycle -----------------------------------------------------------------------------------

    def setup(self) -> list[ProcessGenerator]:
        """Start a P2P service on every client that may be asked (a daemon: never returned)."""
        if self.p2p_enabled():
            for client in self.clients.values():
                if client.peers:
                    for peer in client.peers:
                        if peer not in self.mailboxes:
                            self.mailboxes[peer] = simpy.Store(self.world.env)
                            self.world.env.process(self._peer_service(peer))
        return [self._rounds()]

    def finish(self) -> dict[str, pl.DataFrame]:
        """`cache`: per client, lookups and hits of its token cache and the α of eq. 14."""
        rows = []
        for c in self.clients.values():
            if not c.cache.lookups:
                continue
            sizes = np.array([s for s, _ in c.cache.lookups])
            hits = np.array([h for _, h in c.cache.lookups])
            rows.append({"device": c.device, "cluster": c.cluster, "lookups": len(sizes),
                         "hits": int(hits.sum()), "hit_ratio": float(hits.mean()),
                         "mean_size": float(sizes.mean()), "alpha_eq14": fit_hit_curve(sizes, hits)})
        if not rows:
            return {}
        return {"cache": pl.DataFrame(rows, schema={
            "device": pl.Utf8, "cluster": pl.Int64, "lookups": pl.Int64, "hits": pl.Int64,
            "hit_ratio": pl.Float64, "mean_size": pl.Float64, "alpha_eq14": pl.Float64})}

    # -- one request ---------------------------------------------------------------------------------

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        client = self.clients[ctx.request.device]
        yield from self.enter(ctx)
        try:
            yield from self._serve(ctx, client)
        finally:
            self.leave(ctx)
            for peer in client.peers:  # the peers drop this request's context
                self.peer_ran.pop((peer, ctx.request.request_id), None)

    def _serve(self, ctx: RequestContext, client: ClientState) -> ProcessGenerator:
        p, rec, device, env = self.params, ctx.record, ctx.device, ctx.env
        slm = device.model(p.slm)
        cloud = self.world.nodes[p.cloud] if p.cloud else self.world.nearest(device.name, ("cloud",), p.llm)
        llm = cloud.model(p.llm)
        sampling = self.world.scenario.workload.sampling
        eos = slm.lm.tokenizer.eos_id
        ids = ctx.prompt_ids(slm)
        truth: list[int] | None = None
        n_new = self.world.scenario.workload.max_new_tokens
        if p.teacher_forced and len(ids) > 1:
            # A held-out passage shorter than prompt_tokens + 1 keeps at least one token to score, so no
            # request ends with nothing generated.
            cut = min(p.prompt_tokens, len(ids) - 1)
            ids, truth = ids[:cut], ids[cut: cut + n_new]
            n_new = len(truth)
        rng_draft, rng_u = ctx.rng("hlm.draft"), ctx.rng("hlm.uncertainty")
        rng_route, rng_verify, rng_eval = ctx.rng("hlm.route"), ctx.rng("hlm.verify"), ctx.rng("hlm.llm_only")
        rec.n_prompt_tokens, rec.model, rec.server = len(ids), slm.name, cloud.name
        rec.charged_as = slm.charged_as or ""
        n = Counts()
        sync = Sync()
        prefix = list(ids)
        output: list[int] = []

        yield from ctx.charge_prefill(device, slm, len(prefix))
        for t in range(n_new):
            if t > 0:
                yield from ctx.charge_decode(device, slm, past_len=len(prefix) - 1)
            # 1. draft x_t ~ x^(t) (eq. 1); 2. its uncertainty u_t
            logits = ctx.next_logits(slm, prefix)
            q = probabilities(logits, sampling)
            draft = draw(q, sampling.greedy, rng_draft)
            u = 0.0
            if self.uses_uncertainty:
                u = (sampling_uncertainty(logits, draft, p.k_samples, p.uncertainty_temperature, rng_u)
                     if p.uncertainty == "sampling" else entropy_uncertainty(logits))
            # 3. δ_t
            send = self.transmits(client, u, rng_route)
            probe = not send and self.probes(rng_route)
            final, stage = draft, "local"
            if send:
                n.uncertain += 1
                client.transmitted += 1
                stage = yield from self._upstream(ctx, client, sync, prefix, draft, q, slm, n)
            elif probe:
                stage = "direct"
            if stage in ("via_edge", "direct"):
                result = yield from self._verify(ctx, client, sync, prefix, draft, q, slm, cloud, llm,
                                                 rng_verify, via_edge=stage == "via_edge")
                if result is None:  # the cloud did not answer in time: the draft stays
                    n.llm_timeouts += 1
                    stage = "local"
                else:
                    final, beta = result
                    client.feedback.append((u, beta))
                    stage = "llm"
                    n.probe += probe
            setattr(n, stage, getattr(n, stage) + 1)
            if stage != "local":
                self._remember(client, prefix, final)
            client.tokens += 1
            # scores: teacher-forced accuracy, agreement with the LLM's own choice on this prefix
            if truth is not None:
                n.correct += final == truth[t]
            if p.agreement:
                n.agree += final == sample(ctx.next_logits(llm, prefix), sampling, rng_eval)
            output.append(final)
            rec.token_arrived(env.now)
            prefix.append(truth[t] if truth is not None else final)
            if truth is None and final == eos:
                break
            if t + 1 < n_new:  # the next draft's question is known now; its answer is wanted after the
                ctx.prefetch(slm, prefix)  # decode time is charged, while other devices' events run

        # 5. the record
        n_out = len(output)
        rec.output_ids, rec.output_text = output, slm.lm.tokenizer.decode(output)
        rec.tokens_local, rec.tokens_llm = n.local, n.llm
        rec.llm_transmissions = n.llm + n.llm_timeouts
        rec.extra.update({
            "tokens_p2p": n.p2p, "tokens_edge": n.edge, "tokens_cache": n.cache, "tokens_probe": n.probe,
            "tokens_uncertain": n.uncertain, "llm_timeouts": n.llm_timeouts, "p2p_timeouts": n.p2p_timeouts,
            "edge_timeouts": n.edge_timeouts,
            "transmission_reduction": 1.0 - rec.llm_transmissions / n_out if n_out else None,
            "accuracy": n.correct / n_out if truth is not None and n_out else None,
            "agreement": n.agree / n_out if p.agreement and n_out else None,
            "threshold": client.threshold if self.uses_uncertainty else None, "cluster": client.cluster,
        })

    # -- 4. the stages ------------------------------------------------------------------------------

    def _upstream(self, ctx: RequestContext, client: ClientState, sync: Sync, prefix: list[int], draft: int,
                  q: np.ndarray, slm: HostedModel, n: Counts) -> Generator[simpy.Event, Any, str]:
        """Stages a-c; returns the one that resolved the draft ("local" for a cache hit, "p2p", "edge"), or
        who sends it to the cloud: "via_edge" (the edge forwards what it got) or "direct"."""
        p = self.params
        theta = self.theta()
        # a. the client's cache (counted local: no communication)
        if client.cache.capacity > 0:
            key = tuple(prefix[-self._context():])
            cached = client.cache.get(key)
            hit = cached is not None and self._similar(draft, cached, theta)
            client.cache.log(hit)
            if hit:
                n.cache += 1
                return "local"
        # b. peers (eqs. 9-10), if eq. 13 says they are worth asking
        if self.p2p_enabled() and client.peers and self._worth_asking(ctx, client, len(prefix)):
            client.p2p_attempts += 1
            agreed = yield from self._ask_peers(ctx, client, sync, prefix, draft, n)
            if agreed:
                client.p2p_hits += 1
                return "p2p"
        # c. the edge server's cluster cache
        if self._has_edge(client):
            assert client.edge is not None
            # the cache key and what the cloud would need, so that a miss is forwarded from the edge
            key = tuple(prefix[-self._context():])
            msgs = [TokenIds(key), *uplink(p.wire, p.wire_dtype, p.top_k, prefix[sync.cloud_known:], draft, q,
                                           slm.charged.vocab_size)]
            arrived = yield from _within(ctx, _send_all(ctx, ctx.device.name, client.edge, msgs),
                                         p.edge_timeout_s)
            if arrived is _TIMED_OUT or isinstance(arrived, TransferFailed):
                n.edge_timeouts += 1  # down or late: this draft goes to the cloud from the device
                return "direct"
            cached = self.edge_caches.setdefault(client.edge, OrderedDict()).get(key)
            if cached is not None and self._similar(draft, cached, theta):
                yield from _quiet(ctx.send(client.edge, ctx.device.name, TokenIds((draft,))))
                return "edge"
            return "via_edge"
        return "direct"

    def _verify(self, ctx: RequestContext, client: ClientState, sync: Sync, prefix: list[int], draft: int,
                q: np.ndarray, slm: HostedModel, cloud: Node, llm: HostedModel, rng: np.random.Generator,
                via_edge: bool) -> Generator[simpy.Event, Any, tuple[int, float] | None]:
        """4d. The cloud's verdict (eq. 3 and the residual), over the edge server when it forwarded the
        draft; None when the cloud did not answer within `llm_timeout_s` (or a transfer failed)."""
        p = self.params
        device = ctx.device.name
        src = client.edge if via_edge and client.edge else device
        delta = prefix[sync.cloud_known:]
        msgs = uplink(p.wire, p.wire_dtype, p.top_k, delta, draft, q, slm.charged.vocab_size)
        ctx.prefetch(llm, prefix)  # the LLM's answer, computed while the uplink is simulated

        def steps() -> Generator[simpy.Event, Any, tuple[int, float]]:
            yield from _send_all(ctx, src, cloud.name, msgs)
            # the LLM runs the tokens it has not run yet: the whole prompt first (prefill), then a verify
            fed = len(prefix) - sync.cloud_ran
            if sync.cloud_ran == 0:
                yield from ctx.charge_prefill(cloud, llm, fed)
            else:
                yield from ctx.charge_verify(cloud, llm, past_len=sync.cloud_ran, n_tokens=fed)
            sync.cloud_known, sync.cloud_ran = len(prefix), len(prefix)
            y = probabilities(ctx.next_logits(llm, prefix), self.world.scenario.workload.sampling)
            final, beta = verdict(q, y, draft, known_draft(q, draft, p.wire, p.top_k), rng)
            answer = TokenIds((final,), (beta,), prob_dtype=p.wire_dtype)  # the token and β (feedback)
            yield from ctx.send(cloud.name, src, answer)
            if src != device:
                self._edge_learns(src, prefix, final)
                yield from ctx.send(src, device, answer)
            if not self.params.teacher_forced:
                sync.cloud_known = len(prefix) + 1  # the cloud chose the next token: it holds it already
            return final, beta

        result = yield from _within(ctx, steps(), p.llm_timeout_s)
        if result is _TIMED_OUT or isinstance(result, TransferFailed):
            return None
        return result  # type: ignore[no-any-return]

    # -- P2P ----------------------------------------------------------------------------------------

    def _ask_peers(self, ctx: RequestContext, client: ClientState, sync: Sync, prefix: list[int], draft: int,
                   n: Counts) -> Generator[simpy.Event, Any, bool]:
        """Eqs. 9-10: the peers' token embeddings, their centroid, and its cosine with the draft's."""
        env = ctx.env
        queries = []
        for peer in client.peers:
            known = sync.peer_known.get(peer, 0)
            query = PeerQuery(ctx, ctx.device.name, tuple(prefix), len(prefix), env.event())
            msg = TokenIds(tuple(prefix[known:]) or (prefix[-1],))
            queries.append((peer, query, env.process(self._ask(ctx, peer, msg, query, sync))))
        yield env.any_of([env.all_of([proc for _, _, proc in queries]),
                          env.timeout(self.params.p2p_timeout_s)])
        vectors = []
        for peer, query, proc in queries:
            if proc.is_alive:  # late or down: give up, abandon what is in flight
                n.p2p_timeouts += 1
                query.cancelled = True
                proc.interrupt(TimeoutError(f"peer {peer} later than {self.params.p2p_timeout_s:g} s"))
                if query.replying and query.handler is not None and query.handler.is_alive:
                    query.handler.interrupt(TimeoutError("the asker gave up"))
            elif isinstance(proc.value, np.ndarray):
                vectors.append(proc.value)
        if not vectors:
            return False
        centroid = np.mean(vectors, axis=0)  # eq. 9: mean of the peers' embeddings
        mine = self.embeddings[draft]
        denom = float(np.linalg.norm(mine) * np.linalg.norm(centroid))
        sim = float(mine @ centroid) / denom if denom > 0 else 0.0  # eq. 10
        return sim >= self.theta()

    def _ask(self, ctx: RequestContext, peer: str, msg: TokenIds, query: PeerQuery, sync: Sync
             ) -> ProcessGenerator:
        """The asker's side of one question: the message out (the context the peer lacks), then the answer
        (an embedding) back."""
        try:
            yield from ctx.send(ctx.device.name, peer, msg)
            sync.peer_known[peer] = len(query.prefix)
            yield self.mailboxes[peer].put(query)
            return (yield query.answered)
        except (simpy.Interrupt, TransferFailed):
            return None

    def _peer_service(self, node: str) -> ProcessGenerator:
        """A peer's node service: answers each question in its own process (its compute queues them)."""
        box = self.mailboxes[node]
        while True:
            query = yield box.get()
            query.handler = self.world.env.process(self._answer(node, query))

    def _answer(self, node_name: str, query: PeerQuery) -> ProcessGenerator:
        """The peer predicts the position with its own SLM (sampled with its own stream) and sends back
        the embedding e_t^j of its token (fp16)."""
        ctx = query.ctx
        node = self.world.nodes[node_name]
        model = node.model(self.params.slm)
        if query.cancelled:
            return
        key = (node_name, ctx.request.request_id)
        try:
            ran = self.peer_ran.get(key, 0)
            yield from ctx.charge_prefill(node, model, len(query.prefix) - ran, past_len=ran)
            self.peer_ran[key] = len(query.prefix)
            if query.cancelled:
                return
            logits = ctx.next_logits(model, query.prefix)
            rng = ctx.rng(f"hlm.peer.{node_name}.{query.position}")
            token = sample(logits, self.world.scenario.workload.sampling, rng)
            vector = self.embeddings[token]
            query.replying = True
            yield from ctx.send(node_name, query.device,
                                Embeddings(1, model.charged.hidden_size, "fp16", vector[None, :]
                                           if vector.shape[0] == model.charged.hidden_size else None))
            query.answered.succeed(vector)
        except (simpy.Interrupt, TransferFailed):
            return

    # -- helpers ------------------------------------------------------------------------------------

    def _context(self) -> int:
        return getattr(self.params, "cache_context", 2)

    def _similar(self, a: int, b: int, theta: float) -> bool:
        return a == b or float(self.unit_embeddings[a] @ self.unit_embeddings[b]) >= theta

    def _has_edge(self, client: ClientState) -> bool:
        return self.edge_enabled() and client.edge is not None

    def _remember(self, client: ClientState, prefix: list[int], token: int) -> None:
        client.cache.put(tuple(prefix[-self._context():]), token)

    def _edge_learns(self, edge: str, prefix: list[int], token: int) -> None:
        cache = self.edge_caches.setdefault(edge, OrderedDict())
        cache[tuple(prefix[-self._context():])] = token
        if len(cache) > EDGE_CACHE_ENTRIES:
            cache.popitem(last=False)

    def _worth_asking(self, ctx: RequestContext, client: ClientState, context_len: int) -> bool:
        """Eq. 13: ask the peers only if p_hit ≥ C_P2P / C_LLM. p_hit is the client's P2P hit ratio so far
        (Laplace: (hits + 1) / (attempts + 2)); each cost is the time a message pair takes on its route now
        (serialisation at the hop's current peak rate shared with the flows on its medium, propagation, the
        rest of an outage), the P2P one for the slowest peer."""
        if not getattr(self.params, "opportunistic", False):
            return True
        p_hit = (client.p2p_hits + 1) / (client.p2p_attempts + 2)
        net, device = self.world.net, ctx.device.name
        hidden = ctx.device.model(self.params.slm).charged.hidden_size
        up = TokenIds((0,) * 2).nbytes
        c_p2p = max(_route_cost_s(net, device, peer, up) + _route_cost_s(net, peer, device,
                                                                           Embeddings(1, hidden).nbytes)
                    for peer in client.peers)
        cloud = (self.world.nodes[self.params.cloud] if self.params.cloud
                 else self.world.nearest(device, ("cloud",), self.params.llm))
        c_llm = (_route_cost_s(net, device, cloud.name, up + TokenIds((0,), (0.0,)).nbytes)
                 + _route_cost_s(net, cloud.name, device, TokenIds((0,), (0.0,)).nbytes))
        return c_llm > 0 and p_hit >= c_p2p / c_llm


def _route_cost_s(net: Any, src: str, dst: str, nbytes: int) -> float:
    now = net.env.now
    total = 0.0
    for link in net.path(src, dst).hops:
        medium = link.medium
        share = link.peak_bps / (medium.n_flows + 1)
        total += link.wire_nbytes(nbytes) * 8.0 / share + link.delay_s
        if medium.down_until_s is not None:  # an outage: the rest of it comes first
            total += max(0.0, medium.down_until_s - now)
    return total


def _send_all(ctx: RequestContext, src: str, dst: str, msgs: Sequence[Payload]) -> ProcessGenerator:
    """The messages travel together (concurrently on the route); done when all have arrived."""
    if len(msgs) == 1:
        yield from ctx.send(src, dst, msgs[0])
        return
    procs = [ctx.env.process(_guard(ctx.send(src, dst, m))) for m in msgs]
    try:
        yield ctx.env.all_of(procs)
    except simpy.Interrupt:
        for proc in procs:
            if proc.is_alive:
                proc.interrupt("the sender gave up")
        raise
    for proc in procs:
        if isinstance(proc.value, TransferFailed):
            raise proc.value


def _guard(steps: ProcessGenerator) -> ProcessGenerator:
    """A child transfer whose failure or interruption its parent reads from the value, not an exception."""
    try:
        return (yield from steps)
    except TransferFailed as exc:
        return exc
    except simpy.Interrupt:
        return None


def _quiet(steps: ProcessGenerator) -> ProcessGenerator:
    """A reply whose loss changes nothing the device decides (the device counts the token either way)."""
    try:
        yield from steps
    except TransferFailed:
        return


def _within(ctx: RequestContext, steps: ProcessGenerator, timeout_s: float | None
            ) -> Generator[simpy.Event, Any, Any]:
    """Run `steps`; give up after `timeout_s` (interrupting it, so its transfers are abandoned). Returns its
    value, the TransferFailed that ended it, or _TIMED_OUT."""
    env = ctx.env

    def guarded() -> ProcessGenerator:
        try:
            return (yield from steps)
        except TransferFailed as exc:
            return exc
        except simpy.Interrupt:
            return _TIMED_OUT

    proc = env.process(guarded())
    if timeout_s is None:
        return (yield proc)
    yield env.any_of([proc, env.timeout(timeout_s)])
    if proc.is_alive:
        proc.interrupt(TimeoutError(f"no answer within {timeout_s:g} s"))
        return (yield proc)
    return proc.value
