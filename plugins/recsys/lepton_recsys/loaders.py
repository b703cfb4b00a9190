"""Reading interaction logs into one canonical frame: ``user, item[, rating][, timestamp]``.

Formats: ``synthetic`` (generated, see :mod:`lepton_recsys.synthetic`), ``movielens``
(``u.data`` tab-separated without header, ``ratings.dat`` ``::``-separated,
``ratings.csv`` with header ``userId,movieId,rating,timestamp``; found by file name,
then by content, in the given file or directory), ``csv`` and ``parquet`` (columns
from ``task.data.<role>_column``). Every problem is a :class:`DataError` that names the
file and the column.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from engine.errors import DataError
from lepton_recsys.config import RecsysDataConfig

#: MovieLens layouts, in the order a directory is searched.
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_ML_COLUMNS = ["user", "item", "rating", "timestamp"]


@dataclass(frozen=True)
class Source:
    """One file to read and how: ``kind`` is a MovieLens layout, ``csv`` or ``parquet``."""

    path: Path
    kind: str


# -- finding the file --------------------------------------------------------------


def resolve(data: RecsysDataConfig, which: str) -> Source:
    """The file behind ``task.data.<which>`` (``path``, ``train`` or ``val``)."""
    raw = getattr(data, which)
    key = f"task.data.{which}"
    if raw is None:
        raise DataError(f"{key} is not set.", hint=f"Set {key}=/path/to/interactions.")
    path = Path(str(raw)).expanduser()
    if not path.exists():
        raise DataError(f"{key}={path} does not exist.", hint="Check the path.")
    if data.format == "movielens":
        return _movielens_source(path, key)
    if path.is_dir():
        raise DataError(f"{key}={path} is a directory; format {data.format} reads one file.")
    return Source(path, data.format)


def _movielens_source(path: Path, key: str) -> Source:
    if path.is_file():
        return Source(path, _movielens_kind(path))
    search = [path, *sorted(p for p in path.iterdir() if p.is_dir())]
    for folder in search:
        for name in MOVIELENS_FILES:
            if (folder / name).is_file():
                return Source(folder / name, name)
    raise DataError(
        f"{key}={path} holds no MovieLens ratings file.",
        hint=f"Looked for {', '.join(MOVIELENS_FILES)} in it and its sub-directories; "
        "point the path at the ratings file itself if it has another name.",
    )


def _movielens_kind(path: Path) -> str:
    name = path.name.lower()
    if name == "u.data" or path.suffix in (".base", ".test"):
        return "u.data"
    if name.endswith(".dat"):
        return "ratings.dat"
    if name.endswith(".csv"):
        return "ratings.csv"
    with open(path, encoding="utf-8", errors="replace") as fh:
        first = fh.readline().strip()
    if "::" in first:
        return "ratings.dat"
    if first.lower().startswith("userid,"):
        return "ratings.csv"
    if len(first.split("\t")) == 4:
        return "u.data"
    raise DataError(
        f"{path} is not a MovieLens ratings file: its first line is {first[:80]!r}.",
        hint="Expected u.data (user<TAB>item<TAB>rating<TAB>timestamp), ratings.dat "
        "(user::item::rating::timestamp) or ratings.csv (userId,movieId,rating,timestamp).",
    )


# -- checking without reading everything ---------------------------------------------


def columns_of(source: Source) -> list[str]:
    """Column names of a csv/parquet file (the header only)."""
    try:
        if source.kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(source.path).names)
        return list(pd.read_csv(source.path, nrows=0).columns)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {source.path} as {source.kind}: {exc}") from None


def role_columns(data: RecsysDataConfig, explicit: bool) -> dict[str, str]:
    """Canonical role -> configured column name, for csv/parquet."""
    roles = {"user": data.user_column, "item": data.item_column}
    if data.rating_column is not None:
        roles["rating"] = data.rating_column
    if data.timestamp_column is not None:
        roles["timestamp"] = data.timestamp_column
    if explicit and "rating" not in roles:
        raise DataError("This model learns ratings but task.data.rating_column is null.")
    return roles


def check_columns(source: Source, roles: dict[str, str]) -> None:
    available = columns_of(source)
    for role, column in roles.items():
        if column not in available:
            raise DataError(
                f"{source.path} has no column {column!r} (task.data.{role}_column).",
                hint=f"Its columns are: {', '.join(map(str, available)) or 'none'}.",
            )


# -- reading -----------------------------------------------------------------------


def read(source: Source, data: RecsysDataConfig, explicit: bool) -> pd.DataFrame:
    """The whole file as a canonical frame, values checked."""
    if source.kind in MOVIELENS_FILES:
        frame = _read_movielens(source)
        where = {c: c for c in frame.columns}
    else:
        roles = role_columns(data, explicit)
        check_columns(source, roles)
        try:
            if source.kind == "parquet":
                raw = pd.read_parquet(source.path, columns=list(roles.values()))
            else:
                raw = pd.read_csv(source.path, usecols=list(roles.values()))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read {source.path} as {source.kind}: {exc}") from None
        frame = pd.DataFrame({role: raw[col] for role, col in roles.items()})
        where = roles
    return _clean(frame, source.path, where)


def _read_movielens(source: Source) -> pd.DataFrame:
    try:
        if source.kind == "ratings.csv":
            raw = pd.read_csv(source.path)
            expected = ["userId", "movieId", "rating", "timestamp"]
            missing = [c for c in expected if c not in raw.columns]
            if missing:
                raise DataError(
                    f"{source.path} lacks MovieLens column(s) {', '.join(missing)}.",
                    hint=f"A ratings.csv has the header {','.join(expected)}; for other "
                    "columns use task.data.format=csv with task.data.*_column.",
                )
            raw = raw[expected]
            raw.columns = _ML_COLUMNS
            return raw
        text = source.path.read_text(encoding="latin-1")
        if source.kind == "ratings.dat":
            text = text.replace("::", "\t")
        frame = pd.read_csv(io.StringIO(text), sep="\t", header=None)
    except (OSError, ValueError, UnicodeError) as exc:
        raise DataError(f"Cannot read {source.path} as MovieLens {source.kind}: {exc}") from None
    if frame.shape[1] != 4:
        raise DataError(
            f"{source.path} has {frame.shape[1]} fields per line; MovieLens {source.kind} "
            "has 4 (user, item, rating, timestamp)."
        )
    frame.columns = _ML_COLUMNS
    return frame


def _clean(frame: pd.DataFrame, path: Path, where: dict[str, str]) -> pd.DataFrame:
    if frame.empty:
        raise DataError(f"{path} holds no interactions.")
    out = pd.DataFrame(index=frame.index)
    for role in ("user", "item"):
        col = frame[role]
        if col.isna().any():
            row = int(np.flatnonzero(col.isna().to_numpy())[0])
            raise DataError(f"{path}: column {where[role]!r} is empty in data row {row + 1}.")
        if col.dtype.kind == "f" and bool((col == np.floor(col)).all()):
            col = col.astype(np.int64)
        elif col.dtype.kind not in "iu":
            col = col.astype(str)
        out[role] = col
    if "rating" in frame:
        out["rating"] = _numeric(frame["rating"], path, where["rating"]).astype(np.float32)
    if "timestamp" in frame:
        out["timestamp"] = _timestamps(frame["timestamp"], path, where["timestamp"])
    return out.reset_index(drop=True)


def _numeric(col: pd.Series, path: Path, name: str) -> pd.Series:
    values = pd.to_numeric(col, errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {name!r} has a non-numeric value {col.iloc[row]!r} "
            f"in data row {row + 1}."
        )
    return values


def _timestamps(col: pd.Series, path: Path, name: str) -> pd.Series:
    """Seconds (int64) from numbers or date strings."""
    if col.dtype.kind in "iuf":
        return _numeric(col, path, name).astype(np.int64)
    parsed = pd.to_datetime(col, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{path}: column {name!r} has a value {col.iloc[row]!r} in data row {row + 1} "
            "that is neither a number nor a date."
        )
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype(np.int64)
