"""5. The fixed costs of a `lepton train` run, phase by phase, each against what the
hand-written Ray Train script (or a bare Python / Ray process) pays for the same phase.

(a) process start to config composed; (b) Ray start, with and without the dashboard,
and what a Train run costs and loses without it; (c) worker group start to the first
training step, and what the workers import; (d) end of the last epoch to process exit,
and the report's share. (c) and (d) come from the whole-process runs
(:mod:`bench.benchmarks.whole`): stamped output lines, run-dir files, process tree.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.benchmarks.commands import lepton_cfg, python_pass
from bench.benchmarks.whole import (
    HAND,
    HAND_NO_DASH,
    LABELS,
    LEPTON,
    SAMPLE_S,
    WholeRuns,
    span_of,
    whole_runs,
)
from bench.core import BenchResult, Context, Row, median, ratio
from bench.proc import run_monitored
from bench.registry import register

RAY_MODES = {
    "default": "`ray.init()` (dashboard on: the default with ray[default])",
    "no-dashboard": "`ray.init(include_dashboard=False)`",
    "lepton": "lepton's embedded cluster (`engine.train.cluster.ray_cluster`)",
}
#: What the workers import that the hand-written script's workers do not (besides torch).
WORKER_BASE = ("torch", "ray.train.torch", "lepton_vision.data", "lepton_vision.models")
WORKER_EXTRA = ("engine.train.loop", "lepton_vision.task", "torchmetrics")
WATCH = ("transformers", "torchvision", "torch._dynamo", "scipy.signal", "matplotlib.pyplot")

IMPORT_SNIPPET = """\
import json, sys, time
t0 = time.perf_counter()
for m in {before!r}:
    __import__(m)
t1 = time.perf_counter()
for m in {modules!r}:
    __import__(m)
t2 = time.perf_counter()
print(json.dumps({{"before_s": t1 - t0, "import_s": t2 - t1,
                  "loaded": [m for m in {watch!r} if m in sys.modules]}}))
"""


@register(5, "phases", "Fixed costs of a `lepton train` run, phase by phase")
def phases(ctx: Context) -> BenchResult:
    """Where the fixed cost of a run goes: config, Ray start (with/without dashboard),
    worker group to first step (and the workers' imports), last epoch to exit (and the
    report), each phase against the hand-written Ray Train script or a bare process."""
    result = BenchResult()
    runs = whole_runs(ctx, without_dashboard=True)
    details: dict[str, Any] = {}
    _config_rows(ctx, result, runs)
    details["ray_start"] = _ray_start_rows(ctx, result, runs)
    details["imports"] = _start_rows(ctx, result, runs)
    _end_rows(result, runs)

    lepton = runs.of(LEPTON)
    if lepton:
        timeline = {
            key: median(r.span("launched", key) for r in lepton) for key in lepton[0].events()
        }
        known = sorted((v, k) for k, v in timeline.items() if v is not None)
        shown = ", ".join(f"{k} {v:.1f}" for v, k in known)
        result.notes.append(f"`lepton train` timeline, median s after launch: {shown}.")
        details["lepton_timeline_s"] = timeline
    result.notes.append(
        f"(c) and (d) come from {ctx.settings.pairs} whole-process run(s) of each variant "
        f"({runs.workload.epochs} epochs, shared with the `e2e` benchmark): process events are "
        f"sampled every {SAMPLE_S:g} s (first seen / last seen alive), output lines are stamped "
        "as they arrive, epoch rows carry their own `time`. Deltas are medians of "
        "per-pair differences."
    )
    others = runs.other_clusters()
    if others:
        result.notes.append(
            f"{others} other Ray cluster(s) were running on this machine during these runs: "
            "Ray's address look-up without an explicit address (the state API client, which "
            "Train's placement-group cleaner uses) then fails with 'Found multiple active Ray "
            "instances', with or without the dashboard; the cleaner counts above reflect that."
        )
    for run in runs.failed():
        result.notes.append(
            f"FAILED: {LABELS[run.variant]} run {run.rep + 1}: {run.error} (log: {run.proc.log_path})"
        )
    if not runs.of(LEPTON) or not runs.of(HAND):
        result.status = "failed"
        result.error = "no successful pair of whole-process runs"
    details["runs"] = [r.summary() for r in runs.runs]
    result.details = details
    return result


# -- (a) config ---------------------------------------------------------------------


def _config_rows(ctx: Context, result: BenchResult, runs: WholeRuns) -> None:
    py, cfg = python_pass(ctx), lepton_cfg(ctx)
    for t in (py, cfg):
        if t.error:
            result.notes.append(f"FAILED: {t.label}: {t.error}")
    rows = result.rows
    rows.append(Row("(a) `python -c pass`", py.median, "s", note="interpreter start-up floor"))
    rows.append(
        Row(f"(a) {cfg.label}", cfg.median, "s", py.label, py.median, ratio(cfg.median, py.median))
    )
    composed = None if cfg.median is None or py.median is None else cfg.median - py.median
    rows.append(
        Row("(a) process start to config composed (the two above, less the floor)", composed, "s")
    )
    to_line = runs.median_of(LEPTON, span_of("launched", "training_line"))
    rows.append(
        Row(
            "(a) `lepton train`: launch to its `Training ... in` line",
            to_line,
            "s",
            "`--cfg job` process",
            cfg.median,
            ratio(to_line, cfg.median),
            note="config, plugins, task.check, run dir and lock",
        )
    )


# -- (b) Ray start ------------------------------------------------------------------


def _ray_start(ctx: Context) -> dict[str, list[dict[str, Any]]]:
    s = ctx.settings
    out: dict[str, list[dict[str, Any]]] = {m: [] for m in RAY_MODES}
    modes = list(RAY_MODES)
    for rep in range(s.reps):
        k = rep % len(modes)
        for mode in modes[k:] + modes[:k]:
            ctx.log(f"ray start {rep + 1}/{s.reps}: {RAY_MODES[mode]}")
            base = s.workdir / f"ray-start-{mode}-{rep}"
            base.mkdir(parents=True, exist_ok=True)
            target = base / "steps.json"
            proc = run_monitored(
                [
                    s.python,
                    "-m",
                    "bench.workloads.ray_start",
                    f"--mode={mode}",
                    f"--out={target}",
                    # Expected never to answer without the dashboard: do not wait long.
                    f"--state-api-deadline={5 if mode == 'no-dashboard' else 15}",
                ],
                log_path=base / "output.log",
                cwd=base,
                env=ctx.subprocess_env(),
                timeout_s=min(s.timeout_s, 300),
                memory=False,
            )
            try:
                steps: dict[str, Any] = json.loads(target.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                steps = {"error": f"exit status {proc.returncode}", "log_tail": proc.tail(1500)}
            steps["process_s"] = proc.wall_s
            if "finished_at" in steps:
                steps["exit_after_shutdown_s"] = proc.ended_at - float(steps["finished_at"])
            out[mode].append(steps)
            ctx.log(
                "  -> "
                + ", ".join(
                    f"{k} {v:.2f}"
                    for k, v in steps.items()
                    if k.endswith("_s") and isinstance(v, float)
                )
                + (f"  ({steps['error']})" if "error" in steps else "")
            )
    return out


def _step(data: dict[str, list[dict[str, Any]]], mode: str, key: str) -> float | None:
    return median(float(d[key]) for d in data.get(mode, []) if isinstance(d.get(key), (int, float)))


def _ray_start_rows(ctx: Context, result: BenchResult, runs: WholeRuns) -> dict[str, Any]:
    data = _ray_start(ctx)
    rows = result.rows
    dflt, nodash, lep = RAY_MODES["default"], RAY_MODES["no-dashboard"], RAY_MODES["lepton"]
    init = {m: _step(data, m, "init_s") for m in RAY_MODES}
    rows.append(Row("(b) `import ray`", _step(data, "default", "import_s"), "s"))
    rows.append(
        Row(
            f"(b) {dflt}: to ready",
            init["default"],
            "s",
            nodash,
            init["no-dashboard"],
            ratio(init["default"], init["no-dashboard"]),
            note="ray.init returns",
        )
    )
    rows.append(
        Row(
            f"(b) {lep}: to ready",
            init["lepton"],
            "s",
            dflt,
            init["default"],
            ratio(init["lepton"], init["default"]),
        )
    )
    rows.append(
        Row(
            "(b) first task after `ray.init()` (a worker process starts)",
            _step(data, "default", "first_task_s"),
            "s",
        )
    )
    for mode in ("default", "no-dashboard"):
        state = _step(data, mode, "state_api_s")
        errors = {
            str(d["state_api_error"]).split(". ")[0][:160]
            for d in data[mode]
            if d.get("state_api_error")
        }
        rows.append(
            Row(
                f"(b) {RAY_MODES[mode]}: state API answering, after init returned",
                state,
                "s",
                note="never answered: " + "; ".join(sorted(errors))
                if state is None and errors
                else "",
            )
        )
    shut = {m: _step(data, m, "stopped_s") for m in RAY_MODES}
    returned = _step(data, "lepton", "shutdown_s")
    rows.append(Row(f"(b) {dflt}: `ray.shutdown()`", shut["default"], "s"))
    rows.append(
        Row(
            f"(b) {lep}: leaving it until Ray is stopped (waits for Ray's processes, removes "
            "the session dir)",
            shut["lepton"],
            "s",
            "`ray.shutdown()`",
            shut["default"],
            ratio(shut["lepton"], shut["default"]),
            note=""
            if returned is None or shut["lepton"] is None or returned >= 0.9 * shut["lepton"]
            else f"the with-block returns after {returned:.2f} s, the rest on a thread",
        )
    )
    proc = {m: _step(data, m, "process_s") for m in RAY_MODES}
    rows.append(
        Row(
            f"(b) whole process, start + one task + stop: {lep}",
            proc["lepton"],
            "s",
            dflt,
            proc["default"],
            ratio(proc["lepton"], proc["default"]),
        )
    )
    # What a Train run costs and loses without the dashboard: the hand-written script both ways.
    rows.append(
        runs.row(
            "(b) Train run without the dashboard: wall time",
            HAND_NO_DASH,
            HAND,
            lambda r: r.proc.wall_s,
        )
    )
    first = span_of("launched", "first_step")
    rows.append(
        runs.row(
            "(b) Train run without the dashboard: launch to first step", HAND_NO_DASH, HAND, first
        )
    )
    for variant in (HAND, HAND_NO_DASH, LEPTON):
        signs: dict[str, int] = {}
        warn = []
        for r in runs.of(variant):
            for k, v in r.cleaner_signs().items():
                signs[k] = signs.get(k, 0) + v
            warn.append(r.warning_lines())
        if runs.of(variant):
            shown = ", ".join(f"{k} x{v}" for k, v in signs.items()) or "none"
            result.notes.append(
                f"Placement-group cleaner signs in {LABELS[variant]} output over "
                f"{len(runs.of(variant))} run(s): {shown}; WARNING/Traceback lines per run: "
                f"median {median(warn):.0f}."
            )
    result.notes.append(
        "`include_dashboard=False` still starts the dashboard process (Ray 2.60 loads only its "
        "usage-stats module then) and `ray.init` still waits for it; the state API (actors, "
        "nodes) is not served by it, which is what Train V2's placement-group cleaner asks "
        "whether the controller lives."
    )
    return data


# -- (c) worker group start to first step --------------------------------------------


def _imports(ctx: Context, before: Sequence[str], modules: Sequence[str]) -> dict[str, Any]:
    """Fresh processes (``reps``): the seconds ``modules`` take after ``before``, what
    of :data:`WATCH` they load, and one ``-X importtime`` run's top packages by self time."""
    s = ctx.settings
    code = IMPORT_SNIPPET.format(before=tuple(before), modules=tuple(modules), watch=WATCH)
    env, times, loaded, error = ctx.subprocess_env(), [], [], None
    for _ in range(s.reps):
        done = subprocess.run(
            [s.python, "-c", code],
            capture_output=True,
            text=True,
            env=env,
            cwd=s.workdir,
            timeout=300,
            check=False,
        )
        try:
            data = json.loads(done.stdout.strip().splitlines()[-1])
            times.append(float(data["import_s"]))
            loaded = data["loaded"]
        except (ValueError, IndexError, KeyError):
            error = done.stderr.strip()[-800:] or f"exit status {done.returncode}"
            break
    profile = subprocess.run(
        [s.python, "-X", "importtime", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=s.workdir,
        timeout=300,
        check=False,
    )
    return {
        "seconds": times,
        "median_s": median(times),
        "loaded": loaded,
        "error": error,
        "top_packages_self_s": top_packages(profile.stderr, before),
    }


def top_packages(importtime: str, before: Sequence[str], top: int = 8) -> dict[str, float]:
    """Seconds of self time per top-level package imported after the ``before`` modules
    (``-X importtime`` output: a line per module, in the order each finished)."""
    entries = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line[len("import time:") :].split("|")
        try:
            self_us = int(parts[0])
        except ValueError:
            continue  # the header line
        name = parts[2].rstrip()
        entries.append((self_us, name[1:] if name.startswith(" ") else name))  # " " after "|"
    names = {b.split(".")[0] for b in before} | set(before)
    start = 0
    for i, (_, name) in enumerate(entries):
        if name.strip() in names and name == name.lstrip():  # a top-level line of `before`
            start = i + 1
    totals: dict[str, float] = {}
    for self_us, name in entries[start:]:
        package = name.strip().split(".")[0]
        totals[package] = totals.get(package, 0.0) + self_us / 1e6
    return dict(sorted(totals.items(), key=lambda kv: -kv[1])[:top])


def _start_rows(ctx: Context, result: BenchResult, runs: WholeRuns) -> dict[str, Any]:
    rows = result.rows
    phases_ = (
        (
            "launched",
            "ray_gcs_up",
            "launch to Ray's GCS process up",
            "Python, imports; lepton: config, check",
        ),
        (
            "ray_gcs_up",
            "controller_up",
            "GCS up to Train controller actor up",
            "rest of ray.init, trainer, fit()",
        ),
        (
            "controller_up",
            "workers_up",
            "controller up to every worker actor up",
            "placement group, worker actors",
        ),
        ("workers_up", "first_step", "workers up to first training step", "the four below"),
        (
            "workers_up",
            "loop_entered",
            "… workers up to the training function entered",
            "process group; lepton: the loop's modules imported as it is unpickled",
        ),
        (
            "loop_entered",
            "epochs_started",
            "… training function entered to its epochs started",
            "data, model, DDP, metrics; the script: its imports too",
        ),
        ("epochs_started", "first_step", "… epochs started to the first step", "first batch"),
    )
    for start, end, label, note in phases_:
        get = span_of(start, end)
        rows.append(
            runs.row(
                f"(c) {label}",
                LEPTON,
                HAND,
                get,
                note=f"{note}; lepton − script {_fmt_delta(runs.median_delta(LEPTON, HAND, get))}",
            )
        )
    tm = _imports(ctx, ("torch",), ("torchmetrics",))
    worker = _imports(ctx, WORKER_BASE, WORKER_EXTRA)
    rows.append(
        Row(
            "(c) `import torchmetrics` in a fresh process, after `import torch`",
            tm["median_s"],
            "s",
            note=("pulls in " + ", ".join(tm["loaded"]))
            if tm["loaded"]
            else "pulls in none of " + ", ".join(WATCH),
        )
    )
    rows.append(
        Row(
            "(c) what a lepton worker imports beyond a hand-written one's (after torch, "
            "ray.train.torch, lepton_vision.data/models)",
            worker["median_s"],
            "s",
            note=" + ".join(WORKER_EXTRA),
        )
    )
    for label, data in (
        ("`import torchmetrics`", tm),
        ("the lepton worker's extra imports", worker),
    ):
        if data["error"]:
            result.notes.append(f"FAILED: {label}: {data['error']}")
        top = data["top_packages_self_s"]
        if top:
            result.notes.append(
                f"{label}, self time by package (-X importtime): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in top.items())
                + ("; transformers is imported" if "transformers" in data["loaded"] else "")
                + "."
            )
    return {"torchmetrics": tm, "worker_extra": worker}


def _fmt_delta(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.2f} s"


# -- (d) last epoch to exit ------------------------------------------------------------


def _end_rows(result: BenchResult, runs: WholeRuns) -> None:
    """Each event as an offset from the last epoch's row: the engine may reorder them
    (a cluster stopped on a thread while the run is recorded and the report rendered)."""
    rows = result.rows
    total = span_of("last_row", "exit")
    rows.append(
        runs.row(
            "(d) end of the last epoch to process exit",
            LEPTON,
            HAND,
            total,
            note="last metrics row's `time` to exit",
        )
    )
    for end, label in (
        ("loop_ended", "the training loop's end (last report, checkpoint)"),
        ("workers_gone", "every worker process gone"),
        ("ray_gone", "every Ray process gone"),
    ):
        get = span_of("last_row", end)
        rows.append(runs.row(f"(d) … last epoch row to {label}", LEPTON, HAND, get))
    for end, label in (
        ("finished_recorded", "result.json marked `finished`"),
        ("report_line", "the `Report:` line"),
    ):
        rows.append(
            Row(
                f"(d) … last epoch row to {label}",
                runs.median_of(LEPTON, span_of("last_row", end)),
                "s",
            )
        )
    report = span_of("finished_recorded", "report_line")
    rows.append(
        Row(
            "(d) the report: result.json `finished` to the `Report:` line",
            runs.median_of(LEPTON, report),
            "s",
        )
    )
    share = median(ratio(report(r), total(r)) for r in runs.of(LEPTON))
    rows.append(
        Row(
            "(d) the report's share of last epoch to exit",
            None if share is None else 100 * share,
            "%",
        )
    )
    result.notes.append(
        "Training function entered / epochs started / loop ended: for `lepton train` the "
        "run's `timing.json` (`worker_started`, `epochs_started`, `loop_ended`) where the "
        "engine writes one, else n/a; for the script its rank 0's `marks.json`."
    )
    result.notes.append(
        "(d) for the hand-written script: its `ray.shutdown()` does not wait for Ray's processes, "
        "so those still alive at its exit count as gone at exit. Process events are the last "
        "sample that saw a process alive (up to 0.25 s early)."
    )
