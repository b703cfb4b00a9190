"""An interaction log streamed through Ray Data (``task.data.streaming=true``).

Built once, in the driver of ``lepton train`` (:func:`build_streaming`), Ray up:

1. **Read**: the configured columns only (``task.data.*_column``) of a Parquet file or
   folder, one row group per task (``engine.parquet_files.read_row_groups``: the footers
   are checked in the driver first, a column typed differently in two files names the
   column and both files, a row group that cannot be read names the file and the row
   group), or of a CSV file (``ray.data.read_csv``), made canonical (``user, item[,
   rating][, timestamp]``, the map-style reader's value rules) and filtered
   (``implicit_min_rating``) in ``map_batches``. ``format=synthetic`` is generated in
   the driver and handed to Ray Data (``from_pandas``): the same pipeline from there.
2. **Split** (``groupby("user").map_groups``, once, materialized in the object store):
   each user's rows are deduplicated (one row per item, the newest) and the newest is
   held out when the user has two or more items: the map-style ``leave_last_out``. A
   stream has no row order, so where several of a user's items share the newest
   timestamp the map-style path holds out the later *row* and this one the larger item
   id (the count is ``artifacts["data"]["streaming"]["tied_newest"]``; 0: the same split
   exactly). ``split=random`` draws per row in file order and is refused.
3. **Id maps** (``Dataset.unique`` on the split, sorted like ``IdMap.from_values``) and
   the encoded interactions, pulled into the driver: the artifacts keep every user's
   known items (CSR) and item popularity, as the map-style path's do, so checkpoints,
   predict, serve and export are unchanged. The driver therefore holds two int64 ids and
   a rating/timestamp per interaction (the workers hold none of them). ``task.data.extra``
   is appended there, after the split (small: ``lepton monitor export``'s rows).
4. **Validation** is the map-style validation set (``build.bundle_from`` on those arrays:
   the same candidates and baseline ranks), one row per held-out interaction, handed to
   Ray Data (``from_pandas``); rank 0 reads it whole. The known items a ranking row
   excludes are added on the worker (:class:`ToBatch`, from the artifacts' CSR).
5. **Train** rows are encoded, shuffled once (seeded) and materialized; each epoch reads
   their blocks in a random order through each worker's local shuffle buffer, and
   implicit models' negatives are sampled in ``map_batches`` on the cluster's CPUs (from
   the items the user has no *training* interaction with, as ``PairDataset`` does).
   Negatives come from a fresh generator per batch: Ray Data's batches are not the same
   rows run to run, so a per-batch seed would not make runs reproducible, and a seed
   from the batch's rows would repeat a row's negatives every epoch.

Not streamed: ``sasrec`` (whole histories in time order), ``split=random``, the split
given as two files, ``format=movielens`` (refused by the config).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch

from engine.errors import DataError
from engine.task import StreamingData
from lepton_recsys.config import RecsysConfig
from lepton_recsys.interactions import IdMap, Interactions, PreparedData, SeenItems

#: Rows in each worker's local shuffle buffer (``iter_torch_batches``).
SHUFFLE_BUFFER = 4096
#: Rows per ``map_batches`` call (reading, encoding, sampling negatives).
MAP_BATCH = 4096


def build_streaming(cfg: RecsysConfig, *, seed: int) -> StreamingData:
    """The log ``cfg.data`` as Ray Data datasets (in the driver, Ray up)."""
    import ray

    from lepton_recsys.build import bundle_from
    from lepton_recsys.datasets import HeldOutDataset

    data, explicit = cfg.data, cfg.model.explicit
    with _quiet_driver():
        log, desc = read_log(cfg)
        split = log.groupby("user").map_groups(split_user, batch_format="pandas").materialize()
        users, items = id_maps(split)
        if not len(users):
            raise DataError(f"{desc}: no interaction has rating >= {data.implicit_min_rating}.")
        train, val, tied = collect(split, users, items, explicit)
        n_original = len(train)
        extra = None
        if data.extra is not None:  # after the split, as map-style: never in validation
            from lepton_recsys.feedback_data import append_extra

            train, extra = append_extra(data, explicit, train, val, users, items)
        if len(val) == 0:
            raise DataError(
                f"{desc}: the split leaves no validation interactions.",
                hint="Users need at least two interactions for leave_last_out.",
            )
        prepared = PreparedData(users, items, train, val, 0, desc, extra)
        bundle = bundle_from(cfg, prepared, seed=seed)
        bundle.artifacts["data"]["streaming"] = {"tied_newest": tied}

        columns = ["user", "item", *(["rating"] if explicit else [])]
        rows = split.map_batches(
            functools.partial(train_rows, users=users, items=items, columns=columns),
            batch_size=MAP_BATCH,
            batch_format="pandas",
        )
        if len(train) > n_original:  # task.data.extra's rows
            added = _frame(train, columns, start=n_original)
            rows = rows.union(ray.data.from_pandas(added)).map_batches(
                _same_block_type, batch_format="pyarrow"
            )  # the shuffle below cannot merge pandas and Arrow blocks
        train_ds = rows.random_shuffle(seed=seed).materialize()
    del split  # its blocks: the shuffled train rows and the driver's arrays replace them
    train_ds = train_ds.randomize_block_order()
    seen = None
    if not explicit:
        sampler = bundle.train.seen  # the PairDataset's: every training interaction
        train_ds = train_ds.map_batches(
            functools.partial(
                add_negatives,
                seen_ref=ray.put(sampler),
                num_negatives=cfg.model.num_negatives,
                seed=seed,
            ),
            batch_size=MAP_BATCH,
            batch_format="numpy",
        )
        seen = prepared.seen()
    val_ds = ray.data.from_pandas(_val_frame(bundle.val, explicit))
    assert explicit or isinstance(bundle.val, HeldOutDataset)
    return StreamingData(
        train=train_ds,
        val=val_ds,
        to_batch=ToBatch(seen),
        artifacts=bundle.artifacts,
        train_rows=len(train),
        val_rows=len(val),
        shuffle_buffer=SHUFFLE_BUFFER,
    )


# -- reading ---------------------------------------------------------------------------


def read_log(cfg: RecsysConfig) -> tuple[Any, str]:
    """The log as a lazy dataset of canonical rows, and its description."""
    import ray.data

    from lepton_recsys.interactions import load_frames
    from lepton_recsys.loaders import resolve, role_columns

    data, explicit = cfg.data, cfg.model.explicit
    min_rating = None if explicit else data.implicit_min_rating
    if data.format == "synthetic":  # generated here: small by construction
        frame, _, desc = load_frames(data, explicit)
        roles = {c: c for c in frame.columns}
        ds = ray.data.from_pandas(frame)
        path = desc
    else:
        source = resolve(data, "path")
        roles = role_columns(data, explicit)
        path, desc = str(source.path), f"{data.format}: {source.path} ({source.kind})"
        if source.kind == "parquet":  # a file or a folder; errors name file and row group
            from engine.parquet_files import check_parquet_files, parquet_files, read_row_groups

            files = [f.resolve() for f in parquet_files(source.path)]
            columns = list(roles.values())
            schema = check_parquet_files(files, columns)
            ds = read_row_groups(files, columns, schema=schema, preserve_order=False)
        else:
            import pyarrow.csv as pacsv

            options = pacsv.ConvertOptions(include_columns=list(roles.values()))
            ds = ray.data.read_csv(path, convert_options=options)
    clean = functools.partial(canonical_batch, roles=roles, path=path, min_rating=min_rating)
    return ds.map_batches(clean, batch_size=MAP_BATCH, batch_format="pandas"), desc


def canonical_batch(
    batch: pd.DataFrame, *, roles: dict[str, str], path: str, min_rating: float | None
) -> pd.DataFrame:
    """Ray Data ``map_batches``: configured columns → canonical ones, checked like the
    map-style reader's (a problem names the file; its row numbers count within the
    batch), rows below ``min_rating`` dropped."""
    from pathlib import Path

    from lepton_recsys.loaders import _clean

    frame = pd.DataFrame({role: batch[column] for role, column in roles.items()})
    if frame.empty:
        return frame
    frame = _clean(frame, Path(path), roles)
    if min_rating is not None and "rating" in frame:
        frame = frame[frame["rating"] >= min_rating].reset_index(drop=True)
    return frame


# -- the split -------------------------------------------------------------------------


def split_user(rows: pd.DataFrame) -> pd.DataFrame:
    """Ray Data ``map_groups``: one user's rows → one row per item (the newest), the
    newest of those marked ``held`` when the user has two or more items (``tied``: its
    timestamp is shared with another item; the larger item id was held out)."""
    ordered = rows.sort_values(["timestamp", "item"], kind="stable")
    kept = ordered.drop_duplicates("item", keep="last").reset_index(drop=True)
    held = np.zeros(len(kept), dtype=bool)
    tied = np.zeros(len(kept), dtype=bool)
    if len(kept) > 1:
        held[-1] = True
        ts = kept["timestamp"].to_numpy()
        tied[-1] = bool(ts[-1] == ts[-2])
    return kept.assign(held=held, tied=tied)


def id_maps(split: Any) -> tuple[IdMap, IdMap]:
    """The users' and items' maps from one aggregation over the split (sorted, as
    ``IdMap.from_values`` sorts)."""
    from ray.data.aggregate import Unique

    found = split.aggregate(Unique("user"), Unique("item"))
    return IdMap(sorted(found["unique(user)"])), IdMap(sorted(found["unique(item)"]))


def collect(
    split: Any, users: IdMap, items: IdMap, explicit: bool
) -> tuple[Interactions, Interactions, int]:
    """The split's rows, encoded, as train and val arrays (val ordered by user), and the
    number of held-out rows whose newest timestamp was tied."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("u", "i", "r", "t", "held")}
    tied = 0
    for batch in split.iter_batches(batch_size=1 << 16, batch_format="pandas"):
        parts["u"].append(users.encode(batch["user"]))
        parts["i"].append(items.encode(batch["item"]))
        if "rating" in batch:
            parts["r"].append(batch["rating"].to_numpy(np.float32))
        parts["t"].append(batch["timestamp"].to_numpy(np.int64))
        parts["held"].append(batch["held"].to_numpy(bool))
        tied += int(batch["tied"].sum())
    u, i, t, held = (np.concatenate(parts[k]) for k in ("u", "i", "t", "held"))
    r = np.concatenate(parts["r"]) if parts["r"] else None
    val_order = np.flatnonzero(held)[np.argsort(u[held], kind="stable")]

    def take(idx: np.ndarray) -> Interactions:
        return Interactions(u[idx], i[idx], None if r is None else r[idx], t[idx])

    if explicit and r is None:
        raise DataError("The data have no ratings, which the model needs.")
    return take(np.flatnonzero(~held)), take(val_order), tied


# -- per epoch, on the cluster's CPUs --------------------------------------------------


def train_rows(
    batch: pd.DataFrame, *, users: IdMap, items: IdMap, columns: list[str]
) -> pd.DataFrame:
    """Ray Data ``map_batches``: the split's training rows, encoded."""
    kept = batch[~batch["held"].to_numpy(bool)]
    out = pd.DataFrame(
        {"user": users.encode(kept["user"]), "item": items.encode(kept["item"])},
        index=kept.index,
    )
    if "rating" in columns:
        out["rating"] = kept["rating"].to_numpy(np.float32)
    return out.reset_index(drop=True)


_SEEN: dict[str, SeenItems] = {}


def add_negatives(
    batch: dict[str, np.ndarray], *, seen_ref: Any, num_negatives: int, seed: int
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches``: ``num_negatives`` sampled items per training row."""
    import ray

    from lepton_recsys.datasets import sample_negatives

    key = seen_ref.hex()
    if key not in _SEEN:  # once per Ray worker process and run
        _SEEN.clear()
        _SEEN[key] = ray.get(seen_ref)
    users = np.asarray(batch["user"], dtype=np.int64)
    rng = np.random.default_rng([seed, 0xBB9, int.from_bytes(os.urandom(8), "little")])
    return {
        "user": users,
        "item": np.asarray(batch["item"], dtype=np.int64),
        "negatives": sample_negatives(_SEEN[key], users, num_negatives, rng),
    }


class ToBatch:
    """The worker's half: a batch from ``iter_torch_batches`` → the dict the map-style
    collate gives (``user`` first); a ranking row also gets its user's known items
    (``known_row``, ``known_item``) from the CSR of every known interaction."""

    def __init__(self, seen: SeenItems | None) -> None:
        self.seen = seen

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"user": batch["user"], **{k: v for k, v in batch.items() if k != "user"}}
        if "target" in out and self.seen is not None:
            device = out["user"].device
            rows, items = self.seen.coords(out["user"].cpu().numpy())
            out["known_row"] = torch.from_numpy(rows).to(device)
            out["known_item"] = torch.from_numpy(items).to(device)
        return out


# -- helpers ---------------------------------------------------------------------------


def _frame(x: Interactions, columns: list[str], start: int = 0) -> pd.DataFrame:
    out = {"user": x.users[start:], "item": x.items[start:]}
    if "rating" in columns:
        assert x.ratings is not None
        out["rating"] = x.ratings[start:].astype(np.float32)
    return pd.DataFrame(out)


def _same_block_type(batch: Any) -> Any:
    """Ray Data ``map_batches`` (pyarrow in and out): every block an Arrow table."""
    return batch


def _val_frame(val: Any, explicit: bool) -> pd.DataFrame:
    """The map-style validation set's rows as columns (a row's candidates: one cell)."""
    from lepton_recsys.datasets import RANK_PREFIX

    if explicit:
        return pd.DataFrame({"user": val.users, "item": val.items, "rating": val.ratings})
    out: dict[str, Any] = {"user": val.users, "target": val.targets}
    if val.negatives is not None:
        out["negatives"] = list(np.asarray(val.negatives, dtype=np.int64))
    for name, ranks in val.baseline_ranks.items():
        out[RANK_PREFIX + name] = np.asarray(ranks)
    return pd.DataFrame(out)


@contextlib.contextmanager
def _quiet_driver() -> Iterator[None]:
    """No progress bars from the driver's own executions (split, id maps, shuffle), and
    shuffles by sort in tasks: no aggregator actors to start for a one-off groupby."""
    from ray.data import DataContext
    from ray.data.context import ShuffleStrategy

    ctx = DataContext.get_current()
    saved = ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.shuffle_strategy
    ctx.enable_progress_bars, ctx.print_on_execution_start = False, False
    ctx.shuffle_strategy = ShuffleStrategy.SORT_SHUFFLE_PULL_BASED
    try:
        yield
    finally:
        ctx.enable_progress_bars, ctx.print_on_execution_start, ctx.shuffle_strategy = saved
