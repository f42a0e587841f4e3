"""`photos index --address` on a real multi-node Ray cluster, losing a node mid-run.

The cluster (tests/local_cluster.py) is a head with no CPUs plus two worker nodes of
2 CPUs each, all `ray start` processes on this machine, so every decode task and the
model actor run on worker nodes. Once the run has committed a batch, the node hosting
the model actor is killed (raylet first); the run must still finish with exactly the
index a local run builds: same photos, same labels, scores equal up to float noise.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from pipeline.indexer import index_library
from pipeline.inference import RESULT_SCHEMA
from pipeline.parquet_sink import parquet_dir
from pipeline.settings import IndexSettings
from pipeline.store import IndexStore
from pipeline.writer import IndexWriter, ModelKey
from tests.conftest import ROOT, copy_photos
from tests.local_cluster import LocalCluster
from tests.test_incremental import index_state
from tests.test_resume import assert_same_index, consistent_snapshot

PHOTOS = 48
ACTOR = "InferenceStage"  # in the process title of a model actor


@pytest.mark.slow
def test_index_on_a_multi_node_cluster_survives_losing_a_node(tmp_path, eval_photos, ray_local):
    library = tmp_path / "library"
    copy_photos(eval_photos[7::1000 // PHOTOS][:PHOTOS], library)
    local = tmp_path / "local"
    index_library(IndexSettings(roots=(str(library),), index_dir=local, commit_rows=4, batch_size=4))

    # Ray >= 2.5x turns token authentication on for `ray start --head`; every process
    # joining the cluster reads the same token (~/.ray/auth_token).
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    cluster = LocalCluster(env)
    driver = None
    try:
        cluster.start(head_cpus=0)
        workers = [cluster.add_node(num_cpus=2), cluster.add_node(num_cpus=2)]
        remote = tmp_path / "remote"
        driver = subprocess.Popen(
            [sys.executable, "-c", "from jobs.cli import main; main()", "index", str(library),
             "--index", str(remote), "--address", cluster.address, "--actors", "1",
             "--commit-rows", "4", "--batch-size", "4", "--decode-batch-size", "4", "--quiet"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
        victim, committed = None, 0
        deadline = time.monotonic() + 240
        while driver.poll() is None and time.monotonic() < deadline:
            if (remote / "index.sqlite").exists():
                committed = consistent_snapshot(remote / "index.sqlite")
            victim = next((n for n in workers if n.runs(ACTOR)), None)
            if victim is not None and committed >= 1:
                cluster.kill_node(victim)
                break
            time.sleep(0.05)
        assert victim is not None and victim.killed, "the model actor never started on a worker node"
        assert 1 <= committed < PHOTOS, f"not killed mid-run: {committed} of {PHOTOS} committed"
        print(f"killed the actor's node with {committed} of {PHOTOS} photos committed")
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output
        assert f"indexed    {PHOTOS}  (" in output and "failed     0\n" in output, output
        survivor = next(n for n in workers if n is not victim)
        assert survivor.proc.poll() is None
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, 9)
            driver.wait()
        cluster.shutdown()
    assert_same_index(index_state(remote), index_state(local))


def test_a_result_delivered_twice_lands_once(tmp_path):
    """What a task retried after a lost node could deliver: the same photos again, in the
    same commit and in a later one. The index keeps one row per photo."""
    store = IndexStore.open(tmp_path)
    key = ModelKey("efficientnet_lite0", "weights.pth")
    run_id = store.begin_run(["/photos"], {"classify": key.model})
    writer = IndexWriter(store, parquet_dir(tmp_path), run_id, {"classify": key}, commit_rows=3)
    rows = [{"path": f"/photos/{i}.jpg", "size": 10 + i, "mtime_ns": i, "width": 4, "height": 3,
             "fingerprint": f"fp{i}", "tasks": "classify", "previous_path": None, "error_stage": "",
             "error_reason": "", "labels": [{"label": f"label{i}", "score": 0.5}]} for i in range(2)]
    table = pa.Table.from_pylist(rows, schema=RESULT_SCHEMA)
    writer.add(table)
    writer.add(table)  # a commit of 3 rows: both photos, one of them twice
    writer.add(table.slice(1))  # and again in the next commit
    writer.flush()
    store.close()
    state = index_state(tmp_path)  # asserts one Parquet row per photo
    assert [r[0] for r in state["photos"]] == ["/photos/0.jpg", "/photos/1.jpg"]
    assert [r[:2] for r in state["labels"]] == [("/photos/0.jpg", "label0"), ("/photos/1.jpg", "label1")]
