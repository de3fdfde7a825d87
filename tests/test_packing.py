"""Packing a study's runs onto the machine: several runs at once in worker processes give the same results as one
after another, each run recorded once, the cores split and never oversubscribed, the shared feature cache built once,
and a study killed mid-way resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_study

from tuneoff.core import logs
from tuneoff.results.store import Store
from tuneoff.study.execution import execute
from tuneoff.study.executors import LocalExecutor
from tuneoff.study.packing import PackedExecutor, choose, cpu_cores, make_executor
from tuneoff.study.spec import load_spec

VARIANTS = {
    "partial": {"method": {"name": "partial", "k": 1}, "train": {"lr": 5e-3}},
    "lora": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}},
}


def test_choosing_how_many_runs_at_once():
    cores = len(cpu_cores())
    assert choose(2, None) == (2, max(1, cores // 2)), "the cores split between the runs"
    assert choose("3", 1) == (3, 1)
    n, threads = choose("auto", None, jobs=100)
    assert n >= 1 and n * threads <= max(cores, threads), "never more threads than cores"
    assert choose("auto", None, jobs=1)[0] == 1, "no more runs at once than jobs"
    from tuneoff.core.errors import TuneoffError

    with pytest.raises(TuneoffError, match="--parallel 0"):
        choose(0, None)


def test_on_a_gpu_as_many_runs_as_the_planned_peak_fits_in_its_free_memory(monkeypatch):
    import torch

    free = {"bytes": 10 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free["bytes"], 80 * 2**30))
    assert choose("auto", None, gpu_peak_mb=4000)[0] == 2, "80% of 10 GiB holds two 4,000 MB runs"
    assert choose("auto", None, gpu_peak_mb=9000)[0] == 1, "one run even when the plan exceeds 80% of free memory"
    free["bytes"] = 79 * 2**30
    assert choose("auto", None, gpu_peak_mb=1000)[0] == 8, "at most 8 runs on one device"
    assert choose("auto", None, jobs=3, gpu_peak_mb=1000)[0] == 3, "no more runs than jobs"
    assert choose(2, None, gpu_peak_mb=1000)[0] == 2, "--parallel N is taken as given"


def _finished(results, study):
    store = Store(results)
    rows = {r["run_id"]: r for r in store.runs(study)}
    store.close()
    return rows


def test_packed_runs_equal_sequential_runs_and_are_recorded_once(tiny_bert, toy_csv, tmp_path, monkeypatch):
    import torch

    threads = torch.get_num_threads()
    try:
        _packed_equal_sequential(tiny_bert, toy_csv, tmp_path, monkeypatch)
    finally:  # LocalExecutor(threads=1) sets this process's thread count: later tests get theirs back
        torch.set_num_threads(threads)


def _packed_equal_sequential(tiny_bert, toy_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    path = write_study(tmp_path, tiny_bert, toy_csv, "packed", variants=VARIANTS, train={"epochs": 2})
    execute(load_spec(path), tmp_path / "one", executor=LocalExecutor(threads=1))
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache-packed"))  # the workers build theirs afresh
    with logs.captured() as lines:
        execute(load_spec(path), tmp_path / "two", executor=PackedExecutor(2, 1))
    one, two = _finished(tmp_path / "one", "packed"), _finished(tmp_path / "two", "packed")
    assert sorted(one) == sorted(two) == ["lora-s1", "lora-s2", "partial-s1", "partial-s2"]
    assert {r["status"] for r in two.values()} == {"done"}
    assert sum(line.startswith("[") for line in lines) == 4, "each run reported, and recorded, once"
    for run_id, row in one.items():
        a, b = json.loads(row["metrics"]), json.loads(two[run_id]["metrics"])
        assert a["test"]["accuracy"] == b["test"]["accuracy"], run_id
        assert a["validation"]["loss"] == pytest.approx(b["validation"]["loss"], abs=1e-5), run_id
        info = json.loads(two[run_id]["run_info"])
        assert info["device"].endswith("1 threads)"), "a worker uses exactly the threads it was given"
    built = [json.loads(r["resources"])["feature_cache"] for k, r in two.items() if k.startswith("partial")]
    assert sorted(built) == ["used", "used; built by this run"], "the shared cache is built once, the other run waits"
    resources = json.loads(two["lora-s1"]["resources"])
    assert resources["peak_rss_mb"] > 0 and set(resources["seconds"]) >= {
        "load",
        "train",
        "evaluations",
        "save",
        "latency",
        "test_evaluation",
        "total",
    }
    # Four runs on at most two reused workers: some run was measured after another in its process, and says so.
    before = [json.loads(r["resources"])["runs_before_in_process"] for r in two.values()]
    assert min(before) == 0 and max(before) >= 1, before

    # --isolate-runs: every run in a new worker, measured alone; the same results.
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache-isolated"))
    execute(load_spec(path), tmp_path / "three", executor=make_executor("local", parallel=2, threads=1, isolate=True))
    three = _finished(tmp_path / "three", "packed")
    assert [json.loads(r["resources"])["runs_before_in_process"] for r in three.values()] == [0, 0, 0, 0]
    for run_id, row in one.items():
        assert (
            json.loads(row["metrics"])["test"]["accuracy"] == json.loads(three[run_id]["metrics"])["test"]["accuracy"]
        )


@pytest.mark.slow
def test_a_packed_study_killed_mid_way_resumes(tiny_bert, toy_csv, tmp_path):
    path = write_study(tmp_path, tiny_bert, toy_csv, "killed", variants=VARIANTS, train={"epochs": 3}, seeds=[1, 2, 3])
    env = {**os.environ, "TUNEOFF_PARALLEL": "2", "TUNEOFF_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    runs = tmp_path / "r" / "killed" / "runs"
    deadline = time.monotonic() + 300
    while len([p for p in runs.glob("*") if not p.name.startswith(".")] if runs.exists() else []) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "the study ended before it could be killed"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its workers
    proc.wait()
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    rows = _finished(tmp_path / "r", "killed")
    assert len(rows) == 6 and {r["status"] for r in rows.values()} == {"done"}
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith(".")) == sorted(rows)
    assert "already done" in resumed.stderr


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> set[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_workers_die_with_a_killed_driver(tiny_bert, toy_csv, tmp_path):
    """SIGKILL to the driver alone, not its process group (a driver that cannot clean up): its packed workers must not
    train on, orphaned, into the study's directory. (SIGTERM asks the study to stop: the test below.)"""
    path = write_study(tmp_path, tiny_bert, toy_csv, "orphans", variants=VARIANTS, train={"epochs": 50}, seeds=[1, 2])
    env = {**os.environ, "TUNEOFF_PARALLEL": "2", "TUNEOFF_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(proc.pid)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "the workers never started"
            time.sleep(0.2)
        time.sleep(2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 20
        while any(_alive(w) for w in workers):
            assert time.monotonic() < deadline, "a worker outlived its driver"
            time.sleep(0.2)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_isolate_runs_from_the_command_line(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """`--isolate-runs` with one run at a time still gives each run a new process; Ray refuses it by name."""
    from typer.testing import CliRunner

    from tuneoff.cli.app import app

    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    path = write_study(tmp_path, tiny_bert, toy_csv, "alone", variants={"lora": VARIANTS["lora"]}, train={"epochs": 1})
    runner = CliRunner()
    result = runner.invoke(
        app, ["run", str(path), "--results", str(tmp_path / "r"), "--parallel", "1", "--isolate-runs"]
    )
    assert result.exit_code == 0, result.output
    rows = _finished(tmp_path / "r", "alone")
    assert [json.loads(r["resources"])["runs_before_in_process"] for r in rows.values()] == [0, 0]
    refused = runner.invoke(
        app, ["run", str(path), "--results", str(tmp_path / "ray"), "--executor", "ray", "--isolate-runs"]
    )
    assert refused.exit_code == 2 and "--isolate-runs is for the local executor" in refused.output


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="affinity is Linux's")
def test_a_run_pins_every_thread_of_its_worker_and_the_core_sets_never_overlap(monkeypatch):
    """A reused worker may hold another core set for its next run: every thread it already has moves with it (an
    OpenMP thread left on the last run's cores would share them with a neighbour)."""
    import threading

    from tuneoff.study import packing

    monkeypatch.setattr(packing, "cpu_cores", lambda: [0, 1, 2, 3])
    executor = PackedExecutor(2, 2)
    assert executor.free == [{0, 1}, {2, 3}]
    executor.close()
    before, stop = os.sched_getaffinity(0), threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    try:
        target = {min(before)}
        packing._pin(target)
        assert os.sched_getaffinity(0) == target and os.sched_getaffinity(worker.native_id) == target
    finally:
        stop.set()
        worker.join()
        packing._pin(before)  # every thread of the test process back where it was


@pytest.mark.slow
def test_a_packed_study_stopped_by_sigterm_keeps_its_runs_where_they_were_and_resumes(tiny_bert, toy_csv, tmp_path):
    """`kill <driver>` (SIGTERM to the driver alone, as a scheduler's time limit or a user would): it starts no new run,
    forwards the request to its workers, whose runs save a checkpoint where they are; the study exits 143 saying how
    to continue, the stopped runs pending (not failed), and --resume finishes the study."""
    path = write_study(tmp_path, tiny_bert, toy_csv, "stopped", variants=VARIANTS, train={"epochs": 30}, seeds=[1, 2])
    env = {**os.environ, "TUNEOFF_PARALLEL": "2", "TUNEOFF_CACHE": str(tmp_path / "cache")}
    args = [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "r")]
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    runs = tmp_path / "r" / "stopped" / "runs"
    try:
        deadline = time.monotonic() + 300
        while len(list(runs.glob(".*.tmp/checkpoints/step-*"))) < 2:  # both runs in flight have trained an epoch
            assert proc.poll() is None and time.monotonic() < deadline, "the study ended before it could be stopped"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "Stopped by SIGTERM" in stderr and "--resume" in stderr
    rows = _finished(tmp_path / "r", "stopped")
    stopped = {k: r for k, r in rows.items() if r["error"] and "stopped by SIGTERM at step" in r["error"]}
    assert len(stopped) == 2 and {r["status"] for r in rows.values()} == {"pending"}, {
        k: r["status"] for k, r in rows.items()
    }
    listed = subprocess.run(
        [sys.executable, "-m", "tuneoff", "runs", "list", "--results", str(tmp_path / "r")],
        env={**env, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert listed.count("pending (stopped)") == 2, listed
    for run_id, row in stopped.items():
        step = int(row["error"].split("at step ")[1].split()[0])
        newest = sorted((runs / f".{run_id}.tmp" / "checkpoints").glob("step-*"))[-1]
        assert newest.name == f"step-{step:07d}", "saved where it stopped"
    resumed = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "0 already done, 4 to run (2 stopped earlier continue from their checkpoints)" in resumed.stderr
    rows = _finished(tmp_path / "r", "stopped")
    assert len(rows) == 4 and {r["status"] for r in rows.values()} == {"done"}
    for run_id in stopped:
        assert json.loads(rows[run_id]["resources"])["resumed_from_step"].startswith("step-")


def test_a_stop_request_starts_no_run_and_names_what_ended_stopped_and_never_started(monkeypatch):
    """drive() with an executor of two slots: the request comes while the first of two runs in flight ends; the
    executor is told once, nothing more is submitted, and the study stops saying which is which."""
    from types import SimpleNamespace

    from tuneoff.core.errors import Stopped
    from tuneoff.study.executors import Outcome, drive
    from tuneoff.training import stop

    monkeypatch.setitem(stop._state, "requested", None)

    class Fake:
        name, slots = "local", 2

        def __init__(self):
            self.inflight, self.submitted, self.told = [], [], 0

        @property
        def pending(self):
            return len(self.inflight)

        def submit(self, job):
            self.inflight.append(job)
            self.submitted.append(job.run_id)

        def next_done(self):
            job = self.inflight.pop(0)
            if job.run_id == "r0":  # the first ends; the signal arrives after it
                monkeypatch.setitem(stop._state, "requested", "SIGTERM")
                return job, Outcome(job.run_id, "failed", error="boom")
            return job, Outcome(job.run_id, "stopped" if self.told else "failed", error="stopped by SIGTERM at step 3")

        def stop(self):
            self.told += 1

    executor, seen = Fake(), []
    jobs = [
        SimpleNamespace(run_id=f"r{i}", trial=False, config=SimpleNamespace(method=SimpleNamespace(name="lora")))
        for i in range(5)
    ]
    with pytest.raises(
        Stopped,
        match=r"Stopped by SIGTERM: 1 run\(s\) ended before it, 1 saved where they stopped and "
        r"3 not started",
    ) as stopped:
        drive(executor, iter(jobs), len(jobs), lambda job, outcome: seen.append((job.run_id, outcome.status)))
    assert stopped.value.signal_name == "SIGTERM" and executor.told == 1
    assert executor.submitted == ["r0", "r1"], "r0's slot is not filled once the request came"
    assert seen == [("r0", "failed"), ("r1", "stopped")]


def test_ray_stops_its_runs_in_flight_without_force():
    from types import SimpleNamespace

    from tuneoff.study.executors import RayExecutor

    cancelled = []
    executor = RayExecutor.__new__(RayExecutor)  # no cluster: only what stop() touches
    executor.ray = SimpleNamespace(cancel=lambda ref, force: cancelled.append((ref, force)))
    executor.inflight = {"a": None, "b": None}
    executor.stop()
    assert cancelled == [("a", False), ("b", False)] and len(executor.inflight) == 2, "their outcomes still come back"


@pytest.mark.slow
def test_a_worker_signalled_alone_stops_its_run_and_the_study_goes_on(tiny_bert, toy_csv, tmp_path):
    """SIGTERM to one worker only (someone's `kill`, not the driver's stop): its run saves a checkpoint and is left
    pending; the driver goes on, and the worker's later runs train to the end (the request was served). The study then
    exits 143, as stopped, naming the run and --resume (it once exited 0 and wrote a verdict from the other seeds, as
    if complete)."""
    path = write_study(tmp_path, tiny_bert, toy_csv, "one", variants=VARIANTS, train={"epochs": 3}, seeds=[1, 2, 3])
    env = {
        **os.environ,
        "TUNEOFF_PARALLEL": "2",
        "TUNEOFF_CACHE": str(tmp_path / "cache"),
        "TUNEOFF_CRASH_AT": "step:3",
        "TUNEOFF_CRASH_SIGNAL": "SIGTERM",
        "TUNEOFF_CRASH_ONCE": str(tmp_path / "once"),
    }
    args = [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "r")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr[-3000:]
    assert "were stopped by a signal their worker alone got" in done.stderr and "--resume" in done.stderr
    rows = _finished(tmp_path / "r", "one")
    assert sorted(r["status"] for r in rows.values()) == ["done"] * 5 + ["pending"]
    (stopped,) = [r for r in rows.values() if r["status"] == "pending"]
    assert "stopped by SIGTERM at step 3" in stopped["error"]
    resumed = subprocess.run(
        args + ["--resume"],
        env={k: v for k, v in env.items() if not k.startswith("TUNEOFF_CRASH")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0 and "(1 stopped earlier continue from their checkpoints)" in resumed.stderr, (
        resumed.stderr[-3000:]
    )
    assert {r["status"] for r in _finished(tmp_path / "r", "one").values()} == {"done"}


def test_the_time_left_is_counted_per_method():
    """A study's first runs are its cheapest: after a head trial of 6 s, the runs left (2 heads, 2 full) are not 4 x 6
    s but heads at 6 s and full at least as slow as the slowest method so far; once a full run took 120 s, full's runs
    take that. On 2 slots the minutes halve."""
    from tuneoff.study.executors import Eta

    eta = Eta(["head", "head", "head", "full", "full", "full"], slots=2)
    eta.done("head", 6.0)
    assert eta.minutes(eta.left) == (pytest.approx((6 * 2 + 6 * 3) / 2 / 60), True)
    eta.done("full", 120.0)
    minutes, low = eta.minutes(eta.left)
    assert minutes == pytest.approx((6 * 2 + 120 * 2) / 2 / 60) and not low
    assert eta.minutes(["lora"]) == (pytest.approx(120 / 2 / 60), True)


def test_threads_count_only_the_cores_other_work_leaves_free(monkeypatch, caplog):
    """A study on 2 cores beside another job crawled at 2 threads (9-12 samples/s against 67 with 1): the automatic
    choice counts the cores the load says are taken, and says so; a --parallel or --threads given is obeyed."""
    from tuneoff.study import packing

    monkeypatch.setattr(packing, "cpu_cores", lambda: [0, 1])
    monkeypatch.setattr(packing, "available_gb", lambda: 16.0)
    monkeypatch.setattr(packing.os, "getloadavg", lambda: (1.1, 1.0, 0.9))
    with caplog.at_level("WARNING", logger="tuneoff"):
        assert packing.choose("auto", None, jobs=10) == (1, 1)
    assert "other work is using about 1 of the 2 core(s)" in caplog.text and "--threads" in caplog.text
    assert packing.choose(2, None, jobs=10) == (2, 1) and packing.choose("auto", 2, jobs=10) == (1, 2)
    monkeypatch.setattr(packing.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert packing.choose("auto", None, jobs=10) == (2, 1)
    assert packing.free_cores() == (2, 2, 0.1)


def test_a_run_beside_other_work_says_which_thread_count_to_try(monkeypatch, caplog):
    """`tuneoff train` keeps torch's thread count (a resumed run's arithmetic stays its first run's) but says, when the
    load shows another job on the cores, what to pass instead."""
    import torch

    from tuneoff import api
    from tuneoff.study import packing

    monkeypatch.setattr(packing, "cpu_cores", lambda: [0, 1])
    monkeypatch.setattr(packing.os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    with caplog.at_level("WARNING", logger="tuneoff"):
        api._set_threads(None)
    assert "other work is using about 1 of the 2 core(s)" in caplog.text and "--threads 1 --resume" in caplog.text
