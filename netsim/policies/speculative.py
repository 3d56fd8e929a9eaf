"""speculative — the device drafts γ tokens with its SLM, a verifier's LLM checks them in one forward.

Speculative sampling (Leviathan, Kalman & Matias, ICML 2023, "Fast Inference from Transformers via
Speculative Decoding", Algorithm 1; Chen et al. 2023, "Accelerating LLM Decoding with Speculative
Sampling", Algorithm 2) split across the network, as distributed speculative decoding runs it:

  device                                        verifier (edge or cloud, batching server if it has one)
  1. prefill the prompt (SLM)      ── prompt ids ──▶  prefill the prompt (LLM), concurrently
  2. draft x_1..x_γ ~ q_1..q_γ     ── ids, q(x_i) (+ q rows when sampling) ──▶
                                                    3. one forward over [pending, x_1..x_γ] → p_1..p_{γ+1}
                                                       accept x_i while u_i < p_i(x_i) / q_i(x_i)
                                                       first rejected j: resample from norm(max(0, p_j − q_j))
                                                       all accepted: a bonus token from p_{γ+1}
  4. ◀── accepted ids + the correction (or bonus) ──
Every round yields at least one LLM token, and the output is distributed exactly as the LLM's own
samples (Leviathan et al. Theorem 3.5 / Appendix A.1); with greedy sampling it *is* the LLM's greedy
output. Content is decided from the real models before the round's time is played out (it does not
depend on timing), so a retried round carries the same tokens.

Outage: a round that fails in transport (or exceeds `round_timeout_s`, when set: its bytes in flight are
abandoned) is retried `max_retries` times; then the device keeps the round's drafts — samples of its own
model — and finishes the answer with its SLM alone (`fallback`). Nothing drafted is lost.

Adaptive γ (`adapt`): after each round pick γ ∈ 1..gamma_max maximising expected tokens per second,
    E[tokens | γ] / (γ · t_draft + t_round),   E[tokens | γ] = (1 − α^{γ+1}) / (1 − α)   (Leviathan eq. 1)
with α the acceptance rate observed so far on this request (Laplace-smoothed: (a + 1) / (d + 2) for a
accepted of d drafted), t_draft the mean measured draft step and t_round the mean measured round trip
(uplink, verify, downlink). Leviathan §3.5 states the same trade-off with c = t_draft / t_round.
Full derivation and the recorded columns: docs/policies/speculative.md.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np
import polars as pl
import simpy
from tokenizers import Tokenizer as HfTokenizer

from netsim.errors import InputError
from netsim.lm.sampling import SamplingSpec, probabilities
from netsim.lm.zoo import ModelStore
from netsim.network.delivery import TransferFailed
from netsim.network.topology import route_weight
from netsim.payload import DenseLogits, Payload, TokenIds, TopKLogits
from netsim.policies.base import Policy
from netsim.policies.params import SpeculativeParams

if TYPE_CHECKING:
    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node, World

VERIFIER_ROLES = ("edge", "cloud")


# -- the acceptance rule (pure functions: unit-tested on synthetic distributions) ----------------------


def draw(probs: np.ndarray, rng: np.random.Generator) -> int:
    """One index from the distribution `probs` (V,) by inverse CDF: exactly one uniform per call, and
    `side="right"` never lands on a zero-probability index."""
    cumulative = np.cumsum(probs)
    index = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
    return min(index, probs.shape[-1] - 1)


def accept_drafts(drafts: Sequence[int], q_rows: Sequence[np.ndarray], p_rows: Sequence[np.ndarray],
                  uniforms: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(accepted count k, next token) of one verification round (Leviathan et al. 2023, Algorithm 1).

    `q_rows[i]` is the draft distribution x_{i+1} was drawn from, `p_rows[i]` the target's after the
    same prefix (len(drafts) + 1 rows: the last is for the bonus token), `uniforms` one U[0,1) per draft.
      accept x_i  iff  u_i < p_i(x_i) / q_i(x_i)                  (§2.3: accept with prob min(1, p/q))
      at the first rejection j: next ~ norm(max(0, p_j − q_j))    (§2.3, the adjusted distribution p')
      all accepted: next ~ p_{γ+1}                                 (the bonus token)
    `rng` makes exactly one draw per call, whatever k is, so the stream stays aligned across rounds.
    """
    for i, x in enumerate(drafts):
        p_x, q_x = p_rows[i][x], q_rows[i][x]
        if uniforms[i] * q_x < p_x:  # u < p/q without dividing; q_x > 0 since x was drawn from q
            continue
        residual = np.maximum(p_rows[i] - q_rows[i], 0.0)
        total = residual.sum()
        # total is 0 only when p == q, where rejection has probability 0; rounding can still land here
        return i, draw(residual / total if total > 0.0 else p_rows[i], rng)
    return len(drafts), draw(p_rows[len(drafts)], rng)


def greedy_accept(drafts: Sequence[int], target_argmax: Sequence[int]) -> tuple[int, int]:
    """`accept_drafts` when draft and target are greedy (one-hot q and p), without building vectors:
    x_i is accepted iff it is the target's argmax (p/q = 1, else 0), and the residual norm(max(0, p − q))
    at the first rejection — like the bonus row — is one-hot at the target's argmax."""
    for i, x in enumerate(drafts):
        if target_argmax[i] != x:
            return i, target_argmax[i]
    return len(drafts), target_argmax[len(drafts)]


def expected_tokens(alpha: float, gamma: int) -> float:
    """Expected tokens one round yields with γ drafts at acceptance rate α (Leviathan et al. eq. 1)."""
    if alpha >= 1.0:
        return gamma + 1.0
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def best_gamma(alpha: float, t_draft_s: float, t_round_s: float, gamma_max: int) -> int:
    """γ in 1..gamma_max with the most expected tokens per second of a round (Leviathan §3.5, with the
    cost ratio c = t_draft / t_round measured rather than assumed); ties go to the smaller γ."""
    rates = [expected_tokens(alpha, g) / (g * t_draft_s + t_round_s) for g in range(1, gamma_max + 1)]
    return int(np.argmax(rates)) + 1


# -- choosing a verifier --------------------------------------------------------------------------------


def nearest_verifiers(graph: nx.DiGraph, src: str, is_verifier: Callable[[str], bool], k: int) -> list[str]:
    """The `k` verifiers `src` reaches with the least route latency, nearest first (ties: name).

    Dijkstra from `src` with the route metric the network routes by, stopped once k verifiers are
    settled: a device of a fleet explores its neighbourhood, not ten thousand nodes.
    """
    found: list[str] = []
    settled: set[str] = set()
    heap: list[tuple[float, str]] = [(0.0, src)]
    best = {src: 0.0}
    while heap and len(found) < k:
        dist, node = heapq.heappop(heap)
        if node in settled:
            continue
        settled.add(node)
        if node != src and is_verifier(node):
            found.append(node)
        for nxt, attrs in graph.succ[node].items():
            d = dist + route_weight(node, nxt, attrs)
            if nxt not in settled and d < best.get(nxt, float("inf")):
                best[nxt] = d
                heapq.heappush(heap, (d, nxt))
    return found


# -- the policy -----------------------------------------------------------------------------------------


@dataclass
class _State:
    """What one request's device knows between rounds."""

    prompt: list[int]
    output: list[int] = field(default_factory=list)
    prefilled: bool = False
    """The verifier holds the prompt's KV cache."""
    upload: simpy.Process | None = None
    """The first prompt upload + prefill, running beside the device's own prefill and first drafts."""
    device_pending: int = 0
    """Committed tokens the draft model has not fed yet (its KV cache lags by these)."""
    server_pending: int = 0
    """Committed tokens the verifier has not fed yet (the last correction or bonus token)."""
    drafted: int = 0
    accepted: int = 0
    rounds: int = 0
    round_trips: int = 0
    retries: int = 0
    draft_s: list[float] = field(default_factory=list)
    round_s: list[float] = field(default_factory=list)


class Speculative(Policy[SpeculativeParams]):
    name = "speculative"
    Params = SpeculativeParams
    columns = MappingProxyType({
        "rounds": pl.Int64, "round_trips": pl.Int64, "drafted_tokens": pl.Int64,
        "accepted_tokens": pl.Int64, "accept_rate": pl.Float64, "gamma_final": pl.Int64,
        "retries": pl.Int64, "fallback": pl.Boolean, "fallback_tokens": pl.Int64,
    })

    def __init__(self, params: SpeculativeParams, world: World) -> None:
        super().__init__(params, world)
        self._open: defaultdict[str, int] = defaultdict(int)
        """Verifier → requests it serves now: the queue join-shortest-queue compares."""
        self._candidates: dict[str, list[str]] = {}
        """Device → its candidate verifiers, nearest first (found on the device's first request)."""

    # -- checks -------------------------------------------------------------------------------------

    @classmethod
    def check(cls, params: SpeculativeParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        """Drafters host the draft model, a verifier hosts the target and is reachable both ways from
        every requesting device, and draft and target share one tokenizer (the drafts are token ids)."""
        problems: list[str] = []
        if params.adapt and params.gamma_max < params.gamma:
            problems.append(f"policy.gamma_max: must be at least gamma ({params.gamma}) when adapt is on, "
                            f"got {params.gamma_max}")
        nodes = scenario.topology.nodes
        where = scenario.topology.yaml_paths()
        drafts: dict[str, str] = {}  # device → its draft model
        for d in scenario.request_devices:
            hosted = [m.name for m in nodes[d].models]
            if not (params.draft_model in hosted if params.draft_model else hosted):
                problems.append(f"{where[d]}.models: speculative needs "
                                f"{params.draft_model or 'a draft model'} on every requesting device")
            else:
                drafts[d] = params.draft_model or hosted[0]
        verifiers = {n: (params.target_model or spec.models[0].name) for n, spec in nodes.items()
                     if spec.role in VERIFIER_ROLES and spec.models
                     and any(params.target_model in (None, m.name) for m in spec.models)}
        if not verifiers:
            return [*problems, f"policy.target_model: speculative needs an edge or cloud node hosting "
                               f"{params.target_model or 'a model'}"]
        # Reachable both ways = one strongly connected component: one pass over the graph, not two
        # searches per verifier (2,000 verifiers among 10,000 devices).
        component = {n: i for i, comp in enumerate(nx.strongly_connected_components(graph)) for n in comp}
        served = {component[v] for v in verifiers}
        problems += list(dict.fromkeys(
            f"{where[d]}: no route to and from any speculative verifier" for d in drafts
            if component[d] not in served))
        problems += _tokenizer_problems(set(drafts.values()), set(verifiers.values()))
        return problems

    # -- serving ------------------------------------------------------------------------------------

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        p = self.params
        device = ctx.device
        verifier = self._choose(device.name)
        draft, target = device.model(p.draft_model), verifier.model(p.target_model)
        self._open[verifier.name] += 1
        try:
            yield from self._generate(ctx, verifier, draft, target)
        finally:
            self._open[verifier.name] -= 1

    def _choose(self, device: str) -> Node:
        """The nearest verifier, or the one with the fewest open requests among the `candidates`
        nearest (join-shortest-queue; ties: the nearer)."""
        nodes = self.world.nodes
        cands = self._candidates.get(device)
        if cands is None:
            k = self.params.candidates if self.params.choice == "jsq" else 1
            model = self.params.target_model

            def is_verifier(name: str) -> bool:
                node = nodes[name]
                return node.role in VERIFIER_ROLES and node.hosts(model)

            cands = self._candidates[device] = nearest_verifiers(self.world.net.graph, device, is_verifier, k)
            if not cands:
                raise InputError(f"no speculative verifier is reachable from {device}")
        return nodes[min(cands, key=lambda v: self._open[v])]  # min keeps the first (nearest) of ties

    def _generate(self, ctx: RequestContext, verifier: Node, draft: HostedModel, target: HostedModel
                  ) -> ProcessGenerator:
        p, rec, device = self.params, ctx.record, ctx.device
        wl = self.world.scenario.workload
        sampling = wl.sampling
        max_new = ctx.max_new_tokens
        eos = target.lm.tokenizer.eos_id
        rng_draft, rng_accept, rng_next = ctx.rng("draft"), ctx.rng("acceptance"), ctx.rng("resample")
        state = _State(ctx.prompt_ids(target))
        rec.n_prompt_tokens, rec.server, rec.model = len(state.prompt), verifier.name, target.name
        rec.charged_as = target.charged_as or ""
        gamma = p.gamma

        # 1. The prompt goes up and is prefilled on the verifier while the device prefills its own copy.
        state.upload = ctx.env.process(_guarded(self._prefill_remote(ctx, verifier, target, state)))
        yield from ctx.charge_prefill(device, draft, len(state.prompt))
        done = False
        while not done and len(state.output) < max_new:
            # 2. Draft n tokens; the draft model first feeds what it has not seen of the committed text.
            n = min(gamma, max_new - len(state.output))
            prefix = state.prompt + state.output
            drafts, q_rows = yield from self._draft(ctx, draft, prefix, n, state, sampling, rng_draft, eos)
            # 3. Content of the round, decided before its time is played out: the target's distributions
            #    after the prefix and after each draft (one multi-token forward, memoised exactly).
            rows = [ctx.next_logits(target, prefix), *ctx.verify_logits(target, prefix, drafts)]
            if sampling.greedy:  # one-hot p and q: p/q is 1 or 0, and the residual is p's argmax
                k, token = greedy_accept(drafts, [int(np.argmax(row)) for row in rows])
            else:
                k, token = accept_drafts(drafts, q_rows, [probabilities(row, sampling) for row in rows],
                                         rng_accept.random(len(drafts)), rng_next)
            new = [*drafts[:k], token][: max_new - len(state.output)]
            if eos is not None and eos in new:
                new, done = new[: new.index(eos) + 1], True
            # 4. The round's time: drafts up, verify, the committed tokens down; retried on failure.
            ok = yield from self._round(ctx, verifier, target, state, drafts, q_rows, new, sampling)
            if not ok:  # 5. Fall back: the drafts are the SLM's own samples; the SLM finishes alone.
                yield from self._fallback(ctx, draft, state, drafts, max_new, sampling, rng_draft, eos)
                break
            state.output += new
            state.drafted += len(drafts)
            state.accepted += k
            rec.tokens_local += min(k, len(new))
            rec.tokens_llm += len(new) - min(k, len(new))
            rec.token_arrived(ctx.env.now, len(new))
            # The draft model saw drafts[:n-1]; it lags by what it did not see of the committed tokens.
            seen = min(k, len(drafts) - 1)
            state.device_pending = len(new) - seen
            state.server_pending = 1 if len(new) > k else 0  # the LLM's own token has no KV cache yet
            if p.adapt and state.draft_s:
                alpha = (state.accepted + 1) / (state.drafted + 2)
                gamma = best_gamma(alpha, float(np.mean(state.draft_s)), float(np.mean(state.round_s)),
                                   p.gamma_max)
        if state.upload is not None and state.upload.is_alive:  # fell back before the prompt got there
            state.upload.interrupt("the device finished the answer alone")  # its bytes are abandoned
            yield state.upload
        rec.output_ids = state.output
        rec.output_text = target.lm.tokenizer.decode(state.output)
        rec.llm_transmissions = state.round_trips
        rec.extra.update({
            "rounds": state.rounds, "round_trips": state.round_trips, "drafted_tokens": state.drafted,
            "accepted_tokens": state.accepted,
            "accept_rate": state.accepted / state.drafted if state.drafted else None,
            "gamma_final": gamma, "retries": state.retries,
        })
        rec.extra.setdefault("fallback", False)
        rec.extra.setdefault("fallback_tokens", 0)

    def _draft(self, ctx: RequestContext, draft: HostedModel, prefix: list[int], n: int, state: _State,
               sampling: SamplingSpec, rng: np.random.Generator, eos: int | None
               ) -> ProcessGenerator:
        """Up to n drafts x_i ~ q_i and their distributions; stops after an end-of-text draft.

        Compute: one call feeding the committed tokens the draft model lags by (a decode for one, a
        prefill-on-cache for two: the last accepted draft and the bonus), then a decode per further draft.
        """
        device = ctx.device
        t0 = ctx.env.now
        if state.device_pending == 1:
            yield from ctx.charge_decode(device, draft, past_len=len(prefix) - 1)
        elif state.device_pending > 1:
            yield from ctx.charge_prefill(device, draft, state.device_pending,
                                          past_len=len(prefix) - state.device_pending)
        drafts: list[int] = []
        q_rows: list[np.ndarray] = []  # stays empty when greedy: q is one-hot at the draft
        for i in range(n):
            if i > 0:
                yield from ctx.charge_decode(device, draft, past_len=len(prefix) + i - 1)
            logits = ctx.next_logits(draft, prefix + drafts)
            if sampling.greedy:
                drafts.append(int(np.argmax(logits)))
            else:
                q_rows.append(probabilities(logits, sampling))
                drafts.append(draw(q_rows[-1], rng))
            if drafts[-1] == eos:
                break
        steps = len(drafts) - 1 + (state.device_pending > 0)
        if steps:
            state.draft_s.append((ctx.env.now - t0) / steps)
        return drafts, q_rows

    def _round(self, ctx: RequestContext, verifier: Node, target: HostedModel, state: _State,
               drafts: list[int], q_rows: list[np.ndarray], new: list[int], sampling: SamplingSpec
               ) -> ProcessGenerator:
        """Play one verification round out in time, retrying; False once the retries are spent."""
        env, p = ctx.env, self.params
        while True:
            state.round_trips += 1
            ctx.record.llm_transmissions = state.round_trips
            t0 = env.now
            attempt = env.process(_guarded(self._round_trip(ctx, verifier, target, state, drafts, q_rows,
                                                            new, sampling)))
            if p.round_timeout_s is None:
                yield attempt
            else:
                yield attempt | env.timeout(p.round_timeout_s)
                if not attempt.triggered:  # the device gives up: what is in flight is abandoned
                    attempt.interrupt(TimeoutError(f"verification round over {p.round_timeout_s:g} s"))
                    yield attempt
            if attempt.value is None:
                state.rounds += 1
                state.round_s.append(env.now - t0)
                return True
            ctx.world.recorder.event(env.now, ctx.device.name, "round_failed", ctx.request.request_id,
                                     detail=str(attempt.value))
            if state.retries >= p.max_retries:
                return False
            state.retries += 1

    def _round_trip(self, ctx: RequestContext, verifier: Node, target: HostedModel, state: _State,
                    drafts: list[int], q_rows: list[np.ndarray], new: list[int], sampling: SamplingSpec
                    ) -> ProcessGenerator:
        env, device = ctx.env, ctx.device.name
        ids, *rows = _draft_payloads(drafts, q_rows, sampling, self.params.prob_dtype,
                                     ctx.device.model(self.params.draft_model))
        # The draft distributions (when sampling) travel beside the ids as a message of their own.
        beside = [env.process(_guarded(ctx.send(device, verifier.name, payload))) for payload in rows]
        try:
            yield from ctx.send(device, verifier.name, ids)
            for proc in beside:
                yield proc
                if proc.value is not None:
                    raise proc.value
        except simpy.Interrupt:  # the device gave up on this round: what is still in flight is abandoned
            for proc in beside:
                if proc.is_alive:
                    proc.interrupt("round abandoned")
            raise
        if not state.prefilled:
            upload = state.upload
            if upload is not None:  # the first upload is still running, or has ended
                yield upload
                state.upload = None
            if not state.prefilled:  # that upload failed: the prompt goes again, in this round
                yield from self._prefill_remote(ctx, verifier, target, state)
        # One forward over the uncached committed token (if any) and the drafts, on the verifier's KV.
        cached = len(state.prompt) + len(state.output) - state.server_pending
        yield from ctx.charge_verify(verifier, target, past_len=cached,
                                     n_tokens=state.server_pending + len(drafts))
        yield from ctx.send(verifier.name, device, TokenIds(tuple(new)))

    def _prefill_remote(self, ctx: RequestContext, verifier: Node, target: HostedModel, state: _State
                        ) -> ProcessGenerator:
        yield from ctx.send(ctx.device.name, verifier.name, TokenIds(tuple(state.prompt)))
        yield from ctx.charge_prefill(verifier, target, len(state.prompt))
        state.prefilled = True

    def _fallback(self, ctx: RequestContext, draft: HostedModel, state: _State, drafts: list[int],
                  max_new: int, sampling: SamplingSpec, rng: np.random.Generator, eos: int | None
                  ) -> ProcessGenerator:
        """The verifier is out of reach: keep the drafts (the SLM's own samples, at hand already) and
        decode the rest on the device, one SLM step per token."""
        rec, device = ctx.record, ctx.device
        kept = drafts[: max_new - len(state.output)]
        state.output += kept
        rec.token_arrived(ctx.env.now, len(kept))
        produced = len(kept)
        while len(state.output) < max_new and not (state.output and state.output[-1] == eos):
            prefix = state.prompt + state.output
            yield from ctx.charge_decode(device, draft, past_len=len(prefix) - 1)
            logits = ctx.next_logits(draft, prefix)
            state.output.append(int(np.argmax(logits)) if sampling.greedy
                                else draw(probabilities(logits, sampling), rng))
            rec.token_arrived(ctx.env.now)
            produced += 1
        rec.tokens_local += produced
        rec.extra.update({"fallback": True, "fallback_tokens": produced})


def _guarded(steps: ProcessGenerator) -> ProcessGenerator:
    """Steps as a process that ends with None, or with what stopped them — a transfer failure, or the
    cause the device interrupted them with — instead of failing into the event loop."""
    try:
        yield from steps
    except TransferFailed as exc:
        return exc
    except simpy.Interrupt as exc:
        cause = exc.cause
        return cause if isinstance(cause, BaseException) else RuntimeError(str(cause))
    return None


def _draft_payloads(drafts: list[int], q_rows: list[np.ndarray], sampling: SamplingSpec, dtype: Any,
                    draft: HostedModel) -> list[Payload]:
    """What the verifier needs to apply the acceptance rule: each draft id with q(x_i), and — unless
    the draft distribution is one-hot (greedy) — the draft distributions themselves, because the
    resampling at a rejection needs all of q_j. With top-k sampling q has k non-zero entries and goes
    as (id, prob) pairs; otherwise as a dense row sized by the charged vocabulary."""
    if sampling.greedy:
        return [TokenIds(tuple(drafts), (1.0,) * len(drafts), dtype)]
    ids = TokenIds(tuple(drafts), tuple(float(q[x]) for q, x in zip(q_rows, drafts, strict=True)), dtype)
    if sampling.top_k is not None and sampling.top_k < q_rows[0].shape[-1]:
        return [ids, TopKLogits.from_logits(np.stack(q_rows), sampling.top_k, dtype)]
    return [ids, DenseLogits(len(drafts), draft.charged.vocab_size, dtype)]


def _tokenizer_problems(drafts: set[str], targets: set[str]) -> list[str]:
    """Draft and target must give every token id the same meaning, since the drafts go up as ids: the
    same tokenizer file, or else the same vocabulary (token → id) read from both files."""
    store = ModelStore()

    def vocabulary(model: str) -> tuple[str, Callable[[], dict[str, int]]] | None:
        try:
            path = store.path(model)
            manifest = store.manifest(model)
        except InputError:  # a missing model is the node check's line, not this one
            return None
        file = path / manifest.files["tokenizer"]
        return manifest.sha256.get(manifest.files["tokenizer"], ""), lambda: HfTokenizer.from_file(
            str(file)).get_vocab(with_added_tokens=True)

    problems = []
    for d in sorted(drafts):
        for t in sorted(targets):
            vd, vt = vocabulary(d), vocabulary(t)
            if vd is None or vt is None or vd[0] == vt[0] or vd[1]() == vt[1]():
                continue
            problems.append(f"policy.target_model: {t} and the draft model {d} have different "
                            "tokenizers; speculative decoding sends token ids, so they must share one")
    return problems
