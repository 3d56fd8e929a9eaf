"""Clients' data: a non-IID split of the corpus by genre with a Dirichlet(α) prior (FedHLM sec. VI-A).

Federated papers make clients' data non-IID by drawing, for every label, the share each client holds from
Dir(α·1): α = 10 is close to IID, α = 0.1 gives most of a label to one or two clients. The labels here are the
corpus's genres (comedy, history, tragedy, poem, milton). Training passages come only from training works and
held-out passages only from held-out works (corpus.split, whole works), so a client's held-out text is ground
truth its models never saw, in the same genre mix as its training text.

Decisions:
- Passages are consecutive lines of one work cut at the first line end after `passage_chars` characters, so
  every character of a work lands in exactly one passage and no passage crosses two works.
- A genre's training passages are shuffled and cut into consecutive runs sized by that genre's Dir(α) draw, so
  the clients' training sets are disjoint and together hold every training passage exactly once.
- A client that the draw leaves without any training passage takes one from the largest holder of the genre
  in which its own share is largest (the partition stays disjoint; with α = 0.1 and 20 clients this happens).
- Held-out passages are drawn per client, genre by genre in its training mix (multinomial), without
  replacement inside a client; different clients may share a held-out passage (the pool is ~10 % of the text).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from netsim.lm.corpus import Work, load_works, split

MIN_HELDOUT_PER_CLIENT = 8
"""Held-out passages every client gets at least (its prompts and teacher-forced targets come from them)."""


@dataclass(frozen=True)
class ClientData:
    """One client's share of the corpus: its genre mix and its training and held-out passages."""

    client: int
    genre_weights: dict[str, float]
    """Share of each genre among the client's training passages (sums to 1; genres it lacks are 0)."""
    train: tuple[str, ...]
    heldout: tuple[str, ...]


def work_passages(work: Work, passage_chars: int) -> list[str]:
    """Consecutive lines of `work`, cut at the first line end at or after `passage_chars` characters."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for line in work.text.split("\n"):
        current.append(line)
        size += len(line) + 1
        if size >= passage_chars:
            passage = "\n".join(current).strip("\n")
            if passage.strip():
                out.append(passage)
            current, size = [], 0
    tail = "\n".join(current).strip("\n")
    if tail.strip():
        out.append(tail)
    return out


def _genre_pools(works: list[Work], passage_chars: int) -> dict[str, list[str]]:
    pools: dict[str, list[str]] = {}
    for work in works:
        pools.setdefault(work.genre, []).extend(work_passages(work, passage_chars))
    return pools


def dirichlet_partition(n_clients: int, alpha: float, seed: int, *, passage_chars: int = 512,
                        root: Path | None = None) -> list[ClientData]:
    """Split the training works over `n_clients` by genre with Dir(α) shares; draw held-out text in each mix.

    `root` is the unpacked corpus (corpus.corpus_root() when None). Same arguments, same partition: the only
    randomness is numpy's PCG64 seeded with `seed`.
    """
    if n_clients < 1 or not alpha > 0 or passage_chars < 1:
        raise ValueError(f"dirichlet_partition: need n_clients ≥ 1, alpha > 0, passage_chars ≥ 1; got "
                         f"{n_clients}, {alpha}, {passage_chars}")
    parts = split(load_works(root))
    train_pools = _genre_pools(parts["train"], passage_chars)
    heldout_pools = _genre_pools(parts["heldout"], passage_chars)
    genres = sorted(train_pools)
    rng = np.random.default_rng(seed)

    # 1. Per genre g: shares p_g ~ Dir(α·1_n) over clients; the genre's shuffled passages are cut at the
    #    cumulative shares, so client i holds ⌊·⌉ p_g[i]·N_g of them.
    shares = np.zeros((n_clients, len(genres)))
    held: list[dict[str, list[int]]] = [{} for _ in range(n_clients)]
    for j, genre in enumerate(genres):
        pool = train_pools[genre]
        p = rng.dirichlet(np.full(n_clients, alpha))
        shares[:, j] = p
        order = rng.permutation(len(pool))
        cuts = np.rint(np.cumsum(p)[:-1] * len(pool)).astype(np.int64)
        for i, run in enumerate(np.split(order, cuts)):
            if run.size:
                held[i][genre] = run.tolist()

    # 2. Nobody is left empty: one passage of the client's heaviest genre, from that genre's largest holder.
    for i in range(n_clients):
        if any(held[i].values()):
            continue
        genre = genres[int(np.argmax(shares[i] * [len(train_pools[g]) for g in genres]))]
        donor = max(range(n_clients), key=lambda k: (len(held[k].get(genre, [])), -k))
        held[i][genre] = [held[donor][genre].pop()]

    clients: list[ClientData] = []
    heldout_total = sum(len(v) for v in heldout_pools.values())
    train_total = sum(len(v) for v in train_pools.values())
    for i in range(n_clients):
        counts = {g: len(held[i].get(g, [])) for g in genres}
        n_train = sum(counts.values())
        weights = {g: counts[g] / n_train for g in genres}
        train = tuple(train_pools[g][k] for g in genres for k in sorted(held[i].get(g, [])))
        # 3. Held-out passages in the same genre mix, as many as the held-out/train ratio gives (≥ a floor).
        n_heldout = max(MIN_HELDOUT_PER_CLIENT, math.ceil(n_train * heldout_total / train_total))
        per_genre = rng.multinomial(n_heldout, [weights[g] for g in genres])
        heldout: list[str] = []
        for g, k in zip(genres, per_genre, strict=True):
            if k:
                pool = heldout_pools[g]
                heldout.extend(pool[m] for m in rng.choice(len(pool), size=int(k), replace=k > len(pool)))
        clients.append(ClientData(client=i, genre_weights=weights, train=train, heldout=tuple(heldout)))
    return clients
