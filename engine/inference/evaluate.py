"""``lepton evaluate``: a checkpoint on its validation split or on new data.

The model is rebuilt from the checkpoint (safetensors + ``task.json``), the data
from the checkpoint's task config with any ``task.*`` overrides applied, and the
metrics are the task's own, computed by the same code the training loop validates
with. A sweep directory means its best trial's checkpoint (``best.json``). Results go to
``eval.json`` beside the checkpoint, so for a sweep inside the best trial's directory (or
where ``-o`` says: an existing file there only with ``force``, never a run's own files).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from engine.errors import ConfigError
from engine.export.loading import format_and_precision
from engine.inference.evaluate_data import build_eval_data as build_eval_data  # re-exported
from engine.inference.evaluate_data import evaluation_data
from engine.runs.checkpoint import LoadedModel, load_model, to_jsonable
from engine.runs.layout import EVAL_FILE, display_epoch, resolve_checkpoint
from engine.runs.lineage import describe, lineage_of
from engine.runs.outputs import check_output_path
from engine.runs.storage import Location
from engine.runs.sweep_dir import is_sweep_dir
from engine.task_monitoring import without_extra


def apply_task_overrides(loaded: LoadedModel, overrides: list[str]) -> Any:
    """The checkpoint's task config with ``task.…=value`` overrides merged in, validated."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    if not overrides:
        return loaded.task_config
    bad = [o for o in overrides if not o.startswith("task.") or "=" not in o]
    if bad:
        raise ConfigError(
            f"Only task.* overrides apply to a trained model; got {', '.join(bad)}.",
            hint="e.g. task.data.path=new.csv task.data.format=csv",
        )
    dotlist = [o[len("task.") :] for o in overrides]
    schema = OmegaConf.structured(loaded.info.task.config_class)
    try:
        merged = OmegaConf.merge(
            schema, to_jsonable(loaded.task_config), OmegaConf.from_dotlist(dotlist)
        )
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "?"
        raise ConfigError(f"Invalid override for task.{key}: {str(exc).splitlines()[0]}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Invalid task config: {exc}") from None


def validation_metrics(
    task: Any, model: Any, bundle: Any, task_cfg: Any, artifacts: Any, batch_size: int = 256
) -> tuple[dict[str, float], Any]:
    """The task's metrics (``val/…``, and ``val/loss``) of ``model`` on ``bundle.val``, on
    the CPU in fp32, by the code the training loop validates with; and the loader used."""
    from engine.inference.evaluate_data import map_style_loader

    loader = map_style_loader(bundle, batch_size)
    return metrics_on(task, model, loader, task_cfg, artifacts), loader


def metrics_on(
    task: Any, model: Any, loader: Any, task_cfg: Any, artifacts: Any
) -> dict[str, float]:
    """The task's metrics of ``model`` over the batches of ``loader`` (CPU, fp32)."""
    import torch

    from engine.train.loop import validate_epoch
    from engine.train.precision import plan_precision

    device = torch.device("cpu")
    metrics = task.build_metrics(task_cfg, artifacts).to(device)
    loss = validate_epoch(task, model, loader, metrics, device, plan_precision("32", device))
    return {"val/loss": loss, **{f"val/{k}": float(v) for k, v in metrics.compute().items()}}


def evaluate(
    path: str | Path | Location,
    overrides: list[str],
    output: str | Path | None = None,
    batch_size: int = 256,
    *,
    force: bool = False,
) -> dict[str, Any]:
    import torch

    checkpoint = resolve_checkpoint(path)
    target = checkpoint / EVAL_FILE  # the engine's own: replaced on every evaluation
    if output is not None and Location.parse(output) != target:
        check_output_path(output, force=force)
        target = Location.parse(output)
    loaded = load_model(checkpoint)
    task = loaded.info.task
    task_cfg = without_extra(apply_task_overrides(loaded, overrides))
    task.check(task_cfg)
    started = time.perf_counter()
    device = torch.device("cpu")
    with evaluation_data(loaded, task_cfg, new_data=bool(overrides), batch_size=batch_size) as data:
        values = metrics_on(task, loaded.model, data.loader, task_cfg, loaded.artifacts)
        extras = (
            task.evaluation_extras(loaded.model, data.loader, task_cfg, loaded.artifacts, device)  # type: ignore[attr-defined]
            if loaded.info.features.evaluation_extras
            else {}
        )
    result = {
        "checkpoint": str(checkpoint),
        "task": task.name,
        "epoch": loaded.meta.get("epoch"),
        "format": format_and_precision(loaded.meta)[0],
        "precision": format_and_precision(loaded.meta)[1],
        "data": overrides if overrides else "validation split of the run",
        "samples": data.samples,
        "streamed": data.streamed,
        "metrics": values,
        "recorded_metrics": loaded.meta.get("metrics", {}),
        "lineage": lineage_of(loaded.meta),
        "extras": to_jsonable(extras),
        "seconds": round(time.perf_counter() - started, 3),
    }
    # Inside the run, eval.json names its checkpoint as result.json does: by its name
    # (the run may be copied or moved); the result returned keeps where it was read.
    inside = target == checkpoint / EVAL_FILE
    written = {**result, "checkpoint": checkpoint.name} if inside else result
    target.write_text(json.dumps(written, indent=2) + "\n")
    result["written_to"] = str(target)
    if is_sweep_dir(path):  # the best trial's checkpoint: its eval.json is in that trial
        result["sweep"] = {"dir": str(path), "trial": checkpoint.parent.name}
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [
        f"Checkpoint: {result['checkpoint']} (task {result['task']}, epoch {display_epoch(result['epoch'])})"
    ]
    if result.get("format", "checkpoint") != "checkpoint":
        lines.append(
            f"Model:      {result['format']} {result.get('precision', '')} (lepton export)"
        )
    if "lineage" in result:
        lines.append(f"Lineage:    {describe(result['lineage'])}")
    streamed = " (streamed through Ray Data)" if result.get("streamed") else ""
    lines.append(f"Samples:    {result['samples']}{streamed}")
    width = max(len(k) for k in result["metrics"])
    for key, value in result["metrics"].items():
        lines.append(f"  {key.ljust(width)}  {value:.4f}")
    per_class = result.get("extras", {}).get("per_class")
    if per_class:
        name_w = max(len("class"), *(len(n) for n in per_class)) + 2
        lines.append(f"  {'class'.ljust(name_w)}precision  recall  f1      support")
        for name, s in per_class.items():
            lines.append(
                f"  {name.ljust(name_w)}{s['precision']:.4f}     {s['recall']:.4f}  {s['f1']:.4f}  {s['support']}"
            )
    for key, value in result.get("extras", {}).items():
        if isinstance(value, (int, float)):
            lines.append(f"  {key}  {value:.4f}")
    sweep = result.get("sweep")
    where = f" (in the best trial {sweep['trial']} of sweep {sweep['dir']})" if sweep else ""
    lines.append(f"Written to: {result.get('written_to')}{where}")
    return "\n".join(lines)
