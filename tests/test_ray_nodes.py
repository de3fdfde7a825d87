"""A Ray cluster of several nodes on this machine (Ray's own test cluster: a head with no CPUs, worker nodes with one
each): a node removed mid-run, as a preempted machine is, and its run is retried on another node and resumes from
the checkpoint the dead node left on shared storage."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from conftest import write_study

from tuneoff.core import logs
from tuneoff.results.store import Store
from tuneoff.study.execution import execute
from tuneoff.study.executors import RayExecutor
from tuneoff.study.spec import load_spec

ray = pytest.importorskip("ray")


@pytest.fixture
def nodes():
    from ray.cluster_utils import Cluster

    # Fast detection of a dead node (the defaults take tens of seconds).
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "include_dashboard": False,
            "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 2},
        },
    )
    first = cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, first
    ray.shutdown()
    cluster.shutdown()


@pytest.mark.slow
def test_a_preempted_node_s_run_resumes_on_another_node(nodes, tiny_bert, toy_csv, tmp_path):
    cluster, first = nodes
    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "nodes",
        train={"epochs": 40, "checkpoint_every": 3},
        seeds=[1],
        variants={"lora": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}}},
    )
    capture = logs.captured()
    lines = capture.__enter__()
    driver = threading.Thread(
        target=execute, args=(load_spec(path), tmp_path / "res"), kwargs={"executor": RayExecutor(max_retries=2)}
    )
    driver.start()

    runs = tmp_path / "res" / "nodes" / "runs"
    deadline = time.monotonic() + 120
    while not list(runs.glob(".*/checkpoints/step-*")):  # the run is training on the first node
        assert time.monotonic() < deadline and driver.is_alive(), lines
        time.sleep(0.02)
    cluster.add_node(num_cpus=1)
    cluster.remove_node(first, allow_graceful=False)  # every process of that node SIGKILLed
    driver.join(timeout=300)
    capture.__exit__(None, None, None)
    assert not driver.is_alive()

    store = Store(tmp_path / "res")
    [row] = store.runs("nodes")
    store.close()
    assert row["status"] == "done", lines
    resumed = json.loads(row["resources"])["resumed_from_step"]
    assert resumed is not None and resumed.startswith("step-"), "resumed from the dead node's checkpoint"
    assert [p.name for p in runs.iterdir()] == ["lora-s1"], "one run directory, no leftovers"
    assert Path(row["run_dir"], "model", "adapter_model.safetensors").is_file()
