"""Every policy's parameters: what a scenario's `policy:` section may say, and nothing else.

Pure configuration (pydantic only), so the scenario schema can take the union of all policies'
parameters without importing a policy's runtime code — and a policy module can refer to the scenario,
the world and the request context without an import cycle. Each policy's module names its `Params`
from here; adding a policy means a class here, its module, and a line in registry.py.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class PolicyParams(BaseModel):
    """Base of every policy's parameters; `name` selects the policy (a discriminated union)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


WireFormat = Literal["token_ids", "api_text"]
"""How one server's answer crosses the network (netsim/policies/remote.py)."""


class DeviceOnlyParams(PolicyParams):
    name: Literal["device_only"]
    model: str | None = Field(None, description="model on the device to use (default: its first)")


class ServerParams(PolicyParams):
    server: str | None = Field(None, description="serving node (default: the nearest one of the policy's "
                               "tier hosting the model)")
    model: str | None = Field(None, description="model on the server (default: its first)")
    wire: WireFormat = Field("token_ids", description="`token_ids`: prompt ids up, one id per token down; "
                             "`api_text`: chat-completion JSON up, one SSE chunk per token down")


class EdgeOnlyParams(ServerParams):
    name: Literal["edge_only"]


class CloudOnlyParams(ServerParams):
    name: Literal["cloud_only"]


class SpeculativeParams(PolicyParams):
    """Speculative decoding across the network (policies/speculative.py, docs/policies/speculative.md)."""

    name: Literal["speculative"]
    draft_model: str | None = Field(None, description="model on the device that drafts (default: its first)")
    target_model: str | None = Field(None, description="model on the verifier (default: its first)")
    gamma: int = Field(4, ge=1, le=64, description="tokens drafted per verification round, 1 to 64 (the "
                       "initial value when `adapt` is on)")
    adapt: bool = Field(False, description="choose γ each round from the observed acceptance rate and "
                        "the measured draft-step and round-trip times (Leviathan et al. 2023 §3.5)")
    gamma_max: int = Field(16, ge=1, le=64, description="largest γ `adapt` may choose, 1 to 64")
    choice: Literal["nearest", "jsq"] = Field(
        "nearest", description="`nearest`: the verifier with the least route latency; `jsq`: join the "
                               "shortest queue (fewest open requests) among the `candidates` nearest")
    candidates: int = Field(4, ge=1, le=1024, description="verifiers `jsq` chooses among, 1 to 1024")
    round_timeout_s: float | None = Field(
        None, gt=0, le=1e5, description="give up on a verification round after this long and retry "
                                        "(its bytes in flight are abandoned), s; default: wait for the "
                                        "transport to deliver or fail")
    max_retries: int = Field(2, ge=0, le=100, description="retries of a failed or timed-out round before "
                             "the device finishes the answer with its draft model alone, 0 to 100")
    prob_dtype: Literal["fp32", "fp16", "bf16"] = Field(
        "fp16", description="wire dtype of the draft probabilities sent up")


class SenderSpec(BaseModel):
    """One collaborating LLM of FedRefine: a node and the model on it that shares text or its KV cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node: str = Field(description="node hosting the sender model; a requesting device listed here is skipped "
                      "for its own requests (Co-C2C: each participant receives for its own task and sends "
                      "for the others')")
    model: str | None = Field(None, description="model on that node (default: its first)")


class RephraseSpec(BaseModel):
    """Privacy mode of FedRefine: the input is rewritten on the device before it leaves it."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    model: str | None = Field(None, description="model on the requesting device that rewrites the input "
                              "(default: the receiver model, as in the paper's case study)")
    fraction: float = Field(0.3, gt=0, le=1, description="share of the input's tokens the model rewrites, "
                            "above 0 to 1")


class CollabParams(PolicyParams):
    """The parameters of T2T, C2C and adaptive (netsim/policies/collab.py, FedRefine): one set for the three,
    so a sweep switches between them on one `policy:` block; each field says which protocol reads it."""

    senders: list[SenderSpec] = Field(min_length=1, max_length=64,
                                      description="the collaborating LLMs, 1 to 64")
    receiver_model: str | None = Field(None, description="model on the requesting device that answers "
                                       "(default: its first)")
    privacy: RephraseSpec | None = Field(None, description="rewrite the input on the device first "
                                         "(FedRefine's rephrased inputs); unset: the input as it is")
    timeout_s: float = Field(30.0, gt=0, le=1e5, description="how long the receiver waits for the senders' "
                             "contributions, from sharing the input; a sender later than this is given up "
                             "(its bytes in flight are abandoned), s")
    answer_tokens: int = Field(32, ge=1, le=4096, description="length of a sender's text answer (T2T), "
                               "1 to 4096 tokens")
    text_wire: Literal["text", "token_ids"] = Field(
        "text", description="how a sender's answer travels in T2T: UTF-8 `text`, or `token_ids` (int32; "
                            "needs one tokenizer on both ends)")


    wire_dtype: Literal["fp32", "fp16", "bf16", "int8", "int4"] = Field(
        "bf16", description="C2C: dtype of the KV caches on the wire: fp32, fp16, bf16, int8 or int4 "
                            "(int8/int4 with one fp16 scale per group)")
    group_size: int | None = Field(None, gt=0, description="C2C: int8/int4 quantisation group (elements); "
                                   "default: one group per head vector")
    fuser_at: str = Field("receiver", description="C2C: where the fusers run: `receiver` (the requesting "
                          "device) or a node name (an edge server hosting the fusers, as FedRefine's "
                          "server): the receiver's cache goes up and the fused cache comes back")
    fusion: Literal["mean", "parallel", "sequential"] = Field(
        "mean", description="C2C: how several senders combine (eq. 4): `mean` averages the fusers' "
                            "corrections of the receiver's own cache, `parallel` adds them (C2C's own "
                            "default), `sequential` chains the fusers (docs/policies/c2c.md)")
    fallback: Literal["alone", "t2t"] = Field(
        "alone", description="C2C: when no sender's cache arrives in time, decode `alone`, or ask the "
                             "senders for text answers (`t2t`, another timeout_s) first")
    deadline_s: float | None = Field(None, gt=0, le=1e5, description="adaptive: the request's deadline, s: "
                                     "C2C when its expected completion meets it, else the faster; unset: "
                                     "the faster")


class T2TParams(CollabParams):
    name: Literal["t2t"]


class C2CParams(CollabParams):
    name: Literal["c2c"]


class AdaptiveParams(CollabParams):
    name: Literal["adaptive"]


class HlmClusterSpec(BaseModel):
    """One FedHLM cluster: clients that resolve each other's uncertain tokens (eqs. 9-10) behind one edge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    devices: list[str] = Field(default_factory=list, description="member devices by name")
    group: str | None = Field(None, description="a `topology.groups` entry whose members all join")
    edge: str | None = Field(None, description="the cluster's edge server (default: the edge node nearest "
                             "to its first member; none: no edge stage)")


class HlmParams(PolicyParams):
    """Per-token SLM/LLM routing that U-HLM, Rand-HLM and FedHLM share (netsim/policies/hlm.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    slm: str | None = Field(None, description="model on each requesting device that drafts "
                            "(default: its first)")
    llm: str | None = Field(None, description="model on the cloud that verifies (default: its first)")
    cloud: str | None = Field(None, description="verifying node (default: the nearest cloud hosting `llm`)")
    uncertainty: Literal["sampling", "entropy"] = Field(
        "sampling", description="`sampling`: disagreement of K temperature-scaled samples with the draft "
                                "(sec. IV-B); `entropy`: entropy of the SLM's distribution / ln|V| "
                                "(sec. III-B)")
    k_samples: int = Field(8, ge=1, le=1024, description="K samples of the `sampling` uncertainty, 1 to 1024")
    uncertainty_temperature: float = Field(2.0, ge=0.01, le=100.0,
                                           description="T of the softened samples z/T, 0.01 to 100 "
                                                       "(paper: T > 1)")
    wire: Literal["token_prob", "top_k", "dense"] = Field(
        "token_prob", description="uplink of a transmitted draft: its id and probability, the top-k sparse "
                                  "distribution, or the dense vocabulary distribution")
    wire_dtype: Literal["fp16", "fp32"] = Field("fp16", description="dtype of the probabilities on the wire")
    top_k: int = Field(16, ge=1, le=1_000_000, description="k of the `top_k` wire format")
    llm_timeout_s: float | None = Field(
        None, gt=0, le=1e5, description="give up on the cloud after this long and keep the draft (counted "
                                        "local, in `llm_timeouts`); default: wait for the transport")
    teacher_forced: bool = Field(
        False, description="continue from the held-out text rather than the emitted tokens: the prompt's "
                           "first `prompt_tokens` tokens are the context, the rest the ground truth scored "
                           "by `accuracy`")
    prompt_tokens: int = Field(32, ge=1, le=100_000, description="context tokens when `teacher_forced`")
    rounds: int = Field(1, ge=1, le=10_000,
                        description="rounds the requests are issued in, in request order: a round's requests "
                                    "start together once the previous round's have ended, 1 to 10000")
    agreement: bool = Field(True, description="score each emitted token against the LLM's own choice on the "
                            "same prefix (costs one LLM forward per token of wall time, no simulated time)")


class UhlmParams(HlmParams):
    name: Literal["uhlm"]
    threshold: float = Field(0.3, ge=0.0, le=1.0, description="static uncertainty threshold: a draft with "
                             "u ≤ threshold stays on the device, 0 to 1")


class RandHlmParams(HlmParams):
    name: Literal["rand_hlm"]
    p_offload: float = Field(0.5, ge=0.0, le=1.0,
                             description="probability each draft goes to the LLM, 0 to 1")


class FedHlmParams(HlmParams):
    name: Literal["fedhlm"]
    threshold: float = Field(0.3, ge=0.0, le=1.0,
                             description="initial threshold u_th^(0) of every client, 0 to 1")
    rounds: int = Field(30, ge=1, le=10_000,
                        description="federated rounds R, 1 to 10000; requests are split over them in order")
    learning_rate: float = Field(0.05, gt=0, le=100.0, description="η of eq. 6")
    gamma: float = Field(10.0, gt=0, le=1000.0, description="steepness γ of the sigmoid in eqs. 4-5")
    lambda_reg: float = Field(0.1, ge=0, le=100.0, description="λ of eq. 4: the price of one transmission")
    objective: Literal["paper", "corrected"] = Field(
        "paper", description="`paper`: eqs. 4-5 as printed (the gradient is never positive, so the threshold "
                             "only rises); `corrected`: adds the cost β of keeping a token the LLM would "
                             "reject (docs/policies/fedhlm.md)")
    probe_rate: float = Field(0.0, ge=0.0, le=1.0,
                              description="share of below-threshold drafts sent anyway to observe their β "
                                          "(`corrected` learns from both sides of the threshold), 0 to 1")
    clusters: list[HlmClusterSpec] | None = Field(
        None, description="the clusters; default: k-means of clients' token statistics into `n_clusters`")
    n_clusters: int = Field(4, ge=1, le=100_000, description="clusters found when `clusters` is not given")
    theta: float = Field(0.9, ge=0.0, le=1.0,
                         description="cosine-similarity acceptance θ (eq. 10, caches), 0 to 1")
    p2p: bool = Field(True, description="ask the cluster's peers (eqs. 9-10)")
    p2p_timeout_s: float = Field(0.2, gt=0, le=1e5,
                                 description="wait for peers' answers at most this long, s")
    opportunistic: bool = Field(False, description="ask peers only when the estimated hit probability ≥ "
                                "C_P2P / C_LLM (eq. 13), costs from the links' current state")
    edge_cache: bool = Field(True,
                             description="the cluster's edge server resolves from a cache of LLM verdicts")
    edge_timeout_s: float = Field(0.2, gt=0, le=1e5,
                                  description="wait for the edge server at most this long, s")
    cache_size: int = Field(64, ge=0, le=1_000_000,
                            description="entries of each client's token cache, 0 (none) to 1e6")
    cache_context: int = Field(2, ge=1, le=64, description="context tokens that key a cache entry")


LoraTarget = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LoraRank = Annotated[int, Field(ge=1, le=65_536)]


class FloeParams(PolicyParams):
    """Floe: federated heterogeneous-rank LoRA on the device SLMs and SLM/LLM logit fusion under a
    per-token deadline (netsim/policies/floe.py, docs/policies/floe.md)."""

    name: Literal["floe"]
    slm: str | None = Field(None, description="model on each requesting device (default: its first)")
    llm: str | None = Field(None, description="model on the server (default: its first)")
    server: str | None = Field(None, description="the LLM server and LoRA aggregator (default: the nearest "
                               "cloud or edge node hosting `llm`)")
    top_k: int = Field(8, ge=1, le=4096, description="LLM logits sent down per token (TopKLogits), 1 to 4096")
    logit_dtype: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="wire dtype of the top-k values")
    slm_weight: float = Field(0.5, ge=0.0, le=1.0, description="w of the log-linear fusion "
                              "w·log p_SLM + (1−w)·log p_LLM: 0 = the LLM's choice, 1 = the SLM's")
    deadline_s: float | None = Field(None, gt=0, le=1e5, description="per-token deadline from the step's "
                                     "start, s; the SLM decides alone when the logits are later (a miss); "
                                     "unset: always wait for the cloud")
    first_token_deadline_s: float | None = Field(None, gt=0, le=1e5, description="deadline of the first "
                                                 "token (prompt upload + LLM prefill), s; default deadline_s")
    rounds: int = Field(3, ge=0, le=1000, description="federated LoRA rounds before and during serving, "
                        "0 to 1000 (0: the base SLM, no training, no torch needed)")
    ranks: tuple[LoraRank, ...] = Field((4, 8, 16), min_length=1, max_length=16, description="rank tiers; "
                                        "each device gets the largest its compute share and memory allow")
    rank_by_device: dict[str, LoraRank] = Field(default_factory=dict, description="device → rank, "
                                                "overriding the tier rule")
    targets: tuple[LoraTarget, ...] = Field(("q_proj", "v_proj"), min_length=1, description="projections "
                                            "with a shared (aggregated) adapter")
    personal_targets: tuple[LoraTarget, ...] = Field(("o_proj", "down_proj"), description="projections "
                                                     "with a personal adapter that never leaves the device "
                                                     "(may be empty)")
    local_steps: int = Field(20, ge=1, le=100_000, description="local training steps per round")
    batch_size: int = Field(8, ge=1, le=4096, description="sequences per local step")
    block_size: int = Field(128, ge=2, le=8192, description="tokens per training sequence")
    lr: float = Field(3e-3, gt=0, le=1.0, description="AdamW learning rate of the adapters")
    adapter_dtype: Literal["fp32", "fp16", "bf16"] = Field("fp16", description="wire dtype of the adapters")
    dirichlet_alpha: float = Field(0.3, gt=0, le=1e4, description="α of the non-IID Dirichlet split of the "
                                   "corpus over the clients by genre (small α: one genre per client)")
    passage_chars: int = Field(512, ge=64, le=100_000, description="characters per client data passage")
    eval_passages: int = Field(8, ge=1, le=10_000, description="held-out passages per client (and common "
                               "ones) that quality.parquet scores")


ALL_PARAMS: tuple[type[PolicyParams], ...] = (FloeParams, FedHlmParams, RandHlmParams, UhlmParams,
    AdaptiveParams, C2CParams, T2TParams, CloudOnlyParams, DeviceOnlyParams, EdgeOnlyParams,
    SpeculativeParams)

POLICY_NAMES: tuple[str, ...] = tuple(
    p.model_json_schema()["properties"]["name"]["const"] for p in ALL_PARAMS)

PolicySpec = Annotated[
    FloeParams | FedHlmParams | RandHlmParams | UhlmParams | AdaptiveParams | C2CParams | T2TParams |
    CloudOnlyParams | DeviceOnlyParams | EdgeOnlyParams | SpeculativeParams,
    Field(discriminator="name", description="which policy serves the requests, and its parameters"),
]
