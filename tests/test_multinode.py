"""Two Ray nodes on this machine (head + joining raylet, token auth): placement and sync.

The run directory is an ``s3://`` bucket on the session's S3-API server (conftest's
``object_store``): the storage a cluster of several machines needs, reached by every
node through the AWS_* variables the nodes are started with.
"""

from __future__ import annotations

import json

import pytest
from multinode import LocalMultiNodeCluster, free_port

from conftest import run_lepton
from engine.errors import ClusterError
from engine.runs.checkpoint import read_meta
from engine.runs.layout import checkpoints
from engine.runs.storage import Location
from engine.train.cluster import ClusterResources, check_storage

pytestmark = pytest.mark.slow


def test_spread_workers_land_on_different_nodes_with_synced_weights(object_store):
    root = f"{object_store.new_bucket()}/runs"
    cluster = LocalMultiNodeCluster(head_cpus=1, worker_cpus=(1,)).start()
    try:
        out = run_lepton(
            "train",
            "task=vision",
            "trainer.epochs=2",
            "scaling.num_workers=2",
            "scaling.placement_strategy=STRICT_SPREAD",
            "trainer.collective_timeout_s=60",
            f"run.dir={root}",
            "run.name=spread",
            env=cluster.client_env(),
        )
        assert out.returncode == 0, out.stderr[-3000:]
        workers = json.loads((Location.parse(root) / "spread" / "workers.json").read_text())
        node_ids = {w["node_id"] for w in workers["workers"]}
        assert len(node_ids) == 2, workers
        assert workers["weights_in_sync"] is True
        assert [read_meta(c)["epoch"] for c in checkpoints(f"{root}/spread")] == [0, 1]
    finally:
        cluster.stop()
    assert cluster.processes() == []


def test_a_node_that_cannot_reach_the_bucket_is_refused_before_training(object_store):
    root = f"{object_store.new_bucket()}/runs"
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cluster = LocalMultiNodeCluster(
        head_cpus=1, worker_cpus=(1,), worker_env={"AWS_ENDPOINT_URL": nowhere}
    ).start()
    try:
        out = run_lepton(
            "train",
            "task=vision",
            "scaling.num_workers=2",
            f"run.dir={root}",
            "run.name=blocked",
            env=cluster.client_env(),
        )
    finally:
        cluster.stop()
    assert out.returncode == 2, out.stderr[-3000:]
    assert f"run.dir={root}/blocked is not reachable from every node" in out.stderr
    assert "cannot write there" in out.stderr and "Traceback" not in out.stderr
    print("\n" + out.stderr.strip().splitlines()[-2] + "\n" + out.stderr.strip().splitlines()[-1])
    keys = object_store.keys(root)
    assert not any("checkpoint_" in k or "preflight" in k for k in keys), keys


def test_local_run_dir_refused_on_a_cluster_of_several_machines():
    two_hosts = ClusterResources(4, 0, 2, 2, 0, hosts=2)
    with pytest.raises(ClusterError, match="run.shared_fs=true"):
        check_storage("/home/me/runs", False, two_hosts)
    check_storage("/mnt/nfs/runs", True, two_hosts)
    check_storage("s3://bucket/runs", False, two_hosts)  # every node reaches an object store
    check_storage("runs", False, ClusterResources(2, 0, 2, 1, 0, hosts=1))
