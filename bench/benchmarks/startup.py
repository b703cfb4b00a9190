"""2. Fixed costs: CLI start-up and the time from `lepton train` to its first step."""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bench.benchmarks.commands import Timed, lepton_cfg, python_pass, timed
from bench.benchmarks.runs import LEPTON, PLAIN, RAY_TRAIN, TrainRun, training_runs
from bench.core import BenchResult, Context, Row, ratio, target_status
from bench.registry import register

HELP_TARGET_S = 0.3
PLUGINS_TARGET_S = 1.5
FIRST_STEP_EXTRA_TARGET_S = 2.0  # lepton train's first step, above the hand-written script's


def _first_step(run: TrainRun) -> float | None:
    return run.proc.first_step_s


@register(2, "startup", "Fixed costs: CLI start-up and time to first step")
def startup(ctx: Context) -> BenchResult:
    """Median wall time of short commands, and launch-to-first-step of the training runs."""
    s = ctx.settings
    result = BenchResult()
    timed_runs: dict[str, Timed] = {
        "python": python_pass(ctx),
        "help": timed(ctx, "help", "`lepton --help`", [*s.lepton, "--help"]),
        "plugins": timed(ctx, "plugins", "`lepton plugins`", [*s.lepton, "plugins"]),
        "cfg": lepton_cfg(ctx),
        "import": timed(
            ctx, "import", "`python -c 'import ray, torch'`", [s.python, "-c", "import ray, torch"]
        ),
    }
    for t in timed_runs.values():
        if t.error:
            result.notes.append(f"FAILED: {t.label}: {t.error}")

    py, imp = timed_runs["python"], timed_runs["import"]
    rows = result.rows
    rows.append(Row(py.label, py.median, "s", note="interpreter start-up floor"))
    for key, target in (("help", HELP_TARGET_S), ("plugins", PLUGINS_TARGET_S)):
        t = timed_runs[key]
        rows.append(
            Row(
                t.label,
                t.median,
                "s",
                py.label,
                py.median,
                ratio(t.median, py.median),
                f"< {target} s",
                target_status(None if t.median is None else t.median < target),
            )
        )
    cfg = timed_runs["cfg"]
    rows.append(Row(cfg.label, cfg.median, "s", py.label, py.median, ratio(cfg.median, py.median)))
    rows.append(Row(imp.label, imp.median, "s", note="floor for any Ray + torch program"))

    runs = training_runs(ctx)
    a, b, c = (runs.median_of(v, _first_step) for v in (PLAIN, RAY_TRAIN, LEPTON))
    rows.append(Row("(a) plain PyTorch: launch to first step", a, "s", note="no Ray"))
    rows.append(
        Row(
            "(b) Ray Train script: launch to first step",
            b,
            "s",
            imp.label,
            imp.median,
            ratio(b, imp.median),
        )
    )
    rows.append(
        Row(
            "(c) lepton train: launch to first step",
            c,
            "s",
            "(b) hand-written Ray Train script",
            b,
            runs.median_ratio(LEPTON, RAY_TRAIN, _first_step),
        )
    )
    extra = runs.median_delta(LEPTON, RAY_TRAIN, _first_step)
    rows.append(
        Row(
            "(c) - (b): extra time to first step",
            extra,
            "s",
            target=f"<= {FIRST_STEP_EXTRA_TARGET_S} s",
            status=target_status(None if extra is None else extra <= FIRST_STEP_EXTRA_TARGET_S),
            note="median of per-repetition differences",
        )
    )
    result.notes.append(
        f"Short commands: median of {s.cli_reps} runs after one warm-up run. First step: from "
        "subprocess launch to rank 0's first optimizer step (progress.json's first write for "
        "(c), a marker file for (a) and (b)); each (b)/(c) run starts its own Ray."
    )
    plugins = _installed_plugins(ctx)
    if "plugins" in plugins:
        names = ", ".join(f"{p['plugin']} {p['version']}" for p in plugins["plugins"])
        result.notes.append(f"`lepton plugins` loaded: {names or 'none'}.")
    result.details = {
        "commands": {
            k: {"label": t.label, "times_s": t.times, "error": t.error}
            for k, t in timed_runs.items()
        },
        "plugins": plugins,
    }
    if any(t.error for t in timed_runs.values()):
        result.status = "failed"
    return result


def _installed_plugins(ctx: Context) -> dict[str, Any]:
    """What `lepton plugins` loads affects its time: record it beside the numbers."""
    try:
        out = subprocess.run(
            [*ctx.settings.lepton, "plugins", "--json"],
            capture_output=True,
            text=True,
            timeout=120,
            env=ctx.subprocess_env(),
            check=True,
        ).stdout
        data = json.loads(out)
        return {
            "plugins": [
                {k: p.get(k) for k in ("plugin", "distribution", "version", "tasks")}
                for p in data.get("plugins", [])
            ],
            "problems": data.get("problems", []),
        }
    except (subprocess.SubprocessError, ValueError, OSError) as exc:
        return {"error": str(exc)}
