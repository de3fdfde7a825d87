"""One run on two CPU processes (Accelerate, gloo): the same training and predictions as one process, one set of
files written by process 0, and a killed two-process run resumes to the uninterrupted result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import crashing_env, toy_frame
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def split_files(tmp_path_factory):
    """96 training rows (6 global batches of 16), and odd-sized evaluation splits so that the shards need padding."""
    root = tmp_path_factory.mktemp("splits")
    for name, n, seed in (("train", 96, 1), ("dev", 29, 2), ("test", 31, 3)):
        toy_frame(n, seed).to_csv(root / f"{name}.csv", index=False)
    return root


# These tests are about processes on the CPU (gloo); a machine with one GPU would refuse two processes per GPU.
CPU_ONLY = {"OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}


def run_tuneoff(args: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneoff", "train", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**crashing_env(), **CPU_ONLY, **(env or {})},
    )


def overrides(model, files, out, name, batch, **extra):
    base = {
        "model.name": model,
        "data.name": files / "train.csv",
        "data.validation_file": files / "dev.csv",
        "data.test_file": files / "test.csv",
        "data.max_length": 16,
        "output_dir": out,
        "name": name,
        "method.name": "lora",
        "method.dropout": 0.0,
        "train.epochs": 3,
        "train.batch_size": batch,
        "train.lr": 2e-2,
        "train.seed": 0,
        "train.eval_every": 6,
        # fp32: bf16 autocast (auto on CPUs with native bf16) rounds batches of 8 and 16 differently
        "train.mixed_precision": "no",
        **extra,
    }
    return [f"{k}={v}" for k, v in base.items()]


def the_run(out: Path) -> Path:
    """The one entry in an output directory, asserted to be a finished run (no temporary leftovers)."""
    entries = list(out.iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith("."), entries
    return entries[0]


def test_two_processes_match_one_and_write_once(no_dropout_bert, split_files, tmp_path):
    one = run_tuneoff(overrides(no_dropout_bert, split_files, tmp_path / "one", "r", 16))
    assert one.returncode == 0, one.stderr[-3000:]
    two = run_tuneoff(["--num-processes", "2", *overrides(no_dropout_bert, split_files, tmp_path / "two", "r", 8)])
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("run saved to") == 1, "only process 0 prints"

    a, b = the_run(tmp_path / "one"), the_run(tmp_path / "two")
    resources = json.loads((b / "resources.json").read_text())
    assert (resources["processes"], resources["per_device_batch_size"], resources["effective_batch_size"]) == (2, 8, 16)
    assert resources["train_samples"] == 3 * 96, "samples summed over both processes"
    run = json.loads((b / "run.json").read_text())
    assert run["batch_order_digest"] == json.loads((a / "run.json").read_text())["batch_order_digest"], (
        "same global batches"
    )
    log = (b / "train.log").read_text()
    assert " rank 0 INFO " in log and " rank 1 INFO " in log, "both processes' records are in the run's log"

    # Evaluation gathered from both processes: every test example exactly once, in order.
    pa, pb = pd.read_csv(a / "predictions.csv"), pd.read_csv(b / "predictions.csv")
    assert len(pb) == 31 and list(pb["id"]) == list(pa["id"])
    assert list(pb["pred_label"]) == list(pa["pred_label"])
    np.testing.assert_allclose(pb.filter(like="prob_").to_numpy(), pa.filter(like="prob_").to_numpy(), atol=1e-4)
    history_a = [json.loads(x) for x in (a / "history.jsonl").read_text().splitlines()]
    history_b = [json.loads(x) for x in (b / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history_b] == [h["step"] for h in history_a]
    np.testing.assert_allclose([h["train_loss"] for h in history_b], [h["train_loss"] for h in history_a], rtol=1e-4)

    # The saved adapter reloaded in one process predicts what the two processes gathered.
    from tuneoff.training.saved import evaluate_run

    metrics, _ = evaluate_run(b, None, "test", [])
    assert metrics["accuracy"] == pytest.approx(json.loads((b / "metrics.json").read_text())["test"]["accuracy"])
    assert metrics["n"] == 31


@pytest.mark.slow
def test_two_process_run_killed_resumes_to_the_same_weights(tiny_bert, split_files, tmp_path):
    """Dropout on: each process restores its own RNG stream from the checkpoint."""
    args = [
        "--num-processes",
        "2",
        *overrides(
            tiny_bert, split_files, tmp_path / "ref", "r", 8, **{"method.dropout": 0.1, "train.checkpoint_every": 4}
        ),
    ]
    ref = run_tuneoff(args)
    assert ref.returncode == 0, ref.stderr[-3000:]
    crash_args = [a.replace(str(tmp_path / "ref"), str(tmp_path / "crash")) for a in args]
    killed = run_tuneoff(crash_args, {"TUNEOFF_CRASH_AT": "step:10"})
    assert killed.returncode != 0
    [unfinished] = (tmp_path / "crash").iterdir()
    assert unfinished.name.startswith(".r-") and (unfinished / "checkpoints" / "step-0000008" / "rng-1.pt").is_file()
    resumed = run_tuneoff([*crash_args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref_dir, res_dir = the_run(tmp_path / "ref"), the_run(tmp_path / "crash")
    assert json.loads((res_dir / "resources.json").read_text())["resumed_from_step"] == "step-0000008"
    w_ref = load_file(ref_dir / "model" / "adapter_model.safetensors")
    w_res = load_file(res_dir / "model" / "adapter_model.safetensors")
    assert w_ref.keys() == w_res.keys()
    for k in w_ref:
        np.testing.assert_allclose(w_res[k].numpy(), w_ref[k].numpy(), atol=1e-6, err_msg=k)
    assert (
        json.loads((res_dir / "run.json").read_text())["batch_order_digest"]
        == json.loads((ref_dir / "run.json").read_text())["batch_order_digest"]
    )


def test_readings_of_processes_combine_into_one_run():
    from tuneoff.training.resources import combine_processes

    a = {
        "train_seconds": 10.0,
        "train_samples": 80,
        "train_tokens": 800,
        "peak_rss_mb": 900.0,
        "cuda_max_allocated_mb": None,
    }
    b = {
        "train_seconds": 12.0,
        "train_samples": 72,
        "train_tokens": 700,
        "peak_rss_mb": 950.0,
        "cuda_max_allocated_mb": None,
    }
    out = combine_processes([a, b])
    assert (out["train_samples"], out["train_tokens"], out["train_seconds"]) == (152, 1500, 12.0)
    assert out["train_samples_per_s"] == pytest.approx(152 / 12) and out["train_tokens_per_s"] == pytest.approx(125)
    assert out["peak_rss_mb"] == 950.0 and out["cuda_max_allocated_mb"] is None


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="on a GPU machine Accelerate does run FSDP")
@pytest.mark.parametrize("version", [1, 2])
def test_fsdp_config_on_cpu_is_refused_not_silently_unsharded(tiny_bert, split_files, tmp_path, version):
    """On CPU Accelerate fails deep inside on an FSDP 1 config and silently drops an FSDP 2 config (every process
    would hold the whole model)."""
    config = tmp_path / "fsdp.yaml"
    config.write_text(
        f"compute_environment: LOCAL_MACHINE\ndistributed_type: FSDP\nfsdp_config:\n  fsdp_version: {version}\n"
        "  fsdp_state_dict_type: FULL_STATE_DICT\nmixed_precision: 'no'\nnum_machines: 1\n"
        "num_processes: 2\nuse_cpu: true\nmain_process_port: 0\n"
    )
    done = run_tuneoff(
        [
            "--num-processes",
            "2",
            "--accelerate-config",
            str(config),
            *overrides(tiny_bert, split_files, tmp_path / "out", "r", 8),
        ]
    )
    assert done.returncode != 0
    assert "asks for FSDP" in done.stdout + done.stderr and "would not shard the model" in done.stdout + done.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing written"


def test_a_decision_on_process_0_stops_every_process(tmp_path):
    """A search's pruner is asked once, on process 0; what it raises is raised on every process (otherwise process 1
    trains on alone, waiting forever in the next collective)."""
    script = tmp_path / "decide.py"
    script.write_text(
        "import sys\n"
        "from accelerate import Accelerator\n"
        "from tuneoff.training.launcher import on_main_process\n"
        "acc = Accelerator(cpu=True)\n"
        "calls = []\n"
        "def decide(step):\n"
        "    calls.append(step)\n"
        "    if acc.process_index == 0:\n"
        "        raise KeyError(f'stop at {step}')\n"
        "try:\n"
        "    on_main_process(acc, decide, 4)\n"
        "except KeyError as exc:\n"
        "    print(f'rank {acc.process_index}: calls {calls}, raised {exc}', flush=True)\n"
        "from tuneoff.training.launcher import end_processes\n"
        "end_processes()\n"
    )
    from tuneoff.training.launcher import launch_command

    cmd = launch_command(2, [])[:-2] + [str(script)]  # the script instead of `-m tuneoff`
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, **CPU_ONLY})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "rank 0: calls [4], raised 'stop at 4'" in done.stdout
    assert "rank 1: calls [], raised 'stop at 4'" in done.stdout


@pytest.mark.slow
def test_cli_study_with_two_processes_per_run(tiny_bert, toy_csv, tmp_path):
    """`tuneoff run study.yaml --processes-per-run 2`: each run of the study trains on 2 processes (the way a
    multi-GPU machine runs a study of models too big for one GPU), recorded once, with the same report."""
    from conftest import write_study

    path = write_study(tmp_path, tiny_bert, toy_csv, "procs", train={"epochs": 2}, seeds=[1])
    done = subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", str(path), "--results", "res", "--processes-per-run", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **CPU_ONLY},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert sum(line.startswith("[") and "test accuracy" in line for line in done.stderr.splitlines()) == 2
    from tuneoff.results.store import Store

    store = Store(tmp_path / "res")
    rows = store.runs("procs")
    store.close()
    assert {r["status"] for r in rows} == {"done"} and len(rows) == 2
    for row in rows:
        resources = json.loads(row["resources"])
        assert (resources["processes"], resources["effective_batch_size"]) == (2, 32)
        assert Path(row["run_dir"], "model").is_dir()
    assert (tmp_path / "res" / "procs" / "report" / "report.html").is_file()


def _stop_when_saved(args: list[str], out: Path, cwd: Path | None = None) -> tuple[int, str]:
    """Start ``tuneoff <args>`` (CPU processes), SIGTERM the command alone (``kill <pid>``, not its process group)
    once a checkpoint is written under ``out``; its exit code and output."""
    import signal
    import time

    log = (cwd or out.parent) / f"{out.name}.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tuneoff", *args],
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env={**os.environ, **CPU_ONLY},
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 300
            while not list(out.rglob("checkpoints/step-*")):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, " ".join(log.read_text().split())


@pytest.mark.slow
def test_kill_to_a_command_on_two_processes_stops_them_where_they_are(tiny_bert, split_files, tmp_path):
    """`kill <pid>` of `tuneoff train --num-processes 2` (torchrun starts its processes in sessions of their own and
    would SIGKILL them 30 s after a signal of its own): both processes get the request, save a checkpoint at the
    step where they stop, the command exits 143, and --resume finishes the run."""
    args = [
        "train",
        "--no-progress",
        "--num-processes",
        "2",
        *overrides(tiny_bert, split_files, tmp_path / "out", "r", 8, **{"train.epochs": 40}),
    ]
    code, text = _stop_when_saved(args, tmp_path / "out")
    assert code == 143, text[-3000:]
    step = int(text.split("stopped by SIGTERM at step ")[1].split()[0])
    assert "stopped by a signal to another of its processes" not in text, "each process got the request itself"
    assert "FAILED" not in text and "Traceback" not in text, "the processes exit 0; the command says how it stopped"
    [unfinished] = (tmp_path / "out").iterdir()
    assert sorted(p.name for p in (unfinished / "checkpoints").iterdir())[-1] == f"step-{step:07d}"
    resumed = run_tuneoff(["--num-processes", "2", *args[4:], "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    run = json.loads((the_run(tmp_path / "out") / "resources.json").read_text())
    assert run["resumed_from_step"] == f"step-{step:07d}"


@pytest.mark.slow
def test_kill_to_a_study_stops_its_runs_on_two_processes_and_resume_finishes(tiny_bert, toy_csv, tmp_path):
    """`kill <driver>` of a study with --processes-per-run 2: the run in flight saves where it stops (not killed and
    retried as a dead run), recorded pending (stopped); --resume finishes the study."""
    from conftest import write_study

    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "procs",
        train={"epochs": 30},
        seeds=[1],
        variants={"lora": {"method": {"name": "lora"}}},
    )
    args = ["run", str(path), "--results", "res", "--processes-per-run", "2"]
    code, text = _stop_when_saved(args, tmp_path / "res", cwd=tmp_path)
    assert code == 143 and "Stopped by SIGTERM: 0 run(s) ended before it, 1 saved where" in text, text[-3000:]
    assert "died" not in text
    from tuneoff.results.store import Store

    store = Store(tmp_path / "res")
    [row] = store.runs("procs")
    store.close()
    assert row["status"] == "pending" and "stopped by SIGTERM at step" in row["error"], dict(row)
    resumed = subprocess.run(
        [sys.executable, "-m", "tuneoff", *args, "--resume"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **CPU_ONLY},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "(1 stopped earlier continue from their checkpoints)" in resumed.stderr
    store = Store(tmp_path / "res")
    [row] = store.runs("procs")
    store.close()
    assert row["status"] == "done" and json.loads(row["resources"])["resumed_from_step"].startswith("step-")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_run_s_processes_die_with_the_worker_that_started_them(tmp_path):
    """A Ray worker SIGKILLed mid-run must not leave the run's processes training on, racing its retry."""
    import signal
    import time

    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys, time\n"
            "from tuneoff.training.launcher import tied_to_this_process\n"
            "child = subprocess.Popen(tied_to_this_process(['sleep', '120']))\n"
            "print(child.pid, flush=True)\n"
            "time.sleep(120)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    child = int(worker.stdout.readline())

    def alive() -> bool:  # a killed child not yet reaped is a zombie: dead
        try:
            return Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    time.sleep(0.5)
    assert alive()
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    for _ in range(50):
        if not alive():
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    pytest.fail("the run's process outlived the worker that started it")


@pytest.mark.slow
def test_a_signal_to_one_process_stops_both_at_the_same_step(tiny_bert, split_files, tmp_path):
    """SIGTERM reaches only the process that first gets to step 3: both stop at the next step where they synchronise
    (step 6, an evaluation), with one checkpoint there, and --resume equals the uninterrupted run."""
    args = ["--num-processes", "2", *overrides(tiny_bert, split_files, tmp_path / "ref", "r", 8)]
    ref = run_tuneoff(args)
    assert ref.returncode == 0, ref.stderr[-3000:]
    stop_args = [a.replace(str(tmp_path / "ref"), str(tmp_path / "stop")) for a in args]
    stopped = run_tuneoff(
        stop_args,
        {"TUNEOFF_CRASH_AT": "step:3", "TUNEOFF_CRASH_SIGNAL": "SIGTERM", "TUNEOFF_CRASH_ONCE": str(tmp_path / "once")},
    )
    assert stopped.returncode != 0 and (tmp_path / "once").exists()
    text = " ".join((stopped.stdout + stopped.stderr).split())
    assert (
        "stopped by SIGTERM at step 6 of 18" in text
        and "stopped by a signal to another of its processes at step 6" in text
    )
    [unfinished] = (tmp_path / "stop").iterdir()
    assert sorted(p.name for p in (unfinished / "checkpoints").iterdir()) == ["step-0000006"]
    resumed = run_tuneoff([*stop_args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    ref_dir, res_dir = the_run(tmp_path / "ref"), the_run(tmp_path / "stop")
    w_ref = load_file(ref_dir / "model" / "adapter_model.safetensors")
    w_res = load_file(res_dir / "model" / "adapter_model.safetensors")
    for k in w_ref:
        np.testing.assert_allclose(w_res[k].numpy(), w_ref[k].numpy(), atol=1e-6, err_msg=k)
