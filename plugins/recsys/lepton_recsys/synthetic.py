"""The embedded default data: a seeded interaction log with real structure.

Every user and item has a latent factor (rank ``rank``); items have a Zipf-like
popularity. A user picks ``n_u`` distinct items with probability proportional to
``exp(affinity * <u, v> / std + log popularity)`` (Gumbel top-k, i.e. sampling without
replacement), so a model that learns the factors beats a popularity ranking, and a
popularity ranking beats chance. Each interaction gets a timestamp and a 1-5 rating
from the same latent score plus user/item biases and noise (the explicit variant).
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
    """Columns ``user_id, item_id, rating, timestamp``; ids start at 1 like MovieLens."""
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
            chosen = np.argpartition(-keys[row], n - 1)[:n]
            noise = rng.normal(scale=cfg.rating_noise, size=n)
            score = 2.5 + latent[row, chosen] + user_bias[u] + item_bias[chosen] + noise
            us.append(np.full(n, u, dtype=np.int64))
            its.append(chosen.astype(np.int64))
            ratings.append(np.clip(np.rint(score), 1, 5))
    user = np.concatenate(us)
    item = np.concatenate(its)
    timestamp = START_TIME + rng.integers(0, SPAN_S, size=len(user))
    return pd.DataFrame(
        {
            "user_id": user + 1,
            "item_id": item + 1,
            "rating": np.concatenate(ratings).astype(np.float32),
            "timestamp": timestamp.astype(np.int64),
        }
    )
