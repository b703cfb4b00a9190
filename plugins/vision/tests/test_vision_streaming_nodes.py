"""Streaming on two Ray nodes (head + joining raylet on this machine, token auth): the
image decoding of ``map_batches`` runs on both nodes while the one training worker trains.

Ray Data spreads its tasks over the cluster's nodes (``DataContext.scheduling_strategy``
is ``SPREAD``); which node ran each task is read back from Ray's state API (the task
table of the cluster's GCS), in a process of its own joined to the cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_vision_streaming import write_digits_folder

from conftest import run_lepton
from engine.runs.layout import read_metrics

pytestmark = pytest.mark.slow

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tests"))  # the engine's helpers
from multinode import LocalMultiNodeCluster  # noqa: E402

#: Run in a process joined to the cluster: every finished Ray Data task of the cluster
#: (name, node, start/end), and the training worker's node, as JSON.
STATE_QUERY = """
import json, ray
from ray.util.state import list_tasks
ray.init(logging_level="ERROR")
tasks = list_tasks(limit=10000, detail=True, raise_on_missing_output=False)
print(json.dumps([
    {"name": t.name, "node": t.node_id, "state": t.state,
     "start": t.start_time_ms, "end": t.end_time_ms}
    for t in tasks
]))
"""


def test_decoding_runs_on_both_nodes_while_training(tmp_path):
    folder = tmp_path / "digits"
    n_train, n_val = write_digits_folder(folder)
    # 2 + 2 CPUs: one for the training worker, the rest for Ray Data on either node.
    cluster = LocalMultiNodeCluster(head_cpus=2, worker_cpus=(2,)).start()
    try:
        out = run_lepton(
            "train", "task=vision", "task.data.format=imagefolder", f"task.data.path={folder}",
            "task.data.image_size=8", "task.data.streaming=true", "trainer.epochs=2",
            "scaling.num_workers=1", "scaling.cpus_per_worker=1", f"run.dir={tmp_path}",
            "run.name=nodes", env=cluster.client_env(),
        )  # fmt: skip
        assert out.returncode == 0, out.stderr[-3000:]
        rows = read_metrics(tmp_path / "nodes")
        assert [r["val_samples"] for r in rows] == [n_val, n_val]
        assert all(r["samples"] == n_train for r in rows)
        state = subprocess.run(
            [sys.executable, "-c", STATE_QUERY],
            env={**os.environ, **cluster.client_env()},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert state.returncode == 0, state.stderr[-3000:]
        tasks = json.loads(state.stdout.strip().splitlines()[-1])
    finally:
        cluster.stop()
    decode = [t for t in tasks if "MapBatches(decode_batch)" in (t["name"] or "")]
    assert decode, sorted({t["name"] for t in tasks})
    nodes = {t["node"] for t in decode if t["state"] == "FINISHED"}
    workers = json.loads((tmp_path / "nodes" / "workers.json").read_text())["workers"]
    print(
        f"\ndecode tasks: {len(decode)} on {len(nodes)} node(s); trainer on {workers[0]['node_id'][:8]}"
    )
    assert len(nodes) == 2, decode
    # ... and while training ran: decoding tasks of the second epoch start after the
    # first epoch's row was written and before the last row (per node).
    first_row, last_row = rows[0]["time"], rows[-1]["time"]
    during = {
        t["node"]
        for t in decode
        if t["start"] and first_row * 1000 <= t["start"] <= last_row * 1000
    }
    assert during == nodes, (during, nodes)
