"""``make cluster-up`` / ``make cluster-down``: a local multi-node cluster, token auth, its own processes.

Slow tier: starts a real head and two worker nodes with ``ray start`` (through the module
the Makefile runs), checks them through Ray's own clients, and stops them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.jobs.local_cluster import STATE_FILE, TOKEN_FILE, processes, read_state

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: A client's environment before pointing it at the cluster: no other cluster, no token.
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}


def _local_cluster(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.jobs.local_cluster", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=CLEAN,
        timeout=timeout,
    )


#: Ray's own Jobs API client, as `ray job` and `lepton submit` use it.
PROBE = """
import json, sys
from ray.job_submission import JobSubmissionClient
try:
    jobs = JobSubmissionClient(sys.argv[1]).list_jobs()
    print(json.dumps({"ok": True, "jobs": len(jobs)}))
except Exception as exc:
    print(json.dumps({"ok": False, "error": f"{type(exc).__name__}: {exc}"}))
"""


def _probe(address: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, address],
        capture_output=True,
        text=True,
        env={**CLEAN, **env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


#: A job through Ray's Jobs API: its driver imports the engine, joins with the token,
#: and puts a task on the node that `lepton_worker_2` names.
JOB = """
import json, sys, time
from ray.job_submission import JobStatus, JobSubmissionClient
client = JobSubmissionClient(sys.argv[1])
code = ("import engine, ray; ray.init(); f = ray.remote(lambda: ray.get_runtime_context().get_node_id()); "
        "print('on node', ray.get(f.options(resources={'lepton_worker_2': 1}).remote()))")
deadline = time.monotonic() + 120
while True:  # a just-started cluster's job agent registers a few seconds after the API answers
    try:
        job = client.submit_job(entrypoint=f"python -c {code!r}")
        break
    except RuntimeError as exc:
        assert "No available agent" in str(exc) and time.monotonic() < deadline, exc
        time.sleep(1)
while client.get_job_status(job) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
    assert time.monotonic() < deadline, "job did not end"
    time.sleep(0.5)
print(json.dumps({"status": str(client.get_job_status(job)), "logs": client.get_job_logs(job)}))
"""


def test_up_three_nodes_with_token_auth_then_down_leaves_nothing(tmp_path):
    state_dir = tmp_path / "cluster"
    # Look-alikes of another Ray on this machine: `down` must leave them alone.
    decoy = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(600)", "ray", "--gcs-address=127.0.0.1:1"]
    )
    try:
        started = _local_cluster("up", "--dir", str(state_dir), "--worker-cpus", "1,2")
        assert started.returncode == 0, started.stderr[-3000:]
        print("\n" + started.stdout)
        state = read_state(state_dir)
        assert state is not None and Path(state.temp_dir).is_dir()
        assert f"export RAY_ADDRESS={state.dashboard_url} RAY_AUTH_MODE=token" in started.stdout
        assert state.dashboard_url.startswith("http://127.0.0.1:")
        token = state_dir / TOKEN_FILE
        assert token.stat().st_mode & 0o077 == 0 and len(token.read_text()) == 64

        # Three nodes, alive, each with its own CPU count and the resource that names it.
        status = _local_cluster("status", "--dir", str(state_dir))
        assert status.returncode == 0, status.stderr
        rows = {line.split()[0]: line.split() for line in status.stdout.splitlines()}
        for name, cpus in (
            ("lepton_head", "1"),
            ("lepton_worker_1", "1"),
            ("lepton_worker_2", "2"),
        ):
            assert rows[name][2:] == ["ALIVE", cpus], status.stdout
        assert len({rows[n][1] for n in ("lepton_head", "lepton_worker_1", "lepton_worker_2")}) == 3

        # Ray's own client: in with the token; refused without it (401) or with another (403).
        assert _probe(state.dashboard_url, state.client_env()) == {"ok": True, "jobs": 0}
        refused = _probe(state.dashboard_url, {})
        assert not refused["ok"] and "Authentication required" in refused["error"], refused
        wrong = _probe(state.dashboard_url, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64})
        assert not wrong["ok"] and "Authentication failed" in wrong["error"], wrong

        out = subprocess.run(
            [sys.executable, "-c", JOB, state.dashboard_url],
            capture_output=True,
            text=True,
            env={**CLEAN, **state.client_env()},
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        job = json.loads(out.stdout.strip().splitlines()[-1])
        assert job["status"] == "SUCCEEDED", job["logs"][-2000:]
        assert f"on node {rows['lepton_worker_2'][1]}" in job["logs"], job["logs"][-2000:]

        again = _local_cluster("up", "--dir", str(state_dir))
        assert again.returncode == 0 and again.stdout.startswith("Running: a local Ray cluster"), (
            again
        )
        assert processes(state)
    finally:
        stopped = _local_cluster("down", "--dir", str(state_dir))
        decoy_survived = decoy.poll() is None
        decoy.kill()
        decoy.wait()
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "stopped" in stopped.stdout
    assert processes(state) == []
    assert not Path(state.temp_dir).exists() and not (state_dir / STATE_FILE).exists()
    assert decoy_survived
    gone = _local_cluster("status", "--dir", str(state_dir))
    assert gone.returncode == 1 and "No local cluster running" in gone.stdout
    assert _local_cluster("down", "--dir", str(state_dir)).stdout.endswith("nothing to stop.\n")
