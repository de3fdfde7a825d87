"""Studies on a Ray cluster started by the test (loopback, 2 CPUs): the same results as the local executor, a
worker killed mid-run is retried and resumes, a study killed locally resumes on Ray, and a search runs on Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import write_study

from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.results.store import Store
from tuneoff.study.execution import execute
from tuneoff.study.executors import RayExecutor
from tuneoff.study.spec import expand, load_spec

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def marker(tmp_path_factory):
    """Workers inherit the crash settings from the driver's environment at ray.init; the marker file decides."""
    return tmp_path_factory.mktemp("crash") / "crashed-once"


@pytest.fixture(scope="module")
def cluster(marker):
    # MonkeyPatch restores the environment even when ray.init fails: leaked crash settings would disarm every later
    # crash test.
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {
            "TUNEOFF_CRASH_AT": "step:7",
            "TUNEOFF_CRASH_ONCE": str(marker),
            "RAY_USAGE_STATS_ENABLED": "0",
        }.items():
            mp.setenv(key, value)
        marker.touch()  # armed only by the test that removes it
        try:
            # "local": a fresh cluster even where another one (RAY_ADDRESS, /tmp/ray) is running on the machine.
            ray.init(
                address="local",
                num_cpus=2,
                include_dashboard=False,
                object_store_memory=80 * 1024 * 1024,
                log_to_driver=False,
            )
            yield
        finally:
            ray.shutdown()


def finished(results: Path, study: str) -> dict:
    store = Store(results)
    rows = store.runs(study)
    store.close()
    return {r["run_id"]: r for r in rows}


def study_file(tmp_path, tiny_bert, toy_csv, name):
    return write_study(tmp_path, tiny_bert, toy_csv, name, train={"epochs": 2, "checkpoint_every": 3})


def test_ray_gives_the_local_results(cluster, marker, tiny_bert, toy_csv, tmp_path):
    spec = load_spec(study_file(tmp_path, tiny_bert, toy_csv, "same"))
    execute(spec, tmp_path / "local")
    execute(spec, tmp_path / "ray", executor=RayExecutor(cpus_per_run=1))
    local, remote = finished(tmp_path / "local", "same"), finished(tmp_path / "ray", "same")
    assert len(local) == len(remote) == 4 and {r["status"] for r in remote.values()} == {"done"}
    for run_id, row in local.items():
        a, b = json.loads(row["metrics"]), json.loads(remote[run_id]["metrics"])
        assert b["test"]["accuracy"] == a["test"]["accuracy"], run_id
        assert b["validation"]["loss"] == pytest.approx(a["validation"]["loss"], abs=1e-4), run_id
        assert Path(remote[run_id]["run_dir"]).parent == tmp_path / "ray" / "same" / "runs"
        log = (Path(remote[run_id]["run_dir"]) / "train.log").read_text()
        assert f"run {run_id}: " in log and "validation loss" in log, "the Ray worker's records reached the run's log"
    assert not marker.exists() or marker.stat().st_size == 0


def test_killed_worker_is_retried_and_recorded_once(cluster, marker, tiny_bert, toy_csv, tmp_path):
    marker.unlink()  # the first run to reach step 7 is SIGKILLed, once
    spec = load_spec(study_file(tmp_path, tiny_bert, toy_csv, "retry"))
    with logs.captured() as lines:
        execute(spec, tmp_path / "r", executor=RayExecutor(cpus_per_run=1, max_retries=2))
    assert marker.exists(), "a worker was killed"
    rows = finished(tmp_path / "r", "retry")
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"done"}, lines
    resumed = [r for r in rows.values() if json.loads(r["resources"])["resumed_from_step"] == "step-0000006"]
    assert len(resumed) == 1, "the killed run resumed from its step-6 checkpoint on a new worker"
    runs_dir = tmp_path / "r" / "retry" / "runs"
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted(rows), "one directory per run, no leftovers"
    assert sum(l.startswith("[") and "test accuracy" in l for l in lines) == 4, "each run reported once"


def test_study_killed_locally_resumes_on_ray(cluster, marker, tiny_bert, toy_csv, tmp_path):
    marker.touch()
    path = study_file(tmp_path, tiny_bert, toy_csv, "moved")
    env = {k: v for k, v in os.environ.items() if k != "TUNEOFF_CRASH_ONCE"}
    killed = subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "res")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    execute(load_spec(path), tmp_path / "res", resume=True, executor=RayExecutor())
    rows = finished(tmp_path / "res", "moved")
    assert {r["status"] for r in rows.values()} == {"done"} and len(rows) == 4
    first = rows[expand(load_spec(path))[0].run_id]  # the run the local study was killed in
    assert json.loads(first["resources"])["resumed_from_step"] == "step-0000006", "continued the local run's checkpoint"


def test_search_on_ray(cluster, marker, tiny_bert, toy_csv, tmp_path):
    marker.touch()
    path = tmp_path / "search.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "rs",
                "base": {
                    "model": {"name": tiny_bert},
                    "data": {"name": toy_csv, "max_length": 16},
                    "method": {"name": "lora"},
                    "train": {"epochs": 1, "batch_size": 16},
                },
                "search": {
                    "trials": 3,
                    "space": {"train.lr": {"low": 1e-3, "high": 5e-2, "log": True}},
                    "pruning": False,
                },
            }
        )
    )
    execute(load_spec(path), tmp_path / "res", executor=RayExecutor())
    rows = finished(tmp_path / "res", "rs")
    assert sorted(rows) == ["base-trial000", "base-trial001", "base-trial002"]
    assert {r["status"] for r in rows.values()} == {"done"}
    assert (tmp_path / "res" / "optuna.journal").is_file()


@pytest.mark.slow
def test_two_process_runs_on_ray_a_killed_process_is_retried(cluster, marker, tiny_bert, toy_csv, tmp_path):
    """Each run a Ray task holding 2 CPUs that trains on 2 processes (gloo); one process of one run is SIGKILLed at
    step 7: the task is retried and the run resumes from its step-6 checkpoint, still on 2 processes."""
    marker.unlink()
    path = study_file(tmp_path, tiny_bert, toy_csv, "procs")
    spec = yaml.safe_load(path.read_text())
    spec["seeds"] = [1]
    path.write_text(yaml.safe_dump(spec))
    with logs.captured() as lines:
        execute(load_spec(path), tmp_path / "r", executor=RayExecutor(processes_per_run=2, max_retries=2))
    assert marker.exists(), "a process was killed"
    assert any("each run asks for 2 CPUs and 0 GPUs (2 process(es)), 1 at a time" in l for l in lines), lines
    rows = finished(tmp_path / "r", "procs")
    assert len(rows) == 2 and {r["status"] for r in rows.values()} == {"done"}, lines
    resources = [json.loads(r["resources"]) for r in rows.values()]
    assert {(r["processes"], r["effective_batch_size"]) for r in resources} == {(2, 32)}
    assert sorted(r["resumed_from_step"] or "" for r in resources) == ["", "step-0000006"]
    assert sorted(p.name for p in (tmp_path / "r" / "procs" / "runs").iterdir()) == sorted(rows)


GPU_NODE = {"CPU": 16, "GPU": 4}
CPU_NODE = {"CPU": 8}


@pytest.mark.parametrize(
    "nodes, asked, expected",
    [
        ([GPU_NODE, GPU_NODE], (1, None, 1), (1, 1, 8)),  # one GPU per run by default where there are GPUs
        ([GPU_NODE, GPU_NODE], (2, None, 4), (2, 4, 2)),  # a run on 4 GPUs: one per node at a time
        ([GPU_NODE], (1, 0.5, 1), (1, 0.5, 8)),  # two runs share a GPU
        ([CPU_NODE, CPU_NODE], (1, None, 2), (2, 0, 8)),  # CPU processes: a CPU each
        ([CPU_NODE, {"CPU": 2, "GPU": 1}], (1, None, 1), (1, 1, 1)),  # GPUs exist: runs go where they are
    ],
)
def test_what_each_run_asks_for(nodes, asked, expected):
    from tuneoff.study.executors import task_resources

    assert task_resources(nodes, *asked) == expected


@pytest.mark.parametrize(
    "nodes, asked, message",
    [
        ([{"CPU": 16, "GPU": 1}] * 4, (1, None, 4), "largest node has 16 CPUs and 1 GPUs"),  # 4 GPUs in all, 1 per node
        ([GPU_NODE], (1, 2, 1), "one process per GPU"),
        ([GPU_NODE], (1, 1, 2), "one process per GPU"),
        ([CPU_NODE], (1, None, 16), "no run could ever be placed"),
    ],
)
def test_runs_no_node_can_hold_are_refused(nodes, asked, message):
    from tuneoff.study.executors import task_resources

    with pytest.raises(TuneoffError, match=message):
        task_resources(nodes, *asked)


class _RayStandIn:
    """Just enough of ``ray`` to see which cluster RayExecutor asks ``ray.init`` for (no cluster started)."""

    def __init__(self):
        self.addresses = []

    def is_initialized(self):
        return False

    def init(self, address=None, **_):
        self.addresses.append(address)

    def nodes(self):
        return [{"Alive": True, "Resources": CPU_NODE}]

    def remote(self, fn):
        return type("Task", (), {"options": lambda self, **_: self})()


@pytest.mark.parametrize(
    "ray_address, given, expected",
    [
        (None, None, "local"),  # a cluster of our own, never a stale one /tmp/ray recorded
        ("ray://head:10001", None, None),  # `ray job submit` sets RAY_ADDRESS: ray.init reads it
        (None, "auto", "auto"),  # --address wins
        ("ray://head:10001", "ray://other:10001", "ray://other:10001"),
    ],
)
def test_which_cluster_ray_executor_joins(monkeypatch, ray_address, given, expected):
    stand_in = _RayStandIn()
    monkeypatch.setitem(sys.modules, "ray", stand_in)
    if ray_address:
        monkeypatch.setenv("RAY_ADDRESS", ray_address)
    else:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    RayExecutor(address=given)
    assert stand_in.addresses == [expected]


def test_a_run_no_node_can_place_is_refused(cluster):
    with pytest.raises(TuneoffError, match="no run could ever be placed"):
        RayExecutor(cpus_per_run=64)
    with pytest.raises(TuneoffError, match="no run could ever be placed"):
        RayExecutor(gpus_per_run=1)
    with pytest.raises(TuneoffError, match="one process per GPU"):
        RayExecutor(gpus_per_run=2)
    with pytest.raises(TuneoffError, match="no run could ever be placed"):
        RayExecutor(processes_per_run=4)  # 4 CPU processes on a 2-CPU cluster


@pytest.mark.slow
def test_cli_runs_a_study_on_ray(cluster, marker, tiny_bert, toy_csv, tmp_path):
    """As a user runs it: `tuneoff run study.yaml --executor ray` with a relative --results directory (made absolute,
    since workers may run elsewhere), then the report."""
    marker.touch()
    path = study_file(tmp_path, tiny_bert, toy_csv, "cli")
    proc = subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", str(path), "--executor", "ray", "--results", "res"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stderr  # progress is logged to stderr; stdout holds the results
    assert "on ray" in log and sum(line.startswith("[") and "test accuracy" in line for line in log.splitlines()) == 4
    rows = finished(tmp_path / "res", "cli")
    assert {r["status"] for r in rows.values()} == {"done"}
    assert all(Path(r["run_dir"]).is_absolute() for r in rows.values())
    assert (tmp_path / "res" / "cli" / "report" / "report.html").is_file()
