"""The embedded default data: a seeded interaction log with real structure.

Every user and item has a latent factor (rank ``rank``); items have a Zipf-like
popularity. A user's taste for an item is ``affinity * <u, v> / std + log popularity``
plus Gumbel noise (Gumbel top-k: sampling without replacement in proportion to
``exp(taste)``), so a model that learns the factors beats a popularity ranking, and a
popularity ranking beats chance.

Sequential structure: the items fall into ``clusters`` groups in a fixed cyclic order
(0 → 1 → … → C-1 → 0). Each user starts in a random cluster and, after each
interaction, moves on to the next cluster with probability ``1 / cluster_run``; a visit
to a cluster takes the cluster's best-tasting items the user has not taken yet, in
random order (a cluster they have used up sends them on). Timestamps increase along that path. A user's next item is therefore in
the cluster of their latest items or the one after it: a model of the order (sasrec)
can see where the user is now, a model of the whole history (bpr, item-kNN, EASE) only
which clusters they have been to. With ``clusters=1`` there is no order: the items are
those the taste picks, with random timestamps.

Each interaction also gets a 1-5 rating from the latent score plus user/item biases and
noise (the explicit variant).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lepton_recsys.config import SyntheticConfig

START_TIME = 1_577_836_800  # 2020-01-01T00:00:00Z
SPAN_S = 365 * 86_400
#: Cells of the user x item score matrix generated at once (bounds memory).
CHUNK_CELLS = 1 << 22


def generate(cfg: SyntheticConfig, seed: int) -> pd.DataFrame:
    """Columns ``user_id, item_id, rating, timestamp``; ids start at 1 like MovieLens.

    Rows come user by user, each user's in time order."""
    rng = np.random.default_rng([seed, 0x5EC5])
    n_users, n_items, rank = cfg.num_users, cfg.num_items, cfg.rank
    users_f = rng.normal(size=(n_users, rank)) / np.sqrt(rank)
    items_f = rng.normal(size=(n_items, rank)) / np.sqrt(rank)
    # Popularity rank of each item is a random permutation, so ids carry no signal.
    pop_rank = rng.permutation(n_items)
    log_pop = -cfg.zipf_exponent * np.log1p(pop_rank)
    user_bias = rng.normal(scale=0.3, size=n_users)
    item_bias = rng.normal(scale=0.3, size=n_items)

    raw = rng.lognormal(mean=0.0, sigma=0.6, size=n_users)
    counts = np.round(raw / raw.sum() * cfg.num_interactions).astype(np.int64)
    counts = np.clip(counts, min(5, n_items), max(min(5, n_items), n_items // 2))

    n_clusters = min(cfg.clusters, n_items)
    # Clusters of (nearly) equal size over a random permutation of the items.
    cluster_of = np.empty(n_items, dtype=np.int64)
    cluster_of[rng.permutation(n_items)] = np.arange(n_items) % n_clusters
    start_cluster = rng.integers(0, n_clusters, size=n_users)

    # <u, v> has std 1/sqrt(rank) for these factors: scale it to unit variance.
    scale = np.sqrt(rank)
    us, its, ratings = [], [], []
    chunk = max(1, CHUNK_CELLS // n_items)
    for start in range(0, n_users, chunk):
        stop = min(n_users, start + chunk)
        latent = (users_f[start:stop] @ items_f.T) * scale
        keys = cfg.affinity * latent + log_pop[None, :] + rng.gumbel(size=latent.shape)
        for row, u in enumerate(range(start, stop)):
            n = int(counts[u])
            if n_clusters == 1:
                chosen = np.argpartition(-keys[row], n - 1)[:n]
            else:
                moves = rng.random(n) < 1.0 / cfg.cluster_run
                chosen = _walk(keys[row], cluster_of, n_clusters, int(start_cluster[u]), moves, rng)
            noise = rng.normal(scale=cfg.rating_noise, size=n)
            score = 2.5 + latent[row, chosen] + user_bias[u] + item_bias[chosen] + noise
            us.append(np.full(n, u, dtype=np.int64))
            its.append(chosen.astype(np.int64))
            ratings.append(np.clip(np.rint(score), 1, 5))
    user = np.concatenate(us)
    item = np.concatenate(its)
    offsets = rng.integers(0, SPAN_S, size=len(user))
    if n_clusters > 1:  # each user's timestamps increase along their path
        offsets = offsets[np.lexsort((offsets, user))]
    return pd.DataFrame(
        {
            "user_id": user + 1,
            "item_id": item + 1,
            "rating": np.concatenate(ratings).astype(np.float32),
            "timestamp": (START_TIME + offsets).astype(np.int64),
        }
    )


def _walk(
    keys: np.ndarray,
    cluster_of: np.ndarray,
    n_clusters: int,
    start: int,
    moves: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """One user's items in time order: through the clusters from ``start``, moving on
    where ``moves`` says (or when a cluster is used up). A visit to a cluster takes its
    best-tasting items not taken yet, in random order."""
    # The items of each cluster, best taste first.
    order = np.lexsort((-keys, cluster_of))
    sizes = np.bincount(cluster_of, minlength=n_clusters)
    begin = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    taken = [0] * n_clusters
    out = np.empty(len(moves), dtype=np.int64)
    visit = np.empty(len(moves), dtype=np.int64)
    c, v = start, 0
    for t, move in enumerate(moves.tolist()):
        if move and t:
            c, v = (c + 1) % n_clusters, v + 1
        while taken[c] >= sizes[c]:
            c, v = (c + 1) % n_clusters, v + 1
        out[t] = order[begin[c] + taken[c]]
        visit[t] = v
        taken[c] += 1
    return out[np.lexsort((rng.random(len(out)), visit))]
