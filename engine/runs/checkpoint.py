"""Checkpoint directories: safetensors weights, training state, ``task.json``.

Layout of a checkpoint directory::

    model.safetensors           model weights (state dict of the unwrapped model)
    training_state.safetensors  optimizer / scheduler / grad-scaler tensors
    training_state.json         the non-tensor parts of that state
    task.json                   task, plugin, versions, task config, artifacts,
                                epoch, metrics, lineage (config hash, git commit,
                                W&B run, sweep trial: engine.runs.lineage), and the
                                size and SHA-256 of every file above

Nothing here unpickles: tensors come from safetensors, everything else is JSON.
``task.json`` is written last and lists every other file with its size and SHA-256
(:mod:`engine.runs.integrity`): a directory whose copy was cut short is recognised as
incomplete, one whose bytes changed as damaged, and neither is ever loaded.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine import __version__
from engine.errors import CheckpointError
from engine.runs.integrity import (
    FORMAT_VERSION,
    META_FILE,
    check_task,
    check_weights_fit,
    file_records,
    incomplete_reason,
    parse_task_json,
    run_task,
    verify_files,
)
from engine.runs.local_copies import cached_copy
from engine.runs.storage import Location, first_line

if TYPE_CHECKING:
    import torch

    from engine.plugins import PluginRegistry
    from engine.task import TaskInfo

MODEL_FILE = "model.safetensors"
STATE_TENSORS = "training_state.safetensors"
STATE_JSON = "training_state.json"


# -- flattening nested state dicts without pickle -------------------------------


def _flatten(obj: Any, tensors: dict[str, Any], prefix: str) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        key = prefix or "root"
        tensors[key] = obj.detach().cpu().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, dict):
        return {
            "__dict__": [
                [k, _flatten(v, tensors, f"{prefix}.{k}" if prefix else str(k))]
                for k, v in obj.items()
            ]
        }
    if isinstance(obj, (list, tuple)):
        items = [_flatten(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
        return {"__tuple__": items} if isinstance(obj, tuple) else items
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} at {prefix!r} in a checkpoint")


def _unflatten(obj: Any, tensors: dict[str, Any]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _unflatten(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_unflatten(v, tensors) for v in obj["__tuple__"])
        return {k: _unflatten(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unflatten(v, tensors) for v in obj]
    return obj


def to_jsonable(obj: Any) -> Any:
    if is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return obj


# -- writing ----------------------------------------------------------------------


def save_checkpoint(
    directory: str | Path,
    *,
    info: TaskInfo,
    model: torch.nn.Module,
    task_config: Any,
    artifacts: dict[str, Any],
    epoch: int,
    metrics: dict[str, float],
    training_state: dict[str, Any] | None = None,
    seed: int | None = None,
    lineage: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint into ``directory`` (which should be empty/temporary).

    ``lineage``: where it came from (:func:`engine.runs.lineage.build_lineage`), recorded
    as ``task.json``'s ``"lineage"``; left out when None. Readers never need it to load a
    checkpoint (older ones have none).
    """
    from safetensors.torch import save_file, save_model

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path / MODEL_FILE))
    if training_state is not None:
        tensors: dict[str, Any] = {}
        structure = _flatten(training_state, tensors, "")
        save_file(tensors, str(path / STATE_TENSORS))
        _write_json(path / STATE_JSON, structure)
    files = file_records(path)  # hashed here, on rank 0, before Ray copies the files
    meta = {
        "format_version": FORMAT_VERSION,
        "task": info.task.name,
        "plugin": info.plugin,
        "distribution": info.distribution,
        "plugin_version": info.version,
        "engine_version": __version__,
        "epoch": epoch,
        "seed": seed,
        "metrics": metrics,
        "task_config": to_jsonable(task_config),
        "artifacts": artifacts,
        "files": files,
    }
    if lineage is not None:
        meta["lineage"] = to_jsonable(lineage)  # engine.runs.lineage.LINEAGE_KEY
    _write_json(path / META_FILE, meta)  # last: its presence marks the directory whole
    return path


def _write_json(path: Path, data: Any) -> None:
    Location.parse(path).write_text(json.dumps(data, indent=1, allow_nan=True))


# -- reading ----------------------------------------------------------------------


def is_complete(directory: str | Path | Location) -> bool:
    """True when ``task.json`` is valid and every file it lists has the recorded size.

    Sizes only (cheap, also on an object store): lists whole checkpoints. Loading also
    checks the bytes (:func:`verify_checkpoint`).
    """
    where = Location.parse(directory)
    try:
        meta = parse_task_json((where / META_FILE).read_text(), where)
        return incomplete_reason(where, meta) is None
    except (OSError, ValueError, CheckpointError):
        return False


def read_meta(directory: str | Path | Location) -> dict[str, Any]:
    """A whole checkpoint's ``task.json`` (sizes checked, not hashes)."""
    where = Location.parse(directory)
    if not (where / META_FILE).is_file():
        if not where.is_dir():
            raise CheckpointError(f"Checkpoint directory {where} does not exist.")
        raise CheckpointError(
            f"{where} is not a Lepton checkpoint (no {META_FILE}).",
            hint="Pass a run directory or one of its checkpoint_* directories.",
        )
    try:
        text = (where / META_FILE).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"Checkpoint {where}: cannot read {META_FILE} ({first_line(exc)})."
        ) from None
    meta = parse_task_json(text, where)
    reason = incomplete_reason(where, meta)
    if reason is not None:
        raise CheckpointError(
            f"Checkpoint {where} is incomplete: {reason}.",
            hint="Use an earlier checkpoint of the run; this one was not written whole.",
        )
    return meta


def verify_checkpoint(
    directory: str | Path, *, task: str | None = None, remember: bool = True
) -> dict[str, Any]:
    """A local checkpoint's ``task.json`` once every file matches its size and SHA-256
    (and, given ``task``, it is that task's); a CheckpointError naming what is wrong.
    ``remember``: record the check so it is not repeated while the files stay unchanged
    (leave it off for a temporary copy)."""
    path = Path(directory)
    meta = read_meta(path)
    check_task(meta, task, path)
    verify_files(path, meta, remember=remember)
    return meta


def _local_checkpoint(where: Location) -> tuple[Path, dict[str, Any]]:
    meta = read_meta(where)
    if where.is_local:
        verify_files(where.local_path, meta)
        return where.local_path, meta

    def check(staging: Path) -> None:  # before the download is renamed into the cache
        verify_files(staging, meta, shown=where, remember=False)

    path = cached_copy(where, json.dumps(meta, sort_keys=True), check=check)
    verify_files(
        path, meta, shown=f"{where} (cached in {path})", hint=f"Delete {path} and try again."
    )
    return path, meta


def local_checkpoint(directory: str | Path | Location) -> Path:
    """A whole, verified checkpoint on the local disk: itself, or a cached download of a
    remote one (checked after the download, before it enters the cache)."""
    return _local_checkpoint(Location.parse(directory))[0]


def load_training_state(directory: str | Path) -> dict[str, Any] | None:
    from safetensors.torch import load_file

    path = Path(directory)
    if not (path / STATE_JSON).is_file():
        return None
    try:
        tensors = load_file(str(path / STATE_TENSORS)) if (path / STATE_TENSORS).is_file() else {}
        structure = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        result: dict[str, Any] = _unflatten(structure, tensors)
    except Exception as exc:  # safetensors' own error type, JSON, a missing tensor key
        raise CheckpointError(
            f"Checkpoint {path}: its training state ({STATE_TENSORS}, {STATE_JSON}) cannot be "
            f"read: {first_line(exc)}.",
            hint="Use an earlier checkpoint of the run.",
        ) from None
    return result


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Load ``model.safetensors`` into ``model``; a CheckpointError names the tensor whose
    shape differs, or the tensors missing or left over, or why the file cannot be read."""
    from safetensors.torch import load_file

    file = Path(directory) / MODEL_FILE
    try:
        state = load_file(str(file))
    except Exception as exc:  # safetensors raises its own SafetensorError, or OSError
        raise CheckpointError(
            f"{file} is not a readable safetensors file: {first_line(exc)}.",
            hint="Use another checkpoint of the run, or restore this one from a good copy.",
        ) from None
    check_weights_fit(model, state, file)


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint, with everything needed to use it."""

    info: TaskInfo
    model: Any
    task_config: Any
    artifacts: dict[str, Any]
    meta: dict[str, Any]
    #: The local directory it was loaded from (a cached download for a remote checkpoint).
    path: Path

    def predictor(self, device: str = "cpu") -> Any:
        import torch

        dev = torch.device(device)
        self.model.to(dev).eval()
        return self.info.task.build_predictor(self.model, self.task_config, self.artifacts, dev)


def load_model(
    directory: str | Path | Location,
    registry: PluginRegistry | None = None,
    *,
    task: str | None = None,
) -> LoadedModel:
    """Rebuild the task's model from a checkpoint directory (no pickle involved).

    Every file is checked against ``task.json`` first (sizes and SHA-256). ``task``: the
    task the caller expects; by default that of the run the checkpoint is in, if any.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from engine.errors import UnknownTaskError
    from engine.plugins import get_registry

    source = Location.parse(directory)
    path, meta = _local_checkpoint(source)
    check_task(meta, task if task is not None else run_task(source), source)
    registry = registry or get_registry()
    try:
        info = registry.get_task(meta["task"])
    except UnknownTaskError:
        dist = meta.get("distribution") or f"the plugin that provides task {meta['task']!r}"
        raise CheckpointError(
            f"Checkpoint {source} is for task {meta['task']!r}, which no installed plugin provides.",
            hint=f"Install {dist} (version {meta.get('plugin_version') or '?'}) and try again.",
        ) from None
    try:
        schema = OmegaConf.structured(info.task.config_class)
        task_cfg = OmegaConf.to_object(OmegaConf.merge(schema, meta["task_config"]))
    except (OmegaConfBaseException, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"Checkpoint {source}: the task_config in its {META_FILE} is not a valid "
            f"{meta['task']} config ({first_line(exc)}).",
            hint="The checkpoint's task.json was changed or is for another task version.",
        ) from None
    from engine.export.loading import exported_model, is_runtime_export

    if is_runtime_export(meta):  # an ONNX / torch.export export (lepton export)
        model = exported_model(info, task_cfg, meta, path)
    else:
        model = info.task.build_model(task_cfg, meta["artifacts"])
        load_weights(model, path)
    model.eval()
    return LoadedModel(info, model, task_cfg, meta["artifacts"], meta, path)
