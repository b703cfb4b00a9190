"""A streamed split whose preprocessing is deterministic is kept in the object store once
preprocessed when it fits a share of it (engine.train.streaming.cached); else it streams."""

from __future__ import annotations

import pytest

from engine.train.streaming import CACHE_SHARE, cached


@pytest.mark.ray
def test_small_deterministic_splits_are_cached_and_others_stream(ray_cluster):
    import ray
    import ray.data
    from ray.data.dataset import MaterializedDataset

    ds = ray.data.range(1000, override_num_blocks=10).map_batches(lambda b: {"id": b["id"] * 2})
    store = ray.cluster_resources()["object_store_memory"]

    assert cached(ds, None) is ds  # random preprocessing (augmentation): streams
    assert cached(ds, int(CACHE_SHARE * store) + 1) is ds  # too large: streams

    kept = cached(ds, 8000)  # deterministic and small: preprocessed once, kept
    assert isinstance(kept, MaterializedDataset)
    assert sorted(r["id"] for r in kept.take_all()) == list(range(0, 2000, 2))

    # Train: the cached blocks in a new seeded order each epoch, every row once each time.
    shuffled = cached(ds, 8000, seed=3)
    epochs = [[r["id"] for r in shuffled.iter_rows()] for _ in range(3)]
    assert all(sorted(e) == list(range(0, 2000, 2)) for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1, "the block order never changed"


def test_fetches_are_whole_batches_within_the_shuffle_buffer():
    from engine.train.streaming import FETCH_ROWS, fetch_rows

    assert fetch_rows(32) == FETCH_ROWS == 256
    assert fetch_rows(100) == 200 and fetch_rows(512) == 512
    assert fetch_rows(32, shuffle_buffer=64) == 64 and fetch_rows(32, shuffle_buffer=16) == 32


@pytest.mark.ray
@pytest.mark.parametrize("buffer", [0, 64])
def test_a_loader_yields_every_row_once_in_batches_of_its_size(ray_cluster, buffer):
    """Rows fetched several batches at a time and split on the worker: the same batches
    (size, count, last one partial) and rows as one fetch per batch would give."""
    import ray.data

    from engine.train.streaming import StreamLoader

    ds = ray.data.range(1000, override_num_blocks=7)
    loader = StreamLoader(
        ds, batch_size=32, to_batch=lambda b: b["id"], steps=32, shuffle_buffer=buffer, seed=1
    )
    batches = list(loader)
    assert [len(b) for b in batches] == [32] * 31 + [8] == [len(b) for b in batches[:32]]
    assert len(batches) == len(loader)
    assert sorted(int(i) for b in batches for i in b) == list(range(1000))
