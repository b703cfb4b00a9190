"""``lepton submit`` and ``lepton jobs`` against a real multi-node cluster on this machine.

A head and one joining node (tests/multinode.py: ``ray start`` with token auth, each node
1 CPU, a private temp dir), reached as a laptop reaches a cluster: through the Jobs API on
the head's dashboard, with Ray's token. The project is a temporary directory (the job's
working directory); the run directory an absolute path (nodes on one machine share it).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from multinode import LocalMultiNodeCluster

from conftest import run_lepton
from engine.runs.layout import checkpoints

pytestmark = pytest.mark.slow

TINY = ["task=vision", "trainer.epochs=1", "trainer.collective_timeout_s=60"]


def _dashboard_url(cluster: LocalMultiNodeCluster) -> str:
    """The head's dashboard (the Jobs API): the port its ``dashboard.py`` was started with."""
    for proc in cluster.processes():
        cmd = proc.cmdline()
        if any(part.endswith(os.path.join("dashboard", "dashboard.py")) for part in cmd):
            port = next(p.split("=", 1)[1] for p in cmd if p.startswith("--port="))
            return f"http://127.0.0.1:{port}"
    raise AssertionError("no dashboard process in the cluster")


@pytest.fixture(scope="module")
def cluster():
    # The job's entrypoint runs `python` from the head node's PATH: this environment's.
    bin_dir = str(Path(sys.executable).parent)
    saved = os.environ.get("PATH", "")
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{saved}"
    started = LocalMultiNodeCluster(head_cpus=1, worker_cpus=(1,))
    try:
        started.start()
        started.jobs_url = _dashboard_url(started)  # type: ignore[attr-defined]
        yield started
    finally:
        os.environ["PATH"] = saved
        started.stop()
        assert started.processes() == []


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "project"
    (root / "conf").mkdir(parents=True)
    (root / "notes.txt").write_text("a small project\n")
    return root


def _lepton(cluster, *args, cwd=None, env=None, timeout=600):
    """``lepton`` as a user with the cluster's address and token (~/.ray/auth_token)."""
    base = {"RAY_ADDRESS": cluster.jobs_url, "RAY_AUTH_MODE": None}
    return run_lepton(*args, cwd=cwd, env={**base, **(env or {})}, timeout=timeout)


def _job_id(stdout: str) -> str:
    found = re.search(r"Submitted job (\S+)", stdout)
    assert found, stdout
    return found.group(1)


def _ray_job_status(cluster, job_id: str) -> str:
    """The status as Ray's own JobSubmissionClient reports it (a fresh process, Ray's env)."""
    code = (
        "import sys\n"
        "from ray.job_submission import JobSubmissionClient\n"
        "print(JobSubmissionClient(sys.argv[1]).get_job_status(sys.argv[2]))\n"
    )
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    out = subprocess.run(
        [sys.executable, "-c", code, cluster.jobs_url, job_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1]


def test_submit_wait_trains_on_two_nodes_and_jobs_sees_it(cluster, project, tmp_path):
    runs = tmp_path / "runs"
    started = time.monotonic()
    out = _lepton(
        cluster,
        "submit",
        "--wait",
        "--",
        "train",
        *TINY,
        "scaling.num_workers=2",
        "scaling.placement_strategy=STRICT_SPREAD",
        f"run.dir={runs}",
        "run.name=onjob",
        cwd=project,
    )
    took = time.monotonic() - started
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    job_id = _job_id(out.stdout)
    assert f"Dashboard:  {cluster.jobs_url}/#/jobs/{job_id}" in out.stdout
    assert "Uploading " in out.stdout and "notes.txt" in out.stdout
    tail = out.stdout[out.stdout.index(f"Job {job_id} SUCCEEDED") :]
    assert f"Run directory:   {runs / 'onjob'}" in tail and "Best checkpoint:" in tail
    print(f"\nsubmit --wait: {took:.1f} s\n{tail}")

    status = _lepton(cluster, "jobs", "status", job_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "SUCCEEDED"
    assert _ray_job_status(cluster, job_id) == "SUCCEEDED"

    workers = json.loads((runs / "onjob" / "workers.json").read_text())
    assert len({w["node_id"] for w in workers["workers"]}) == 2, workers
    assert checkpoints(runs / "onjob"), list((runs / "onjob").iterdir())

    listed = _lepton(cluster, "jobs", "list")
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if line.startswith(job_id))
    assert "SUCCEEDED" in row and "lepton train task=vision" in row
    as_json = json.loads(_lepton(cluster, "jobs", "list", "--json").stdout)
    assert job_id in {j["job_id"] for j in as_json}
    logs = _lepton(cluster, "jobs", "logs", job_id)
    assert logs.returncode == 0 and "Run directory:" in logs.stdout


def test_a_failing_job_exits_1_with_its_id_and_log_tail(cluster, project):
    # Valid here, fails there: the driver cannot create its run directory.
    out = _lepton(
        cluster,
        "submit",
        "--wait",
        "--",
        "train",
        *TINY,
        "scaling.num_workers=1",
        "run.dir=/proc/lepton-cannot-write",
        cwd=project,
    )
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    job_id = _job_id(out.stdout)
    assert f"lepton: job {job_id} FAILED" in out.stderr
    assert "log lines:" in out.stderr and "/proc/lepton-cannot-write" in out.stderr
    assert "Traceback" not in out.stderr.split("log lines:")[0]
    print("\n" + out.stderr.strip())
    status = json.loads(_lepton(cluster, "jobs", "status", job_id, "--json").stdout)
    assert status["status"] == "FAILED" and status["log_tail"]


def test_unknown_job_id_is_exit_2_with_a_clear_message(cluster):
    for action in ("status", "logs", "stop"):
        out = _lepton(cluster, "jobs", action, "raysubmit_doesnotexist")
        assert out.returncode == 2, (action, out.stderr)
        assert "No job raysubmit_doesnotexist on the cluster" in out.stderr
        assert "Traceback" not in out.stderr


def test_without_the_token_or_with_a_wrong_one_submission_is_refused(cluster, project, tmp_path):
    home = tmp_path / "home"  # no ~/.ray/auth_token there
    home.mkdir()
    args = ("submit", "--", "train", *TINY, f"run.dir={tmp_path}/runs")
    none = _lepton(
        cluster,
        *args,
        cwd=project,
        env={"HOME": str(home), "RAY_AUTH_TOKEN": None, "RAY_AUTH_TOKEN_PATH": None},
    )
    assert none.returncode == 2, none.stderr
    assert "requires a token and none was sent (HTTP 401)" in none.stderr
    assert "RAY_AUTH_TOKEN" in none.stderr and "Traceback" not in none.stderr
    wrong = _lepton(cluster, *args, cwd=project, env={"RAY_AUTH_TOKEN": "not-the-token"})
    assert wrong.returncode == 2, wrong.stderr
    assert "refused the token (from RAY_AUTH_TOKEN)" in wrong.stderr
    assert "Submitted job" not in none.stdout + wrong.stdout
    print("\n" + none.stderr.strip() + "\n" + wrong.stderr.strip())


def test_stop_a_job_then_its_log_follow_says_stopped(cluster, project):
    out = _lepton(
        cluster,
        "submit",
        "--",
        "train",
        "task=vision",
        "trainer.epochs=50",
        "scaling.num_workers=1",
        "run.dir=runs",  # relative: fine on a cluster that is this machine
        cwd=project,
    )
    assert out.returncode == 0, out.stderr
    assert f"run.dir runs is sent as {project / 'runs'}" in out.stdout
    job_id = _job_id(out.stdout)
    assert f"lepton jobs logs {job_id} --follow" in out.stdout
    stopped = _lepton(cluster, "jobs", "stop", job_id, "--wait", "--json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout) == {
        "job_id": job_id,
        "was_running": True,
        "status": "STOPPED",
    }
    follow = _lepton(cluster, "jobs", "logs", job_id, "--follow")
    assert follow.returncode == 143, follow.stdout[-2000:] + follow.stderr[-2000:]
    assert f"job {job_id} was stopped" in follow.stderr


def test_a_local_plugin_travels_with_the_job(cluster, project, tmp_path):
    import numpy as np
    import pandas as pd

    plugin = tmp_path / "lepton-tabjob"
    made = run_lepton("plugin", "new", "tabjob", "--dir", str(plugin))
    assert made.returncode == 0, made.stderr
    rng = np.random.default_rng(0)
    rows = 200
    frame = pd.DataFrame(
        {
            "tenure": rng.integers(1, 72, rows),
            "charges": rng.uniform(20, 120, rows).round(2),
            "plan": rng.choice(["basic", "pro"], rows),
        }
    )
    frame["target"] = np.where(frame.charges - 70 > frame.tenure - 36, "y", "n")
    (project / "data").mkdir()
    frame.to_csv(project / "data" / "customers.csv", index=False)
    runs = tmp_path / "runs"
    out = _lepton(
        cluster,
        "submit",
        "--wait",
        "--plugin-dir",
        str(plugin),
        "--",
        "train",
        "task=tabjob",
        "task.data.path=data/customers.csv",  # in the uploaded project, read there
        "task.data.categorical_columns=[plan]",
        "trainer.batch_size=32",
        "trainer.epochs=1",
        "scaling.num_workers=1",
        f"run.dir={runs}",
        "run.name=tab",
        cwd=project,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "data/customers.csv" in out.stdout and "SUCCEEDED" in out.stdout
    assert (runs / "tab" / "result.json").is_file()
