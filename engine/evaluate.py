"""``lepton evaluate``: a checkpoint on its validation split or on new data.

The model is rebuilt from the checkpoint (safetensors + ``task.json``), the data
from the checkpoint's task config with any ``task.*`` overrides applied, and the
metrics are the task's own, computed by the same code the training loop validates
with. Results go to ``eval.json`` beside the checkpoint (or where ``-o`` says).
"""

from __future__ import annotations

import inspect
import json
import time
from pathlib import Path
from typing import Any

from engine.checkpoint import META_FILE, LoadedModel, load_model, to_jsonable
from engine.errors import CheckpointError, ConfigError
from engine.run_dir import CONFIG_FILE, RESULT_FILE, latest_checkpoint, read_result
from engine.storage import Location

EVAL_FILE = "eval.json"


def resolve_checkpoint(path: str | Path | Location) -> Location:
    """A checkpoint from a checkpoint or a run directory (its best checkpoint)."""
    p = Location.parse(path)
    if (p / META_FILE).is_file():
        return p
    if (p / CONFIG_FILE).is_file() or (p / RESULT_FILE).is_file():
        best = _best_from_result(p)
        if best is not None:
            return best
        newest = latest_checkpoint(p)
        if newest is None:
            raise CheckpointError(
                f"Run {p} has no complete checkpoint yet.",
                hint="Wait for the first epoch to finish, or resume the run.",
            )
        return newest
    if not p.exists():
        raise CheckpointError(
            f"{p} does not exist.", hint="Pass a run directory or a checkpoint directory."
        )
    raise CheckpointError(
        f"{p} is neither a run directory nor a checkpoint.",
        hint="A run directory holds config.yaml and checkpoint_*/; a checkpoint holds task.json.",
    )


def _best_from_result(run_dir: Location) -> Location | None:
    best = ((read_result(run_dir) or {}).get("summary") or {}).get("best_checkpoint")
    if best and (Location.parse(best) / META_FILE).is_file():
        return Location.parse(best)
    return None


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


def build_eval_data(loaded: LoadedModel, task_cfg: Any, new_data: bool) -> Any:
    task = loaded.info.task
    seed = int(loaded.meta.get("seed") or 0)
    accepts_artifacts = "artifacts" in inspect.signature(task.build_data).parameters
    if accepts_artifacts:
        build: Any = task.build_data
        return build(task_cfg, seed=seed, artifacts=loaded.artifacts)
    if new_data:
        raise CheckpointError(
            f"Task {task.name!r} cannot evaluate a trained model on new data "
            "(its build_data takes no artifacts).",
            hint="Evaluate on the run's own validation split (no task.* overrides).",
        )
    return task.build_data(task_cfg, seed=seed)


def evaluate(
    path: str | Path | Location,
    overrides: list[str],
    output: str | Path | None = None,
    batch_size: int = 256,
) -> dict[str, Any]:
    import torch
    from torch.utils.data import DataLoader

    from engine.loop import validate_epoch
    from engine.precision import plan_precision

    checkpoint = resolve_checkpoint(path)
    loaded = load_model(checkpoint)
    task = loaded.info.task
    task_cfg = apply_task_overrides(loaded, overrides)
    task.check(task_cfg)
    started = time.perf_counter()
    bundle = build_eval_data(loaded, task_cfg, new_data=bool(overrides))
    device = torch.device("cpu")
    loader = DataLoader(
        bundle.val, batch_size=batch_size, shuffle=False, collate_fn=bundle.collate_fn
    )
    metrics = task.build_metrics(task_cfg, loaded.artifacts).to(device)
    loss = validate_epoch(task, loaded.model, loader, metrics, device, plan_precision("32", device))
    values = {"val/loss": loss, **{f"val/{k}": float(v) for k, v in metrics.compute().items()}}
    extras_fn = getattr(task, "evaluation_extras", None)
    extras = (
        extras_fn(loaded.model, loader, task_cfg, loaded.artifacts, device)
        if callable(extras_fn)
        else {}
    )
    result = {
        "checkpoint": str(checkpoint),
        "task": task.name,
        "epoch": loaded.meta.get("epoch"),
        "data": overrides if overrides else "validation split of the run",
        "samples": len(bundle.val),
        "metrics": values,
        "recorded_metrics": loaded.meta.get("metrics", {}),
        "extras": to_jsonable(extras),
        "seconds": round(time.perf_counter() - started, 3),
    }
    target = Location.parse(output) if output else checkpoint / EVAL_FILE
    target.write_text(json.dumps(result, indent=2) + "\n")
    result["written_to"] = str(target)
    return result


def format_result(result: dict[str, Any]) -> str:
    lines = [f"Checkpoint: {result['checkpoint']} (task {result['task']}, epoch {result['epoch']})"]
    lines.append(f"Samples:    {result['samples']}")
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
    lines.append(f"Written to: {result.get('written_to')}")
    return "\n".join(lines)
