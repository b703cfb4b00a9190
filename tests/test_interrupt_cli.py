"""A real ``lepton train`` stopped by Ctrl-C / SIGTERM, resumed, and what its cluster leaves.

Each command runs with ``TMPDIR`` and ``RAY_TMPDIR`` (Ray 2.60 reads ``RAY_TMPDIR``, then
``TMPDIR`` on Linux, then ``/tmp``) pointed at a fresh short directory, so "no temporary
checkpoint dir and no Ray session dir left" is checked exactly. A short path, because
Ray puts Unix sockets under its session dir and a socket path has ~107 bytes at most.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import LEPTON, ROOT
from engine.runs.layout import read_metrics, read_result

pytestmark = pytest.mark.slow

EPOCHS = 4
BASE = ["train", "task=vision", f"trainer.epochs={EPOCHS}", "scaling.num_workers=1"]


@pytest.fixture
def temp_root() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="lep-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(temp_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, "PYTHONUNBUFFERED": "1", "TMPDIR": str(temp_root), "RAY_TMPDIR": str(temp_root)}


def _start(args: list[str], temp_root: Path, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*LEPTON, *args],
        cwd=ROOT,
        env=_env(temp_root),
        start_new_session=True,  # its own group: a "terminal" Ctrl-C can reach all of it
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
    )


def _wait_for_rows(proc: subprocess.Popen, run_dir: Path, n: int = 1) -> None:
    deadline = time.monotonic() + 300
    while len(read_metrics(run_dir)) < n:  # a condition, not a fixed sleep
        assert proc.poll() is None, "training ended before the signal"
        assert time.monotonic() < deadline, "no epoch within 5 minutes"
        time.sleep(0.1)


def _leftovers(temp_root: Path) -> list[str]:
    """What this command left that it should not: temp checkpoints, Ray session dirs."""
    ckpts = [p.name for p in temp_root.glob("lepton-ckpt-*")]
    sessions = [p.name for p in (temp_root / "ray").glob("session_*")]
    return ckpts + sessions


def _listeners(pid: int) -> list[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``pid``'s tree."""
    found = []
    root = psutil.Process(pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = proc.name()
            conns = proc.net_connections(kind="inet")
        except psutil.Error:  # a worker that ended meanwhile
            continue
        found += [(name, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
    return found


def _is_loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def _stop(proc: subprocess.Popen, signum: int, to_group: bool) -> tuple[int, float, float]:
    """Send the signal; (exit status, seconds to exit, wall time it was sent)."""
    sent_at, sent = time.time(), time.monotonic()
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    try:
        status = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return status, time.monotonic() - sent, sent_at


def _check_interrupted(run_dir: Path, err: str, signame: str, sent_at: float) -> None:
    result = read_result(run_dir)
    assert result is not None and result["status"] == "interrupted", result
    assert result["signal"] == signame
    assert sent_at - 1 <= result["interrupted_at"] <= time.time()
    assert (run_dir / "report.md").is_file()  # the epochs done, reported
    assert f"run.name={run_dir.name} resume=true" in err, err[-2000:]
    assert f"lepton: interrupted: {signame} after" in err


def test_ctrl_c_stops_records_and_cleans_up_then_resume_finishes(tmp_path, temp_root):
    """SIGINT to the lepton process only: exit 130 within a minute, the run marked
    ``interrupted`` with its time, its report written, nothing left in the temp dir, one
    line naming the resume command; then ``resume=true`` finishes the run. While it
    trains, nothing of its cluster listens off loopback but torch's rendezvous store."""
    args = [*BASE, f"run.dir={tmp_path}", "run.name=sig"]
    run_dir = tmp_path / "sig"
    proc = _start(args, temp_root, tmp_path / "first.err")
    _wait_for_rows(proc, run_dir)
    listening = _listeners(proc.pid)
    status, took, sent_at = _stop(proc, signal.SIGINT, to_group=False)
    err = (tmp_path / "first.err").read_text()
    assert status == 130, err[-3000:]
    assert took < 60
    _check_interrupted(run_dir, err, "SIGINT", sent_at)
    assert _leftovers(temp_root) == []

    names = {name for name, _, _ in listening}
    assert {"gcs_server", "raylet"} <= names, listening  # the check saw the cluster
    off_loopback = [entry for entry in listening if not _is_loopback(entry[1])]
    # torch.distributed's TCPStore (rank 0's rendezvous) binds every interface and has
    # no setting for it; everything of Ray's is on loopback.
    assert all(name.startswith("ray::RayTrainWorker") for name, _, _ in off_loopback), listening
    assert len(off_loopback) <= 1, listening

    out = subprocess.run(
        [*LEPTON, *args, "resume=true"],
        cwd=ROOT,
        env=_env(temp_root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert [r["epoch"] for r in read_metrics(run_dir)] == list(range(EPOCHS))
    assert any(r.get("resumed_from") for r in read_metrics(run_dir, dedupe=False))
    assert read_result(run_dir)["status"] == "finished"
    assert _leftovers(temp_root) == []  # a finished run leaves no session dir either


@pytest.mark.parametrize(
    ("signame", "to_group", "status"),
    [("SIGINT", True, 130), ("SIGTERM", False, 143)],
    ids=["ctrl-c-to-the-terminal-group", "sigterm"],
)
def test_signal_marks_run_interrupted(tmp_path, temp_root, signame, to_group, status):
    """A terminal's Ctrl-C reaches the whole group (Ray's processes block SIGINT);
    SIGTERM (a scheduler, ``kill``) exits 143."""
    run_dir = tmp_path / "sig"
    proc = _start([*BASE, f"run.dir={tmp_path}", "run.name=sig"], temp_root, tmp_path / "err")
    _wait_for_rows(proc, run_dir)
    code, took, sent_at = _stop(proc, getattr(signal, signame), to_group)
    err = (tmp_path / "err").read_text()
    assert code == status, err[-3000:]
    assert took < 60
    _check_interrupted(run_dir, err, signame, sent_at)
    assert _leftovers(temp_root) == []


def test_failed_run_keeps_ray_logs_in_run_dir_and_no_session_dir(tmp_path, temp_root):
    """A worker-side error: the session's logs (the worker's traceback among them) are
    copied into ``<run>/ray-logs/<session>/`` before the session dir is removed."""
    out = subprocess.run(
        [*LEPTON, *BASE, f"run.dir={tmp_path}", "run.name=bad", "task.model.dropout=1.5"],
        cwd=ROOT,
        env=_env(temp_root),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 1, out.stderr[-3000:]
    assert "dropout probability" in out.stderr
    assert read_result(tmp_path / "bad")["status"] == "failed"
    (session,) = (tmp_path / "bad" / "ray-logs").iterdir()
    errors = [p.read_text(errors="replace") for p in session.glob("worker-*.err")]
    assert any("dropout probability has to be between 0 and 1" in e for e in errors)
    assert _leftovers(temp_root) == []


def test_ctrl_c_on_a_joined_cluster_ends_its_workers_and_leaves_the_cluster(tmp_path, temp_root):
    """On a cluster the command joined, leaving it (``ray.shutdown()``) ends the job, and
    with it the Train controller and workers; the cluster itself and its session stay."""
    from multinode import LocalMultiNodeCluster

    cluster = LocalMultiNodeCluster(head_cpus=2, worker_cpus=()).start()
    try:
        run_dir = tmp_path / "sig"
        proc = subprocess.Popen(
            [*LEPTON, *BASE, f"run.dir={tmp_path}", "run.name=sig"],
            cwd=ROOT,
            env={**_env(temp_root), **cluster.client_env()},
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / "err").open("w"),
        )
        _wait_for_rows(proc, run_dir)
        workers = [
            p
            for root in cluster.processes()
            for p in [root, *root.children(recursive=True)]
            if p.name().startswith("ray::RayTrainWorker")
        ]
        assert workers, "no training worker found in the joined cluster"
        code, _, sent_at = _stop(proc, signal.SIGINT, to_group=False)
        err = (tmp_path / "err").read_text()
        assert code == 130, err[-3000:]
        _check_interrupted(run_dir, err, "SIGINT", sent_at)
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "training workers outlived the interrupted driver"
        assert list(cluster.temp_dir.glob("session_2*")), "the joined cluster's session is not ours"
    finally:
        cluster.stop()
