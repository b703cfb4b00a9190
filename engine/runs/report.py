"""``lepton report``: PNG plots and a ``report.md`` a person reads first.

Everything comes from the run directory: ``metrics.jsonl`` (loss, metrics and
throughput per epoch), ``result.json`` (status, best checkpoint, wall time),
``config.yaml``, the best checkpoint's ``task.json``, and, when present, its
``eval.json`` from ``lepton evaluate`` (confusion matrix).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from engine.errors import CheckpointError, RunFileError
from engine.runs.checkpoint import META_FILE
from engine.runs.layout import (
    CONFIG_FILE,
    EVAL_FILE,
    best_checkpoint,
    display_epoch,
    load_result,
    read_config,
    read_json,
    read_metrics,
)
from engine.runs.lineage import describe, lineage_of
from engine.runs.storage import Location, first_line

REPORT_FILE = "report.md"
REPORT_DIR = "report"
FIGSIZE = (8.0, 4.5)
DPI = 100  # images are 800×450 pixels (the confusion matrix 600×600)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks() -> Any:
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _line_plot(
    path: Path, epochs: list[int], series: dict[str, list[float]], title: str, ylabel: str
) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    for label, values in series.items():
        ax.plot(epochs, values, marker="o", label=label)
    ax.set_title(title)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


#: Dashed lines of a metric's baselines: any colour but the model's green.
_BASELINE_COLORS = ["tab:blue", "tab:orange", "tab:red", "tab:purple", "tab:gray"]


def _metric_grid(path: Path, epochs: list[int], series: dict[str, list[float]]) -> None:
    """One panel per metric, its baselines in it (:mod:`engine.runs.metric_panels`)."""
    from engine.runs.metric_panels import baseline_label, panels

    plt = _plt()
    grouped = panels(list(series))
    n = len(grouped)
    cols = min(3, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=FIGSIZE, dpi=DPI, squeeze=False)
    for ax, (name, baselines) in zip(axes.flat, grouped.items(), strict=False):
        ax.plot(epochs, series[name], marker="o", color="tab:green", label="model")
        for key, color in zip(baselines, _BASELINE_COLORS * len(baselines), strict=False):
            ax.plot(epochs, series[key], "--", color=color, label=baseline_label(key, name))
        if baselines:
            ax.legend(fontsize=6)
        ax.set_title(name, fontsize=9)
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _bar_plot(path: Path, epochs: list[int], values: list[float]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    ax.bar(epochs, values, color="tab:blue")
    ax.set_title("training throughput")
    ax.set_xlabel("epoch")
    ax.set_ylabel("samples / second")
    ax.grid(alpha=0.3, axis="y")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def _confusion_plot(path: Path, matrix: list[list[int]], names: list[str]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 6), dpi=DPI)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = max((max(r) for r in matrix), default=0)
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > top / 2 else "black",
            )
    ax.set_title("confusion matrix (validation)")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def write_report(run_dir: str | Path | Location) -> Location:
    """Write ``report.md`` and its plots into the run directory (local or remote)."""
    run_dir = Location.parse(run_dir)
    if run_dir.is_local:
        return _write_report(run_dir, run_dir.local_path)
    with tempfile.TemporaryDirectory(prefix="lepton-report-") as tmp:
        _write_report(run_dir, Path(tmp))
        run_dir.upload(Path(tmp))
    return run_dir / REPORT_FILE


def _write_report(run_dir: Location, local: Path) -> Location:
    """Render from ``run_dir`` into the local directory ``local``.

    A damaged ``config.yaml`` or ``result.json`` is an error naming the file and line; a
    bad ``metrics.jsonl`` line is a warning. The best checkpoint is the one inside
    ``run_dir`` (wherever the run was copied or moved to).
    """
    config = read_config(run_dir)
    rows = read_metrics(run_dir, warn_damage=True)
    if not rows:
        raise CheckpointError(f"Run {run_dir} has no finished epoch yet; nothing to report.")
    result = load_result(run_dir) or {}
    summary = result.get("summary") or {}
    best_ckpt = best_checkpoint(run_dir, result)
    out = local / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    epochs = [int(r["epoch"]) + 1 for r in rows]
    images: list[tuple[str, str]] = []

    def series(key: str) -> list[float]:
        return [float(r.get(key, float("nan"))) for r in rows]

    _line_plot(
        out / "loss.png",
        epochs,
        {"train/loss": series("train/loss"), "val/loss": series("val/loss")},
        "loss",
        "loss",
    )
    images.append(("Loss", "loss.png"))
    metric_keys = [k for k in rows[-1] if k.startswith("val/") and k != "val/loss"]
    if metric_keys:
        _metric_grid(out / "metrics.png", epochs, {k: series(k) for k in metric_keys})
        images.append(("Validation metrics", "metrics.png"))
    _bar_plot(out / "throughput.png", epochs, series("samples_per_s"))
    images.append(("Throughput", "throughput.png"))

    meta: dict[str, Any] = {}
    if best_ckpt is not None and (best_ckpt / META_FILE).is_file():
        meta = read_json(best_ckpt / META_FILE) or {}
        evaluation = read_json(best_ckpt / EVAL_FILE)
        if evaluation is not None:
            extras = evaluation.get("extras", {})
            if "confusion_matrix" in extras:
                _confusion_plot(
                    out / "confusion_matrix.png", extras["confusion_matrix"], extras["class_names"]
                )
                images.append(("Confusion matrix", "confusion_matrix.png"))

    try:
        text = _markdown(run_dir, config, rows, result, summary, best_ckpt, meta, images)
    except AttributeError as exc:  # OmegaConf's ConfigAttributeError: a key not in config.yaml
        key = getattr(exc, "full_key", None) or first_line(exc)
        raise RunFileError(
            f"{run_dir / CONFIG_FILE} is damaged: it has no {key}, which every run's config has.",
            hint=f"Fix or restore {CONFIG_FILE} (e.g. from a copy of the run).",
        ) from None
    (local / REPORT_FILE).write_text(text, encoding="utf-8")
    return run_dir / REPORT_FILE


def _markdown(
    run_dir: Location,
    config: dict[str, Any],
    rows: list[dict[str, Any]],
    result: dict[str, Any],
    summary: dict[str, Any],
    best_ckpt: Location | None,
    meta: dict[str, Any],
    images: list[tuple[str, str]],
) -> str:
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(config)
    steady = [r["samples_per_s"] for r in rows[1:]] or [rows[0]["samples_per_s"]]
    metric = summary.get("metric") or "-"
    best = summary.get("best_value")
    task_cfg: dict[str, Any] = meta.get("task_config") or dict(OmegaConf.to_container(cfg.task))  # type: ignore[arg-type]
    lines = [
        f"# Run report: {run_dir.name}",
        "",
        "| | |",
        "|---|---|",
        f"| Task | {cfg.task.name} |",
        f"| Status | {result.get('status', '?')} |",
        f"| Model | `{json.dumps((task_cfg or {}).get('model', {}))}` |",
        f"| Data | `{json.dumps((task_cfg or {}).get('data', {}))}` |",
        f"| Key config | epochs={cfg.trainer.epochs}, batch_size={cfg.trainer.batch_size}, "
        f"precision={cfg.trainer.precision}, optimizer={cfg.optimizer.name} lr={cfg.optimizer.lr}, "
        f"workers={cfg.scaling.num_workers}, gpu={cfg.scaling.use_gpu}, seed={cfg.seed} |",
        f"| Best {metric} | {best:.4f} (epoch {display_epoch(summary.get('best_epoch'))}) |"
        if best is not None
        else f"| Best {metric} | - |",
        f"| Epochs done | {len(rows)} |",
        f"| Wall time | {result.get('wall_s', '?')} s |",
        f"| Throughput | {sum(steady) / len(steady):.0f} samples/s (mean over epochs after the first) |",
        f"| Best checkpoint | `{best_ckpt or '-'}` |",
        *_lineage_row(meta),
        "",
        *_cost_section(result.get("cost")),
        "## Per epoch",
        "",
    ]
    keys = [
        "train/loss",
        "val/loss",
        *[k for k in rows[-1] if k.startswith("val/") and k != "val/loss"],
        "samples_per_s",
    ]
    lines.append("| epoch | " + " | ".join(keys) + " |")
    lines.append("|---" * (len(keys) + 1) + "|")
    for r in rows:
        cells = [
            f"{r[k]:.4f}"
            if isinstance(r.get(k), float) and k != "samples_per_s"
            else f"{r.get(k, 0):.0f}"
            if k == "samples_per_s"
            else str(r.get(k, "-"))
            for k in keys
        ]
        lines.append(f"| {int(r['epoch']) + 1} | " + " | ".join(cells) + " |")
    lines.append("")
    for title, name in images:
        lines += [f"## {title}", "", f"![{title}]({REPORT_DIR}/{name})", ""]
    return "\n".join(lines)


_PHASE_LABELS = {
    "startup_driver": "start-up: driver (config, Ray cluster, pre-flight)",
    "startup_workers": "start-up: Ray workers (placement, processes)",
    "startup_prepare": "start-up: data and model",
    "training": "training",
    "validation": "validation",
    "checkpointing": "checkpointing (save + report)",
    "shutdown_workers": "shutdown: Ray workers",
    "shutdown_driver": "shutdown: driver (summary, Ray if not in the background)",
    "other": "other (row writes, restarts)",
}


def _lineage_row(meta: dict[str, Any]) -> list[str]:
    """The best checkpoint's lineage (config hash, commit, W&B run, trial), when recorded."""
    lineage = lineage_of(meta)
    if lineage is None:
        return []
    cell = describe(lineage).replace("|", "\\|")  # a swept string value may hold one
    return [f"| Lineage | {cell} |"]


def _g(value: float) -> str:
    return f"{value:.2f}" if abs(value) >= 100 else f"{value:.4g}"


def _cost_section(cost: Any) -> list[str]:
    """``## Speed and cost`` from ``result.json``'s ``cost`` (see engine/runs/cost.py)."""
    lines = ["## Speed and cost", ""]
    if not isinstance(cost, dict) or not isinstance(cost.get("phases"), dict):
        return [
            *lines,
            "Not recorded for this run (a run from before cost accounting, or one that failed).",
            "",
        ]
    wall = float(cost.get("wall_s") or 0.0)
    runs = int(cost.get("runs") or 1)
    lines += [
        f"Wall time {wall:.1f} s, from the start of `lepton` to the recorded result"
        + (f", summed over {runs} invocations (resumed)." if runs > 1 else "."),
        "",
        "| phase | seconds | share |",
        "|---|---:|---:|",
    ]
    for key, label in _PHASE_LABELS.items():
        seconds = float(cost["phases"].get(key) or 0.0)
        share = f"{100 * seconds / wall:.1f}%" if wall else "-"
        lines.append(f"| {label} | {seconds:.2f} | {share} |")
    lines += [f"| **total** | {wall:.2f} | 100% |", "", "| | |", "|---|---|"]
    rate, run_rate = cost.get("samples_per_s"), cost.get("run_samples_per_s")
    if rate:
        lines.append(
            f"| Throughput | {rate:.0f} samples/s while training; {run_rate or 0:.0f} samples/s "
            f"over the wall time ({cost.get('samples', 0)} samples) |"
        )
    workers, cpus, gpus = (
        cost.get("workers"),
        cost.get("cpus_per_worker"),
        cost.get("gpus_per_worker"),
    )
    if workers is not None:
        per = f"{cpus:g} CPU" + (f" + {gpus:g} GPU" if gpus else "")
        lines.append(
            f"| Reserved | {workers} worker(s) × {per} for {cost.get('reserved_window_s', 0):.1f} s "
            "(first worker start → end of fit) |"
        )
    used, util = cost.get("cpu_h_used"), cost.get("cpu_utilisation")
    lines.append(
        f"| CPU-hours | {_g(cost.get('cpu_h_reserved', 0.0))} reserved, "
        + (f"{_g(used)} used" if used is not None else "used not recorded")
        + (f" ({100 * util:.0f}% of reserved) |" if util is not None else " |")
    )
    if cost.get("gpu_h_reserved"):
        gpu_used = cost.get("gpu_h_used")
        lines.append(
            f"| GPU-hours | {_g(cost['gpu_h_reserved'])} reserved, "
            + (
                f"{_g(gpu_used)} used ({cost.get('gpu_util', 0):.0f}% mean utilisation) |"
                if gpu_used is not None
                else f"used unknown: {cost.get('gpu_note') or 'no utilisation recorded'} |"
            )
        )
    else:
        lines.append(f"| GPU-hours | none: {cost.get('gpu_note') or 'no GPU reserved'} |")
    lines += [_money_line(cost), ""]
    return lines


def _times(price: Any) -> str:
    """`` × 0.05``; nothing where invocations were priced differently (no one price)."""
    return f" × {price}" if price is not None else ""


def _money_line(cost: dict[str, Any]) -> str:
    money, currency = cost.get("money"), cost.get("currency") or ""
    if money is None:
        return "| Cost | not priced (set cost.cpu_hour / cost.gpu_hour, or cost.node_type) |"
    parts = []
    if cost.get("money_cpu") is not None:
        parts.append(f"CPU {_g(cost['cpu_h_reserved'])} h{_times(cost.get('cpu_hour'))}")
    if cost.get("money_gpu") is not None:
        parts.append(f"GPU {_g(cost['gpu_h_reserved'])} h{_times(cost.get('gpu_hour'))}")
    elif cost.get("gpu_h_reserved"):
        parts.append("GPU hours not priced")
    node = f", node type {cost['node_type']}" if cost.get("node_type") else ""
    return f"| Cost | {_g(money)} {currency} ({'; '.join(parts)}{node}) |"


def copy_report(report: Location, output: str | Path | Location) -> Location:
    """Copy a run's ``report.md`` to ``output``, its plot links pointing into the run.

    The caller checks ``output`` first (:func:`engine.runs.outputs.check_output_path`).
    """
    target = Location.parse(output)
    plots = report.parent / REPORT_DIR
    text = report.read_text().replace(f"]({REPORT_DIR}/", f"]({plots.uri}/")
    target.write_text(text)
    return target
