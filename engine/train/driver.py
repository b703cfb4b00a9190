"""``lepton train``: from a typed config to a finished run directory, on Ray Train or, with
``scaling.in_process``, in this process (:mod:`engine.train.inprocess`)."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.config.load import checkpoint_metric
from engine.config.schema import LeptonConfig
from engine.errors import CheckpointError, LeptonError, RunInterrupted, TrainingFailed
from engine.runs.clock import RunClock
from engine.runs.cost import record_cost
from engine.runs.layout import (
    CONFIG_FILE,
    RESULT_FILE,
    RunSummary,
    new_run_name,
    read_result,
    summarize,
    write_status,
)
from engine.runs.lock import LOCK_FILE, hold_run
from engine.runs.storage import Location, first_line
from engine.task import TaskInfo, wants_streaming
from engine.train.embedded import RAY_LOGS_DIR
from engine.train.interrupts import Interrupt, InterruptGuard, fit_still_running, resume_command

if TYPE_CHECKING:
    from engine.train.loop import LoopSpec


def resolve_run_dir(cfg: LeptonConfig) -> Location:
    """The run directory for this invocation; checks resume/new-run consistency."""
    root = Location.parse(cfg.run.dir)
    if cfg.run.name:
        run_dir = root / cfg.run.name
    elif cfg.resume:
        previous = _latest_run_of(root, cfg.task_name)
        if previous is None:
            raise CheckpointError(
                f"resume=true but {root} holds no earlier {cfg.task_name} run.",
                hint="Drop resume=true to start a new run, or set run.name=<run to continue>.",
            )
        run_dir = previous
    else:
        run_dir = root / new_run_name(cfg.task_name)
    # driver.lock alone is not a started run: a live owner is named once the lock is tried.
    started = [p for p in run_dir.children() if p.name != LOCK_FILE]
    if cfg.resume and not started:
        raise CheckpointError(
            f"resume=true but run {run_dir} does not exist.",
            hint=f"Check run.name and run.dir (runs there: {', '.join(_run_names(root)) or 'none'}).",
        )
    if not cfg.resume and started:
        raise CheckpointError(
            f"Run {run_dir} already exists.",
            hint="Add resume=true to continue it, or pick another run.name.",
        )
    return run_dir


def _runs_in(root: Location) -> list[Location]:
    return [p for p in root.children() if (p / CONFIG_FILE).is_file()]


def _run_names(root: Location) -> list[str]:
    return sorted(p.name for p in _runs_in(root))


def _latest_run_of(root: Location, task: str) -> Location | None:
    runs = [p for p in _runs_in(root) if p.name.startswith(f"{task}-")]
    return max(runs, key=lambda p: (p / CONFIG_FILE).mtime()) if runs else None


def _worker_error(exc: BaseException) -> BaseException | None:
    failures = getattr(exc, "worker_failures", None)
    if failures:
        first = failures[min(failures)]
        return getattr(first, "cause", None) or first
    return None


def train(
    cfg: LeptonConfig,
    info: TaskInfo,
    config_yaml: str,
    *,
    callbacks: Sequence[Any] = (),
    echo: Callable[[str], None] = print,
) -> RunSummary:
    clock = RunClock.start()  # the `lepton` process's start (engine.runs.clock)
    run_dir = resolve_run_dir(cfg)
    # One live driver per run: the lock comes before anything is written into the run.
    with hold_run(run_dir, resume=cfg.resume, echo=echo):
        return _train_in(
            run_dir, cfg, info, config_yaml, callbacks=callbacks, echo=echo, clock=clock
        )


def _train_in(
    run_dir: Location,
    cfg: LeptonConfig,
    info: TaskInfo,
    config_yaml: str,
    *,
    callbacks: Sequence[Any],
    echo: Callable[[str], None],
    clock: RunClock,
) -> RunSummary:
    from engine.train.loop import LoopSpec

    in_process = cfg.scaling.in_process
    metric, mode = checkpoint_metric(cfg, info)
    earlier_cost = None  # a resumed run's cost so far: this invocation's adds to it
    if cfg.resume:
        previous = read_result(run_dir)
        if previous and previous.get("status") == "finished":
            echo(f"Run {run_dir} already finished; nothing to do.")
            return summarize(run_dir, metric, mode, "finished")
        earlier_cost = (previous or {}).get("cost")

    info.task.check(cfg.task)  # data problems surface before Ray starts
    if in_process:  # what Ray's check_fits does for a cluster, before the run is written
        from engine.train.inprocess import check_machine

        check_machine(cfg.scaling)
        if wants_streaming(cfg.task):
            from engine.train.streaming import refuse_streaming

            raise refuse_streaming(
                "with scaling=inprocess (no Ray)",
                hint="Use scaling=local (Ray Train on this machine), or drop task.data.streaming.",
            )
    run_dir.mkdir()
    (run_dir / CONFIG_FILE).write_text(config_yaml)
    started = time.time()
    _write_status(run_dir, "running", started=started, metric=metric, mode=mode)

    spec = LoopSpec(
        info=info,
        config=cfg,
        run_dir=run_dir.uri,
        metric=metric,
        mode=mode,
        callbacks=list(callbacks),
        cwd=os.getcwd(),
        invocation=clock.invocation,
    )
    device = "GPU" if cfg.scaling.use_gpu else "CPU"
    where = (
        f"in this process, {device}, {int(cfg.scaling.cpus_per_worker)} thread(s)"
        if in_process
        else f"{cfg.scaling.num_workers} worker(s), {device}"
    )
    echo(f"Training {info.task.name} in {run_dir} ({where})")
    from engine.train.worker_context import remove_orphan_checkpoint_dirs

    # The first SIGINT/SIGTERM stops the run (see engine/train/interrupts.py); a second
    # one, also while the interrupted run is being recorded below, exits at once.
    with InterruptGuard() as guard:
        workers_live_on = False
        try:
            guard.arm()  # a cluster starting up is stopped too
            if in_process:  # no Ray: the loop on this (main) thread, where signals land
                from engine.train.inprocess import run_in_process

                run_in_process(spec, run_dir, guard=guard, clock=clock, echo=echo)
            else:
                _fit_on_ray(cfg, spec, run_dir, guard=guard, clock=clock, echo=echo)
        except Interrupt as stop:  # the workers ended with the cluster (ray.shutdown)
            workers_live_on = stop.workers_live_on
            cost = record_cost(run_dir, cfg, clock, earlier_cost)
            raise _interrupted(run_dir, cfg, stop, started, metric, mode, cost) from None
        except (KeyboardInterrupt, SystemExit):  # a cluster of the caller's: Train's own handler
            _write_status(run_dir, "interrupted", started=started, metric=metric, mode=mode)
            raise
        except LeptonError:
            _write_status(run_dir, "failed", started=started, metric=metric, mode=mode)
            raise
        except Exception as exc:
            _write_status(
                run_dir,
                "failed",
                started=started,
                metric=metric,
                mode=mode,
                error=str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )
            # In-process the loop's own error arrives as it is; from Ray, wrapped.
            cause = exc if in_process else _worker_error(exc)
            if isinstance(cause, LeptonError):
                raise cause from None
            detail = f"{type(cause).__name__}: {cause}" if cause else str(exc)
            kept = ""
            if in_process:
                from engine.train.inprocess import TRACEBACK_FILE

                kept = f" (its traceback: {run_dir / TRACEBACK_FILE})"
            raise TrainingFailed(
                f"Training failed: {detail.strip().splitlines()[0] if detail.strip() else detail}",
                hint=f"Checkpoints so far are in {run_dir}; rerun with run.name={run_dir.name} resume=true "
                f"to continue from the newest one{kept}.",
            ) from exc
        finally:
            # Workers killed hard never remove their temporary checkpoint dirs. In-process
            # the worker is this process, done with its dirs once the loop has ended.
            if in_process:
                remove_orphan_checkpoint_dirs(run_dir.name, ended=(os.getpid(),))
            else:  # unless its workers live on until this process ends (interrupts.py)
                remove_orphan_checkpoint_dirs(run_dir.name, wait_s=0.0 if workers_live_on else 10.0)

    summary = summarize(run_dir, metric, mode, "finished")
    cost = record_cost(run_dir, cfg, clock, earlier_cost)
    _write_status(
        run_dir,
        "finished",
        started=started,
        metric=metric,
        mode=mode,
        summary=summary.as_dict(),
        cost=cost,
    )
    return summary


def _fit_on_ray(
    cfg: LeptonConfig,
    spec: LoopSpec,
    run_dir: Location,
    *,
    guard: InterruptGuard,
    clock: RunClock,
    echo: Callable[[str], None],
) -> None:
    """The run on Ray Train: a cluster (joined or embedded), its pre-flight checks, the
    ``TorchTrainer`` and ``fit()`` on a helper thread (``guard`` takes the signals)."""
    from engine.train.cluster import (
        check_fits,
        check_nodes_reach_storage,
        check_storage,
        cluster_resources,
        ray_cluster,
    )
    from engine.train.progress import DriverProgress
    from engine.train.trainer import build_trainer

    with ray_cluster(cfg.ray.address) as cluster:
        if cluster.owned:  # again: ray.init installs its own SIGTERM handler
            guard.arm()
        else:  # the caller's cluster, which this cannot shut down: Train's handling
            guard.disarm()
        resources = cluster_resources()
        check_fits(cfg.scaling, resources)
        check_storage(run_dir.parent, cfg.run.shared_fs, resources)
        # An embedded cluster's workers share this process's disk and environment.
        if not cluster.embedded and (resources.hosts > 1 or not run_dir.is_local):
            check_nodes_reach_storage(run_dir)
        datasets = None
        if wants_streaming(cfg.task):  # built once, here; the workers read their shards
            from engine.train.streaming import build_streams, check_room_for_data

            check_room_for_data(cfg.scaling, resources)
            datasets, spec.streaming = build_streams(spec.info, cfg.task, cfg.seed)
        trainer = build_trainer(cfg, spec, run_dir, datasets=datasets)
        with DriverProgress(run_dir, cfg.trainer.epochs, echo=echo):
            try:
                clock.fit_started = time.time()
                guard.run(trainer.fit)
                clock.fit_ended = time.time()
            except Interrupt as stop:  # see ray_cluster: a joined cluster's job is left as is
                stop.workers_live_on = not cluster.embedded and fit_still_running()
                raise
            except Exception:
                if run_dir.is_local:  # the embedded cluster's logs outlive it here
                    cluster.keep_logs_in = run_dir.local_path / RAY_LOGS_DIR
                raise


def _interrupted(
    run_dir: Location,
    cfg: LeptonConfig,
    stop: Interrupt,
    started: float,
    metric: str,
    mode: str,
    cost: dict[str, Any] | None = None,
) -> RunInterrupted:
    """Record a run stopped by a signal: ``result.json`` (status ``interrupted``, when, the
    best checkpoint so far) and, after a finished epoch, ``report.md``; then the error
    that says how to resume it."""
    from engine.runs.layout import read_metrics

    rows = read_metrics(run_dir)
    extra: dict[str, Any] = {"interrupted_at": time.time(), "signal": stop.name, "cost": cost}
    with contextlib.suppress(LeptonError, OSError, ValueError):
        extra["summary"] = summarize(run_dir, metric, mode, "interrupted").as_dict()
    _write_status(run_dir, "interrupted", started=started, metric=metric, mode=mode, **extra)
    report = ""
    if rows and cfg.run.report:
        from engine.runs.report import write_report

        try:
            report = f"; report: {write_report(run_dir)}"
        except (LeptonError, OSError) as exc:  # the run's record above is what counts
            report = f"; no report ({first_line(exc)})"
    return RunInterrupted(
        f"{stop.name} after {len(rows)} of {cfg.trainer.epochs} epoch(s); run {run_dir} is "
        f"marked interrupted{report}",
        hint=f"To resume: {resume_command(run_dir.name)}",
        signum=stop.signum,
    )


def _write_status(run_dir: Location, status: str, *, started: float, **extra: Any) -> None:
    write_status(run_dir / RESULT_FILE, status, started=started, **extra)
