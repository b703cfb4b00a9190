"""Where an export goes and what it records: the output directory (written whole or not
at all), its ``task.json`` (a checkpoint's, plus the ``export`` record; every file's size
and SHA-256, as checkpoints list them) and ``export.json`` (the trade: size, metric and
latency before and after).

An export is written into a hidden staging directory beside its destination and renamed
into place once ``task.json`` is in it: a crash leaves a ``.<name>.partial-<pid>`` folder,
never a directory that looks whole. An object-store destination gets every file uploaded
first and ``task.json`` last (its presence marks the export whole there too).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from engine import __version__
from engine.errors import OutputError
from engine.runs.checkpoint import META_FILE, to_jsonable
from engine.runs.integrity import FORMAT_VERSION, file_records
from engine.runs.outputs import run_file_owner
from engine.runs.storage import Location

EXPORT_JSON = "export.json"
EXPORTS_DIR = "exports"


def default_output(checkpoint: Location, fmt: str, quantize: str | None) -> Location:
    """``<run>/exports/<checkpoint>-<format>[-int8]`` beside a local run; for a remote one
    ``./exports/<run>-<checkpoint>-<format>[-int8]``."""
    name = f"{checkpoint.name}-{fmt}" + (f"-{quantize}" if quantize else "")
    if checkpoint.is_local:
        return Location.parse(checkpoint.local_path.parent / EXPORTS_DIR / name)
    return Location.parse(Path.cwd() / EXPORTS_DIR / f"{checkpoint.parent.name}-{name}")


def check_output(dest: Location, *, force: bool) -> None:
    """Refuse a destination inside a run's own files or checkpoints, a checkpoint, and one
    that exists (without ``force``; with it, only an earlier export is replaced)."""
    owned = run_file_owner(dest)
    if owned is None and (dest / META_FILE).is_file() and not _is_export(dest):
        owned = (dest, "a checkpoint")
    if owned is not None:
        home, what = owned
        raise OutputError(
            f"Refusing to write an export into {dest}: it is {what} ({home}).",
            hint="Choose an -o outside the run's checkpoints (the default is <run>/exports/...).",
        )
    if not dest.exists():
        return
    if not force:
        raise OutputError(
            f"Refusing to overwrite {dest} (it exists).",
            hint="Pass --force to replace it, or choose another -o.",
        )
    if not _is_export(dest) and (not dest.is_dir() or dest.children()):
        raise OutputError(
            f"Refusing to replace {dest}: it is not an earlier export.",
            hint="Choose another -o (--force replaces only an earlier export).",
        )


def _is_export(where: Location) -> bool:
    try:
        meta = json.loads((where / META_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and isinstance(meta.get("export"), dict)


def staging_dir(dest: Location) -> Path:
    """A fresh local directory to write the export in (beside ``dest`` when it is local)."""
    import tempfile

    if dest.is_local:
        parent = dest.local_path.parent
        parent.mkdir(parents=True, exist_ok=True)
        path = parent / f".{dest.name}.partial-{os.getpid()}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path
    return Path(tempfile.mkdtemp(prefix="lepton-export-"))


def export_meta(source_meta: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """A ``task.json`` for the export: the checkpoint's task, config, artifacts, epoch,
    metrics and lineage, plus the ``export`` record (``files`` is added when written)."""
    keep = ("task", "plugin", "distribution", "plugin_version", "epoch", "seed", "metrics")
    meta = {k: source_meta.get(k) for k in keep}
    meta.update(
        format_version=FORMAT_VERSION,
        engine_version=__version__,
        task_config=source_meta["task_config"],
        artifacts=source_meta["artifacts"],
    )
    if source_meta.get("lineage") is not None:
        meta["lineage"] = source_meta["lineage"]
    meta["export"] = to_jsonable(record)
    return meta


def finish(staging: Path, dest: Location, meta: dict[str, Any], report: dict[str, Any]) -> None:
    """Write ``export.json`` and ``task.json`` (last) into ``staging``, then put it in place
    as ``dest`` (replacing an earlier export there)."""
    (staging / EXPORT_JSON).write_text(json.dumps(to_jsonable(report), indent=2) + "\n")
    meta = {**meta, "files": file_records(staging)}
    (staging / META_FILE).write_text(json.dumps(meta, indent=1, allow_nan=True))
    if not dest.is_local:
        for path in sorted(staging.iterdir()):
            if path.name != META_FILE:
                (dest / path.name).write_bytes(path.read_bytes())
        (dest / META_FILE).write_bytes((staging / META_FILE).read_bytes())
        shutil.rmtree(staging, ignore_errors=True)
        return
    target = dest.local_path
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
