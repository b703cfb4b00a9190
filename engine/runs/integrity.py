"""What a checkpoint's ``task.json`` records about its files, and checking it.

``task.json`` (format 2) lists every other file of the checkpoint with its size and
SHA-256; format 1 recorded sizes only and is still read (by size). Sizes are cheap to
check anywhere, also on an object store, and tell a whole checkpoint from one whose copy
stopped part-way (:func:`incomplete_reason`). Hashes need every byte, so they are
checked on the local files that are about to be loaded (:func:`verify_files`): in place
for a local checkpoint, after the download for a remote one.

Hashing a large model on every load would be slow, so a verified checkpoint is
remembered: a small JSON marker under ``<cache_dir>/verified/``, one per checkpoint
(named by a hash of its real path), holding the digest of the records it was checked
against and each file's size, mtime, ctime and inode at the time. The marker counts only
while all of those still match; any write to a file (or a new ``task.json``) changes
them and the files are hashed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import CheckpointError
from engine.runs.local_copies import cache_dir
from engine.runs.storage import Location

if TYPE_CHECKING:
    import torch

META_FILE = "task.json"
#: 2: ``files`` records each file's size and SHA-256 (1: sizes only, still read).
FORMAT_VERSION = 2
_CHUNK = 1 << 20
#: Markers kept before the oldest are dropped (each is a few hundred bytes).
_MAX_MARKERS = 1000

#: A file's record: (size in bytes, SHA-256 hex digest or None for format 1).
Record = tuple[int, str | None]


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(directory: Path) -> dict[str, dict[str, Any]]:
    """``{name: {"size", "sha256"}}`` for every file in ``directory`` but ``task.json``."""
    return {
        p.name: {"size": p.stat().st_size, "sha256": sha256_of(p)}
        for p in sorted(directory.iterdir())
        if p.is_file() and p.name != META_FILE
    }


# -- task.json ----------------------------------------------------------------------

_REQUIRED = {"task": str, "epoch": int, "task_config": dict, "artifacts": dict, "files": dict}


def parse_task_json(text: str, where: Location | Path | str) -> dict[str, Any]:
    """The checked contents of a checkpoint's ``task.json``; a CheckpointError naming the
    file and what is wrong when it is not valid JSON or lacks what a checkpoint needs."""
    shown = f"its {META_FILE}"
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(
            f"Checkpoint {where} is damaged: {shown} is not valid JSON "
            f"(line {exc.lineno}, column {exc.colno}: {exc.msg}).",
            hint=_OTHER_CHECKPOINT,
        ) from None
    if not isinstance(meta, dict):
        raise CheckpointError(
            f"Checkpoint {where} is damaged: {shown} holds a {type(meta).__name__}, not an object.",
            hint=_OTHER_CHECKPOINT,
        )
    version = meta.get("format_version", 0)
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {where} has format version {version}; this engine "
            f"reads up to {FORMAT_VERSION}.",
            hint="Upgrade lepton-engine.",
        )
    for key, kind in _REQUIRED.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            got = "missing" if key not in meta else f"a {type(value).__name__}"
            raise CheckpointError(
                f"Checkpoint {where} is damaged: {shown} field {key!r} should be "
                f"{'a string' if kind is str else 'an integer' if kind is int else 'an object'}"
                f", is {got}.",
                hint=_OTHER_CHECKPOINT,
            )
    listed_files(meta, where)  # the records themselves are well-formed
    return meta


_OTHER_CHECKPOINT = (
    "Use another checkpoint of the run (lepton evaluate <run>/checkpoint_...), "
    "or restore this one from a good copy."
)


def listed_files(meta: dict[str, Any], where: Location | Path | str) -> dict[str, Record]:
    """The files ``task.json`` records, as (size, sha256 or None), for format 1 and 2."""
    records: dict[str, Record] = {}
    for name, entry in meta["files"].items():
        if isinstance(entry, int) and not isinstance(entry, bool):  # format 1: the size
            records[name] = (entry, None)
            continue
        size = entry.get("size") if isinstance(entry, dict) else None
        digest = entry.get("sha256") if isinstance(entry, dict) else None
        if (
            not isinstance(size, int)
            or isinstance(size, bool)
            or not isinstance(digest, str)
            or len(digest) != 64
        ):
            raise CheckpointError(
                f"Checkpoint {where} is damaged: its {META_FILE} records {name!r} "
                f"as {json.dumps(entry)}, not a size and a SHA-256.",
                hint=_OTHER_CHECKPOINT,
            )
        records[name] = (size, digest)
    return records


def incomplete_reason(where: Location, meta: dict[str, Any]) -> str | None:
    """Why the files of the checkpoint at ``where`` do not have their recorded sizes
    (a copy or an upload cut short), or None when they all do."""
    for name, (size, _) in listed_files(meta, where).items():
        try:
            actual = (where / name).size()
        except FileNotFoundError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual} bytes, its {META_FILE} records {size}"
    return None


# -- hashes, remembered -----------------------------------------------------------------


def verify_files(
    directory: Path,
    meta: dict[str, Any],
    *,
    shown: Location | Path | str | None = None,
    hint: str | None = None,
    remember: bool = True,
) -> None:
    """Check every file of the local checkpoint ``directory`` against ``meta``'s records.

    A CheckpointError names the file and what is wrong (missing, cut short, other bytes).
    ``shown`` is how the checkpoint is named in messages (its source, for a download);
    with ``remember`` a successful check is recorded, and not repeated while the files
    stay as they are.
    """
    shown = shown if shown is not None else directory
    records = listed_files(meta, shown)
    records_digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()
    stats = _stats(directory, records)
    marker = _marker_path(directory)
    expected = {"path": str(directory.resolve()), "records": records_digest, "files": stats}
    if remember and stats is not None and _read_marker(marker) == expected:
        return
    reason = incomplete_reason(Location.parse(directory), meta)
    if reason is not None:
        raise CheckpointError(
            f"Checkpoint {shown} is incomplete: {reason}.",
            hint=hint or "Use an earlier checkpoint of the run; this one was not written whole.",
        )
    for name, (_, digest) in records.items():
        if digest is None:
            continue  # format 1: sizes only
        actual = sha256_of(directory / name)
        if actual != digest:
            raise CheckpointError(
                f"Checkpoint {shown} is damaged: {name} does not match the SHA-256 its "
                f"{META_FILE} records (recorded {digest[:12]}…, file has {actual[:12]}…); "
                "the file was changed after the checkpoint was written.",
                hint=hint or _OTHER_CHECKPOINT,
            )
    if remember and stats is not None:
        _write_marker(marker, expected)


def _stats(directory: Path, records: dict[str, Record]) -> dict[str, list[int]] | None:
    out = {}
    for name in sorted(records):
        try:
            st = os.stat(directory / name)
        except OSError:
            return None
        out[name] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    return out


def _marker_path(directory: Path) -> Path:
    key = hashlib.sha256(str(directory.resolve()).encode()).hexdigest()[:32]
    return cache_dir() / "verified" / f"{key}.json"


def _read_marker(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_marker(path: Path, data: dict[str, Any]) -> None:
    """Best effort: without a writable cache, checkpoints are simply hashed every load."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, path)
        markers = list(path.parent.glob("*.json"))
        if len(markers) > _MAX_MARKERS:
            markers.sort(key=lambda p: p.stat().st_mtime)
            for old in markers[: len(markers) - _MAX_MARKERS // 2]:
                old.unlink(missing_ok=True)
    except OSError:
        pass


# -- what the caller expects --------------------------------------------------------------


def check_task(meta: dict[str, Any], expected: str | None, where: Any) -> None:
    if expected is not None and meta["task"] != expected:
        raise CheckpointError(
            f"Checkpoint {where} is for task {meta['task']!r} (its {META_FILE}), not {expected!r}.",
            hint=f"Use a checkpoint of a {expected} run; this one is not from this run's task.",
        )


def run_task(checkpoint: Location) -> str | None:
    """The task of the run a checkpoint sits in (its parent's ``config.yaml``), if any.

    A checkpoint outside a run, or beside an unreadable config, expects no task.
    """
    import yaml

    try:
        cfg = yaml.safe_load((checkpoint.parent / "config.yaml").read_text())
        name = cfg["task"]["name"]
    except (OSError, ValueError, yaml.YAMLError, KeyError, TypeError):
        return None
    return name if isinstance(name, str) else None


def check_weights_fit(model: torch.nn.Module, state: dict[str, Any], file: Path) -> None:
    """Load ``state`` (read from ``file``) into ``model``; a CheckpointError names the
    tensor whose shape differs, or the tensors missing or left over."""
    expected = model.state_dict()
    kind = type(model).__name__
    for name, tensor in state.items():
        want = expected.get(name)
        if want is not None and tuple(want.shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{file} does not fit the model: tensor {name!r} has shape "
                f"{list(tensor.shape)}, the {kind} built from {META_FILE} expects {list(want.shape)}.",
                hint="The weights and task.json's task_config disagree; use another checkpoint.",
            )
    # safetensors stores a tensor shared by several names (tied weights) once.
    storage = {n: t.untyped_storage().data_ptr() for n, t in expected.items() if t.numel()}
    stored = {storage[n] for n in state if n in storage}
    missing = [n for n in expected if n not in state and storage.get(n) not in stored]
    unexpected = [n for n in state if n not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"lacks tensor(s) {', '.join(map(repr, sorted(missing)[:5]))}")
        if unexpected:
            parts.append(
                f"holds tensor(s) {', '.join(map(repr, sorted(unexpected)[:5]))} the model does not have"
            )
        raise CheckpointError(
            f"{file} does not fit the {kind} built from {META_FILE}: it {' and '.join(parts)}.",
            hint="The weights and task.json's task_config disagree; use another checkpoint.",
        )
    model.load_state_dict(state, strict=False)
