"""The embedded default data: seeded, sized as documented, popularity-skewed."""

from __future__ import annotations

import numpy as np

from lepton_recsys.config import SyntheticConfig
from lepton_recsys.synthetic import generate


def top_decile_share(frame):
    counts = np.sort(frame["item_id"].value_counts().to_numpy())[::-1]
    return counts[: len(counts) // 10].sum() / counts.sum()


def test_same_seed_same_log_other_seed_other_log():
    a, b, c = (
        generate(SyntheticConfig(), 0),
        generate(SyntheticConfig(), 0),
        generate(SyntheticConfig(), 1),
    )
    assert a.equals(b)
    assert not a.equals(c)


def test_default_size_columns_and_values():
    frame = generate(SyntheticConfig(), 0)
    assert list(frame.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert 28_000 <= len(frame) <= 32_000
    assert frame["user_id"].nunique() == 1000 and frame["item_id"].max() <= 500
    assert frame.groupby("user_id").size().min() >= 5
    assert not frame.duplicated(["user_id", "item_id"]).any()
    assert set(frame["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert 3.0 < frame["rating"].mean() < 4.2 and frame["rating"].std() > 0.8
    assert frame["timestamp"].nunique() > 20_000


def test_popularity_is_skewed_by_the_zipf_exponent():
    skewed = top_decile_share(generate(SyntheticConfig(), 0))
    flat = top_decile_share(generate(SyntheticConfig(zipf_exponent=0.0), 0))
    assert skewed > 0.3 and skewed > 1.5 * flat


def distinct_transitions(frame):
    """Distinct (item, next item of the same user in time) pairs."""
    frame = frame.sort_values(["user_id", "timestamp"], kind="stable")
    same = frame["user_id"].to_numpy()[1:] == frame["user_id"].to_numpy()[:-1]
    items = frame["item_id"].to_numpy()
    return len(set(zip(items[:-1][same].tolist(), items[1:][same].tolist(), strict=True)))


def test_users_move_through_item_clusters_in_order():
    ordered, unordered = generate(SyntheticConfig(), 0), generate(SyntheticConfig(clusters=1), 0)
    # The next item is in the current cluster or the next one: far fewer distinct
    # transitions than in the same log without order (same sizes, same seed).
    print(
        f"\ndistinct transitions: {distinct_transitions(ordered)} vs {distinct_transitions(unordered)}"
    )
    assert distinct_transitions(ordered) < 0.8 * distinct_transitions(unordered)
    rows_in_time_order = ordered.groupby("user_id")["timestamp"].apply(
        lambda t: t.is_monotonic_increasing
    )
    assert rows_in_time_order.all()
