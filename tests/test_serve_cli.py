"""`lepton serve` as a user runs it: a real process with its own embedded cluster.

It prints its URLs and models, answers over HTTP, is found by `lepton serve status` and
`lepton serve update` from another process, and on Ctrl-C shuts down and leaves no Ray
process behind. Mistakes are exit 2 with a message, before Ray starts.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
import pytest
import requests
from run_fixtures import train_run
from serve_fixtures import free_port

from conftest import LEPTON, ROOT, run_lepton

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(tmp_path_factory.mktemp("serve-cli") / "run", epochs=1)


def _wait_for(proc: subprocess.Popen, out: list[str], needle: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if line:
            out.append(line)
            if needle in line:
                return
        elif proc.poll() is not None:
            break
    raise AssertionError(
        f"no {needle!r} in the output:\n{''.join(out)}\n{proc.stderr.read() if proc.poll() is not None else ''}"
    )  # type: ignore[union-attr]


def test_serve_in_the_foreground_status_update_and_ctrl_c(run, tmp_path):
    port = free_port()
    env = {**os.environ, "LEPTON_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.Popen(
        [*LEPTON, "serve", f"digits={run}", f"serve.port={port}", "serve.replicas.num_cpus=0.5"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    out: list[str] = []
    try:
        _wait_for(proc, out, "Press Ctrl-C")
        text = "".join(out)
        assert f"http://127.0.0.1:{port}" in text and "digits v1 (default): vision" in text
        assert "/docs" in text
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/models/digits:predict",
            json={"instances": [[[0] * 8] * 8]},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["predictions"][0]["label"]
        family = [proc.pid, *(p.pid for p in psutil.Process(proc.pid).children(recursive=True))]

        status = run_lepton(
            "serve", "status", env={"LEPTON_HOME": env["LEPTON_HOME"], "RAY_ADDRESS": None}
        )
        assert status.returncode == 0, status.stderr
        assert "app lepton: RUNNING" in status.stdout and "digits--v1" in status.stdout

        checkpoints = sorted(run.glob("checkpoint_*"))
        updated = run_lepton(
            "serve",
            "update",
            "digits",
            str(checkpoints[0]),
            env={"LEPTON_HOME": env["LEPTON_HOME"], "RAY_ADDRESS": None},
            timeout=180,
        )
        assert updated.returncode == 0, updated.stderr
        assert f"-> {checkpoints[0]}" in updated.stdout
        listed = requests.get(f"http://127.0.0.1:{port}/v1/models/digits", timeout=30).json()
        assert listed["versions"]["1"]["checkpoint"] == str(checkpoints[0])
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=120)
    rest = proc.stdout.read()  # type: ignore[union-attr]
    assert code == 0, proc.stderr.read()  # type: ignore[union-attr]
    assert "service stopped" in rest
    _, alive = psutil.wait_procs(
        [psutil.Process(p) for p in family if psutil.pid_exists(p)], timeout=30
    )
    assert not alive, f"left running after Ctrl-C: {[p.name() for p in alive]}"
    assert not list((tmp_path / "home" / "serve").glob("*.json"))  # its record is gone
    gone = run_lepton(
        "serve", "status", env={"LEPTON_HOME": env["LEPTON_HOME"], "RAY_ADDRESS": None}
    )
    assert gone.returncode == 2 and "No service named 'lepton'" in gone.stderr


@pytest.mark.parametrize(
    "args, needle",
    [
        (["serve"], "Name at least one model"),
        (["serve", "/nonexistent/run"], "does not exist"),
        (["serve", "{run}", "serve.prot=1"], "Unknown config key 'serve.prot'"),
        (["serve", "{run}", "serve.host=0.0.0.0"], "without a token"),
        (["serve", "update", "digits"], "takes NAME[:VERSION] and PATH"),
        (["serve", "status", "extra"], "takes no paths"),
    ],
)
def test_mistakes_exit_2_with_a_message_before_ray(run, args, needle, tmp_path):
    out = run_lepton(
        *[a.format(run=run) for a in args],
        env={"LEPTON_HOME": str(tmp_path), "RAY_ADDRESS": None, "LEPTON_SERVE_TOKEN": None},
    )
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_a_port_in_use_is_named(run, tmp_path):
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        out = run_lepton("serve", str(run), f"serve.port={port}", env={"RAY_ADDRESS": None})
    assert out.returncode == 2 and f"Cannot listen on 127.0.0.1:{port}" in out.stderr, out.stderr


def test_on_a_cluster_serve_deploys_and_returns_then_status_and_shutdown(run, tmp_path):
    """With RAY_ADDRESS the app is deployed to that cluster and the command returns; it
    keeps serving without it; status and shutdown act on it there."""
    from multinode import LocalMultiNodeCluster

    cluster = LocalMultiNodeCluster(head_cpus=2, worker_cpus=()).start()
    try:
        port = free_port()
        env = {**cluster.client_env(), "LEPTON_HOME": str(tmp_path)}
        started = time.monotonic()
        out = run_lepton(
            "serve",
            f"digits={run}",
            f"serve.port={port}",
            "serve.replicas.num_cpus=0.5",
            env=env,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"Deployed to {cluster.address}" in out.stdout
        print(f"deployed to a cluster and returned in {time.monotonic() - started:.1f} s")
        answer = requests.post(
            f"http://127.0.0.1:{port}/v1/models/digits:predict",
            json={"instances": [[[0] * 8] * 8]},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        status = run_lepton("serve", "status", env=env, timeout=180)
        assert status.returncode == 0 and "app lepton: RUNNING" in status.stdout, status.stderr
        down = run_lepton("serve", "shutdown", env=env, timeout=180)
        assert down.returncode == 0 and "app lepton: deleted" in down.stdout, down.stderr
        again = run_lepton("serve", "status", env=env, timeout=180)
        assert again.returncode == 2 and "No Serve app named 'lepton'" in again.stderr
    finally:
        cluster.stop()
