"""Issue 22's end-to-end path: ``make cluster-up``, ``lepton submit --wait -- train``, ``make cluster-down``.

Slow tier. The local cluster is the one users start (``make cluster-up``: a head and two
worker nodes with token auth, tests/test_local_cluster.py checks it alone); a laptop-like
client reaches it through the Jobs API URL and token path in its state file. A 2-worker
``train task=vision`` job must end SUCCEEDED (for ``lepton jobs status`` and for Ray's own
``JobSubmissionClient``) with its workers on 2 different nodes and a checkpoint in the run
directory; the same submission without the token is refused with a clear message; and
``make cluster-down`` leaves no process naming the cluster's temp dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import run_lepton
from engine.jobs.local_cluster import STATE_FILE, list_nodes, read_state
from engine.runs.layout import checkpoints

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
#: No other cluster's address or token: the client sees only what the test gives it.
CLEAN = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
#: For run_lepton (which adds to os.environ): a None value removes the variable.
NO_RAY = {k: None for k in os.environ if k.startswith("RAY_")}
TINY = [
    "task=vision",
    "trainer.epochs=1",
    "trainer.batch_size=32",
    "trainer.collective_timeout_s=60",
    "scaling.num_workers=2",
    "scaling.placement_strategy=STRICT_SPREAD",  # one worker per node, or no placement
]


def _cluster(action: str, state_dir: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``make cluster-up|cluster-down CLUSTER_DIR=...`` with this interpreter's environment.

    ``-o`` keeps make from reinstalling the project (its stamp may be older than the
    Makefile); ``BIN`` is where this interpreter lives. Without make: the same module.
    """
    make = shutil.which("make")
    if make is not None:
        bin_dir = Path(sys.executable).parent
        cmd = [make, "-s", "-o", ".venv/.installed", f"cluster-{action}"]
        cmd += [f"CLUSTER_DIR={state_dir}", f"BIN={bin_dir}"]
    else:
        cmd = [sys.executable, "-m", "engine.jobs.local_cluster", action, "--dir", str(state_dir)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=CLEAN, timeout=timeout)


#: Ray's own Jobs API client, in a fresh process with the cluster's client environment.
RAY_JOB = """
import json, sys
from ray.job_submission import JobSubmissionClient
info = JobSubmissionClient(sys.argv[1]).get_job_info(sys.argv[2])
print(json.dumps({"status": str(info.status), "start_time": info.start_time,
                  "end_time": info.end_time, "entrypoint": info.entrypoint}))
"""


def _ray_job_info(url: str, job_id: str, env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", RAY_JOB, url, job_id],
        capture_output=True,
        text=True,
        env={**CLEAN, **env},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _naming(temp_dir: str) -> list[str]:
    """Processes whose command line names ``temp_dir``, as ``pid: command`` lines."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if temp_dir in cmd:
            found.append(f"{proc.pid}: {cmd[:200]}")
    return found


def test_cluster_up_submit_train_on_two_nodes_refuse_without_token_then_down(tmp_path):
    state_dir = tmp_path / "cluster"
    project = tmp_path / "project"  # the job's working directory, uploaded
    (project / "conf").mkdir(parents=True)
    (project / "notes.txt").write_text("a small project\n")
    runs = tmp_path / "runs"  # absolute: every node of this machine reaches it
    temp_dir = None
    t0 = time.monotonic()
    try:
        up = _cluster("up", state_dir)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        state = read_state(state_dir)
        assert state is not None, up.stdout
        temp_dir = state.temp_dir
        assert f"Jobs API + dashboard: {state.dashboard_url}" in up.stdout
        took_up = time.monotonic() - t0
        client = state.client_env()  # RAY_ADDRESS (the Jobs API), RAY_AUTH_MODE, token path
        node_names = {
            n["node_id"]: next(k for k in n["resources_total"] if k.startswith("lepton_"))
            for n in list_nodes(state)
        }
        assert len(node_names) == 3, node_names

        t1 = time.monotonic()
        out = run_lepton(
            "submit",
            "--wait",
            "--",
            "train",
            *TINY,
            f"run.dir={runs}",
            "run.name=e2e",
            cwd=project,
            env={**NO_RAY, **client},
            timeout=300,
        )
        took_job = time.monotonic() - t1
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        found = re.search(r"Submitted job (\S+)", out.stdout)
        assert found, out.stdout[-3000:]
        job_id = found.group(1)
        tail = out.stdout[out.stdout.index(f"Job {job_id} SUCCEEDED") :]
        assert f"Run directory:   {runs / 'e2e'}" in tail and "Best checkpoint:" in tail, tail

        # SUCCEEDED for lepton (table and JSON) and for Ray's own job client.
        status = run_lepton("jobs", "status", job_id, env={**NO_RAY, **client})
        assert status.returncode == 0, status.stderr
        assert re.search(r"^Status:\s+SUCCEEDED\b", status.stdout, re.M), status.stdout
        as_json = run_lepton("jobs", "status", job_id, "--json", env={**NO_RAY, **client})
        assert as_json.returncode == 0 and json.loads(as_json.stdout)["status"] == "SUCCEEDED"
        ray_info = _ray_job_info(state.dashboard_url, job_id, client)
        assert ray_info["status"] == "SUCCEEDED", ray_info
        assert "train task=vision" in ray_info["entrypoint"], ray_info

        # 2 workers on 2 different nodes of this cluster; a checkpoint in the run directory.
        run_dir = runs / "e2e"
        workers = json.loads((run_dir / "workers.json").read_text())["workers"]
        used = {w["node_id"] for w in workers}
        assert len(workers) == 2 and len(used) == 2, workers
        assert used <= set(node_names), (used, node_names)
        found_ckpts = checkpoints(run_dir)
        assert found_ckpts, sorted(p.name for p in run_dir.iterdir())
        assert all(c.local_path.parent == run_dir for c in found_ckpts), found_ckpts

        # Again without the token: no RAY_AUTH_TOKEN(_PATH), no ~/.ray/auth_token.
        home = tmp_path / "home"
        home.mkdir()
        no_token = {**NO_RAY, **client, "RAY_AUTH_TOKEN_PATH": None, "HOME": str(home)}
        refused = run_lepton(
            "submit",
            "--",
            "train",
            *TINY,
            f"run.dir={runs}",
            "run.name=refused",
            cwd=project,
            env=no_token,
            timeout=120,
        )
        assert refused.returncode == 2, refused.stdout[-2000:] + refused.stderr[-2000:]
        assert "requires a token and none was sent (HTTP 401)" in refused.stderr, refused.stderr
        assert "RAY_AUTH_TOKEN" in refused.stderr and "Traceback" not in refused.stderr
        assert "Submitted job" not in refused.stdout
        assert not (runs / "refused").exists()

        ray_took = (ray_info["end_time"] - ray_info["start_time"]) / 1000
        where = sorted(node_names[n] for n in used)
        print(
            f"\ncluster-up: {took_up:.1f} s; submit --wait to SUCCEEDED: {took_job:.1f} s "
            f"(Ray's job start to end: {ray_took:.1f} s); workers on {', '.join(where)}; "
            f"checkpoints: {', '.join(c.name for c in found_ckpts)}\n"
            f"{tail.strip()}\nwithout the token (exit {refused.returncode}):\n"
            f"{refused.stderr.strip()}"
        )
    finally:
        t2 = time.monotonic()
        down = _cluster("down", state_dir)
        took_down = time.monotonic() - t2
    assert down.returncode == 0, down.stdout[-3000:] + down.stderr[-3000:]
    assert "stopped" in down.stdout, down.stdout
    assert temp_dir is not None
    assert _naming(temp_dir) == []
    assert not Path(temp_dir).exists() and not (state_dir / STATE_FILE).exists()
    print(f"cluster-down: {took_down:.1f} s; total {time.monotonic() - t0:.1f} s")
