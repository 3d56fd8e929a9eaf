"""fedhlm — FedHLM: per-token routing device → peers → edge → cloud, with uncertainty thresholds learned
by hierarchical federated learning (../shared/papers/004: Algorithm 1, eqs. 3-14).

Read beside Algorithm 1:
- lines 1-2: the workload's requests are split over R rounds in request order; the requests of round r
  start together when round r begins (their `t_arrival_s` is that moment) and the round ends when the last
  of them has ended;
- lines 4-24: each token, per netsim/policies/hlm.py (uncertainty, cache, P2P eqs. 9-10 with eq. 13, edge
  cache, cloud verdict eq. 3); every client uses its own u_th,k;
- lines 26-28: per client, the loss and gradient of eqs. 4-5 over the (u_t, β_t) of the tokens the LLM
  judged this round, and one gradient step (eq. 6), clipped to [0, 1];
- lines 30-33: each client sends (u_th,k, n_k) to its cluster's edge server, which averages weighted by
  n_k (eq. 7); lines 34-36: the edges send their averages to the cloud, which averages the clusters
  (eq. 8) and broadcasts u_th back through the edges. These messages cross the simulated network (a client
  whose message fails or arrives after the others keeps its own threshold; one that never reports is left
  out of the averages).

Eq. 5 as printed is −γ Σ σ(1−σ)((1−β)² + λ) < 0 for every token, so eq. 6 only ever raises u_th: with
`objective: paper` that is what happens (tests/test_hlm_fed.py shows it). `objective: corrected` adds the
cost of keeping a token the LLM would reject, (1 − σ)·β, to eq. 4:
    L_k = Σ_t σ_t((1 − β_t)² + λ) + (1 − σ_t) β_t,   ∂L_k/∂u_th = −γ Σ_t σ_t(1 − σ_t)((1 − β_t)² + λ − β_t),
so the threshold falls where the drafts near it are often rejected (β > (1 − β)² + λ) and rises where they
are accepted; `probe_rate` sends a share of the kept drafts too, so their β is observed below the threshold.

Clusters come from `clusters` (device names or a device group, and an edge server each), or are found by
k-means over the clients' token statistics (mean SLM input embedding and unigram entropy of their prompts),
as the paper's pre-clustering does.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import simpy

from netsim.errors import InputError
from netsim.network.delivery import TransferFailed
from netsim.payload import Control
from netsim.policies.hlm import HlmPolicy, TokenCache
from netsim.policies.params import FedHlmParams

if TYPE_CHECKING:
    import networkx as nx

    from netsim.context import ProcessGenerator
    from netsim.scenario import Scenario
    from netsim.world import World

THRESHOLD_BYTES = 8
"""A client's report: u_th,k as fp32 and n_k as int32 (an edge's report: its average and Σ n_k)."""
BROADCAST_BYTES = 4
"""The global threshold as fp32."""
STREAM_CLUSTERING = 7
"""Random stream of the k-means initialisation (world.py: 1 network, 2 workload; context: 3; groups: 4)."""


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def local_loss_and_gradient(u: np.ndarray, beta: np.ndarray, threshold: float, gamma: float, lam: float,
                            objective: str) -> tuple[float, float]:
    """Eq. 4 and eq. 5 (`paper`), or the corrected pair (`corrected`), over one client's judged tokens."""
    s = sigmoid(gamma * (u - threshold))  # δ ≈ σ(γ(u − u_th))
    send_cost = (1.0 - beta) ** 2 + lam
    if objective == "paper":
        loss = float((s * send_cost).sum())  # eq. 4
        grad = float(-gamma * (s * (1.0 - s) * send_cost).sum())  # eq. 5
    else:
        loss = float((s * send_cost + (1.0 - s) * beta).sum())
        grad = float(-gamma * (s * (1.0 - s) * (send_cost - beta)).sum())
    return loss, grad


def kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 50) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; labels (n,). Small n (clients), so plain numpy."""
    n = points.shape[0]
    centres = [points[int(rng.integers(n))]]
    for _ in range(1, k):
        d2 = np.min([((points - c) ** 2).sum(axis=1) for c in centres], axis=0)
        total = d2.sum()
        pick = int(rng.choice(n, p=d2 / total)) if total > 0 else int(rng.integers(n))
        centres.append(points[pick])
    c = np.array(centres)
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        new = np.argmin(((points[:, None, :] - c[None, :, :]) ** 2).sum(axis=2), axis=1)
        if _ and np.array_equal(new, labels):
            break
        labels = new
        for j in range(k):
            if np.any(labels == j):
                c[j] = points[labels == j].mean(axis=0)
    return labels


class FedHlm(HlmPolicy[FedHlmParams]):
    name = "fedhlm"
    Params = FedHlmParams
    columns = HlmPolicy.columns

    def __init__(self, params: FedHlmParams, world: World) -> None:
        super().__init__(params, world)
        for client in self.clients.values():
            client.cache = TokenCache(params.cache_size)
        clusters = self._form_clusters()
        for c, members in enumerate(clusters):
            edge = self._edge_of(c, members)
            for d in members:
                if d in self.clients:
                    client = self.clients[d]
                    client.cluster, client.edge = c, edge
                    client.peers = tuple(m for m in members if m != d)
        self.clusters = [c for c in ([d for d in members if d in self.clients] for members in clusters) if c]
        """Each cluster's clients (members that issue no request are peers only)."""
        self.global_threshold = params.threshold
        self.rows: list[dict[str, Any]] = []

    # -- hooks of the per-token machinery ----------------------------------------------------------------

    def initial_threshold(self) -> float:
        return self.params.threshold

    def probes(self, rng: np.random.Generator) -> bool:
        return self.params.probe_rate > 0 and bool(rng.random() < self.params.probe_rate)

    def p2p_enabled(self) -> bool:
        return self.params.p2p

    def edge_enabled(self) -> bool:
        return self.params.edge_cache

    def theta(self) -> float:
        return self.params.theta

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    def check(cls, params: FedHlmParams, scenario: Scenario, graph: nx.DiGraph) -> list[str]:
        """The common checks, and clusters that name requesting devices, groups and edge servers."""
        problems = super().check(params, scenario, graph)
        nodes = scenario.topology.nodes
        groups = {g.name: g for g in scenario.topology.groups}
        requesting = set(scenario.request_devices)
        seen: dict[str, int] = {}
        for i, spec in enumerate(params.clusters or []):
            where = f"policy.clusters[{i}]"
            members = list(spec.devices)
            if spec.group is not None:
                if spec.group not in groups:
                    problems.append(f"{where}.group: unknown group {spec.group!r}")
                else:
                    members += groups[spec.group].member_names()
            for d in spec.devices:
                if d not in nodes:
                    problems.append(f"{where}.devices: unknown device {d!r}")
                elif nodes[d].role != "device":
                    problems.append(f"{where}.devices: {d!r} is a {nodes[d].role}, not a device")
                elif d not in requesting and not (params.slm in [m.name for m in nodes[d].models]
                                                  if params.slm else nodes[d].models):
                    problems.append(f"{where}.devices: {d!r} hosts no SLM to answer its peers with")
            for d in members:
                if d in seen and seen[d] != i:
                    problems.append(f"{where}: {d!r} is already in policy.clusters[{seen[d]}]")
                seen.setdefault(d, i)
            if not spec.devices and spec.group is None:
                problems.append(f"{where}: names no device (give `devices` or `group`)")
            if spec.edge is not None and (spec.edge not in nodes or nodes[spec.edge].role != "edge"):
                problems.append(f"{where}.edge: {spec.edge!r} is not an edge node")
        return list(dict.fromkeys(problems))

    def finish(self) -> dict[str, pl.DataFrame]:
        tables = super().finish()
        tables["rounds"] = pl.DataFrame(self.rows, schema={
            "round": pl.Int64, "t_s": pl.Float64, "client": pl.Utf8, "cluster": pl.Int64,
            "threshold": pl.Float64, "n_feedback": pl.Int64, "loss": pl.Float64, "gradient": pl.Float64,
            "tokens": pl.Int64, "transmitted": pl.Int64, "transmission_rate": pl.Float64,
            "reported": pl.Boolean, "global_threshold": pl.Float64})
        return tables

    # -- Algorithm 1, the rounds ----------------------------------------------------------------------

    def end_of_round(self, r: int) -> ProcessGenerator:
        """Algorithm 1, lines 26-36: each client's gradient step, then the aggregation over the network."""
        env, p = self.world.env, self.params
        # lines 26-28: local losses and gradient steps (eqs. 4-6)
        updates: dict[str, tuple[float, int]] = {}
        round_rows = []
        for client in self.clients.values():
            u = np.array([f[0] for f in client.feedback])
            beta = np.array([f[1] for f in client.feedback])
            loss, grad = (local_loss_and_gradient(u, beta, client.threshold, p.gamma, p.lambda_reg,
                                                  p.objective) if u.size else (0.0, 0.0))
            local = min(1.0, max(0.0, client.threshold - p.learning_rate * grad))  # eq. 6
            updates[client.device] = (local, u.size)
            round_rows.append({"round": r, "client": client.device, "cluster": client.cluster,
                               "threshold": local, "n_feedback": int(u.size), "loss": loss,
                               "gradient": grad, "tokens": client.tokens,
                               "transmitted": client.transmitted,
                               "transmission_rate": client.transmitted / client.tokens if client.tokens
                               else None})
            client.threshold = local
            client.feedback, client.tokens, client.transmitted = [], 0, 0
        # lines 30-36: the aggregation, over the network
        reported = yield from self._aggregate(updates)
        for row in round_rows:
            row.update({"t_s": env.now, "reported": row["client"] in reported,
                        "global_threshold": self.global_threshold})
        self.rows += round_rows

    def _aggregate(self, updates: dict[str, tuple[float, int]]) -> Generator[simpy.Event, Any, set[str]]:
        """Clients → edges (eq. 7) → cloud (eq. 8) → edges → clients; returns the clients that reported."""
        env = self.world.env
        cloud = (self.params.cloud or
                 self.world.nearest(next(iter(self.clients)), ("cloud",), self.params.llm).name)
        # 1. every client reports to its edge (the cloud when its cluster has none), all at once
        ups = {d: env.process(_deliver(self, d, self.clients[d].edge or cloud, THRESHOLD_BYTES))
               for d in self.clients}
        yield env.all_of(list(ups.values()))
        reported = {d for d, proc in ups.items() if proc.value}
        # 2. eq. 7 at each edge over its reporting members; then each edge reports to the cloud
        cluster_means: dict[int, float] = {}
        edge_ups = []
        for c, members in enumerate(self.clusters):
            got = [updates[d] for d in members if d in reported]
            if not got:
                continue
            weight = sum(n for _, n in got)
            cluster_means[c] = (sum(n * th for th, n in got) / weight if weight
                                else sum(th for th, _ in got) / len(got))  # no feedback anywhere: plain mean
            edge = self.clients[members[0]].edge
            edge_ups.append((c, env.process(_deliver(self, edge, cloud, THRESHOLD_BYTES) if edge
                                            else _already(env))))
        if edge_ups:
            yield env.all_of([proc for _, proc in edge_ups])
        arrived = [cluster_means[c] for c, proc in edge_ups if proc.value]
        if not arrived:
            return reported
        # 3. eq. 8 at the cloud, then the broadcast back down
        self.global_threshold = float(sum(arrived) / len(arrived))
        downs = []
        for members in self.clusters:
            edge = self.clients[members[0]].edge
            downs.append(env.process(self._broadcast(cloud, edge, members)))
        yield env.all_of(downs)
        return reported

    def _broadcast(self, cloud: str, edge: str | None, members: list[str]) -> ProcessGenerator:
        env = self.world.env
        if edge is not None and not (yield from _deliver(self, cloud, edge, BROADCAST_BYTES)):
            return
        procs = {d: env.process(_deliver(self, edge or cloud, d, BROADCAST_BYTES)) for d in members}
        yield env.all_of(list(procs.values()))
        for d, proc in procs.items():
            if proc.value:
                self.clients[d].threshold = self.global_threshold

    # -- clusters ------------------------------------------------------------------------------------

    def _form_clusters(self) -> list[list[str]]:
        p, scenario = self.params, self.world.scenario
        devices = list(self.clients)
        if p.clusters is not None:
            groups = {g.name: g for g in scenario.topology.groups}
            out = []
            for spec in p.clusters:
                members = [*spec.devices, *(groups[spec.group].member_names() if spec.group else [])]
                out.append(list(dict.fromkeys(members)))
            placed = {d for members in out for d in members}
            out += [[d] for d in devices if d not in placed]  # a client in no cluster has no peers
            return [m for m in out if m]
        return self._found_clusters(devices)

    def _found_clusters(self, devices: list[str]) -> list[list[str]]:
        """k-means over each client's token statistics: the mean unit input embedding of its prompts'
        tokens and the entropy of their unigram distribution / ln|V| (the paper's pre-clustering)."""
        from netsim.workload import make_requests
        from netsim.world import STREAM_WORKLOAD, rng_for

        scenario = self.world.scenario
        slm = self.world.nodes[devices[0]].model(self.params.slm)
        texts: dict[str, list[str]] = {d: [] for d in devices}
        for req in make_requests(scenario, rng_for(scenario.seed, STREAM_WORKLOAD)):
            texts[req.device].append(req.prompt)
        vocab = self.unit_embeddings.shape[0]
        features = []
        for d in devices:
            ids = np.array([t for text in texts[d] for t in slm.lm.tokenizer.encode(text)], dtype=np.int64)
            if ids.size == 0:
                features.append(np.zeros(self.unit_embeddings.shape[1] + 1))
                continue
            counts = np.bincount(ids, minlength=vocab).astype(np.float64)
            pr = counts[counts > 0] / counts.sum()
            entropy = float(-(pr * np.log(pr)).sum() / math.log(vocab))
            features.append(np.concatenate([self.unit_embeddings[ids].mean(axis=0), [entropy]]))
        k = min(self.params.n_clusters, len(devices))
        labels = kmeans(np.array(features), k, np.random.default_rng([scenario.seed, STREAM_CLUSTERING]))
        return [[d for d, label in zip(devices, labels, strict=True) if label == j] for j in range(k)
                if np.any(labels == j)]

    def _edge_of(self, c: int, members: list[str]) -> str | None:
        specs = self.params.clusters or []
        spec = specs[c] if c < len(specs) else None
        if spec is not None and spec.edge is not None:
            return spec.edge
        if not any(n.role == "edge" for n in self.world.nodes.values()):
            return None
        try:
            return self.world.nearest(members[0], ("edge",)).name
        except InputError:  # an edge exists but this cluster reaches none: no edge stage
            return None


def _deliver(policy: FedHlm, src: str, dst: str, nbytes: int) -> Generator[simpy.Event, Any, bool]:
    """One control message of the aggregation (kind `control`); False if the network failed it."""
    try:
        yield from policy.world.net.send(src, dst, Control("threshold", nbytes).nbytes, kind=Control.kind)
    except TransferFailed:
        return False
    return True


def _already(env: simpy.Environment) -> Generator[simpy.Event, Any, bool]:
    """An edge-less cluster's average is computed at the cloud itself: nothing to send."""
    yield env.timeout(0)
    return True
