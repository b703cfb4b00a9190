"""`lepton tune` as a user runs it (end-to-end tier): a sweep whose driver is killed
resumes without rerunning finished trials; the sweep directory feeds evaluate and
train --from; mistakes exit 2 before anything starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import LEPTON, run_lepton
from engine.runs.layout import read_metrics

pytestmark = pytest.mark.slow

EPOCHS = 3
SWEEP = [
    "tune",
    "task=vision",
    "scaling.num_workers=1",
    "scaling.cpus_per_worker=1",
    f"trainer.epochs={EPOCHS}",
    "optimizer.lr=choice(0.001,0.002,0.003,0.004,0.005)",
    "tune.search=grid",
    "tune.scheduler=fifo",
    "run.name=rs",
]


def _rows(sweep: Path) -> dict[str, int]:
    return {t.name: len(read_metrics(t, dedupe=False)) for t in sorted(sweep.glob("trial_*"))}


def test_a_killed_sweep_resumes_without_rerunning_finished_trials(tmp_path):
    args = [*SWEEP, f"run.dir={tmp_path}"]
    proc = subprocess.Popen(
        [*LEPTON, *args],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    sweep = tmp_path / "rs"
    deadline = time.monotonic() + 300
    try:
        # Midway: at least two trials done, and the sweep not over.
        while not sweep.exists() or sum(n == EPOCHS for n in _rows(sweep).values()) < 2:
            assert proc.poll() is None, "the sweep ended before it could be killed"
            assert time.monotonic() < deadline, "no progress within 5 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1)  # a trial's worker notices its raylet is gone within 0.2 s
    before = _rows(sweep)
    done = [name for name, n in before.items() if n == EPOCHS]
    assert 2 <= len(done) < 5
    listed = run_lepton("runs", str(tmp_path), "--json")
    assert [r["status"] for r in json.loads(listed.stdout)] == ["interrupted"]

    out = run_lepton(*args, "resume=true", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    after = _rows(sweep)
    assert len(after) == 5
    for name in done:  # finished trials were not rerun: their records gained no rows
        assert after[name] == before[name], name
    assert all(len(read_metrics(sweep / name)) == EPOCHS for name in after)
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["status"] == "finished"

    again = run_lepton(*args, "resume=true")
    assert again.returncode == 0 and "already finished" in again.stdout
    assert _rows(sweep) == after

    # The sweep directory is a model: evaluate takes it, and its best config trains again.
    evaluated = run_lepton("evaluate", str(sweep))
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert "val/accuracy" in evaluated.stdout
    retrained = run_lepton(
        "train", "--from", str(sweep), "trainer.epochs=1", f"run.dir={tmp_path}", "run.name=again"
    )
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    best = json.loads((sweep / "best.json").read_text())
    assert (
        f"lr: {best['values']['optimizer.lr']}" in (tmp_path / "again" / "config.yaml").read_text()
    )


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("optimizer.lr=interval(0.1", "optimizer.lr=interval(0.1"),
        ("task.model.nope=choice(1,2)", "task.model.nope"),
        ("tune.num_samples=0", "tune.num_samples"),
        ("tune.metric=val/nope", "val/nope"),
    ],
)
def test_mistakes_exit_2_with_the_key_named_and_nothing_started(tmp_path, override, named):
    sweep = (
        [] if "=choice" in override or "interval" in override else ["optimizer.lr=choice(0.1,0.01)"]
    )
    out = run_lepton("tune", "task=vision", *sweep, override, f"run.dir={tmp_path}")
    assert out.returncode == 2
    assert named in out.stderr and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # no sweep directory
