"""A sweep's ``report.md`` and the cost lines ``lepton tune`` prints at its end.

The report has the trials table (as ``trials.csv``), the best trial and where its
checkpoint is, the sweep's speed and cost (:mod:`engine.tune.sweep_cost`) and its plots.
Each trial keeps its own ``report.md`` (a run's, with its own cost section).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.runs.layout import display_epoch
from engine.runs.report import _g, _money_line
from engine.runs.storage import Location

if TYPE_CHECKING:
    from engine.tune.results import SweepResults

REPORT_FILE = "report.md"


def cost_lines(cost: dict[str, Any] | None) -> list[str]:
    """Two or three plain lines for the terminal: time, hours and money, what was saved."""
    if not cost or not cost.get("trials_total"):
        return []
    total, saved = cost["trials_total"], cost.get("saved_by_early_stopping") or {}
    wall = cost.get("wall_s")
    budget = cost.get("trial_epochs_budget")
    share = f" of {budget} ({100 * cost['trial_epochs'] / budget:.0f}%)" if budget else ""
    lines = [
        (f"Sweep wall time {wall:.1f} s; " if wall is not None else "")
        + f"{cost['trial_epochs']} trial-epochs{share}; trials reserved "
        + f"{_g(total['cpu_h_reserved'])} CPU-h"
        + (f" + {_g(total['gpu_h_reserved'])} GPU-h" if total.get("gpu_h_reserved") else "")
        + (f", used {_g(total['cpu_h_used'])} CPU-h" if total.get("cpu_h_used") is not None else "")
        + (
            f"; cost {_g(total['money'])} {total.get('currency') or ''}".rstrip()
            if total.get("money") is not None
            else ""
        )
    ]
    if saved.get("trial_epochs"):
        lines.append(
            f"Early stopping saved about {saved['trial_epochs']} trial-epochs "
            f"({saved['trials_stopped']} trial(s) stopped), {_saved(saved, total)}"
        )
    return lines


def _saved(saved: dict[str, Any], total: dict[str, Any]) -> str:
    """``0.0123 CPU-h[, 0.004 GPU-h][, 0.05 USD]``: what early stopping saved."""
    parts = [f"{_g(saved['cpu_h'])} CPU-h"]
    if saved.get("gpu_h"):
        parts.append(f"{_g(saved['gpu_h'])} GPU-h")
    if saved.get("money") is not None:
        parts.append(f"{_g(saved['money'])} {total.get('currency') or ''}".rstrip())
    return ", ".join(parts)


def _cost_section(cost: dict[str, Any] | None) -> list[str]:
    lines = ["## Speed and cost", ""]
    if not cost or not cost.get("trials_total"):
        return [*lines, "No trial recorded its timings (trials from before cost accounting).", ""]
    total, saved = cost["trials_total"], cost.get("saved_by_early_stopping") or {}
    phases = total.get("phases") or {}
    budget = cost.get("trial_epochs_budget")
    wall = cost.get("wall_s")
    rate = total.get("samples_per_s")
    used, util = total.get("cpu_h_used"), total.get("cpu_utilisation")
    lines += [
        "| | |",
        "|---|---|",
        f"| Sweep wall time | {wall:.1f} s |" if wall is not None else "| Sweep wall time | - |",
        f"| Trial-epochs | {cost['trial_epochs']}"
        + (
            f" of a budget of {budget} ({100 * cost['trial_epochs'] / budget:.0f}%)"
            if budget
            else ""
        )
        + " |",
        f"| Trials' time | {total.get('wall_s', 0.0):.1f} s over {cost.get('trials_costed', 0)} "
        f"trial run(s): training {phases.get('training', 0.0):.1f} s, validation "
        f"{phases.get('validation', 0.0):.1f} s, checkpointing {phases.get('checkpointing', 0.0):.1f} s |",
    ]
    if rate:
        lines.append(f"| Throughput | {rate:.0f} samples/s while training |")
    lines.append(
        f"| CPU-hours | {_g(total.get('cpu_h_reserved', 0.0))} reserved by the trials"
        + (f", {_g(used)} used" if used is not None else "")
        + (f" ({100 * util:.0f}%)" if util is not None else "")
        + " |"
    )
    if total.get("gpu_h_reserved"):
        lines.append(f"| GPU-hours | {_g(total['gpu_h_reserved'])} reserved by the trials |")
    lines.append(_money_line(total))
    if saved.get("trial_epochs"):
        lines.append(
            f"| Saved by early stopping | about {saved['trial_epochs']} trial-epochs of "
            f"{saved['trials_stopped']} stopped trial(s): {_saved(saved, total)} "
            "(each at its own mean time per epoch) |"
        )
    return [*lines, ""]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_sweep_report(results: SweepResults) -> Location:
    sweep = results.sweep_dir
    head = ["trial", *results.params, f"best {results.metric}", "best epoch", "epochs", "status"]
    lines = [
        f"# Sweep {sweep.name}",
        "",
        f"{len(results.trials)} trial(s), ranked by {results.metric} ({results.mode}); "
        f"at most {results.epochs or '?'} epoch(s) each.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for t in results.trials:
        mark = " **(best)**" if t is results.best else ""
        cells = [
            t.name + mark,
            *(_cell(t.values.get(k)) for k in results.params),
            _cell(t.best_value),
            _cell(display_epoch(t.best_epoch)),
            str(t.epochs),
            t.status,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if results.best is not None:
        where = results.checkpoint
        lines += [
            f"Best: `{results.best.name}`, {results.metric} = {_cell(results.best.best_value)}; "
            f"checkpoint `{where.name if where is not None else '-'}` "
            f"(serve it with `lepton serve {sweep}`).",
            "",
        ]
    lines += _cost_section(results.cost)
    if results.plots:
        lines += ["## Plots", ""]
        lines += [f"![{p.name}](plots/{p.name})" for p in results.plots]
        lines.append("")
    target = sweep / REPORT_FILE
    target.write_text("\n".join(lines))
    return target
