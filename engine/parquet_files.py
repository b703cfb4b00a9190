"""Parquet files for any task: listing, footer checks in the driver, and a streamed read
whose errors name the file and the row group.

- :func:`parquet_files`: a ``.parquet`` file, or every ``*.parquet`` under a folder.
- :func:`check_parquet_files`: each file's footer (its metadata, a few KB read from the
  end of the file) in the driver, before Ray starts: an unreadable footer names the file;
  a column missing from a file, or of another type than in the first file, names the
  column, both files and both types. Nothing of the data itself is read.
- :func:`read_row_groups`: a ``ray.data.Dataset`` reading the files one row group per
  task (``pyarrow.parquet.ParquetFile.read_row_group``), in file order then row-group
  order. A row group whose pages cannot be read (a corrupt page, a failed checksum, a
  file cut short) raises :class:`~engine.errors.DataError` naming the file and the row
  group's index, which Ray Data re-raises where the dataset is consumed (the driver, or
  a Ray Train worker: the training driver raises a worker's ``LeptonError`` as it is).

``ray.data.read_parquet`` reads row groups too, but its errors name neither file nor
row group and files of different schemas fail late, inside a worker; these functions are
for the paths where a user's files need naming.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import DataError, clip

SUFFIX = ".parquet"
#: The column :func:`read_row_groups` adds with each row's file (``source_columns=True``).
FILE_COLUMN = "__file"
#: ... and with each row's index within its file.
ROW_COLUMN = "__row"

#: What pyarrow raises for a file it cannot parse (``ArrowInvalid`` is a ``ValueError``,
#: ``ArrowIOError`` an ``OSError``).
_READ_ERRORS = (OSError, ValueError, pa.ArrowException)


def parquet_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` itself when it is a file, else every ``*.parquet`` file under the folder
    ``path`` (recursively, sorted; names starting with ``.`` or ``_`` are skipped, as
    Spark and Arrow skip ``_SUCCESS`` and ``.crc`` files)."""
    root = Path(path).expanduser()
    if root.is_file():
        return [root]
    if not root.exists():
        raise DataError(
            f"Parquet path {root} does not exist.",
            hint="Point it at a .parquet file or a folder holding .parquet files.",
        )
    found = sorted(
        p
        for p in root.rglob(f"*{SUFFIX}")
        if p.is_file()
        and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts)
    )
    if not found:
        raise DataError(
            f"{root} holds no {SUFFIX} files.",
            hint=f"Point it at a {SUFFIX} file or a folder holding {SUFFIX} files "
            "(names ending in .parquet; subfolders are searched too).",
        )
    return found


def read_footer(file: str | os.PathLike[str]) -> pq.FileMetaData:
    """A Parquet file's metadata (its footer); a file that is not Parquet, or cut short,
    is a :class:`DataError` naming it."""
    try:
        return pq.read_metadata(file)
    except _READ_ERRORS as exc:
        raise DataError(
            f"Cannot read the Parquet footer of {file}: {clip(exc)}",
            hint="The file is not Parquet, or it was cut short (an interrupted copy or "
            "write): rewrite it, or move it out of the data folder.",
        ) from None


def _columns_of(schema: pa.Schema) -> str:
    return clip(", ".join(schema.names)) or "(none)"


def check_parquet_files(
    files: Sequence[str | os.PathLike[str]], columns: Sequence[str]
) -> pa.Schema:
    """The ``columns`` of ``files`` (a schema of those columns, in that order, with the
    first file's types), once every file's footer has been read and agrees with it.

    A file whose footer cannot be read, a file without one of ``columns``, and a column
    whose type in a file differs from its type in the first file are each a
    :class:`DataError` naming the file(s), the column and the types.
    """
    if not files:
        raise DataError("No Parquet files were given.", hint="Check the data path.")
    first: pa.Schema | None = None
    first_file = ""
    for file in files:
        schema = read_footer(file).schema.to_arrow_schema()
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise DataError(
                f"Parquet file {file} has no column {missing[0]!r} (its columns: "
                f"{_columns_of(schema)}).",
                hint="Name the right column in the task config (task.data.*_column), or "
                "rewrite the file with it.",
            )
        if first is None:
            first, first_file = schema, str(file)
            continue
        for column in columns:
            want, got = first.field(column).type, schema.field(column).type
            if not _same_type(want, got):
                raise DataError(
                    f"Column {column!r} has type {got} in {file} but {want} in "
                    f"{first_file}: every Parquet file of a dataset must give a column "
                    "the same type.",
                    hint=f"Rewrite {file} with {column!r} as {want} (or move it out of "
                    "the data folder).",
                )
    assert first is not None
    return pa.schema([first.field(c) for c in columns])


def _same_type(a: pa.DataType, b: pa.DataType) -> bool:
    """Equal types, counting a type and its 64-bit-offset twin (``string`` and
    ``large_string``, ``binary`` and ``large_binary``) as one: readers cast between them."""
    return a.equals(b) or _widen(a).equals(_widen(b))


def _widen(t: pa.DataType) -> pa.DataType:
    if pa.types.is_string(t):
        return pa.large_string()
    if pa.types.is_binary(t):
        return pa.large_binary()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_widen(f.type)).with_nullable(True) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.large_list(_widen(t.value_type))
    return t


@dataclass(frozen=True)
class RowGroup:
    """One row group of one file: the unit :func:`read_row_groups` reads in one task."""

    file: str
    index: int
    rows: int
    #: The index in ``file`` of the row group's first row.
    first_row: int


def row_groups(files: Iterable[str | os.PathLike[str]]) -> list[RowGroup]:
    """Every row group of ``files``, in file order then row-group order (footers only)."""
    groups = []
    for file in files:
        meta = read_footer(file)
        start = 0
        for i in range(meta.num_row_groups):
            rows = meta.row_group(i).num_rows
            groups.append(RowGroup(str(Path(file).resolve()), i, rows, start))
            start += rows
    return groups


def read_row_group(
    group: RowGroup, columns: Sequence[str], schema: pa.Schema | None = None
) -> pa.Table:
    """One row group's ``columns`` (cast to ``schema`` when given); a read failure is a
    :class:`DataError` naming the file and the row group."""
    try:
        with pq.ParquetFile(group.file, page_checksum_verification=True) as parquet:
            table = parquet.read_row_group(group.index, columns=list(columns))
        if schema is not None and not table.schema.equals(schema):
            table = table.cast(schema)
    except _READ_ERRORS as exc:
        raise DataError(
            f"Cannot read row group {group.index} of Parquet file {group.file}: {clip(exc)}",
            hint="The file is damaged (a corrupt page, or a file cut short): rewrite it "
            "from its source, or move it out of the data folder.",
        ) from None
    return table


class _ReadRowGroups:
    """``map_batches`` (pyarrow batches): rows ``{file, row_group, ...}`` naming row
    groups → the rows of those row groups."""

    def __init__(self, columns: Sequence[str], schema: pa.Schema | None, source: bool) -> None:
        self.columns, self.schema, self.source = list(columns), schema, source

    def __call__(self, batch: pa.Table) -> pa.Table:
        tables = []
        for item in batch.to_pylist():
            group = RowGroup(item["file"], item["row_group"], item["rows"], item["first_row"])
            table = read_row_group(group, self.columns, self.schema)
            if self.source:
                n = table.num_rows
                names = pa.DictionaryArray.from_arrays(
                    pa.array([0] * n, pa.int32()), pa.array([group.file])
                )
                rows = pa.array(range(group.first_row, group.first_row + n), pa.int64())
                table = table.append_column(FILE_COLUMN, names).append_column(ROW_COLUMN, rows)
            tables.append(table)
        if not tables:
            return self._empty()
        return pa.concat_tables(tables)

    def _empty(self) -> pa.Table:
        if self.schema is None:
            return pa.table({})
        fields = list(self.schema)
        if self.source:
            fields += [
                pa.field(FILE_COLUMN, pa.dictionary(pa.int32(), pa.string())),
                pa.field(ROW_COLUMN, pa.int64()),
            ]
        return pa.schema(fields).empty_table()


def read_row_groups(
    files: Sequence[str | os.PathLike[str]],
    columns: Sequence[str],
    *,
    schema: pa.Schema | None = None,
    shuffle_seed: int | None = None,
    source_columns: bool = False,
    preserve_order: bool = True,
) -> Any:
    """``files``' ``columns`` as a ``ray.data.Dataset`` read one row group per task.

    ``schema`` (what :func:`check_parquet_files` returns) casts every row group to the
    first file's types. The rows come in file order, then row-group order, then row
    order when ``preserve_order`` (the dataset's own execution options: Ray Train's
    ``DataConfig`` replaces them with its own for the datasets it is given); with
    ``shuffle_seed`` the row groups are read in a new order each execution (each epoch),
    drawn from that seed (``randomize_block_order``). ``source_columns`` adds each row's
    file (:data:`FILE_COLUMN`, dictionary-encoded) and its row index in that file
    (:data:`ROW_COLUMN`), for messages that name a bad row. A row group that cannot be
    read raises :class:`DataError` (file and row group) where the dataset is consumed.
    The driver reads each file's footer once here (Ray initialised).
    """
    import ray.data
    from ray.data import RandomSeedConfig

    groups = row_groups(files)
    items = [
        {"file": g.file, "row_group": g.index, "rows": g.rows, "first_row": g.first_row}
        for g in groups
        if g.rows
    ]
    if not items:
        raise DataError(
            f"The Parquet files {clip(', '.join(str(f) for f in files))} hold no rows.",
            hint="Point the data path at files with data.",
        )
    ds: Any = ray.data.from_items(items, override_num_blocks=len(items))
    if shuffle_seed is not None:
        ds = ds.randomize_block_order(
            seed=RandomSeedConfig(seed=shuffle_seed, reseed_after_execution=True)
        )
    ds = ds.map_batches(
        _ReadRowGroups(columns, schema, source_columns),
        batch_size=1,
        batch_format="pyarrow",
        zero_copy_batch=True,
    )
    context = ds.context  # this dataset's own (and what Ray Train's copy of it keeps)
    context.execution_options.preserve_order = preserve_order and shuffle_seed is None
    # The UDFs' own exceptions (a DataError naming the file and row group), not Ray
    # Data's UserCodeException around them: raised where the dataset is consumed as a
    # RayTaskError that is also a DataError, with the message and hint.
    context.raise_original_map_exception = True
    return ds
