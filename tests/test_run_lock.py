"""Run integrity: one live driver per run (engine/runs/lock.py) and plain run names."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace

import pytest

from conftest import LEPTON, ROOT
from engine.cli import main
from engine.config.schema import RunSection, validate
from engine.errors import CheckpointError, ConfigError, RunLockedError
from engine.runs.layout import read_metrics
from engine.runs.listing import run_status
from engine.runs.lock import LOCK_FILE, RunLock, hold_run, live_owner, read_owner
from engine.runs.storage import Location

HOLD = """
import sys
from engine.runs.lock import RunLock
from engine.runs.storage import Location
lock = RunLock(Location.parse(sys.argv[1])).acquire()
print("locked", flush=True)
sys.stdin.read()  # hold it until the test closes stdin
lock.release()
"""

TRY = """
import sys
from engine.errors import RunLockedError
from engine.runs.lock import RunLock
from engine.runs.storage import Location
try:
    RunLock(Location.parse(sys.argv[1])).acquire()
except RunLockedError as exc:
    print(exc.message)
    sys.exit(3)
print("acquired")
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE, **kw
    )


@pytest.fixture
def holder(tmp_path):
    """Another process holding the lock of tmp_path/run until the test ends (or kills it)."""
    proc = _python(HOLD, str(tmp_path / "run"), stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    yield proc
    if proc.poll() is None:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(timeout=30)


# -- local run directories: an OS lock ----------------------------------------------------


def test_local_lock_refuses_a_second_process_and_names_the_owner(tmp_path):
    run = Location.parse(tmp_path / "run")
    lock = RunLock(run).acquire()
    try:
        other = _python(TRY, str(run))
        out, _ = other.communicate(timeout=60)
        assert other.returncode == 3, out
        assert (
            f"is in use by another driver: pid {os.getpid()} on host {socket.gethostname()}, since "
            in out
        )
        owner = read_owner(run)
        assert owner is not None and owner.pid == os.getpid() and owner.token == lock.token
        assert live_owner(run) == owner
    finally:
        lock.release()
    assert not (run / LOCK_FILE).exists()
    assert not run.exists(), "the lock removes the empty run dir it created"
    assert live_owner(run) is None


def test_local_lock_held_elsewhere_refuses_here_and_frees_when_released(tmp_path, holder):
    run = Location.parse(tmp_path / "run")
    with pytest.raises(RunLockedError, match=f"pid {holder.pid} on host "):
        RunLock(run, resume=True).acquire()
    assert run.is_dir(), "the loser leaves the owner's run dir alone"
    holder.stdin.close()
    holder.wait(timeout=30)
    RunLock(run).acquire().release()


def test_a_dead_drivers_local_lock_is_free_at_once(tmp_path, holder):
    run = Location.parse(tmp_path / "run")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert (run / LOCK_FILE).is_file(), "the file stays; the OS dropped the lock"
    assert live_owner(run) is None
    lock = RunLock(run).acquire()
    assert read_owner(run).pid == os.getpid()  # type: ignore[union-attr]
    lock.release()


def test_refused_message_for_resume_says_what_to_do(tmp_path, holder):
    with pytest.raises(RunLockedError) as info:
        RunLock(Location.parse(tmp_path / "run"), resume=True).acquire()
    assert "resume=true continues a run whose driver has stopped" in (info.value.hint or "")


def test_hold_run_refuses_a_new_run_that_another_driver_started(tmp_path):
    run = Location.parse(tmp_path / "run")
    run.mkdir()
    (run / "config.yaml").write_text("from the winner\n")
    with pytest.raises(CheckpointError, match="already exists"), hold_run(run, resume=False):
        pass
    assert sorted(p.name for p in run.children()) == ["config.yaml"]


def test_hold_run_removes_only_an_empty_dir_it_created(tmp_path):
    empty, used = Location.parse(tmp_path / "empty"), Location.parse(tmp_path / "used")
    with pytest.raises(ValueError), hold_run(empty, resume=False):
        raise ValueError("task.check failed")
    assert not empty.exists()
    with pytest.raises(ValueError), hold_run(used, resume=False):
        (used / "config.yaml").write_text("x\n")
        raise ValueError("later")
    assert [p.name for p in used.children()] == ["config.yaml"]


def test_runs_listing_reads_the_lock(tmp_path, holder):
    run = tmp_path / "run"
    (run / "config.yaml").write_text("task: {name: vision}\n")
    # result.json names this (live) process: only the lock can tell the driver is gone.
    result = {"status": "running", "pid": os.getpid(), "host": socket.gethostname()}
    (run / "result.json").write_text(json.dumps(result))
    assert run_status(run) == "running"
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert run_status(run) == "interrupted"


# -- object-store run directories: a lease -------------------------------------------------


def _objects(store, run: Location) -> list[str]:
    """Object keys under ``run``, without the empty directory markers pyarrow leaves."""
    return [k for k in store.keys(run.uri) if not k.endswith("/")]


def _lease(run: Location, *, heartbeat: float) -> None:
    data = {"token": "old", "host": "old-host", "pid": 4242, "started": heartbeat - 5}
    (run / LOCK_FILE).write_text(json.dumps({**data, "heartbeat": heartbeat, "command": "x"}))


def test_lease_refused_while_fresh_taken_over_when_stale_and_released(object_store):
    run = Location.parse(object_store.new_bucket() + "/runs/r1")
    _lease(run, heartbeat=time.time())
    with pytest.raises(RunLockedError, match="pid 4242 on host old-host, since ") as info:
        RunLock(run, settle_s=0.1).acquire()
    assert "60 s after its last heartbeat" in (info.value.hint or "")
    assert read_owner(run).token == "old"  # type: ignore[union-attr]

    _lease(run, heartbeat=time.time() - 120)
    said: list[str] = []
    lock = RunLock(run, settle_s=0.1, echo=said.append).acquire()
    assert len(said) == 1 and said[0].startswith(f"Taking over {run} from a driver that stopped")
    assert "pid 4242 on host old-host" in said[0]
    owner = read_owner(run)
    assert owner is not None and owner.token == lock.token and owner.pid == os.getpid()
    assert live_owner(run) == owner
    lock.release()
    assert _objects(object_store, run) == []
    assert live_owner(run) is None


def test_lease_heartbeat_keeps_it_fresh(object_store):
    run = Location.parse(object_store.new_bucket() + "/r")
    lock = RunLock(run, heartbeat_s=0.2, settle_s=0.1).acquire()
    try:
        first = read_owner(run).heartbeat  # type: ignore[union-attr]
        time.sleep(1.0)
        later = read_owner(run).heartbeat  # type: ignore[union-attr]
        assert later is not None and first is not None and later > first
        assert not lock.lost
    finally:
        lock.release()
    assert lock._thread is None and _objects(object_store, run) == []


def test_two_drivers_racing_for_a_lease_one_wins(object_store):
    run = Location.parse(object_store.new_bucket() + "/r")
    start = threading.Barrier(2)
    outcome: dict[str, object] = {}

    def contend(name: str) -> None:
        lock = RunLock(run, settle_s=0.5)
        start.wait()
        try:
            outcome[name] = lock.acquire()
        except RunLockedError as exc:
            outcome[name] = exc

    threads = [threading.Thread(target=contend, args=(n,)) for n in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    won = [v for v in outcome.values() if isinstance(v, RunLock)]
    lost = [v for v in outcome.values() if isinstance(v, RunLockedError)]
    assert len(won) == 1 and len(lost) == 1, outcome
    assert read_owner(run).token == won[0].token  # type: ignore[union-attr]
    won[0].release()


# -- run.name is a plain name --------------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", ".", "", "  ", "-x", "/abs"])
def test_run_name_must_be_a_plain_name(name):
    from engine.config.load import load_config

    cfg = load_config(["task=vision"]).config
    with pytest.raises(ConfigError, match=r"Invalid value for 'run\.name'") as info:
        validate(replace(cfg, run=RunSection(name=name)))
    assert "run.dir=<path>" in (info.value.hint or "")
    validate(replace(cfg, run=RunSection(name="digits-lr3e-4.v2")))


@pytest.mark.parametrize("name", ["../x", "a/b"])
def test_train_refuses_a_path_as_run_name_and_creates_nothing(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "runs"
    assert main(["train", "task=vision", f"run.name={name}", f"run.dir={root}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"lepton: error: Invalid value for 'run.name': {name!r}")
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


# -- the must-show: two drivers of one run, started together --------------------------------


@pytest.mark.slow
def test_two_trains_of_one_run_started_together_one_trains_one_is_refused(tmp_path):
    root = tmp_path / "runs"
    args = ["train", "task=vision", "trainer.epochs=2", "run.name=dup", f"run.dir={root}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [
        subprocess.Popen(
            [*LEPTON, *args],
            cwd=ROOT,
            env=env,
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=900) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], outs
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    err = outs[loser][1]
    assert "Traceback" not in err, err
    assert err.startswith(f"lepton: error: Run {root / 'dup'} is in use by another driver: "), err
    assert f"pid {procs[winner].pid} on host {socket.gethostname()}" in err
    assert "Wait for it to finish, or pick another run.name." in err
    rows = read_metrics(root / "dup", dedupe=False)
    assert [r["epoch"] for r in rows] == [0, 1], "each epoch trained exactly once"
    assert json.loads((root / "dup" / "result.json").read_text())["status"] == "finished"
    assert not (root / "dup" / LOCK_FILE).exists(), "released at the end"
    assert sorted(p.name for p in root.iterdir()) == ["dup"]


def test_a_run_dir_that_cannot_be_created_is_a_storage_error_not_a_traceback(tmp_path):
    from engine.errors import StorageError

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(StorageError, match="Cannot create the run directory") as err:
        RunLock(Location.parse(blocker / "runs" / "r")).acquire()
    assert "run.dir" in (err.value.hint or "")
    out = subprocess.run(
        [*LEPTON, "train", "task=vision", "scaling=inprocess", "run.dir=/proc/no-such/runs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "Cannot create the run directory" in out.stderr
