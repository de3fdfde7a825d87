"""Faults a demanding user or an attacker can cause: each ends in a clear exit 2 (or a clean recovery), never a
traceback, and nothing already computed is lost. Disk full, unreadable checkpoints, two writers, config abuse,
numbers that must not pass, and the GPU-only paths simulated on the CPU."""

from __future__ import annotations

import errno
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import crashing_env, tiny_overrides, write_study
from safetensors.torch import load_file
from test_reliability import RESUMABLE, cli_train, finished_run, reference  # noqa: F401 (a fixture)
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.config import build_config
from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.training import checkpoint, guards
from tuneoff.training.loop import train
from tuneoff.training.retry import train_with_oom_retry

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def cli(*args, env=None):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250", **(env or {})})


def assert_clean_exit_2(result, *needles):
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    text = " ".join(result.output.split())
    for needle in needles:
        assert needle in text, text


def train_args(tiny_bert, toy_csv, out, **extra):
    return ["train", "--no-progress", *tiny_overrides(tiny_bert, toy_csv, out, **{**RESUMABLE, **extra})]


# --- disk full ----------------------------------------------------------------------------------------------------


def test_disk_full_when_the_run_starts(tiny_bert, toy_csv, tmp_path, monkeypatch):
    import tuneoff.results.rundir as rundir

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(rundir, "atomic_write_text", full)
    assert_clean_exit_2(cli(*train_args(tiny_bert, toy_csv, tmp_path)), "Cannot start the run", "Free some space")


def test_disk_full_in_a_checkpoint_then_free_space_and_resume(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """safetensors raises its own error type (with the OS message in it), not OSError; and writing failed.json needs
    space too. Both still end in exit 2, and --resume afterwards finishes the run."""
    from safetensors import SafetensorError

    import tuneoff.results.rundir as rundir

    real = checkpoint.save_file
    calls = {"n": 0}

    def fills_up(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:  # two checkpoints (trainable + best each) fit, the third does not
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, path, *args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    real_json = rundir.write_json
    monkeypatch.setattr(
        rundir,
        "write_json",
        lambda p, d: (
            (_ for _ in ()).throw(OSError(errno.ENOSPC, "No space left on device"))
            if Path(p).name == "failed.json"
            else real_json(p, d)
        ),
    )
    assert_clean_exit_2(cli(*train_args(tiny_bert, toy_csv, tmp_path)), "No space left on the device", "--resume")
    monkeypatch.undo()
    resumed = cli(*train_args(tiny_bert, toy_csv, tmp_path), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((finished_run(tmp_path) / "resources.json").read_text())["resumed_from_step"] == "step-0000004"


def test_a_real_full_file_system(tiny_bert, toy_csv, tmp_path):
    """The issue's repro, on a real file system that fills up: a 256 kB tmpfs as output_dir, full fine-tuning."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if (
        os.geteuid() != 0
        or subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip("mounting a tmpfs needs root (and a kernel that allows it here)")
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        }
        full = {k: v for k, v in RESUMABLE.items() if not k.startswith("method.")}
        args = ["train", "--no-progress", "--method", "full", *tiny_overrides(tiny_bert, toy_csv, mnt, **full)]
        done = subprocess.run(
            [sys.executable, "-m", "tuneoff", *args], env=env, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 2, done.stderr[-2000:]
        assert "Traceback" not in done.stderr and "No space left" in done.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --- checkpoints that do not read back ------------------------------------------------------------------------------


def _killed_at_step_9(tiny_bert, toy_csv, out) -> Path:
    killed = cli_train(tiny_bert, toy_csv, out, crash_at="step:9")
    assert killed.returncode == -signal.SIGKILL
    (work,) = list(out.iterdir())
    assert [p.name for p in checkpoint.complete(work)] == ["step-0000008", "step-0000006"]
    return work


@pytest.mark.parametrize("damage", ["truncated weights", "pickle in optimizer.pt", "garbage rng.pt"])
def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(damage, reference, tiny_bert, toy_csv, tmp_path):
    work = _killed_at_step_9(tiny_bert, toy_csv, tmp_path)
    newest = work / "checkpoints" / "step-0000008"
    if damage == "truncated weights":
        data = (newest / "trainable.safetensors").read_bytes()
        (newest / "trainable.safetensors").write_bytes(data[: len(data) // 2])
    elif damage == "pickle in optimizer.pt":

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {tmp_path / 'pwned'}",))

        (newest / "optimizer.pt").write_bytes(pickle.dumps({"optimizer": Evil()}))
    else:
        (newest / "rng.pt").write_bytes(b"\x00not a tensor file")
    resumed = cli_train(tiny_bert, toy_csv, tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        "step-0000008" in resumed.stdout + resumed.stderr
        and "resuming from step-0000006" in resumed.stdout + resumed.stderr
    )
    assert not (tmp_path / "pwned").exists(), "no code from the checkpoint ran"
    run = finished_run(tmp_path)
    got, want = (
        load_file(run / "model" / "adapter_model.safetensors"),
        load_file(reference / "model" / "adapter_model.safetensors"),
    )
    for key in want:  # resuming from an older checkpoint still ends where the uninterrupted run ended
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)


def test_no_readable_checkpoint_is_a_clear_error(tiny_bert, toy_csv, tmp_path):
    work = _killed_at_step_9(tiny_bert, toy_csv, tmp_path)
    for ck in checkpoint.complete(work):
        (ck / "trainable.safetensors").write_bytes(b"junk")
    result = cli(*train_args(tiny_bert, toy_csv, tmp_path), "--resume")
    assert_clean_exit_2(result, "No checkpoint of the run", "reads back", "without --resume")


def test_a_corrupt_saved_model_is_refused_cleanly(tiny_bert, toy_csv, tmp_path):
    done = cli(*train_args(tiny_bert, toy_csv, tmp_path, **{"train.epochs": 1}))
    assert done.exit_code == 0, done.output
    run = finished_run(tmp_path)
    (run / "model" / "adapter_model.safetensors").write_bytes(b"\x00" * 64)
    assert_clean_exit_2(cli("evaluate", run), "Cannot load the model")


# --- geometry of a resumed run ----------------------------------------------------------------------------------


def test_checkpoint_position_translates_between_equal_effective_batches(tmp_path):
    state = checkpoint.LoopState(batch=6)  # 6 micro-batches of 40 = 3 optimizer steps at accumulation 2
    saved = {"batch_size": 40, "grad_accum": 2, "processes": 1}
    assert (
        checkpoint.translate_position(state, saved, {"batch_size": 20, "grad_accum": 4, "processes": 1}, tmp_path) == 12
    )
    assert (
        checkpoint.translate_position(state, saved, {"batch_size": 40, "grad_accum": 1, "processes": 2}, tmp_path) == 3
    )
    assert checkpoint.translate_position(state, saved, saved, tmp_path) == 6
    with pytest.raises(TuneoffError, match="effective 80.*effective 40"):
        checkpoint.translate_position(state, saved, {"batch_size": 20, "grad_accum": 2, "processes": 1}, tmp_path)


def test_resume_at_half_the_batch_and_twice_the_accumulation(reference, tiny_bert, toy_csv, tmp_path):
    killed = cli_train(tiny_bert, toy_csv, tmp_path, crash_at="step:5")
    assert killed.returncode == -signal.SIGKILL
    (work,) = list(tmp_path.iterdir())
    run_id = work.name[1 : -len(".tmp")]
    other = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{**RESUMABLE, "train.batch_size": 20}))
    with pytest.raises(TuneoffError, match="effective 40.*effective 20"):
        train(other, progress=False, run_id=run_id, resume=True)
    half = build_config(
        {}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{**RESUMABLE, "train.batch_size": 20, "train.grad_accum": 2})
    )
    result = train(half, progress=False, run_id=run_id, resume=True)
    assert result.resources["resumed_from_step"] == "step-0000004"
    steps = json.loads((reference / "resources.json").read_text())["optimizer_steps"]
    assert result.resources["optimizer_steps"] == steps  # the same schedule: as many steps of 40 examples


def test_oom_retry_releases_the_failed_attempt_and_resumes_its_run(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """The first attempt runs out of memory at step 3 (after a checkpoint at step 2); the retry must find the first
    model garbage-collected, and continue the same run from its checkpoint at half the batch."""
    import tuneoff.training.loss as loss_module

    models, dead_at_retry, calls = [], [], {"n": 0}
    import tuneoff.training.model as model_module

    real_load = model_module.load_classifier
    real_loss = loss_module.F.cross_entropy

    def load(*args, **kwargs):
        if models:
            import gc

            gc.collect()  # anything still alive now is held by a real reference, not by uncollected garbage
            dead_at_retry.append(all(ref() is None for ref in models))
        model, arch = real_load(*args, **kwargs)
        models.append(weakref.ref(model))
        return model, arch

    def loss(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(model_module, "load_classifier", load)
    monkeypatch.setattr(loss_module.F, "cross_entropy", loss)
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{**RESUMABLE, "train.checkpoint_every": 2}))
    with logs.captured() as said:
        result = train_with_oom_retry(cfg, progress=False)
    assert dead_at_retry == [True], "the failed attempt's model was still alive when the retry loaded its own"
    assert any("retrying with batch 20 x 2" in line for line in said), said
    assert result.resources["resumed_from_step"] == "step-0000002"
    assert (result.resources["per_device_batch_size"], result.resources["effective_batch_size"]) == (20, 40)


# --- the results store under two writers, and study names ---------------------------------------------------------


def _study(tmp_path, tiny_bert, toy_csv, name, epochs=2, seeds=(1,)):
    return write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        name,
        seeds=seeds,
        train={"epochs": epochs, "eval_every": None},
        variants={"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora", "r": 4}}},
    )


def _run(path, results):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        "OMP_NUM_THREADS": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(results)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_one_study_one_process_and_two_studies_side_by_side(tiny_bert, toy_csv, tmp_path):
    results = tmp_path / "results"
    a = _study(tmp_path, tiny_bert, toy_csv, "alpha", epochs=80)  # still running when the second one starts
    b = _study(tmp_path, tiny_bert, toy_csv, "beta", epochs=6)
    first = _run(a, results)
    deadline = time.time() + 120
    while not (results / "alpha" / ".lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = _run(a, results)  # the same study again: refused while the first holds it
    other = _run(b, results)  # another study in the same results root: runs alongside
    out2, err2 = second.communicate(timeout=300)
    assert second.returncode == 2, err2
    assert "is being run by another process" in " ".join(err2.split()) and f"pid {first.pid}" in err2
    for proc in (first, other):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-2000:]
    from tuneoff.results.store import Store

    store = Store(results)
    for study in ("alpha", "beta"):
        assert {r["status"] for r in store.runs(study)} == {"done"} and len(store.runs(study)) == 2
        assert (results / study / "report" / "report.html").is_file()
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_study_names_that_would_share_a_folder_are_refused(tiny_bert, toy_csv, tmp_path):
    results = tmp_path / "results"
    assert cli("run", _study(tmp_path, tiny_bert, toy_csv, "col/x"), "--results", results).exit_code == 0
    clash = cli("run", _study(tmp_path, tiny_bert, toy_csv, "col-x"), "--results", results)
    assert_clean_exit_2(clash, "'col-x'", "'col/x'", "same folder")


@pytest.mark.parametrize("name", ["../../escape", "/tmp/absolute-study"])
def test_a_study_name_cannot_write_outside_results(name, tiny_bert, toy_csv, tmp_path):
    results = tmp_path / "inside" / "results"
    assert cli("run", _study(tmp_path, tiny_bert, toy_csv, name), "--results", results).exit_code == 0
    reports = list(Path("/").glob("tmp/absolute-study/**/report.html")) + list(tmp_path.rglob("report.html"))
    assert reports and all(results in r.parents for r in reports), reports


# --- config abuse and numbers that must not pass ----------------------------------------------------------------


def test_a_yaml_alias_bomb_is_refused_quickly(tmp_path):
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: bomb\nbombs:\n" + "\n".join("  " + line for line in levels) + "\ngrid: {train.seed: *a8}\n")
    assert bomb.stat().st_size < 1000
    t0 = time.perf_counter()
    assert_clean_exit_2(cli("run", bomb, "--results", tmp_path / "r"), "expands to more than 100,000 values")
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.lr=.inf", "train.lr"),
        ("train.lr=.nan", "train.lr"),
        ("method.alpha=.inf", "method"),
        ("train.warmup_ratio=.nan", "train.warmup_ratio"),
    ],
)
def test_non_finite_numbers_are_refused(override, field):
    assert_clean_exit_2(cli("train", override), field, "finite")


def test_nul_bytes_in_paths_and_names(tiny_bert, toy_csv, tmp_path):
    assert_clean_exit_2(cli("train", f"output_dir={tmp_path}/a\x00b"), "NUL byte")
    spec = _study(tmp_path, tiny_bert, toy_csv, "ok")
    assert_clean_exit_2(cli("run", spec, "name=bad\x00name", "--results", tmp_path / "r"), "NUL byte")


def test_a_file_whose_texts_repeat_stops_before_training(tmp_path):
    rows = [{"text": f"the same review {i % 3}", "label": "pos" if i % 2 else "neg"} for i in range(40)]
    import pandas as pd

    path = tmp_path / "repeats.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    result = cli("train", "--data", path, f"output_dir={tmp_path / 'runs'}")
    assert_clean_exit_2(result, "split has 0 row(s)", "data.validation_file")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_nan_validation_loss_stops_the_run(tiny_bert, toy_csv, tmp_path, monkeypatch):
    import numpy as np

    import tuneoff.training.loop as train_module

    real = train_module.predict_logits
    monkeypatch.setattr(train_module, "predict_logits", lambda *a, **k: real(*a, **k) * np.nan)
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{"train.epochs": 1}))
    with pytest.raises(TuneoffError, match="validation loss became non-finite"):
        train(cfg, progress=False)


def test_the_progress_rate_is_a_real_rate():
    from tuneoff.training.resources import Throughput

    speed = Throughput()
    speed.resume()
    time.sleep(0.05)
    speed.add({"input_ids": torch.ones(16, 8, dtype=torch.long)})
    rate = speed.read()["train_samples_per_s"]
    assert 16 / 1.0 < rate < 16 / 0.05 * 1.01, rate


# --- GPU paths, simulated on the CPU ------------------------------------------------------------------------------


def test_skip_guard_tolerates_scaler_skips_and_stops_a_diverged_run():
    guard = guards.SkipGuard(limit=5)
    for skipped in [True] * 4 + [False] + [True] * 4 + [False] * 3:  # warm-up skips, then an occasional overflow
        guard.observe(skipped, 1, 1e-3)
    assert guard.total == 8
    with pytest.raises(TuneoffError, match="skipped 5 optimizer steps in a row.*max_skipped_steps=5"):
        for _ in range(5):
            guard.observe(True, 20, 1e-3)


def test_fp16_loop_survives_skips_and_ignores_the_overflowed_gradients(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """As under fp16's scaler: the first steps' gradients are inf and those steps are skipped. The NaN/inf guard
    must not call that divergence; only max_skipped_steps skips in a row are."""
    import tuneoff.training.loop as train_module

    real_clip = None
    step = {"n": 0}

    def skipped(optimizer):
        step["n"] += 1
        return step["n"] <= 3

    monkeypatch.setattr(guards, "fp16_scaled", lambda accelerator: True)
    monkeypatch.setattr(guards, "step_was_skipped", skipped)
    from accelerate import Accelerator

    real_clip = Accelerator.clip_grad_norm_
    monkeypatch.setattr(
        Accelerator,
        "clip_grad_norm_",
        lambda self, *a, **k: real_clip(self, *a, **k) * (float("inf") if step["n"] < 3 else 1.0),
    )
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{"train.epochs": 1}))
    result = train_module.train(cfg, progress=False)
    assert result.resources["fp16_skipped_steps"] == 3
    monkeypatch.setattr(guards, "step_was_skipped", lambda optimizer: True)
    cfg = build_config(
        {}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{"train.epochs": 1, "train.max_skipped_steps": 4})
    )
    with pytest.raises(TuneoffError, match="skipped 4 optimizer steps in a row"):
        train_module.train(cfg, progress=False)


def test_lora_fa_state_follows_its_parameters_to_their_device(tiny_bert):
    """peft's LoRA-FA optimizer keys its state by parameter name, so load_state_dict leaves it where it was loaded
    (the CPU) while the parameters sit on the GPU. Simulated with the 'meta' device as the accelerator's."""
    from test_methods import prepared

    model, method, params, _ = prepared(tiny_bert, "lora_fa", r=4)
    opt = method.optimizer(model, params, lr=1e-3, weight_decay=0.0, fused=False)
    model(input_ids=torch.randint(5, 29, (2, 6)), labels=torch.tensor([0, 1])).loss.backward()
    opt.step()
    saved = opt.state_dict()
    assert any(isinstance(k, str) for k in saved["state"]), "keyed by name: the case load_state_dict does not move"
    model.to("meta")
    moved = method.optimizer(model, params, lr=1e-3, weight_decay=0.0, fused=False)
    moved.load_state_dict(saved)
    tensors = [v for s in moved.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
    assert tensors and any(t.device.type == "cpu" for t in tensors), "the trap: state left on the load device"
    checkpoint.state_to_parameter_device(moved)
    assert all(t.device.type == "meta" for s in moved.state.values() for t in s.values() if isinstance(t, torch.Tensor))


def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    """A generated name carries the second it was made in; two runs of one config started in the same second (a
    script, a fast GPU) must not share, or delete, one directory. A name the user chose that exists stays an error."""
    from tuneoff.results.rundir import RunDirectory

    run_id = "tiny-toy-lora-20261126-120000"
    a = RunDirectory.open(tmp_path, run_id, "a: 1\n", resume=False, find=True)
    b = RunDirectory.open(tmp_path, run_id, "a: 1\n", resume=False, find=True)
    assert (a.run_id, b.run_id) == (run_id, f"{run_id}-2")
    assert (a.path / "config.yaml").is_file() and (b.path / "config.yaml").is_file()
    a.path.rename(a.final)  # published
    c = RunDirectory.open(tmp_path, run_id, "a: 1\n", resume=False, find=True)
    assert c.run_id == f"{run_id}-3"
    (tmp_path / "mine").mkdir()
    with pytest.raises(TuneoffError, match="already exists; choose another name="):
        RunDirectory.open(tmp_path, "mine", "a: 1\n", resume=False, find=False)


# --- round 3: the store and its readers, tracking, outputs, inputs, resume -----------------------------------------


def test_a_store_that_is_not_a_database_is_a_clean_error_with_the_rebuild(tmp_path):
    (tmp_path / "tuneoff.sqlite").write_text("not a database " * 200)
    for args in (["runs", "list"], ["runs", "show", "x-s1"]):
        assert_clean_exit_2(
            cli(*args, "--results", str(tmp_path)), "cannot be read as an SQLite database", "tuneoff runs rebuild"
        )


def test_study_runs_survive_a_damaged_store_and_are_rebuilt(tiny_bert, toy_csv, tmp_path):
    from tuneoff.results.store import Store

    results = tmp_path / "r"
    for name in ("one", "two"):
        assert (
            cli("run", str(_study(tmp_path, tiny_bert, toy_csv, name, epochs=1)), "--results", str(results)).exit_code
            == 0
        )
    store = Store(results)
    store.db.execute("UPDATE runs SET metrics='{broken' WHERE study='one' AND run_id='head-s1'")
    store.close()
    listed = cli("runs", "list", "--results", str(results))
    assert listed.exit_code == 0 and "one/head-s1" in listed.output and "not valid JSON" in listed.output
    ambiguous = cli("runs", "show", "lora-s1", "--results", str(results))
    assert_clean_exit_2(ambiguous, "matches 2 runs", "one/lora-s1", "--study")
    assert cli("runs", "show", "two/lora-s1", "--results", str(results)).exit_code == 0
    assert cli("runs", "show", "lora-s1", "--study", "one", "--results", str(results)).exit_code == 0
    report = cli("report", str(results / "one"))
    assert report.exit_code == 0 and "damaged" in report.output, "the bad row is named and left out"
    (results / "tuneoff.sqlite").write_text("garbage")
    rebuilt = cli("runs", "rebuild", "--results", str(results))
    assert rebuilt.exit_code == 0 and "4 run(s) indexed" in rebuilt.output
    assert list(results.glob("tuneoff.sqlite.damaged-*")), "the damaged file is kept aside"
    store = Store(results)
    rows = {(r["study"], r["run_id"]): r for r in store.runs(status="done")}
    store.close()
    assert sorted(rows) == [("one", "head-s1"), ("one", "lora-s1"), ("two", "head-s1"), ("two", "lora-s1")]
    assert json.loads(rows[("one", "head-s1")]["metrics"])["test"]["accuracy"] >= 0, "re-read from the run directory"


@pytest.mark.parametrize(
    "uri, message", [("http://127.0.0.1:1", "does not answer"), ("sqlite:///{tmp}/afile/mlflow.db", "not a directory")]
)
def test_an_unreachable_tracking_destination_fails_before_training(uri, message, tiny_bert, toy_csv, tmp_path):
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "out"
    started = time.monotonic()
    result = cli(
        *train_args(tiny_bert, toy_csv, out),
        "train.report_to=[mlflow]",
        f"train.tracking_uri={uri.format(tmp=tmp_path)}",
    )
    assert_clean_exit_2(result, message, "nothing was trained")
    assert time.monotonic() - started < 60 and not (out.exists() and any(out.iterdir())), "no run directory, no retries"


def test_outputs_are_safe_to_open(tiny_bert, tmp_path):
    """Formula-looking cells are escaped in predictions.csv and predict's output (--raw keeps them), and user-given
    names are escaped in the Markdown summary; tuneoff reads its own files back unescaped."""
    rows = [
        {
            # formulas, padded with words the tiny vocabulary knows (a text mostly [UNK] is refused before training)
            "text": f"=cmd|' /C calc'!A0 good, {'good movie and the plot is great ' * 2}{i}"
            if i % 2
            else f"@SUM(1) bad, {'bad film and the plot was dull ' * 2}{i}",
            "label": "<b>pos</b>" if i % 2 else "-neg",
        }
        for i in range(60)
    ]
    data = tmp_path / "evil.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    spec = write_study(
        tmp_path,
        tiny_bert,
        str(data),
        "<script>alert(1)</script>",
        seeds=[1],
        train={"epochs": 1},
        variants={"head": {"method": {"name": "head"}}},
        data_config={"max_length": 48},  # past the formula, into the words the tokenizer knows
    )
    results = tmp_path / "r"
    assert cli("run", str(spec), "--results", str(results)).exit_code == 0
    study_dir = next(p for p in results.iterdir() if p.is_dir())
    (run_dir,) = list((study_dir / "runs").iterdir())
    cells = pd.read_csv(run_dir / "predictions.csv", dtype=str, keep_default_na=False)
    assert all(
        not c.startswith(("=", "+", "@")) and not (c.startswith("-") and not c[1:].replace(".", "").isdigit())
        for c in cells.to_numpy().ravel()
    ), "no cell starts a formula"
    assert (cells["true_label"].str.startswith("'-neg") | (cells["true_label"] == "<b>pos</b>")).all()
    summary = (study_dir / "report" / "summary.md").read_text()
    assert "<script>" not in summary and "&lt;script&gt;" in summary and "<b>pos</b>" not in summary
    unlabeled = tmp_path / "in.csv"
    pd.DataFrame({"text": ["=1+1 good", "+44 20 bad", "-12"]}).to_csv(unlabeled, index=False)
    out = tmp_path / "pred.csv"
    assert cli("predict", str(run_dir), str(unlabeled), "--out", str(out), "--id-column", "text").exit_code == 0
    ids = pd.read_csv(out, dtype=str)["id"].tolist()
    assert ids == ["'=1+1 good", "'+44 20 bad", "-12"], "numbers stay, formulas are defused"
    assert (
        cli("predict", str(run_dir), str(unlabeled), "--out", str(out), "--id-column", "text", "--raw").exit_code == 0
    )
    assert pd.read_csv(out, dtype=str)["id"].tolist()[0] == "=1+1 good"


def test_evaluating_two_files_of_one_name_keeps_both_results(tiny_bert, toy_csv, tmp_path):
    out = tmp_path / "runs"
    assert cli(*train_args(tiny_bert, toy_csv, out)).exit_code == 0
    run = finished_run(out)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        pd.read_csv(toy_csv).head(40 if folder == "a" else 50).to_csv(tmp_path / folder / "train.csv", index=False)
        assert cli("evaluate", str(run), "--data", str(tmp_path / folder / "train.csv")).exit_code == 0
    assert cli("evaluate", str(run), "--data", str(tmp_path / "a" / "train.csv")).exit_code == 0
    results = sorted(run.glob("eval-train-*.json"))
    assert len(results) == 3, "nothing overwritten"
    recorded = sorted({json.loads(p.read_text())["data_path"] for p in results})
    assert recorded == [str(tmp_path / "a" / "train.csv"), str(tmp_path / "b" / "train.csv")]


@pytest.mark.parametrize(
    "content, message",
    [
        ("text,label\n", "has a header but no rows"),
        ("text,text,label\na,b,pos\nc,d,neg\ne,f,pos\ng,h,neg\n", "repeats the column name(s) ['text']"),
    ],
)
def test_bad_files_for_predict_and_evaluate(content, message, tiny_bert, toy_csv, tmp_path):
    out = tmp_path / "runs"
    assert cli(*train_args(tiny_bert, toy_csv, out)).exit_code == 0
    run = finished_run(out)
    bad = tmp_path / "bad.csv"
    bad.write_text(content)
    assert_clean_exit_2(cli("predict", str(run), str(bad), "--out", str(tmp_path / "p.csv")), message)
    assert_clean_exit_2(cli("evaluate", str(run), "--data", str(bad)), message)
    assert not (tmp_path / "p.csv").exists()


def test_predict_reads_the_column_the_run_trained_on(tiny_bert, toy_csv, tmp_path):
    renamed = tmp_path / "reviews.csv"
    pd.read_csv(toy_csv).rename(columns={"text": "review", "label": "stars"}).to_csv(renamed, index=False)
    out = tmp_path / "runs"
    args = train_args(tiny_bert, str(renamed), out, **{"data.text_column": "review", "data.label_column": "stars"})
    assert cli(*args).exit_code == 0
    run = finished_run(out)
    unlabeled = tmp_path / "new.csv"
    pd.DataFrame({"review": ["good great", "bad awful"]}).to_csv(unlabeled, index=False)
    assert cli("predict", str(run), str(unlabeled), "--out", str(tmp_path / "p.csv")).exit_code == 0, "no option needed"
    assert len(pd.read_csv(tmp_path / "p.csv")) == 2
    pd.DataFrame({"text": ["good great"]}).to_csv(unlabeled, index=False)
    assert_clean_exit_2(
        cli("predict", str(run), str(unlabeled), "--out", str(tmp_path / "q.csv")), "no column 'review' (--text-column)"
    )
    assert (
        cli("predict", str(run), str(unlabeled), "--out", str(tmp_path / "q.csv"), "--text-column", "text").exit_code
        == 0
    )


def test_evaluating_on_the_training_file_scores_its_own_split(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """Scored whole, the file a run trained on would count its training rows: its carved split is scored instead,
    reached however the path is written (here relative), and the result says so."""
    out = tmp_path / "runs"
    assert cli(*train_args(tiny_bert, toy_csv, out)).exit_code == 0
    run = finished_run(out)
    test = json.loads((run / "metrics.json").read_text())["test"]
    monkeypatch.chdir(Path(toy_csv).parent)
    result = cli("evaluate", str(run), "--data", Path(toy_csv).name)
    assert result.exit_code == 0 and "is the file this run trained on" in result.output
    (written,) = run.glob("eval-*-test.json")
    scored = json.loads(written.read_text())
    assert scored["rows_scored"] == test["n"] < 240 and scored["accuracy"] == pytest.approx(test["accuracy"])
    other = tmp_path / "copy.csv"
    other.write_text(Path(toy_csv).read_text())
    assert cli("evaluate", str(run), "--data", str(other)).exit_code == 0
    assert json.loads(next(run.glob("eval-copy-*-all-rows.json")).read_text())["rows_scored"] == 240, (
        "another file: every row"
    )


def test_predict_streams_a_large_file_in_chunks(tiny_bert, toy_csv, tmp_path, monkeypatch):
    import tuneoff.training.saved as saved

    out = tmp_path / "runs"
    assert cli(*train_args(tiny_bert, toy_csv, out)).exit_code == 0
    run = finished_run(out)
    big = tmp_path / "big.csv"
    pd.DataFrame({"text": [f"good movie number {i}" for i in range(2500)]}).to_csv(big, index=False)
    sizes = []
    real = saved.score_frame
    monkeypatch.setattr(saved, "score_frame", lambda *a, **k: sizes.append(len(a[2])) or real(*a, **k))
    n = saved.predict_file(run, big, tmp_path / "p.csv", "text", None, None, chunk_rows=1000, progress=False)
    assert n == 2500 and sizes == [1000, 1000, 500], "never more than a chunk in memory"
    ids = pd.read_csv(tmp_path / "p.csv", dtype=str)["id"]
    assert ids.tolist() == [str(i) for i in range(1, 2501)]
    before = (tmp_path / "p.csv").read_bytes()

    def fails_on_the_second_chunk(*a, **k):
        if sizes[-1] == 1000 and len(sizes) > 3:
            raise OSError(28, "No space left on device")
        return real(*a, **k)

    monkeypatch.setattr(
        saved, "score_frame", lambda *a, **k: sizes.append(len(a[2])) or fails_on_the_second_chunk(*a, **k)
    )
    with pytest.raises(OSError):
        saved.predict_file(run, big, tmp_path / "p.csv", "text", None, None, chunk_rows=1000, progress=False)
    assert (tmp_path / "p.csv").read_bytes() == before, "a failed predict leaves the earlier output as it was"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".p.csv")) == [], "no temporary file left"


def test_yaml_that_repeats_a_key_is_refused_with_its_lines(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("train:\n  lr: 0.1\n  epochs: 2\n  lr: 0.2\n")
    assert_clean_exit_2(cli("train", "-c", str(config)), "the key 'lr' appears twice (lines 2 and 4)")
    study = tmp_path / "study.yaml"
    study.write_text("name: s\nvariants:\n  a: {method: {name: lora}}\n  a: {method: {name: full}}\n")
    assert_clean_exit_2(cli("run", str(study), "--dry-run"), "the key 'a' appears twice (lines 3 and 4)")


def test_small_input_mistakes_say_what_they_are(tiny_bert, toy_csv, tmp_path):
    assert_clean_exit_2(cli("train", "--data", str(tmp_path)), "is a directory")
    lists = tmp_path / "lists.jsonl"
    lists.write_text(
        "\n".join(json.dumps({"text": ["a", "b"] if i == 3 else f"text {i}", "label": i % 2}) for i in range(20))
    )
    assert_clean_exit_2(cli(*train_args(tiny_bert, str(lists), tmp_path / "o")), "holds list values, not text", "4")
    from tuneoff.core.files import safe_name

    assert safe_name("研究 一") == "研究-一" and safe_name("étude/../x") == "étude-..-x", "letters of any script kept"


def test_spaced_labels_are_merged_and_said(tiny_bert, tmp_path):
    rows = [
        {"text": f"good {i}" if i % 2 else f"bad {i}", "label": ("pos " if i % 4 == 1 else "pos") if i % 2 else "neg"}
        for i in range(80)
    ]
    data = tmp_path / "spaced.csv"
    pd.DataFrame(rows).to_csv(data, index=False)
    out = tmp_path / "o"
    assert cli(*train_args(tiny_bert, str(data), out)).exit_code == 0
    info = json.loads((finished_run(out) / "run.json").read_text())
    assert info["label_names"] == ["neg", "pos"]
    assert any("surrounding whitespace removed" in note for note in info["data_notes"])


def test_an_oversized_adapter_is_warned_about(tiny_bert, toy_csv, tmp_path):
    result = cli(*train_args(tiny_bert, toy_csv, tmp_path), "method.r=64", "train.epochs=1")
    assert result.exit_code == 0 and "more than the" in result.output and "is method.r too large?" in result.output


def test_resume_with_a_changed_config_names_the_differences(tiny_bert, toy_csv, tmp_path):
    killed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tuneoff",
            "train",
            "--no-progress",
            *tiny_overrides(tiny_bert, toy_csv, tmp_path, **RESUMABLE),
        ],
        env=crashing_env("step:5"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    changed = cli(*train_args(tiny_bert, toy_csv, tmp_path), "train.lr=0.05", "--resume")
    assert_clean_exit_2(changed, "found no interrupted run of this exact config", "train.lr: 0.01 -> 0.05")
    fresh = cli(*train_args(tiny_bert, toy_csv, tmp_path), "train.lr=0.05")
    assert fresh.exit_code == 0 and "an interrupted run of a similar config exists" in fresh.output


def test_the_effective_batch_is_what_the_steps_used(tiny_bert, toy_csv, tmp_path):
    result = cli(*train_args(tiny_bert, toy_csv, tmp_path), "train.grad_accum=1000", "train.epochs=1")
    assert result.exit_code == 0 and "train.grad_accum=1000 but an epoch has only" in result.output
    resources = json.loads((finished_run(tmp_path) / "resources.json").read_text())
    assert resources["effective_batch_size"] == resources["per_device_batch_size"] * -(
        -194 // resources["per_device_batch_size"]
    )
