"""FedHLM's federated thresholds (netsim/policies/fedhlm.py): eqs. 4-5 and their gradient, eq. 5 raising
the threshold only, the corrected objective, λ against the transmission rate, the aggregation of eqs. 7-8
recomputed from rounds.parquet, its traffic on the network, and FedHLM against U-HLM and Rand-HLM."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from test_hlm import FED, conserved, simulate, small

from netsim.policies.fedhlm import kmeans, local_loss_and_gradient


@pytest.mark.parametrize("objective", ["paper", "corrected"])
def test_gradient_is_the_derivative_of_the_loss(objective: str) -> None:
    rng = np.random.default_rng(0)
    u, beta = rng.random(50), rng.random(50)
    for th in (0.1, 0.5, 0.9):
        _, grad = local_loss_and_gradient(u, beta, th, 8.0, 0.2, objective)
        h = 1e-6
        hi, _ = local_loss_and_gradient(u, beta, th + h, 8.0, 0.2, objective)
        lo, _ = local_loss_and_gradient(u, beta, th - h, 8.0, 0.2, objective)
        assert grad == pytest.approx((hi - lo) / (2 * h), rel=1e-5, abs=1e-7)


def test_eq5_as_printed_is_never_positive() -> None:
    """−γ Σ σ(1−σ)((1−β)² + λ) ≤ 0 whatever the tokens: eq. 6 can only raise the threshold."""
    rng = np.random.default_rng(1)
    for _ in range(500):
        n = int(rng.integers(1, 40))
        _, grad = local_loss_and_gradient(rng.random(n), rng.random(n), float(rng.random()),
                                          float(rng.uniform(0.1, 50)), float(rng.uniform(0, 2)), "paper")
        assert grad <= 0


def test_corrected_gradient_lowers_the_threshold_when_kept_tokens_would_be_rejected() -> None:
    u = np.full(10, 0.5)
    _, rejected = local_loss_and_gradient(u, np.ones(10), 0.5, 10.0, 0.1, "corrected")
    _, accepted = local_loss_and_gradient(u, np.zeros(10), 0.5, 10.0, 0.1, "corrected")
    assert rejected > 0 > accepted  # eq. 6 steps against the gradient: down for β = 1, up for β = 0


def test_kmeans_separates_two_blobs() -> None:
    rng = np.random.default_rng(2)
    points = np.vstack([rng.normal(0, 0.1, (10, 3)), rng.normal(5, 0.1, (10, 3))])
    labels = kmeans(points, 2, np.random.default_rng(3))
    assert len(set(labels[:10])) == 1 and len(set(labels[10:])) == 1 and labels[0] != labels[10]


def test_paper_rule_only_raises_the_threshold_and_aggregates_by_eqs_7_8() -> None:
    results = simulate(small({**FED, "rounds": 3, "learning_rate": 0.2}, n_requests=18))
    conserved(results)
    rounds = results.tables["rounds"]
    assert rounds.height == 3 * 6  # every client, every round
    glob = rounds.group_by("round").agg(pl.col("global_threshold").first()).sort("round")["global_threshold"]
    steps = np.diff([0.3, *glob.to_list()])
    assert (steps >= -1e-12).all() and steps.sum() > 0  # (averages of 1.0 may round below it)
    assert (rounds["gradient"] <= 0).all()
    # eq. 7 per cluster (weights n_k = tokens with feedback), eq. 8 over clusters, from the table alone
    for r in range(3):
        rows = rounds.filter((pl.col("round") == r) & pl.col("reported"))
        means = []
        for _, members in rows.group_by("cluster"):
            n = members["n_feedback"].to_numpy()
            th = members["threshold"].to_numpy()
            means.append(float((n * th).sum() / n.sum()) if n.sum() else float(th.mean()))
        assert glob[r] == pytest.approx(float(np.mean(means)))
    # the aggregation crossed the network: per round 6 reports, 2 edge reports, 2 + 6 broadcasts
    control = results.events.filter((pl.col("kind") == "tx") & (pl.col("detail") == "control"))
    assert control.height > 0
    assert results.requests["round"].to_list() == [i * 3 // 18 for i in range(18)]


def test_raising_lambda_lowers_the_transmission_rate() -> None:
    """The corrected objective (with probes, so β is seen on both sides of the threshold)."""
    rates = []
    for lam in (0.0, 0.5, 3.0):
        policy = {**FED, "rounds": 3, "objective": "corrected", "probe_rate": 0.2, "lambda_reg": lam,
                  "learning_rate": 0.3}
        r = simulate(small(policy, n_requests=18)).requests.filter(pl.col("round") == 2)
        rates.append(float(r["tokens_uncertain"].sum() / r["n_output_tokens"].sum()))
    assert rates[0] >= rates[1] >= rates[2] and rates[0] > rates[2]


def test_fedhlm_sends_fewer_tokens_to_the_llm_than_the_baselines() -> None:
    """Same clients, prompts and seed: FedHLM (learning, peers, edge, cache) against U-HLM at FedHLM's
    starting threshold and Rand-HLM at the paper's 70 %."""
    fed = simulate(small({**FED, "rounds": 3, "learning_rate": 0.3}, n_requests=18)).requests
    uhlm = simulate(small({"name": "uhlm", "threshold": 0.3}, n_requests=18)).requests
    rand = simulate(small({"name": "rand_hlm", "p_offload": 0.7}, n_requests=18)).requests
    llm = {name: int(r["tokens_llm"].sum()) for name, r in (("fed", fed), ("uhlm", uhlm), ("rand", rand))}
    assert llm["fed"] < llm["uhlm"] and llm["fed"] < llm["rand"], llm


def test_clusters_found_from_token_statistics() -> None:
    policy = {key: value for key, value in FED.items() if key != "clusters"}
    results = simulate(small({**policy, "n_clusters": 2}))
    conserved(results)
    clusters = set(results.requests["cluster"].to_list())
    assert clusters <= {0, 1} and clusters
