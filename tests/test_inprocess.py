"""``scaling=inprocess``: a run's loop in the ``lepton`` process, no Ray.

Unmarked tests never start Ray: the retention rule, the config and machine checks, and
whole runs through ``engine.train.driver.train`` in this process (records, kept
checkpoints, threads, failures, a signal and ``resume=true``). The ``slow`` ones run the
real ``lepton`` CLI in a subprocess: a finished run that never imports ``ray``, and one
stopped by Ctrl-C, refused to a second driver, then resumed.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import psutil
import pytest
import torch

from conftest import LEPTON, ROOT, run_lepton
from engine import cli
from engine.config.load import load_config
from engine.errors import (
    ClusterError,
    ConfigError,
    DataError,
    RunInterrupted,
    RunLockedError,
    TrainingFailed,
)
from engine.runs.checkpoint import is_complete, save_checkpoint
from engine.runs.layout import checkpoints, read_json, read_metrics, read_result
from engine.runs.storage import Location
from engine.train.driver import train
from engine.train.inprocess import (
    TRACEBACK_FILE,
    check_machine,
    checkpoints_to_delete,
    device_for,
    machine_cpus,
    prune_checkpoints,
)
from engine.train.inprocess_signals import InProcessSignals
from engine.train.interrupts import Interrupt, InterruptGuard
from engine.train.loop import LoopCallback

#: Few steps per epoch: these runs check records, not learning.
QUICK = ["task=vision", "scaling=inprocess", "scaling.cpus_per_worker=1", "trainer.batch_size=256"]


# -- the retention rule (Ray's CheckpointConfig(num_to_keep, score attribute, order)) --


def test_fewer_checkpoints_than_kept_are_all_kept():
    assert checkpoints_to_delete([], 2, "max") == []
    assert checkpoints_to_delete([("a", 0.1), ("b", 0.2)], 2, "max") == []


def test_the_best_n_are_kept_by_the_metrics_direction():
    found = [("e0", 0.5), ("e1", 0.9), ("e2", 0.7), ("e3", 0.8), ("e4", 0.95)]
    assert sorted(checkpoints_to_delete(found, 2, "max")) == ["e0", "e2", "e3"]
    losses = [("e0", 0.9), ("e1", 0.2), ("e2", 0.5), ("e3", 0.4), ("e4", 0.1)]
    assert sorted(checkpoints_to_delete(losses, 2, "min")) == ["e0", "e2", "e3"]


def test_the_newest_is_never_deleted_even_when_it_is_the_worst():
    """The checkpoint a resume continues from stays: N best plus the newest (as Ray)."""
    found = [("e0", 0.9), ("e1", 0.8), ("e2", 0.1)]
    assert checkpoints_to_delete(found, 1, "max") == ["e1"]
    assert checkpoints_to_delete(found, 2, "max") == []
    assert checkpoints_to_delete([("e0", 0.1), ("e1", 0.2), ("e2", 0.9)], 1, "min") == ["e1"]


def test_equal_scores_keep_the_newer_and_missing_or_nan_scores_go_first():
    assert checkpoints_to_delete([("a", 0.5), ("b", 0.5), ("c", 0.5)], 1, "max") == ["a", "b"]
    found = [("nan", math.nan), ("none", None), ("text", "x"), ("good", 0.1), ("new", 0.05)]
    # NaN below everything, then the unscored (oldest first), then real values.
    assert checkpoints_to_delete(found, 2, "max") == ["nan", "none", "text"]
    assert checkpoints_to_delete(found, 3, "min") == ["nan", "none"]


def test_keep_must_be_positive():
    with pytest.raises(ValueError):
        checkpoints_to_delete([("a", 1.0)], 0, "max")


def _fake_checkpoints(run: Path, scores: list[float]) -> list[str]:
    """Whole checkpoints (real task.json, tiny weights) with the given val/accuracy."""
    loaded = load_config(["task=vision"])
    names = []
    for epoch, score in enumerate(scores):
        path = run / f"checkpoint_2026-01-01_00-00-0{epoch}.000000"
        save_checkpoint(
            path,
            info=loaded.info,
            model=torch.nn.Linear(2, 2),
            task_config=loaded.config.task,
            artifacts={},
            epoch=epoch,
            metrics={"val/accuracy": score},
        )
        names.append(path.name)
    return names


def test_prune_removes_whole_directories_and_leaves_nothing_half_there(tmp_path):
    names = _fake_checkpoints(tmp_path, [0.9, 0.5, 0.7, 0.2])
    removed = prune_checkpoints(Location.parse(tmp_path), 2, "val/accuracy", "max")
    assert removed == [names[1]]
    # best two (0.9, 0.7) plus the newest (0.2), which is never removed
    assert [p.name for p in checkpoints(tmp_path)] == [names[0], names[2], names[3]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [names[0], names[2], names[3]]


# -- configuration --------------------------------------------------------------------


def test_scaling_inprocess_composes_one_in_process_worker():
    s = load_config(["task=vision", "scaling=inprocess"]).config.scaling
    assert s.in_process is True and s.num_workers == 1 and s.cpus_per_worker == 2
    assert load_config(["task=vision"]).config.scaling.in_process is False


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["scaling=inprocess", "scaling.num_workers=2"], "exactly one worker"),
        (["scaling=local", "scaling.in_process=true"], "scaling.num_workers=2"),
        (["scaling=inprocess", "scaling.cpus_per_worker=1.5"], "scaling.cpus_per_worker"),
        (["scaling=inprocess", "ray.address=127.0.0.1:6379"], "ray.address"),
    ],
)
def test_in_process_settings_that_cannot_hold_are_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=re.escape(match)) as caught:
        load_config(["task=vision", *overrides])
    assert caught.value.hint


def test_cli_exits_2_on_more_than_one_in_process_worker(capsys):
    assert cli.main(["train", "task=vision", "scaling=inprocess", "scaling.num_workers=3"]) == 2
    err = capsys.readouterr().err
    assert "scaling.in_process=true" in err and "scaling.num_workers=3" in err
    assert "Traceback" not in err


def test_more_threads_than_cpus_is_refused():
    cfg = load_config(["task=vision", "scaling=inprocess"]).config.scaling
    cfg.cpus_per_worker = machine_cpus() + 1
    with pytest.raises(ClusterError, match="this machine has"):
        check_machine(cfg)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_gpu_without_cuda_is_a_clear_error_before_anything_is_written(tmp_path):
    loaded = load_config([*QUICK, "scaling.use_gpu=true", f"run.dir={tmp_path}", "run.name=g"])
    with pytest.raises(ClusterError, match="CUDA is not available") as caught:
        train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    assert "scaling.use_gpu=false" in (caught.value.hint or "")
    assert not (tmp_path / "g").exists()  # nothing of a run to resume or to clean


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_runs_on_the_current_cuda_device():
    scaling = load_config(["task=vision", "scaling=inprocess", "scaling.use_gpu=true"])
    device = device_for(scaling.config.scaling)
    assert device.type == "cuda" and device.index == torch.cuda.current_device()


# -- whole runs in this process -----------------------------------------------------------


class _Seen(LoopCallback):
    def __init__(self) -> None:
        self.threads: list[int] = []
        self.device: list[str] = []

    def on_train_start(self, ctx, start_epoch):
        self.threads.append(torch.get_num_threads())
        self.device.append(str(ctx.device))


def _train(tmp_path, *overrides, callbacks=(), lines=None):
    loaded = load_config([*QUICK, f"run.dir={tmp_path}", "run.name=r", *overrides])
    echo = lines.append if lines is not None else lambda _: None
    return train(loaded.config, loaded.info, loaded.yaml, callbacks=callbacks, echo=echo)


def test_a_run_in_process_writes_the_run_dir_and_keeps_the_best_and_the_newest(tmp_path, capsys):
    """Ranked so the best is the *first* epoch (val/accuracy, min): keep_checkpoints=1
    leaves it and the newest, nothing else; the epoch lines are the driver's, once."""
    seen, lines = _Seen(), []
    threads_before = torch.get_num_threads()
    summary = _train(
        tmp_path,
        "trainer.epochs=3",
        "trainer.keep_checkpoints=1",
        "trainer.checkpoint_mode=min",
        callbacks=[seen],
        lines=lines,
    )
    run = tmp_path / "r"
    assert seen.threads == [1] and seen.device == ["cpu"]  # scaling.cpus_per_worker=1
    assert torch.get_num_threads() == threads_before  # given back afterwards
    assert lines[0] == f"Training vision in {run} (in this process, CPU, 1 thread(s))"
    assert [line.split("  ")[0] for line in lines[1:]] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "[lepton] epoch" not in capsys.readouterr().out  # not printed twice

    kept = {json.loads((p / "task.json").read_text())["epoch"] for p in checkpoints(run)}
    assert kept == {0, 2}
    assert [p.name for p in run.iterdir() if p.name.startswith(".")] == []
    ray_style = re.compile(r"checkpoint_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d{6}")
    assert all(ray_style.fullmatch(p.name) for p in checkpoints(run))
    result = read_result(run)
    assert result["status"] == "finished" and result["summary"]["best_epoch"] == 0
    assert summary.best_checkpoint.name == result["summary"]["best_checkpoint"]
    cost = result["cost"]
    assert cost["workers"] == 1 and cost["cpus_per_worker"] == 1.0
    assert 0 < cost["reserved_window_s"] <= cost["wall_s"]
    assert cost["cpu_h_reserved"] == pytest.approx(cost["reserved_window_s"] / 3600)
    assert cost["phases"]["training"] > 0 and cost["samples"] > 0
    assert read_json(run / "workers.json") and read_json(run / "timing.json")
    assert (run / "config.yaml").read_text().count("in_process: true") == 1


class _FailAt(LoopCallback):
    def __init__(self, error: Exception, times: int = 1) -> None:
        self.error, self.times = error, times

    def on_epoch_end(self, ctx, epoch, row):
        if self.times > 0:
            self.times -= 1
            raise self.error


def test_a_task_error_is_training_failed_with_the_hint_and_its_traceback_kept(tmp_path, capsys):
    with pytest.raises(TrainingFailed, match="Training failed: RuntimeError: boom") as caught:
        _train(tmp_path, "trainer.epochs=2", callbacks=[_FailAt(RuntimeError("boom"))])
    run = tmp_path / "r"
    assert "run.name=r resume=true" in caught.value.hint
    assert str(run / TRACEBACK_FILE) in caught.value.hint
    assert "RuntimeError: boom" in (run / TRACEBACK_FILE).read_text()
    assert "Traceback" in capsys.readouterr().err  # for whoever is debugging
    result = read_result(run)
    assert result["status"] == "failed" and result["error"] == "boom"


def test_a_lepton_error_from_the_task_stays_that_error(tmp_path):
    with pytest.raises(DataError, match="bad rows"):
        _train(tmp_path, "trainer.epochs=2", callbacks=[_FailAt(DataError("bad rows"))])
    assert read_result(tmp_path / "r")["status"] == "failed"
    assert not (tmp_path / "r" / TRACEBACK_FILE).exists()


def test_max_failures_restarts_the_loop_from_the_newest_checkpoint(tmp_path, capsys):
    _train(
        tmp_path,
        "trainer.epochs=3",
        "trainer.max_failures=1",
        callbacks=[_FailAt(RuntimeError("flaky"))],
    )
    run = tmp_path / "r"
    assert "restarting from the newest checkpoint (retry 1 of 1)" in capsys.readouterr().err
    rows = read_metrics(run, dedupe=False)
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # continued after epoch 0, not from 0
    assert rows[1].get("resumed_from")
    assert read_result(run)["status"] == "finished"
    assert len(read_json(run / "timing.json")["attempts"]) == 2


class _SecondDriver(LoopCallback):
    """Starts another driver of the same run while this one trains."""

    def __init__(self, tmp_path) -> None:
        self.tmp_path, self.error = tmp_path, None

    def on_train_start(self, ctx, start_epoch):
        try:
            _train(self.tmp_path, "trainer.epochs=1", "resume=true")
        except RunLockedError as exc:
            self.error = exc


def test_the_run_lock_is_held_while_it_trains_in_process(tmp_path):
    second = _SecondDriver(tmp_path)
    _train(tmp_path, "trainer.epochs=1", callbacks=[second])
    assert second.error is not None and str(os.getpid()) in str(second.error)
    assert read_result(tmp_path / "r")["status"] == "finished"  # the first one went on


class _SignalAt(LoopCallback):
    def __init__(self, signum: int, epoch: int) -> None:
        self.signum, self.epoch = signum, epoch

    def on_epoch_end(self, ctx, epoch, row):
        if epoch == self.epoch:
            os.kill(os.getpid(), self.signum)
            time.sleep(5)  # the guard's Interrupt arrives here, on this (main) thread


def test_sigterm_records_the_interrupted_run_and_resume_continues_it(tmp_path, monkeypatch):
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(temp))
    handler = signal.getsignal(signal.SIGTERM)
    started = time.monotonic()
    with pytest.raises(RunInterrupted) as caught:
        _train(tmp_path, "trainer.epochs=3", callbacks=[_SignalAt(signal.SIGTERM, 0)])
    assert time.monotonic() - started < 60
    assert caught.value.exit_code == 143 and "SIGTERM after 1 of 3 epoch(s)" in str(caught.value)
    assert "run.name=r resume=true" in caught.value.hint
    assert signal.getsignal(signal.SIGTERM) is handler  # put back
    run = tmp_path / "r"
    result = read_result(run)
    assert result["status"] == "interrupted" and result["signal"] == "SIGTERM"
    assert result["summary"]["epochs_done"] == 1 and result["cost"]["workers"] == 1
    assert (run / "report.md").is_file()
    assert list(temp.iterdir()) == []  # no temporary checkpoint dir left
    assert all(is_complete(p) for p in run.iterdir() if p.name.startswith("checkpoint_"))

    newest = checkpoints(run)[-1].name
    _train(tmp_path, "trainer.epochs=3", "resume=true")
    rows = read_metrics(run, dedupe=False)
    assert [r["epoch"] for r in rows] == [0, 1, 2]  # on from epoch 1, not again from 0
    assert Path(rows[1]["resumed_from"]).name == newest
    result = read_result(run)
    assert result["status"] == "finished" and result["cost"]["runs"] == 2


def test_an_object_store_run_keeps_whole_checkpoints_as_kept(object_store):
    """run.dir on S3 (a real S3-API server): the same records; pruned checkpoints are
    gone whole (task.json first), the kept ones whole."""
    root = Location.parse(object_store.new_bucket()) / "runs"
    loaded = load_config([*QUICK, f"run.dir={root.uri}", "run.name=s3", "trainer.epochs=3",
                          "trainer.keep_checkpoints=1", "trainer.checkpoint_mode=min"])  # fmt: skip
    train(loaded.config, loaded.info, loaded.yaml, echo=lambda _: None)
    run = root / "s3"
    kept = [json.loads((p / "task.json").read_text())["epoch"] for p in checkpoints(run)]
    assert kept == [0, 2]
    assert sorted(c.name for c in run.children() if c.name.startswith("checkpoint_")) == sorted(
        p.name for p in checkpoints(run)
    )
    assert read_result(run)["status"] == "finished" and len(read_metrics(run)) == 3


@pytest.mark.parametrize("running", [True, False])
def test_processes_forked_during_a_run_ignore_the_stop_signals(running):
    """A DataLoader worker forked while an in-process run trains leaves SIGINT/SIGTERM
    to the run's own process (as Ray's processes block SIGINT); outside a run a fork
    keeps the handlers it inherits."""
    read, write = os.pipe()
    with InterruptGuard() as guard, InProcessSignals(guard) if running else nullcontext():
        pid = os.fork()
        if pid == 0:  # the child: report its handlers, then leave at once
            handlers = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]
            os.write(write, b"1" if handlers == [signal.SIG_IGN] * 2 else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == (b"1" if running else b"0")


def test_a_signal_while_forking_or_dropped_in_a_del_is_raised_at_the_next_check(capfd):
    """Python drops an exception raised in an at-fork hook or a ``__del__``: the signal
    is then raised at the loop's next check instead, and nothing is printed for it."""

    class Finalised:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs in here

    with InterruptGuard() as guard:
        guard.arm()
        with InProcessSignals(guard) as signals:
            signals.forking = True  # as between os.fork()'s hooks
            os.kill(os.getpid(), signal.SIGTERM)
            signals.forking = False
            assert signals.deferred == [signal.SIGTERM] and guard.signum is None
            with pytest.raises(Interrupt):
                signals.check()
            guard.signum = None  # a fresh start for the second case

            Finalised()  # its Interrupt is dropped by Python
            assert guard.signum == signal.SIGTERM
            with pytest.raises(Interrupt):
                signals.callback().on_step_end(None, 0, 1)
    assert "Exception ignored" not in capfd.readouterr().err


# -- the real CLI -------------------------------------------------------------------------


def _ray_imports(importtime_stderr: str) -> list[str]:
    """Modules named ``ray`` or ``ray.*`` in ``python -X importtime`` output."""
    names = [line.rsplit("|", 1)[-1].strip() for line in importtime_stderr.splitlines()]
    return [n for n in names if n == "ray" or n.startswith("ray.")]


@pytest.mark.slow
def test_cli_trains_in_process_without_importing_ray(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    out = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "engine.cli",
            "train",
            "task=vision",
            "trainer.epochs=2",
            "scaling=inprocess",
            "scaling.cpus_per_worker=1",  # one thread: quick on a loaded machine too
            f"run.dir={tmp_path}",
            "run.name=cli",
        ],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "import time:" in out.stderr  # the check below saw the imports
    assert _ray_imports(out.stderr) == []
    run = tmp_path / "cli"
    epoch_lines = [line for line in out.stdout.splitlines() if line.startswith("epoch ")]
    assert [line.split("  ")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
    assert "(in this process, CPU, 1 thread(s))" in out.stdout
    assert f"Run directory:   {run}" in out.stdout and f"Report:          {run}" in out.stdout
    for name in ("config.yaml", "metrics.jsonl", "result.json", "report.md", "workers.json"):
        assert (run / name).is_file(), name
    result = read_result(run)
    assert result["status"] == "finished" and result["summary"]["epochs_done"] == 2
    assert result["cost"]["cpus_per_worker"] == 1.0 and result["cost"]["cpu_h_reserved"] > 0
    assert len(checkpoints(run)) == 2  # trainer.keep_checkpoints=2
    assert "Speed and cost" in (run / "report.md").read_text()


def _wait_for_rows(proc: subprocess.Popen, run: Path, n: int = 1) -> None:
    deadline = time.monotonic() + 300
    while len(read_metrics(run)) < n:
        assert proc.poll() is None, "training ended before the signal"
        assert time.monotonic() < deadline, "no epoch within 5 minutes"
        time.sleep(0.05)


def _with_children(proc: subprocess.Popen) -> list[psutil.Process]:
    """The process and its children, once it has some (its DataLoader workers)."""
    deadline = time.monotonic() + 60
    while not psutil.Process(proc.pid).children(recursive=True):
        assert proc.poll() is None, "training ended before the signal"
        assert time.monotonic() < deadline, "no DataLoader worker within a minute"
        time.sleep(0.02)
    return [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]


@pytest.mark.slow
def test_cli_ctrl_c_then_resume_continues_the_rows(tmp_path):
    """A terminal's Ctrl-C (SIGINT to the whole group, DataLoader workers included) after
    the first epoch: exit 130, the run recorded as interrupted (report, resume command),
    no traceback, no process left; ``resume=true`` continues from the newest checkpoint:
    the rows go on from where they stopped, not from 0."""
    epochs = 6
    args = [
        "train",
        "task=vision",
        f"trainer.epochs={epochs}",
        "scaling=inprocess",
        "scaling.cpus_per_worker=1",
        "trainer.data_workers=2",
        f"run.dir={tmp_path}",
        "run.name=sig",
    ]
    run = tmp_path / "sig"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    err = tmp_path / "first.err"
    proc = subprocess.Popen(
        [*LEPTON, *args],
        cwd=ROOT,
        env={**env, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own group, as a terminal's foreground job
        stdout=subprocess.DEVNULL,
        stderr=err.open("w"),
    )
    try:
        _wait_for_rows(proc, run)
        family = _with_children(proc)  # the next epoch's loader workers
        os.killpg(proc.pid, signal.SIGINT)
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = err.read_text()
    assert status == 130, text[-3000:]
    assert len(family) > 1  # the loader workers were there to be signalled
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not alive, alive
    assert text.count("stopping the run") == 1 and "Traceback" not in text, text[-3000:]
    assert "lepton: interrupted: SIGINT after" in text
    assert "run.name=sig resume=true" in text
    result = read_result(run)
    assert result["status"] == "interrupted" and result["signal"] == "SIGINT"
    assert (run / "report.md").is_file()
    done = [r["epoch"] for r in read_metrics(run, dedupe=False)]
    assert done and done[0] == 0 and len(done) < epochs

    out = run_lepton(*args, "resume=true")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = read_metrics(run, dedupe=False)
    resumed = rows[len(done) :]
    assert resumed and resumed[0]["epoch"] > 0 and resumed[0].get("resumed_from")
    assert [r["epoch"] for r in read_metrics(run)] == list(range(epochs))
    assert read_result(run)["status"] == "finished"
    assert "(resumed from checkpoint_" in out.stdout
