"""Dirichlet(α) genre partition of the corpus over clients (netsim/lm/partition.py)."""

from __future__ import annotations

import numpy as np
import pytest

from netsim.lm.corpus import corpus_cached, load_works, split
from netsim.lm.partition import ClientData, dirichlet_partition, work_passages

pytestmark = pytest.mark.skipif(not corpus_cached(), reason="corpus not in the cache")


def _pools() -> tuple[set[str], set[str], int]:
    parts = split(load_works())
    train = {p for w in parts["train"] for p in work_passages(w, 512)}
    heldout = {p for w in parts["heldout"] for p in work_passages(w, 512)}
    n_train = sum(len(work_passages(w, 512)) for w in parts["train"])
    return train, heldout, n_train


def test_training_passages_are_a_partition_and_heldout_never_trains() -> None:
    clients = dirichlet_partition(20, 1.0, seed=3)
    train_pool, heldout_pool, n_train = _pools()
    every = [p for c in clients for p in c.train]
    assert len(every) == n_train  # each training passage exactly once (duplicates in text aside)
    assert set(every) == train_pool
    for c in clients:
        assert isinstance(c, ClientData) and c.train and len(c.heldout) >= 8
        assert set(c.heldout) <= heldout_pool
        assert not set(c.heldout) & train_pool
        assert sum(c.genre_weights.values()) == pytest.approx(1.0)


def test_same_seed_same_partition_other_seed_differs() -> None:
    assert dirichlet_partition(10, 0.5, seed=1) == dirichlet_partition(10, 0.5, seed=1)
    assert dirichlet_partition(10, 0.5, seed=1) != dirichlet_partition(10, 0.5, seed=2)


def test_lower_alpha_concentrates_each_client_on_fewer_genres() -> None:
    """Mean share of a client's heaviest genre: 1/5 for IID data, → 1 as α → 0."""
    top = {a: np.mean([max(c.genre_weights.values()) for seed in range(3)
                       for c in dirichlet_partition(20, a, seed=seed)]) for a in (10.0, 1.0, 0.1)}
    assert top[10.0] < top[1.0] < top[0.1]
    assert top[10.0] < 0.4 and top[0.1] > 0.7


def test_heldout_follows_the_training_genre_mix() -> None:
    parts = split(load_works())
    genre_of = {p: w.genre for w in parts["heldout"] for p in work_passages(w, 512)}
    clients = dirichlet_partition(5, 0.1, seed=0)
    for c in clients:
        for genre, weight in c.genre_weights.items():
            if weight == 0:
                assert all(genre_of[p] != genre for p in c.heldout)


def test_small_alpha_leaves_nobody_empty_and_still_partitions() -> None:
    """At α = 0.05 over 200 clients most draws leave clients empty; each takes a passage from another, so
    the training sets stay disjoint and complete."""
    clients = dirichlet_partition(200, 0.05, seed=0)
    assert all(c.train for c in clients)
    _, _, n_train = _pools()
    assert sum(len(c.train) for c in clients) == n_train


def test_bad_arguments_fail() -> None:
    with pytest.raises(ValueError, match="alpha"):
        dirichlet_partition(3, 0.0, seed=0)


def test_each_device_asks_its_own_heldout_passages() -> None:
    """`prompts: {source: partition}`: device i of the requesting devices is client i."""
    from netsim.scenario import parse_scenario
    from netsim.workload import make_requests
    from netsim.world import STREAM_WORKLOAD, rng_for

    nodes = {f"d{i}": {"role": "device", "profile": "oneplus-12"} for i in range(4)}
    nodes["cloud"] = {"role": "cloud", "profile": "nvidia-a100-80gb", "models": ["shakespeare-llm"]}
    raw = {"name": "p", "seed": 7, "topology": {"nodes": nodes, "links": [
        {"src": f"d{i}", "dst": "cloud", "rate_mbps": 10} for i in range(4)]},
        "workload": {"n_requests": 12, "devices": ["d2", "d0", "d1", "d3"],
                     "prompts": {"source": "partition", "alpha": 0.5}},
        "policy": {"name": "cloud_only"}}
    scenario = parse_scenario(raw)
    requests = make_requests(scenario, rng_for(7, STREAM_WORKLOAD))
    clients = dirichlet_partition(4, 0.5, seed=7)
    for r in requests:
        client = ["d2", "d0", "d1", "d3"].index(r.device)
        assert r.prompt in clients[client].heldout
    again = make_requests(scenario, rng_for(7, STREAM_WORKLOAD))
    assert [r.prompt for r in again] == [r.prompt for r in requests]
