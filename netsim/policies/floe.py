"""floe — federated heterogeneous-rank LoRA on the device SLMs, and SLM/LLM logit fusion under a deadline.

Floe (Tian et al. 2026, "Floe: Federated Specialization for Real-Time LLM-SLM Inference",
arXiv:2602.14302). Only the abstract is public here: a black-box cloud LLM, on-device SLMs fine-tuned
with "a heterogeneity-aware LoRA adaptation strategy" that keeps personal data on the device, and "a
logit-level fusion mechanism" for real-time coordination. The equations below are this implementation's
(numbered F1–F6 here and in docs/policies/floe.md), not the paper's.

Training (setup(): one SimPy process runs the rounds, synchronous FedAvg-style):
  for round 1..R, for every client device concurrently:
    1. local training: the real torch steps run (netsim/lm/lora.py) when the round's compute is charged;
       each training sequence is one call on the device's emulated accelerator costing 3× a forward over
       its block of tokens (F1: forward + backward ≈ 3 × forward, Kaplan et al. 2020 §2.1: C ≈ 6N per
       token = 3 × 2N), the LoRA matmuls included, started only while the device serves no request;
    2. upload the shared adapter (AdapterWeights, lora_n_params(charged geometry, rank) · wire bytes);
       a client whose upload fails (an outage longer than the transport's timeout) is dropped from
       this round's aggregation and recorded; the round completes with the others;
    3. the server aggregates by SVD re-projection (lora.py: exact sample-weighted mean of the updates,
       best rank-rᵢ approximation for each client), F2;
    4. download each client's adapter at its own rank; a failed download leaves the client's adapter as
       it was. The device now holds a new model version: base + shared + personal LoRA, merged.
  Rank rule (heterogeneity-aware, F3): rᵢ = the largest of `ranks` not above max(ranks) · Fᵢ / F_max, Fᵢ the
  device's sustained FLOP/s (peak · η_c) at the SLM's dtype and F_max the strongest client's, then lowered
  while the LoRA training state does not fit the device's memory (F4); `rank_by_device` overrides.

Inference (serve(), per request, per output token):
  device: SLM forward (prefill or decode)  ‖  cloud: ◀─ new token ids ─ · LLM forward · ─ top-k logits ─▶
  the cloud sends its top-k log-probabilities; the device waits for them at most until the token's
  deadline, then
    fused:    score(t) = w · log p_S(t) + (1 − w) · log p̂_L(t),  t ∈ U = topk_S ∪ topk_L          (F5)
              p̂_L(t) = p_L(t) for the k listed tokens; the others share the residual 1 − Σ p_L(listed)
              in proportion to p_S, capped at the k-th listed probability                          (F6)
              the token is argmax (greedy) or a sample of softmax(score / T) over U;
    alone:    the SLM's own choice when the logits are late (a deadline miss: the cloud's exchange is
              interrupted, its bytes in flight abandoned) or the cloud failed (outage → SLM fallback).
  The cloud keeps its KV cache: the next uplink carries every token it has not received yet (normally
  one), and its compute covers every token it has not cached.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import simpy

from netsim.errors import InputError
from netsim.hardware.compute import radio_energy_j
from netsim.hardware.cost import Cost, forward_cost
from netsim.hardware.profile import DeviceProfile, load_profile
from netsim.lm import lora
from netsim.lm.cards import load_card
from netsim.lm.geometry import ModelGeometry
from netsim.lm.sampling import sample
from netsim.lm.zoo import ModelStore
from netsim.network.delivery import TransferFailed
from netsim.payload import AdapterWeights, TokenIds, TopKLogits, lora_n_params
from netsim.policies.base import Policy
from netsim.policies.params import FloeParams

if TYPE_CHECKING:
    import networkx as nx

    from netsim.context import ProcessGenerator, RequestContext
    from netsim.scenario import Scenario
    from netsim.world import HostedModel, Node, World

LORA_STATE_BYTES_PER_PARAM = 16
"""fp32 LoRA weight + gradient + AdamW's two moments: 4 · 4 bytes per trainable parameter."""

ROUND_COLUMNS = {
    "round": pl.Int64, "client": pl.Utf8, "rank": pl.Int64, "status": pl.Utf8, "reason": pl.Utf8,
    "t_start_s": pl.Float64, "train_s": pl.Float64, "t_uploaded_s": pl.Float64, "t_end_s": pl.Float64,
    "n_tokens": pl.Int64, "train_loss": pl.Float64, "n_params": pl.Int64, "bytes_up": pl.Int64,
    "bytes_down": pl.Int64, "energy_train_j": pl.Float64, "energy_radio_j": pl.Float64,
    "n_aggregated": pl.Int64,
}
"""rounds.parquet: one row per (round, client); `status` ok | dropped (upload failed) | stale (download
failed: the client keeps its previous adapter)."""


# ---------------------------------------------------------------------------------------------------
# Training cost and memory (F1, F4) and the rank rule (F3): pure functions of geometry and profile
# ---------------------------------------------------------------------------------------------------


def training_step_cost(geom: ModelGeometry, batch: int, block: int, n_lora_params: int) -> Cost:
    """One local step (F1): forward + backward ≈ 3 × the forward over `batch` sequences of `block` tokens
    with logits at every position, plus the LoRA matmuls (one multiply-add per LoRA parameter per token).
    Bytes: the forward's traffic three times (the backward streams the frozen weights again for the
    input gradients and reads the saved activations)."""
    fwd = forward_cost(geom, block, 0, batch, n_logits=block)
    lora_flops = 2.0 * n_lora_params * batch * block
    return Cost(flops=3.0 * (fwd.flops + lora_flops), bytes_moved=3.0 * fwd.bytes_moved, dtype=fwd.dtype,
                n_tokens=block, batch=batch, weight_bytes=fwd.weight_bytes)


def training_memory_bytes(geom: ModelGeometry, n_lora_params: int, batch: int, block: int) -> float:
    """Resident bytes of LoRA training (F4): frozen weights + LoRA state (16 B per parameter) + saved
    activations, L · s · b · h · (34 + 5 · a · s / h) bytes at 16 bits (Korthikanti et al. 2022,
    "Reducing Activation Recomputation in Large Transformer Models", eq. 1, no recomputation)."""
    s, h, a = block, geom.hidden_size, geom.n_heads
    activations = geom.n_layers * s * batch * h * (34 + 5 * a * s / h)
    return geom.weight_bytes + LORA_STATE_BYTES_PER_PARAM * n_lora_params + activations


def lora_params(geom: ModelGeometry, rank: int, params: FloeParams) -> tuple[int, int]:
    """(shared, personal) trainable parameters at `rank` as charged on `geom`."""
    shared = lora_n_params(geom, rank, tuple(params.targets))
    personal = lora_n_params(geom, rank, tuple(params.personal_targets)) if params.personal_targets else 0
    return shared, personal


def fits(profile: DeviceProfile, geom: ModelGeometry, rank: int, params: FloeParams) -> bool:
    needed = training_memory_bytes(geom, sum(lora_params(geom, rank, params)), params.batch_size,
                                   params.block_size)
    return needed <= profile.memory_available_bytes


def client_ranks(profiles: dict[str, DeviceProfile], geoms: dict[str, ModelGeometry], params: FloeParams
                 ) -> dict[str, int | None]:
    """Each client's rank by the rule F3 (module doc); None where even the smallest rank does not fit."""
    sustained = {d: profiles[d].peak_flops_for(geoms[d].dtype) * profiles[d].eta_compute for d in profiles}
    strongest = max(sustained.values())
    tiers = sorted(params.ranks)
    out: dict[str, int | None] = {}
    for d in profiles:
        if d in params.rank_by_device:
            out[d] = params.rank_by_device[d]
            continue
        share = max(tiers) * sustained[d] / strongest
        candidates = [r for r in tiers if r <= share] or tiers[:1]
        fitting = [r for r in candidates if fits(profiles[d], geoms[d], r, params)]
        out[d] = fitting[-1] if fitting else None
    return out


# ---------------------------------------------------------------------------------------------------
# Fusion (F5)
# ---------------------------------------------------------------------------------------------------


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z.astype(np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


RESIDUAL_FLOOR = 1e-9
"""Least tail mass the device assumes: fp16 rounding can make the k listed probabilities sum past 1."""


def llm_log_probs(top_ids: np.ndarray, top_log_probs: np.ndarray, log_s: np.ndarray) -> np.ndarray:
    """log p̂_L (T, V) from the LLM's top-k log-probabilities (T, k) (F6): listed tokens exactly; the others
    share the residual mass 1 − Σ p_top in proportion to the SLM's p_S, capped at the k-th listed
    probability (no unlisted token can be likelier than a listed one). The tail then follows the SLM,
    and an LLM-only choice (w = 0) can never prefer an unlisted token."""
    top_log_probs = top_log_probs.astype(np.float64)
    residual = np.maximum(1.0 - np.exp(top_log_probs).sum(axis=-1, keepdims=True), RESIDUAL_FLOOR)
    unlisted = np.ones(log_s.shape, dtype=bool)
    np.put_along_axis(unlisted, top_ids, False, axis=-1)
    tail = np.where(unlisted, log_s, -np.inf)
    tail_peak = tail.max(axis=-1, keepdims=True)
    tail_mass = np.log(np.exp(tail - tail_peak).sum(axis=-1, keepdims=True)) + tail_peak  # log Σ_unlisted p_S
    out = np.minimum(np.log(residual) + log_s - tail_mass, top_log_probs.min(axis=-1, keepdims=True))
    np.put_along_axis(out, top_ids, top_log_probs, axis=-1)
    return out


def fused_scores(slm_logits: np.ndarray, topk: TopKLogits | None, weight: float, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(candidate ids U, fused scores) of F5. The LLM's top-k come first in U, in its order, so a tie
    goes to the LLM's ranking. Without logits the SLM decides alone: U is the whole vocabulary and the
    score its own log-probability, so it samples exactly as it would on its own."""
    log_s = _log_softmax(slm_logits)
    if topk is None:
        return np.arange(len(slm_logits)), log_s
    slm_top = np.argsort(-slm_logits, kind="stable")[:k]
    llm_ids = np.asarray(topk.ids[0])
    union = np.concatenate([llm_ids, slm_top[~np.isin(slm_top, llm_ids)]])
    log_l = llm_log_probs(llm_ids[None], _on_wire(topk)[None], log_s[None])[0]
    return union, weight * log_s[union] + (1.0 - weight) * log_l[union]


def _on_wire(topk: TopKLogits) -> np.ndarray:
    """The values as the device receives them: rounded to the wire dtype."""
    values = np.asarray(topk.values[0], dtype=np.float32)
    if topk.dtype == "bf16":  # keep the top 16 bits of the float32 (round to nearest even)
        bits = values.view(np.uint32)
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
        return bits.view(np.float32).astype(np.float64)
    return values.astype(np.float16 if topk.dtype == "fp16" else np.float32).astype(np.float64)


def fused_log_probs(slm_logits: np.ndarray, llm_logits: np.ndarray, weight: float, k: int) -> np.ndarray:
    """Rows (T, V) of the full-vocabulary fused distribution: F5–F6 on every token from the LLM's top-k
    of each row, normalised; what the quality table scores (every token keeps a finite probability)."""
    log_s = _log_softmax(slm_logits)
    log_llm = _log_softmax(llm_logits)
    top = np.argpartition(-log_llm, k - 1, axis=-1)[:, :k]  # (T, k), unordered: F6 needs no order
    log_l = llm_log_probs(top, np.take_along_axis(log_llm, top, axis=-1), log_s)
    return _log_softmax(weight * log_s + (1.0 - weight) * log_l)


# ---------------------------------------------------------------------------------------------------
# The policy
# ---------------------------------------------------------------------------------------------------


@dataclass
class Client:
    """One device's federated state: its data, rank, adapters and the model version it serves with."""

    device: str
    index: int
    rank: int
    base: HostedModel
    shared: lora.Adapter | None = None
    personal: lora.Adapter | None = None
    version: int = 0
    hosted: dict[int, HostedModel] = field(default_factory=dict)
    train_texts: tuple[str, ...] = ()
    heldout: tuple[str, ...] = ()
    serving: int = 0
    """Requests of this device being served now; training waits until it is 0."""
    idle: simpy.Event | None = None
    """Succeeds when `serving` drops back to 0 (created by a training process that had to wait)."""


@dataclass
class CloudState:
    """What the cloud holds of one request: tokens received, and tokens in its KV cache."""

    received: int = 0
    cached: int = 0


@dataclass
class Steps:
    """Per-request counters that become the policy's columns."""

    fused: int = 0
    alone: int = 0
    misses: int = 0
    failures: int = 0


class Floe(Policy[FloeParams]):
    name = "floe"
    Params = FloeParams
    columns = MappingProxyType({
        "tokens_fused": pl.Int64, "deadline_misses": pl.Int64, "cloud_failures": pl.Int64,
        "model_version": pl.Int64, "lora_rank": pl.Int64,
    })

    # -- validation --------------------------------------------------------------------------------

    @classmethod
    def check(cls, params: FloeParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        """Devices host the SLM and reach a server hosting the LLM, both models share a tokenizer, ranks
        fit the models and the devices, and torch is there when training is asked for."""
        import networkx as nx

        problems: list[str] = []
        if params.rounds > 0 and importlib.util.find_spec("torch") is None:
            problems.append("policy.rounds: federated LoRA training needs torch (pip install "
                            "'netsim[train]'); set rounds: 0 to run floe with the base SLM")
        both = sorted(set(params.targets) & set(params.personal_targets))
        if both:
            problems.append(f"policy.personal_targets: {', '.join(both)} also in targets; a projection's "
                            "adapter is either shared or personal")
        prompts = scenario.workload.prompts
        if getattr(prompts, "source", None) == "partition":  # prompts must be the clients' own text
            for mine, theirs, path in ((params.dirichlet_alpha, prompts.alpha, "dirichlet_alpha"),
                                       (params.passage_chars, prompts.passage_chars, "passage_chars")):
                if mine != theirs:
                    problems.append(f"policy.{path}: {mine} differs from workload.prompts "
                                    f"({theirs}); the clients' training text and their prompts would come "
                                    "from different partitions")
        nodes = scenario.topology.nodes
        where = scenario.topology.yaml_paths()
        unknown = sorted(set(params.rank_by_device) - set(scenario.request_devices))
        problems += [f"policy.rank_by_device.{d}: not a requesting device" for d in unknown]
        servers = [n for n, spec in nodes.items()
                   if params.server in (None, n) and spec.role in ("cloud", "edge")
                   and any(params.llm in (None, m.name) for m in spec.models)]
        if not servers:
            return [*problems, f"policy.{'server' if params.server else 'llm'}: floe needs a cloud or edge "
                               f"node hosting {params.llm or 'a model'}"]
        llm = params.llm or nodes[servers[0]].models[0].name
        component = {n: i for i, comp in enumerate(nx.strongly_connected_components(graph)) for n in comp}
        served = {component[s] for s in servers}
        store = ModelStore()
        kinds: dict[tuple[Any, ...], tuple[DeviceProfile, ModelGeometry, int, list[str]] | None] = {}
        profiles: dict[str, DeviceProfile] = {}
        geoms: dict[str, ModelGeometry] = {}
        for d in scenario.request_devices:
            hosted = [m for m in nodes[d].models if params.slm in (None, m.name)]
            if not hosted:
                problems.append(f"{where[d]}.models: floe needs {params.slm or 'an SLM'} on every "
                                "requesting device")
                continue
            if component[d] not in served:
                problems.append(f"{where[d]}: no route to and from a floe server ({', '.join(servers)})")
            # One answer per kind of device (profile, model): ten thousand phones are one check.
            key = (nodes[d].profile, hosted[0])
            if key not in kinds:
                kinds[key] = _kind_problems(params, hosted[0], nodes[d].profile, llm, store)
            if kinds[key] is None:  # the node checks already name a bad model, card or profile
                continue
            profile, charged, limit, lines = kinds[key]
            problems += lines
            r = params.rank_by_device.get(d)
            if r is not None and r > limit:
                problems.append(f"policy.rank_by_device.{d}: rank {r} is above the hidden size {limit} of "
                                f"{_label(hosted[0])}")
            profiles[d], geoms[d] = profile, charged
        if problems or not profiles or params.rounds == 0:
            return list(dict.fromkeys(problems))
        for d, rank in client_ranks(profiles, geoms, params).items():
            smallest = rank or min(params.ranks)
            if rank is None or not fits(profiles[d], geoms[d], rank, params):
                path = f"policy.rank_by_device.{d}" if d in params.rank_by_device else "policy.ranks"
                need = training_memory_bytes(geoms[d], sum(lora_params(geoms[d], smallest, params)),
                                             params.batch_size, params.block_size)
                usable = profiles[d].memory_available_bytes
                problems.append(f"{path}: LoRA training at rank {smallest} needs {need / 1e9:.2f} GB on {d} "
                                f"but {profiles[d].name} has {usable / 1e9:.2f} GB usable (lower the rank, "
                                "batch_size or block_size)")
        return list(dict.fromkeys(problems))

    # -- life cycle --------------------------------------------------------------------------------

    def __init__(self, params: FloeParams, world: World) -> None:
        super().__init__(params, world)
        scenario = world.scenario
        self.devices = list(scenario.request_devices)
        bases = {d: world.nodes[d].model(params.slm) for d in self.devices}
        profiles = {d: world.nodes[d].profile for d in self.devices}
        ranks = client_ranks(profiles, {d: bases[d].charged for d in self.devices}, params)
        self.clients = {d: Client(d, i, ranks[d] or min(params.ranks), bases[d])
                        for i, d in enumerate(self.devices)}
        self.round_rows: list[dict[str, Any]] = []
        self._torch_base: Any = None

    def setup(self) -> list[ProcessGenerator]:
        """Partition the corpus over the clients and start the rounds (none when rounds = 0)."""
        from netsim.lm.partition import dirichlet_partition

        p = self.params
        data = dirichlet_partition(len(self.devices), p.dirichlet_alpha, self.world.scenario.seed,
                                   passage_chars=p.passage_chars)
        for client, part in zip(self.clients.values(), data, strict=True):
            client.heldout = part.heldout
            client.train_texts = part.train
        if p.rounds == 0:
            return []
        base_dir = self.world.store.path(self._base_name)
        self._torch_base = lora.load_base(base_dir)
        geom = self._real_geometry
        seed = self.world.scenario.seed
        for c in self.clients.values():
            c.shared = lora.init_adapter(geom, p.targets, c.rank, (seed, c.index, 0))
            if p.personal_targets:
                c.personal = lora.init_adapter(geom, p.personal_targets, c.rank, (seed, c.index, 1))
        return [self._rounds()]

    @property
    def _base_name(self) -> str:
        return next(iter(self.clients.values())).base.name

    @property
    def _real_geometry(self) -> ModelGeometry:
        return next(iter(self.clients.values())).base.lm.geometry

    def _server(self, device: str) -> Node:
        p = self.params
        return (self.world.nodes[p.server] if p.server
                else self.world.nearest(device, ("cloud", "edge"), p.llm))

    # -- federated rounds --------------------------------------------------------------------------

    def _rounds(self) -> ProcessGenerator:
        env = self.world.env
        for r in range(1, self.params.rounds + 1):
            t_start = env.now
            # 1.–2. every client trains and uploads, concurrently
            procs = [env.process(self._train_and_upload(c, r)) for c in self.clients.values()]
            yield env.all_of(procs)
            rows = [proc.value for proc in procs]
            uploaded = [(c, row) for c, row in zip(self.clients.values(), rows, strict=True)
                        if row["status"] == "ok"]
            # 3. aggregate what arrived (F2); a round nobody reached leaves every adapter as it was
            if uploaded:
                updates = [(row.pop("_trained").shared, float(row["n_tokens"])) for _, row in uploaded]
                new = lora.aggregate(updates, [c.rank for c in self.clients.values()])
                # 4. each client gets its own rank back
                downs = [env.process(self._download(c, adapter, row))
                         for c, adapter, row in zip(self.clients.values(), new, rows, strict=True)]
                yield env.all_of(downs)
            for row in rows:
                row.pop("_trained", None)
                row.update(round=r, t_start_s=t_start, n_aggregated=len(uploaded))
                self.round_rows.append(row)

    def _train_and_upload(self, c: Client, r: int) -> ProcessGenerator:
        p, env = self.params, self.world.env
        node = self.world.nodes[c.device]
        shared_n, _ = lora_params(c.base.charged, c.rank, p)
        row: dict[str, Any] = {"client": c.device, "rank": c.rank, "status": "ok", "reason": "",
                               "n_params": shared_n, "bytes_up": 0, "bytes_down": 0, "energy_radio_j": 0.0}
        # 1. the real training (wall time only), then its compute in simulated time, one call per step
        #    The round's data: local_steps × batch_size of the client's passages, drawn afresh each round
        #    (a local epoch over a sample; packing the whole share would tokenise megabytes for the few
        #    thousand tokens a round trains on), packed with end-of-text between them.
        seed = (self.world.scenario.seed, c.index, r)
        draw = np.random.default_rng([*seed, 1])
        n = min(len(c.train_texts), p.local_steps * p.batch_size)
        picked = [c.train_texts[i] for i in sorted(draw.choice(len(c.train_texts), size=n, replace=False))]
        stream = lora.encode_stream(self.world.store.path(self._base_name) / "tokenizer.json", picked,
                                    c.base.lm.tokenizer.eos_id)
        cfg = lora.LocalTraining(p.local_steps, p.batch_size, p.block_size, p.lr)
        trained = lora.train_adapter(self._torch_base, c.shared, c.personal, stream, cfg, seed)
        c.personal = trained.personal  # the personal part never leaves the device
        # One call per sequence (micro-batches, gradients accumulated over the batch), each started only
        # while the device serves no request: on-device training runs when the device is otherwise idle
        # (as schedulers such as Android's WorkManager with its idle constraint run it), so a request
        # waits at most for the one sequence in progress.
        sequence = training_step_cost(c.base.charged, 1, trained.block_size,
                                      sum(lora_params(c.base.charged, c.rank, p)))
        t0, energy0 = env.now, node.compute.active_energy_j
        for _ in range(trained.steps * trained.batch_size):
            while c.serving:
                if c.idle is None:
                    c.idle = env.event()
                yield c.idle
            yield from node.compute.run(sequence, request_id=None, kind="train", detail=f"lora r={c.rank}")
        row.update(train_s=env.now - t0, energy_train_j=node.compute.active_energy_j - energy0,
                   n_tokens=trained.n_tokens, train_loss=trained.mean_loss, _trained=trained)
        # 2. upload the shared adapter
        payload = AdapterWeights(shared_n, p.adapter_dtype)
        try:
            yield from self.world.net.send(c.device, self._server(c.device).name, payload.nbytes,
                                           kind=payload.kind)
            row["bytes_up"] = payload.nbytes
            row["energy_radio_j"] += radio_energy_j(node.profile, bits_tx=8 * payload.nbytes, bits_rx=0)
        except TransferFailed as exc:
            row.update(status="dropped", reason=str(exc))
        row["t_uploaded_s"] = row["t_end_s"] = env.now
        return row

    def _download(self, c: Client, adapter: lora.Adapter, row: dict[str, Any]) -> ProcessGenerator:
        payload = AdapterWeights(row["n_params"], self.params.adapter_dtype)
        try:
            yield from self.world.net.send(self._server(c.device).name, c.device, payload.nbytes,
                                           kind=payload.kind)
        except TransferFailed as exc:
            if row["status"] == "ok":
                row.update(status="stale", reason=str(exc))
            row["t_end_s"] = self.world.env.now
            return
        row["bytes_down"] = payload.nbytes
        row["energy_radio_j"] += radio_energy_j(self.world.nodes[c.device].profile, bits_tx=0,
                                                bits_rx=8 * payload.nbytes)
        row["t_end_s"] = self.world.env.now
        c.shared = adapter
        c.version += 1

    def _model(self, c: Client) -> HostedModel:
        """The model version the device holds now: the base SLM, or base + its adapters merged and exported
        (content-addressed in the cache; loaded once per run)."""
        if c.version == 0 or c.shared is None:
            return c.base
        if c.version not in c.hosted:
            from netsim.lm.memo import LanguageModel
            from netsim.lm.onnx_lm import OnnxCausalLM
            from netsim.paths import cache_dir
            from netsim.world import HostedModel

            adapters = [c.shared] + ([c.personal] if c.personal is not None else [])
            store = self.world.store
            path = lora.export_personalised(
                self._torch_base, store.path(c.base.name), c.base.lm.sha256, adapters,
                cache_dir() / "floe", name=f"{c.base.name}+lora",
                provenance={"base": c.base.name, "base_sha256": c.base.lm.sha256, "rank": c.rank})
            onnx_lm = OnnxCausalLM.load(path, threads=store.threads, name=f"{c.base.name}+lora")
            lm = LanguageModel(onnx_lm, disk_dir=store.disk_memo, **store.memo_budgets)
            c.hosted[c.version] = HostedModel(f"{c.base.name}+lora.{lm.sha256[:8]}", lm, c.base.charged,
                                              c.base.charged_as)
        return c.hosted[c.version]

    # -- inference ---------------------------------------------------------------------------------

    def serve(self, ctx: RequestContext) -> ProcessGenerator:
        client = self.clients[ctx.device.name]
        client.serving += 1
        try:
            yield from self._serve(ctx, client)
        finally:
            client.serving -= 1
            if not client.serving and client.idle is not None:
                client.idle.succeed()
                client.idle = None

    def _serve(self, ctx: RequestContext, client: Client) -> ProcessGenerator:
        p, env, rec = self.params, ctx.env, ctx.record
        device = ctx.device
        slm = self._model(client)
        server = self._server(device.name)
        llm = server.model(p.llm)
        wl = self.world.scenario.workload
        prompt = ctx.prompt_ids(slm)
        # The tokens are the SLM's tokenizer's whatever the version (model_version says which weights)
        rec.n_prompt_tokens, rec.server, rec.model = len(prompt), server.name, client.base.name
        rec.charged_as = slm.charged_as or ""
        rec.extra.update(model_version=client.version, lora_rank=client.rank if p.rounds else None)
        rng = ctx.rng("floe-sampling")
        eos = slm.lm.tokenizer.eos_id
        seq, out = list(prompt), []
        cloud, steps = CloudState(), Steps()
        for i in range(wl.max_new_tokens):
            t_step = env.now
            deadline_s = p.deadline_s if i else (p.first_token_deadline_s or p.deadline_s)
            # 1. the cloud's side of this step runs concurrently with the device's own forward
            exchange = env.process(self._cloud_step(ctx, server, llm, list(seq), cloud))
            if i == 0:
                yield from ctx.charge_prefill(device, slm, len(prompt))
            else:
                yield from ctx.charge_decode(device, slm, past_len=len(seq) - 1)
            slm_logits = ctx.next_logits(slm, seq)
            # 2. wait for the cloud's top-k, at most until the token's deadline
            if exchange.is_alive:
                if deadline_s is None:
                    yield exchange
                elif (left := t_step + deadline_s - env.now) > 0:
                    yield exchange | env.timeout(left)
            topk = exchange.value if not exchange.is_alive else None
            if exchange.is_alive:  # late: interrupt it (its bytes in flight are abandoned)
                exchange.interrupt(TimeoutError(f"floe: top-k later than {deadline_s} s"))
                steps.misses += 1
            elif not isinstance(topk, TopKLogits):
                steps.failures += 1
                topk = None
            # 3. fuse (F5) or decide alone
            ids, scores = fused_scores(slm_logits, topk, p.slm_weight, p.top_k)
            token = int(ids[sample(scores, wl.sampling, rng)])
            if topk is not None:
                steps.fused += 1
            else:
                steps.alone += 1
            out.append(token)
            seq.append(token)
            rec.token_arrived(env.now)
            if token == eos:
                break
        rec.output_ids = out
        rec.output_text = slm.lm.tokenizer.decode(out)
        rec.tokens_local, rec.tokens_llm = steps.alone, steps.fused
        rec.extra.update(tokens_fused=steps.fused, deadline_misses=steps.misses,
                         cloud_failures=steps.failures)

    def _cloud_step(self, ctx: RequestContext, server: Node, llm: HostedModel, seq: list[int],
                    cloud: CloudState) -> ProcessGenerator:
        """Send what the cloud lacks, let it compute, bring the top-k down. Returns the TopKLogits, the
        TransferFailed that ended it, or None when interrupted (deadline)."""
        device = ctx.device
        try:
            if cloud.received < len(seq):
                yield from ctx.send(device.name, server.name, TokenIds(tuple(seq[cloud.received:])))
                cloud.received = len(seq)
                ctx.record.llm_transmissions += 1
            n_new = len(seq) - cloud.cached
            if n_new == 1 and cloud.cached:
                yield from ctx.charge_decode(server, llm, past_len=cloud.cached)
            else:
                yield from ctx.charge_prefill(server, llm, n_new, past_len=cloud.cached)
            cloud.cached = len(seq)
            p = self.params
            # the LLM's log-probabilities (log-softmax of its logits, as a black-box API's top_logprobs)
            topk = TopKLogits.from_logits(_log_softmax(ctx.next_logits(llm, seq)), p.top_k, p.logit_dtype)
            yield from ctx.send(server.name, device.name, topk)
            return topk
        except TransferFailed as exc:
            return exc
        except simpy.Interrupt:
            return None

    # -- results -----------------------------------------------------------------------------------

    def finish(self) -> dict[str, pl.DataFrame]:
        """rounds.parquet (per round and client) and quality.parquet (per client: NLL on its own held-out
        partition and on the common evaluation passages, base vs personalised, alone and fused)."""
        tables = {"quality": pl.DataFrame(self._quality_rows(), schema=QUALITY_COLUMNS)}
        if self.params.rounds:
            tables["rounds"] = pl.DataFrame(self.round_rows, schema=ROUND_COLUMNS)
        return tables

    def _quality_rows(self) -> list[dict[str, Any]]:
        """Teacher-forced NLL of each client's models on its own held-out passages and on passages common
        to all clients; every (model, passage) is scored once, whoever asks."""
        from netsim.lm.corpus import heldout_works
        from netsim.lm.evaluate import next_token_passages

        p = self.params
        common = tuple(next_token_passages(heldout_works(), p.eval_passages, seed=self.world.scenario.seed))
        logits: dict[tuple[str, str], np.ndarray] = {}

        def rows_of(model: HostedModel, text: str) -> tuple[list[int], np.ndarray]:
            ids = passage_ids(model, text)
            key = (model.lm.sha256, text)
            if key not in logits:
                logits[key] = model.lm.lm.prefill(ids)[0]  # (T, V): row t predicts token t + 1
            return ids, logits[key]

        def nll(texts: Sequence[str], slm: HostedModel, llm: HostedModel | None) -> tuple[float, int]:
            total, count = 0.0, 0
            for text in texts:
                ids, s_rows = rows_of(slm, text)
                if llm is None:
                    logp = _log_softmax(s_rows[:-1])
                else:
                    logp = fused_log_probs(s_rows[:-1], rows_of(llm, text)[1][:-1], p.slm_weight, p.top_k)
                targets = np.asarray(ids[1:])
                total -= float(logp[np.arange(len(targets)), targets].sum())
                count += len(targets)
            return (total / count if count else float("nan")), count

        rows = []
        for c in self.clients.values():
            llm = self._server(c.device).model(p.llm)
            current = self._model(c)
            for task, texts in (("own_heldout", c.heldout[: p.eval_passages]), ("common", common)):
                for label, slm, helper in (("base_slm", c.base, None), ("personalised_slm", current, None),
                                           ("fused", current, llm), ("llm", llm, None)):
                    value, n = nll(texts, slm, helper)
                    rows.append({"client": c.device, "task": task, "model": label,
                                 "model_sha256": slm.lm.sha256,
                                 "model_version": c.version if label in ("personalised_slm", "fused") else 0,
                                 "nll": value, "n_tokens": n})
        return rows


QUALITY_COLUMNS = {
    "client": pl.Utf8, "task": pl.Utf8, "model": pl.Utf8, "model_sha256": pl.Utf8, "model_version": pl.Int64,
    "nll": pl.Float64, "n_tokens": pl.Int64,
}
"""quality.parquet: one row per (client, task, model); `model` base_slm | personalised_slm | fused | llm."""


def _label(ref: Any) -> str:
    return f"{ref.name} as {ref.charged_as}" if ref.charged_as else ref.name


def _kind_problems(params: FloeParams, ref: Any, profile_ref: str | None, llm: str, store: ModelStore
                   ) -> tuple[DeviceProfile, ModelGeometry, int, list[str]] | None:
    """(profile, charged geometry, largest rank, problem lines) of one kind of device; None if its files
    do not read. The largest rank is the hidden size of the SLM that trains the adapter and of the card
    it is billed as, whichever is smaller."""
    try:
        real = store.manifest(ref.name)
        charged = (load_card(ref.charged_as) if ref.charged_as else real.geometry).charged_with(
            ref.format, ref.kv_dtype)
        profile = load_profile(profile_ref) if profile_ref else None
        llm_manifest = store.manifest(llm)
    except (InputError, ValueError):
        return None
    if profile is None:
        return None
    lines = []
    if _tokenizer_sha(real) != _tokenizer_sha(llm_manifest):
        lines.append(f"policy.llm: {llm} and the SLM {ref.name} have different tokenizers; floe sends "
                     "token ids up and fuses logits by token id, so they must share one")
    limit = min(real.geometry.hidden_size, charged.hidden_size)
    lines += [f"policy.ranks[{i}]: rank {r} is above the hidden size {limit} of {_label(ref)}"
              for i, r in enumerate(params.ranks) if r > limit]
    return profile, charged, limit, lines


def passage_ids(model: HostedModel, text: str) -> list[int]:
    """The start token the model was trained with, then the passage (as evaluate.score_passage)."""
    tokenizer = model.lm.tokenizer
    start = tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id
    return ([] if start is None else [start]) + tokenizer.encode(text, add_special_tokens=False)


def _tokenizer_sha(manifest: Any) -> str | None:
    return manifest.sha256.get(manifest.files["tokenizer"])


__all__ = ["Floe", "client_ranks", "fused_log_probs", "fused_scores", "training_memory_bytes",
           "training_step_cost"]
