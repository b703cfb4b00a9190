"""A sweep's plots (``plots/*.png``): the metric per epoch of every trial, and the best
value of each trial against each swept parameter.

Per epoch, a trial the scheduler stopped early is dashed and ends in a cross, so it is
visibly short of the sweep's epochs; the best trial is drawn thicker. Against a
parameter, numbers spanning more than two decades (all positive), or drawn on a log scale,
get a log axis, and
strings (or lists, or a mix) a categorical one, in the order first seen. Images are
rendered in memory and written whole (:meth:`Location.write_bytes`), locally or to an
object store.
"""

from __future__ import annotations

import io
import math
import re
from typing import TYPE_CHECKING, Any

from engine.runs.report import DPI, FIGSIZE, _integer_ticks, _plt
from engine.runs.storage import Location
from engine.runs.sweep_dir import PLOTS_DIR

if TYPE_CHECKING:
    from engine.tune.results import SweepResults

EPOCH_PLOT = "metric_vs_epoch.png"
#: Above this many trials the per-epoch plot has no legend (it would cover the lines).
LEGEND_MAX = 20


def param_plot_name(key: str) -> str:
    return "metric_vs_" + re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_") + ".png"


def write_plots(results: SweepResults) -> list[Location]:
    """Every plot there is data for (none before a trial reported its metric)."""
    if not any(not math.isnan(v) for t in results.trials for _, v in t.curve):
        return []
    out = results.sweep_dir / PLOTS_DIR
    written = [_epoch_plot(results, out / EPOCH_PLOT)]
    for key in results.params:
        points = [
            (t.values[key], t.best_value, t is results.best, t.status)
            for t in results.trials
            if t.best_value is not None and t.values.get(key) is not None
        ]
        if points:
            written.append(_param_plot(results, key, points, out / param_plot_name(key)))
    return written


def _save(fig: Any, target: Location) -> Location:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    _plt().close(fig)
    target.write_bytes(buf.getvalue())
    return target


def _epoch_plot(results: SweepResults, target: Location) -> Location:
    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    last = 1
    for trial in results.trials:
        if not trial.curve:
            continue
        epochs = [e + 1 for e, _ in trial.curve]
        values = [v for _, v in trial.curve]
        last = max(last, epochs[-1])
        best = trial is results.best
        short = trial.status == "stopped early"
        (line,) = ax.plot(
            epochs,
            values,
            marker="o",
            markersize=3,
            linewidth=2.6 if best else 1.2,
            linestyle="--" if short else "-",
            label=f"{trial.name}{' (best)' if best else ''}{' (stopped)' if short else ''}",
            zorder=3 if best else 2,
        )
        if short:
            ax.plot(epochs[-1], values[-1], marker="x", markersize=9, color=line.get_color())
    planned = results.epochs or last
    ax.set_xlim(0.5, max(planned, last) + 0.5)
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_xlabel("epoch")
    ax.set_ylabel(results.metric)
    ax.set_title(
        f"{results.metric} per epoch, {len(results.trials)} trials ({results.mode}; "
        "stopped early: dashed, ending in x)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    if len(results.trials) <= LEGEND_MAX:
        ax.legend(fontsize=7, ncol=2 if len(results.trials) > 8 else 1)
    fig.tight_layout()
    return _save(fig, target)


def _numeric(values: list[Any]) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


def axis_kind(values: list[Any], space: Any = None) -> str:
    """``log``, ``linear`` or ``categorical`` for a swept key's values: categorical unless
    all are numbers; log when all are positive and either span more than two decades or
    the sweep drew them on a log scale (``tag(log, ...)`` in ``sweep.json``'s params)."""
    if not values or not _numeric(values):
        return "categorical"
    low, high = min(values), max(values)
    log_space = isinstance(space, str) and re.search(r"\blog\b", space) is not None
    return "log" if low > 0 and (high / low > 100 or log_space) else "linear"


def _param_plot(
    results: SweepResults, key: str, points: list[tuple[Any, float, bool, str]], target: Location
) -> Location:
    import json

    plt = _plt()
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI)
    raw = [p[0] for p in points]
    kind = axis_kind(raw, results.spaces.get(key))
    if kind != "categorical":
        xs = [float(v) for v in raw]
        if kind == "log":
            ax.set_xscale("log")
    else:  # categorical, in the order first seen
        labels = [v if isinstance(v, str) else json.dumps(v) for v in raw]
        order = list(dict.fromkeys(labels))
        xs = [float(order.index(label)) for label in labels]
        ax.set_xticks(range(len(order)), order, rotation=30 if len(order) > 4 else 0, fontsize=8)
        ax.set_xlim(-0.5, len(order) - 0.5)
    for x, (_, value, best, status) in zip(xs, points, strict=True):
        colour = "tab:red" if best else "tab:blue"
        ax.scatter(
            [x],
            [value],
            s=140 if best else 40,
            marker="*" if best else "o",
            edgecolors=colour,
            facecolors="none" if status == "stopped early" and not best else colour,
            zorder=3 if best else 2,
        )
    ax.set_xlabel(key)
    ax.set_ylabel(f"best {results.metric}")
    ax.set_title(
        f"best {results.metric} per trial against {key} (red star: best; hollow: stopped early)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, target)
