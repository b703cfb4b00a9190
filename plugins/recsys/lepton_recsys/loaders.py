"""Reading interaction logs into one canonical frame: ``user, item[, rating][, timestamp]``.

Formats: ``synthetic`` (generated, see :mod:`lepton_recsys.synthetic`), ``movielens``
(``u.data`` tab-separated without header, ``ratings.dat`` ``::``-separated,
``ratings.csv`` with header ``userId,movieId,rating,timestamp``; found by file name,
then by content, in the given file or directory), ``csv`` and ``parquet`` (columns
from ``task.data.<role>_column``; a ``parquet`` path may be a folder of ``.parquet``
files, read as one log: :mod:`engine.parquet_files`). Every problem is a
:class:`DataError` that names the file and the column; a value quoted from the file is
cut to a readable length. A Parquet file's footer is read before its rows: a folder
whose files give a column different types is refused naming the column and both files,
and a row group that cannot be read names the file and the row group.

Ids (user and item) are checked in the driver, before Ray starts (:func:`check_ids`,
reading just those two columns): a NaN or empty id, a negative one or a number that is
not whole is refused, naming the first rows and the count. The workers' reader applies
the same rules.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from engine.errors import DataError, clip, clip_repr
from engine.parquet_files import (
    check_parquet_files,
    parquet_files,
    read_footer,
    read_row_group,
    row_groups,
)
from lepton_recsys.config import RecsysDataConfig

#: MovieLens layouts, in the order a directory is searched.
MOVIELENS_FILES = ("u.data", "ratings.dat", "ratings.csv")
_ML_COLUMNS = ["user", "item", "rating", "timestamp"]
#: Id cells that mean "no value" in a text column (read_csv turns most into NaN already).
NA_IDS = frozenset({"", "nan", "na", "n/a", "null", "none", "<na>", "#n/a"})
#: Rows named per problem in a message (the count is always given).
SHOWN_ROWS = 5


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
        if data.format == "parquet":
            parquet_files(path)  # a folder without .parquet files: say so here
            return Source(path, "parquet")
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
        f"{path} is not a MovieLens ratings file: its first line is {clip_repr(first)}.",
        hint="Expected u.data (user<TAB>item<TAB>rating<TAB>timestamp), ratings.dat "
        "(user::item::rating::timestamp) or ratings.csv (userId,movieId,rating,timestamp).",
    )


# -- checking without reading everything ---------------------------------------------


def columns_of(source: Source) -> list[str]:
    """Column names of a csv/parquet file (the header only; a Parquet folder's first file's
    footer)."""
    if source.kind == "parquet":
        return _footer_columns(parquet_files(source.path)[0])
    try:
        return list(pd.read_csv(source.path, nrows=0).columns)
    except (OSError, ValueError) as exc:
        raise DataError(f"Cannot read {source.path} as {source.kind}: {clip(exc)}") from None


def column_list(columns: list[object]) -> str:
    """A file's columns for a message, each and all cut to a readable length."""
    return clip(", ".join(clip(c, 60) for c in columns)) or "none"


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


def _footer_columns(path: Path) -> list[str]:
    return list(read_footer(path).schema.to_arrow_schema().names)


def check_columns(source: Source, roles: dict[str, str]) -> None:
    """Every configured column present (for Parquet: in every file of a folder, each
    column of one type across the files, from the footers: ``check_parquet_files``)."""
    files = parquet_files(source.path) if source.kind == "parquet" else [source.path]
    for file in files:
        available = _footer_columns(file) if source.kind == "parquet" else columns_of(source)
        for role, column in roles.items():
            if column not in available:
                raise DataError(
                    f"{file} has no column {clip_repr(column)} (task.data.{role}_column).",
                    hint=f"Its columns are: {column_list(available)}.",
                )
    if source.kind == "parquet" and len(files) > 1:
        check_parquet_files(files, list(roles.values()))


def read_parquet(path: Path, columns: list[str]) -> pd.DataFrame:
    """``columns`` of a Parquet file or folder, row group by row group (the first file's
    types); a damaged row group is a :class:`DataError` naming the file and the row group."""
    files = parquet_files(path)
    schema = check_parquet_files(files, columns)
    tables = [read_row_group(g, columns, schema) for g in row_groups(files)]
    table = pa.concat_tables(tables) if tables else schema.empty_table()
    return table.to_pandas()


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
                raw = read_parquet(source.path, list(roles.values()))
            else:
                raw = pd.read_csv(source.path, usecols=list(roles.values()))
        except (OSError, ValueError) as exc:
            raise DataError(f"Cannot read {source.path} as {source.kind}: {clip(exc)}") from None
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
        raise DataError(
            f"Cannot read {source.path} as MovieLens {source.kind}: {clip(exc)}"
        ) from None
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
        out[role] = check_ids(frame[role], path, where[role])
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
            f"{path}: column {name!r} has a non-numeric value {clip_repr(col.iloc[row])} "
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
            f"{path}: column {name!r} has a value {clip_repr(col.iloc[row])} in data row {row + 1} "
            "that is neither a number nor a date."
        )
    seconds = (parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    return seconds.astype(np.int64)


# -- ids ---------------------------------------------------------------------------------


def read_ids(source: Source, data: RecsysDataConfig) -> pd.DataFrame:
    """Just the user and item columns of a file (``user``, ``item``), for :func:`check_ids`."""
    try:
        if source.kind == "parquet":
            raw = read_parquet(source.path, [data.user_column, data.item_column])
            return raw.set_axis(["user", "item"], axis=1)
        if source.kind == "csv":
            raw = pd.read_csv(source.path, usecols=[data.user_column, data.item_column])
            return raw[[data.user_column, data.item_column]].set_axis(["user", "item"], axis=1)
        if source.kind == "ratings.csv":
            raw = pd.read_csv(source.path, usecols=["userId", "movieId"], encoding="latin-1")
            return raw[["userId", "movieId"]].set_axis(["user", "item"], axis=1)
        # u.data: user<TAB>item<TAB>...; ratings.dat: user::item::... (":" splits it in 7)
        sep, cols = ("\t", [0, 1]) if source.kind == "u.data" else (":", [0, 2])
        raw = pd.read_csv(source.path, sep=sep, header=None, usecols=cols, encoding="latin-1")
        return raw.set_axis(["user", "item"], axis=1)
    except (OSError, ValueError, UnicodeError) as exc:
        raise DataError(f"Cannot read {source.path} as {source.kind}: {clip(exc)}") from None


def _value(value: object) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return clip_repr(value, 40)


def _rows(mask: np.ndarray, values: np.ndarray | None = None) -> str:
    rows = np.flatnonzero(mask)
    shown = [
        f"{r + 1}" if values is None else f"{r + 1} ({_value(values[r])})"
        for r in rows[:SHOWN_ROWS]
    ]
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"data row{'s' if len(rows) > 1 else ''} {', '.join(shown)}{more}"


def check_ids(col: pd.Series, path: Path, name: str) -> pd.Series:
    """An id column in canonical form (``int64`` for whole numbers, else ``str``); a
    missing, negative or fractional id is a :class:`DataError` naming the first rows."""
    values = col.to_numpy()
    problems: list[tuple[str, np.ndarray, bool]] = []  # (what, mask, quote the values)
    if col.dtype.kind in "iu":
        problems.append(("negative", values < 0, True))
    elif col.dtype.kind == "f":
        missing = np.isnan(values)
        negative = ~missing & (values < 0)
        finite = np.isfinite(values)
        whole = finite & (values == np.floor(np.where(finite, values, 0)))
        problems.append(("empty or NaN", missing, False))
        problems.append(("negative", negative, True))
        problems.append(("not a whole number", ~missing & ~negative & ~whole, True))
    else:
        text = col.astype(str).str.strip().str.lower()
        problems.append(("empty or NaN", (col.isna() | text.isin(NA_IDS)).to_numpy(), False))
    found = [(what, mask, quote) for what, mask, quote in problems if mask.any()]
    if found:
        total = int(sum(mask.sum() for _, mask, _ in found))
        parts = [
            f"{int(mask.sum())} {what} ({_rows(mask, values if quote else None)})"
            for what, mask, quote in found
        ]
        raise DataError(
            f"{path}: column {clip_repr(name)} has {total} invalid id{'s' if total > 1 else ''}: "
            + "; ".join(parts)
            + ".",
            hint="User and item ids must be whole numbers >= 0, or text; fix or remove these rows.",
        )
    if col.dtype.kind == "f":
        return col.astype(np.int64)
    return col if col.dtype.kind in "iu" else col.astype(str)
