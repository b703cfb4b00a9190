"""Ctrl-C / SIGTERM handling and the embedded cluster's footprint, without starting Ray.

The real runs (a signal to ``lepton train``, a finished run's session dir, what listens
where) are in ``test_interrupt_cli.py``; this file checks the parts one by one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from engine import cli
from engine.errors import RunInterrupted
from engine.train import embedded
from engine.train.interrupts import Interrupt, InterruptGuard, exit_status, resume_command
from engine.train.worker_context import (
    _tag_checkpoint_dirs,
    remove_orphan_checkpoint_dirs,
    temporary_checkpoint_dir,
)

ROOT = Path(__file__).resolve().parents[1]


def test_first_signal_raises_in_main_thread_while_fn_runs_on_a_helper_thread():
    seen: dict[str, object] = {}
    release = threading.Event()

    def fit() -> str:
        seen["thread"] = threading.current_thread().name
        os.kill(os.getpid(), signal.SIGTERM)  # delivered to the main thread
        release.wait(10)
        return "done"

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupt) as caught, InterruptGuard() as guard:
        guard.arm()
        guard.run(fit)
    release.set()
    assert caught.value.signum == signal.SIGTERM and caught.value.name == "SIGTERM"
    assert seen["thread"] == "lepton-fit"
    assert signal.getsignal(signal.SIGTERM) is before  # put back when the guard ends
    assert not isinstance(caught.value, Exception)  # `except Exception` cannot swallow it


def test_unarmed_guard_runs_fn_in_place_and_passes_results_and_errors():
    with InterruptGuard() as guard:
        assert guard.run(threading.current_thread) is threading.main_thread()
    with InterruptGuard() as guard:
        guard.arm()
        assert guard.run(lambda: 42) == 42
        with pytest.raises(ZeroDivisionError):
            guard.run(lambda: 1 / 0)


def test_signal_after_fit_returned_is_only_noted(capfd):
    with InterruptGuard() as guard:
        guard.arm()
        assert guard.run(lambda: "done") == "done"
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, and raises nothing
        time.sleep(0.05)
        assert guard.signum == signal.SIGINT
    assert "training has finished" in capfd.readouterr().err


def test_guard_off_the_main_thread_installs_nothing():
    result: dict[str, object] = {}

    def body() -> None:
        with InterruptGuard() as guard:
            guard.arm()  # Python allows no signal handlers here: a no-op, not an error
            result["armed"] = guard.armed
            result["thread"] = guard.run(threading.current_thread)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert result["armed"] is False and result["thread"] is t


SECOND_SIGNAL = textwrap.dedent(
    """
    import os, signal, sys, time
    from engine.train.interrupts import Interrupt, InterruptGuard
    with InterruptGuard() as guard:
        guard.arm()
        try:
            os.kill(os.getpid(), signal.SIG{first})
            time.sleep(5)
        except Interrupt:
            print("stopping", flush=True)
            os.kill(os.getpid(), signal.SIG{second})  # during the cleanup
            time.sleep(5)
            print("cleanup finished", flush=True)
    """
)


@pytest.mark.parametrize(("first", "second", "status"), [("INT", "INT", 130), ("INT", "TERM", 143)])
def test_second_signal_exits_at_once(first, second, status):
    script = SECOND_SIGNAL.format(first=first, second=second)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=30
    )
    assert out.returncode == status, out.stderr
    assert time.monotonic() - started < 4  # not after the 5 s cleanup
    assert "stopping" in out.stdout and "cleanup finished" not in out.stdout
    assert "exiting now" in out.stderr


def test_exit_status_follows_the_shell():
    assert exit_status(signal.SIGINT) == 130 and exit_status(signal.SIGTERM) == 143


def test_resume_command_repeats_this_train_command(monkeypatch):
    monkeypatch.setattr(
        sys,
        "argv",
        ["lepton", "train", "task=vision", "run.dir=/tmp/a b", "run.name=old", "resume=false"],
    )
    assert resume_command("sig") == (
        "lepton train task=vision 'run.dir=/tmp/a b' run.name=sig resume=true"
    )
    monkeypatch.setattr(sys, "argv", ["pytest", "-q"])
    assert resume_command("sig") == "lepton train ... run.name=sig resume=true"


def test_cli_prints_interrupted_and_exits_with_the_signal_status(monkeypatch, capsys):
    import engine.train.train_command as train_command

    for signum, status in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):

        def stopped(args, signum=signum):
            raise RunInterrupted("SIGX after 1 of 3 epoch(s)", hint="To resume: x", signum=signum)

        monkeypatch.setattr(train_command, "run", stopped)
        assert cli.main(["train", "task=vision"]) == status
        err = capsys.readouterr().err
        assert err.startswith("lepton: interrupted: SIGX after 1 of 3 epoch(s)\n")
        assert "To resume: x" in err


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temporary_checkpoint_dirs_are_named_by_run_and_process(tmp_path, monkeypatch):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    monkeypatch.setattr("engine.train.worker_context._run_tag", "local")
    _tag_checkpoint_dirs("vision-2024/a b")
    with temporary_checkpoint_dir() as path:
        assert Path(path).name.startswith(f"lepton-ckpt-vision_2024_a_b-{os.getpid()}-")
    assert not Path(path).exists()


def test_orphans_of_this_run_are_removed_live_and_other_runs_kept(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    names = {
        "orphan": f"lepton-ckpt-sig-{dead}-abc_12",
        "live": f"lepton-ckpt-sig-{live}-def34",
        "other run": f"lepton-ckpt-sig_2-{dead}-ghi56",
        "not ours": f"lepton-ckpt-{dead}-jkl78",
    }
    for name in names.values():
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"x" * 10)
    removed = remove_orphan_checkpoint_dirs("sig", tmp_path)
    assert [p.name for p in removed] == [names["orphan"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        v for k, v in names.items() if k != "orphan"
    )


def test_orphan_cleanup_waits_for_a_worker_that_is_still_ending(tmp_path):
    """A worker the driver has just stopped may still be reaped when the driver cleans
    up (as on a loaded machine): the cleanup waits for it instead of leaving its dir."""
    ending = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.0)"])
    try:
        ckpt = tmp_path / f"lepton-ckpt-sig-{ending.pid}-abc12"
        ckpt.mkdir()
        assert remove_orphan_checkpoint_dirs("sig", tmp_path) == []  # alive: kept
        reaper = threading.Thread(target=ending.wait)  # the parent reaps it, as Ray's would
        reaper.start()
        assert remove_orphan_checkpoint_dirs("sig", tmp_path, wait_s=30) == [ckpt]
        assert not ckpt.exists()
        reaper.join()
    finally:
        ending.kill()
        ending.wait()


def _session(root: Path, name: str) -> Path:
    session = root / name
    (session / "logs" / "train").mkdir(parents=True)
    (session / "logs" / "old").mkdir()
    (session / "logs" / "worker-1.err").write_text("ValueError: boom\n")
    (session / "logs" / "worker-1.out").write_text("")  # empty: not kept
    (session / "logs" / "old" / "raylet.1.out").write_text("rotated")
    (session / "logs" / "train" / "ray-train-app-worker-1.log").write_text("x")
    (session / "sockets").mkdir()
    return session


def test_remove_session_deletes_only_this_session_and_keeps_logs_when_asked(tmp_path):
    root = tmp_path / "ray"
    ours, other = _session(root, "session_2_ours"), _session(root, "session_1_other")
    (root / "session_latest").symlink_to(ours)
    embedded.remove_session(ours, keep_logs_in=tmp_path / "run" / "ray-logs")
    assert not ours.exists() and other.exists()
    assert not (root / "session_latest").is_symlink()
    kept = tmp_path / "run" / "ray-logs" / "session_2_ours"
    assert (kept / "worker-1.err").read_text() == "ValueError: boom\n"
    assert (kept / "train" / "ray-train-app-worker-1.log").exists()
    assert not (kept / "worker-1.out").exists() and not (kept / "old").exists()

    (root / "session_latest").unlink(missing_ok=True)
    (root / "session_latest").symlink_to(other)  # a newer cluster's link stays
    third = _session(root, "session_3")
    embedded.remove_session(third)
    assert (root / "session_latest").resolve() == other.resolve()
    assert not third.exists()


def test_loopback_switch_is_set_only_before_ray_is_imported(monkeypatch):
    # set, then deleted: monkeypatch restores the variable's absence afterwards, so the
    # switch set below does not leak into later tests (a `ray start` would refuse to join).
    monkeypatch.setenv(embedded.LOOPBACK_ENV, "unset")
    monkeypatch.delenv(embedded.LOOPBACK_ENV)
    monkeypatch.setitem(sys.modules, "ray", object())  # as if imported already
    assert embedded.loopback_only() is False
    assert embedded.LOOPBACK_ENV not in os.environ
    monkeypatch.delitem(sys.modules, "ray")
    assert embedded.loopback_only() is True
    assert os.environ[embedded.LOOPBACK_ENV] == "0"


def test_loopback_switch_makes_ray_resolve_this_node_to_loopback():
    """What the switch does in Ray 2.60: the node IP of a new cluster becomes 127.0.0.1."""
    code = (
        "from engine.train.embedded import loopback_only\n"
        "assert loopback_only()\n"
        "import ray._private.services as s\n"
        "print(s.get_node_ip_address())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != embedded.LOOPBACK_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True
    )
    assert out.stdout.strip() == "127.0.0.1"


class _FakeRay:
    """``ray`` as ray_cluster() uses it, recording the ``ray.init`` arguments."""

    def __init__(self, session: Path) -> None:
        self.session, self.inits, self.shutdowns = session, [], []

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs):
        self.inits.append(kwargs)
        info = {"session_dir": str(self.session), "node_ip_address": "127.0.0.1"}
        return type("RayContext", (), {"address_info": info})()

    def shutdown(self, **kwargs) -> None:
        self.shutdowns.append(kwargs)


@pytest.mark.parametrize("failed", [False, True])
def test_embedded_cluster_binds_loopback_serves_no_metrics_and_removes_its_session(
    tmp_path, monkeypatch, failed
):
    from engine.train.cluster import ray_cluster, wait_for_teardown

    for name in ("RAY_ADDRESS", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")  # restored afterwards
    monkeypatch.setenv(embedded.LOOPBACK_ENV, "0")
    session = _session(tmp_path / "ray", "session_x")
    fake = _FakeRay(session)
    monkeypatch.setitem(sys.modules, "ray", fake)
    failing = pytest.raises(RuntimeError) if failed else contextlib.nullcontext()
    with failing, ray_cluster(None) as cluster:
        assert cluster.owned and cluster.embedded and cluster.session_dir == session
        if failed:
            cluster.keep_logs_in = tmp_path / "run" / "ray-logs"
            raise RuntimeError("training failed")
    if failed:  # stopped before the failure goes on: its record comes after
        assert fake.shutdowns == [{"wait_for_processes": True}] and not session.exists()
    else:  # a finished run's cluster stops on a thread, while the run is recorded
        wait_for_teardown()
    (kwargs,) = fake.inits
    assert kwargs["dashboard_host"] == "127.0.0.1"
    assert kwargs["_system_config"] == {
        "enable_metrics_collection": False,
        "prestart_worker_first_driver": False,
    }
    assert "address" not in kwargs
    assert fake.shutdowns == [{"wait_for_processes": True}]
    assert not session.exists()
    assert (tmp_path / "run" / "ray-logs" / "session_x" / "worker-1.err").exists() is failed


def test_finished_runs_cluster_stops_on_a_thread_and_the_next_one_waits_for_it(
    tmp_path, monkeypatch
):
    from engine.train import cluster as clusters

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")  # restored afterwards
    monkeypatch.delenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S")
    monkeypatch.setenv(embedded.LOOPBACK_ENV, "0")
    stopping, release = threading.Event(), threading.Event()

    class SlowToStop(_FakeRay):
        def shutdown(self, **kwargs) -> None:
            stopping.set()
            release.wait(10)
            super().shutdown(**kwargs)

    first = _session(tmp_path / "ray", "session_1")
    fake = SlowToStop(first)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with clusters.ray_cluster(None):
        # Train's controller polls every TRAIN_POLL_S, not every 2 s: no epoch waits for it
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == clusters.TRAIN_POLL_S
    assert stopping.wait(10) and fake.shutdowns == []  # stopping, and the caller goes on
    fake.session = _session(tmp_path / "ray", "session_2")
    threading.Timer(0.2, release.set).start()
    with clusters.ray_cluster(None):  # the first cluster is gone before the second starts
        assert fake.shutdowns == [{"wait_for_processes": True}] and not first.exists()
        assert len(fake.inits) == 2
    clusters.wait_for_teardown()
    assert len(fake.shutdowns) == 2 and not fake.session.exists()


def test_a_poll_interval_set_by_the_user_stays(monkeypatch, tmp_path):
    from engine.train.cluster import ray_cluster, wait_for_teardown

    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "5")
    monkeypatch.setitem(sys.modules, "ray", _FakeRay(tmp_path / "unused"))
    with ray_cluster("10.0.0.1:6379"):
        assert os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "5"
    wait_for_teardown()


def test_only_this_sessions_autoscaler_monitor_is_ended(tmp_path):
    """Ray's shutdown would wait a second for it (its SIGTERM handler blocks on the GCS
    stopped before it); another cluster's monitor, or another child, is left alone."""
    ours, other = tmp_path / "session_ours", tmp_path / "session_other"
    script = str(tmp_path / "ray" / "autoscaler" / "_private" / "monitor.py")

    def child(*args: str) -> subprocess.Popen:
        code = "import time; time.sleep(60)"
        return subprocess.Popen([sys.executable, "-c", code, *args])

    monitor = child(script, f"--logs-dir={ours / 'logs'}")
    others = [child(script, f"--logs-dir={other / 'logs'}"), child(f"--logs-dir={ours / 'logs'}")]
    try:
        deadline = time.monotonic() + 30  # until the children's command lines are readable
        while not embedded.end_autoscaler_monitor(ours):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert monitor.wait(10) == -signal.SIGKILL
        assert all(p.poll() is None for p in others)
    finally:
        for p in [monitor, *others]:
            p.kill()
            p.wait()


def test_joined_cluster_keeps_its_session(tmp_path, monkeypatch):
    from engine.train.cluster import ray_cluster

    fake = _FakeRay(tmp_path / "unused")
    monkeypatch.setitem(sys.modules, "ray", fake)
    with ray_cluster("10.0.0.1:6379") as cluster:
        assert cluster.owned and not cluster.embedded and cluster.session_dir is None
    assert fake.inits[0]["address"] == "10.0.0.1:6379"
    assert "dashboard_host" not in fake.inits[0]
    assert fake.shutdowns == [{"wait_for_processes": False}]


@pytest.mark.ray
def test_cluster_initialised_before_is_reused_and_left_as_found(ray_cluster):
    from engine.train.cluster import ray_cluster as get_cluster

    with get_cluster(None) as cluster:
        assert not cluster.owned and not cluster.embedded and cluster.session_dir is None
    assert ray_cluster.is_initialized()  # not shut down, nothing of it removed
