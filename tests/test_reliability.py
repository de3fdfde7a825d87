"""Reliability: resume after SIGKILL equals an uninterrupted run, numerical faults, OOM retry, bad environments,
and nothing unsafe is loaded."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import crashing_env, tiny_overrides
from safetensors.torch import load_file

from tuneoff.config import build_config
from tuneoff.core.errors import TuneoffError
from tuneoff.training import checkpoint
from tuneoff.training.loop import train
from tuneoff.training.retry import train_with_oom_retry

REPO = Path(__file__).resolve().parents[1]
# LoRA with dropout (so the RNG state matters), checkpoints every 2 steps, evaluation every 4; 15 steps in all.
RESUMABLE = {
    "train.epochs": 3,
    "train.checkpoint_every": 2,
    "train.eval_every": 4,
    "train.lr": 1e-2,
    "method.dropout": 0.2,
    "train.batch_size": 40,
}


def cli_train(model, data, out, crash_at=None, resume=False, **env_extra):
    env = crashing_env(
        crash_at,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])),
        **env_extra,
    )
    args = [sys.executable, "-m", "tuneoff", "train", "--no-progress", *tiny_overrides(model, data, out, **RESUMABLE)]
    return subprocess.run(args + (["--resume"] if resume else []), env=env, capture_output=True, text=True, timeout=300)


def finished_run(out: Path) -> Path:
    (run,) = [p for p in out.iterdir() if not p.name.startswith(".")]
    return run


@pytest.fixture(scope="module")
def reference(tiny_bert, toy_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = cli_train(tiny_bert, toy_csv, out)
    assert proc.returncode == 0, proc.stderr
    return finished_run(out)


def assert_same_run(run: Path, reference: Path) -> None:
    got, want = (
        load_file(run / "model" / "adapter_model.safetensors"),
        load_file(reference / "model" / "adapter_model.safetensors"),
    )
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], atol=1e-6, rtol=0)
    info, ref_info = json.loads((run / "run.json").read_text()), json.loads((reference / "run.json").read_text())
    assert info["batch_order_digest"] == ref_info["batch_order_digest"], "same batches in the same order"
    assert [json.loads(h)["val_accuracy"] for h in (run / "history.jsonl").read_text().splitlines()] == [
        json.loads(h)["val_accuracy"] for h in (reference / "history.jsonl").read_text().splitlines()
    ]


# final:15 is a kill during the final evaluation, after model/ was saved once (the resume saves it again).
@pytest.mark.parametrize("crash_at", ["step:5", "checkpoint:6", "eval:8", "step:14", "final:15"])
def test_sigkill_then_resume_equals_uninterrupted(crash_at, reference, tiny_bert, toy_csv, tmp_path):
    killed = cli_train(tiny_bert, toy_csv, tmp_path, crash_at=crash_at)
    assert killed.returncode == -signal.SIGKILL
    (work,) = list(tmp_path.iterdir())
    assert work.name.startswith(".") and (work / "checkpoints").is_dir(), "only the working directory exists"
    if crash_at.startswith("checkpoint"):
        assert list((work / "checkpoints").glob(".tmp-*")), "a torn checkpoint was left by the kill"

    resumed = cli_train(tiny_bert, toy_csv, tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    run = finished_run(tmp_path)
    assert_same_run(run, reference)
    assert json.loads((run / "resources.json").read_text())["resumed_from_step"].startswith("step-")
    assert not (run / "checkpoints").exists() and not list(tmp_path.glob(".*")), "published without checkpoints"


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_run_at_its_step_with_a_checkpoint_and_resume_equals_uninterrupted(
    signal_name, reference, tiny_bert, toy_csv, tmp_path
):
    """SIGTERM (a scheduler's time limit, `kill`) or Ctrl-C at step 5, between the checkpoints every 2 steps: the run
    saves one at step 5 (not back at 4), says so and exits 128 + the signal; --resume then equals an uninterrupted run."""
    stopped = cli_train(tiny_bert, toy_csv, tmp_path, crash_at="step:5", TUNEOFF_CRASH_SIGNAL=signal_name)
    assert stopped.returncode == 128 + getattr(signal, signal_name), stopped.stderr
    assert (
        f"stopped by {signal_name} at step 5 of 15" in " ".join(stopped.stderr.split()) and "--resume" in stopped.stderr
    )
    (work,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in (work / "checkpoints").iterdir())[-1] == "step-0000005"
    assert not (work / "failed.json").exists(), "stopped on request is not a failure"
    resumed = cli_train(tiny_bert, toy_csv, tmp_path, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    run = finished_run(tmp_path)
    assert json.loads((run / "resources.json").read_text())["resumed_from_step"] == "step-0000005"
    assert_same_run(run, reference)


def test_in_a_notebook_an_interrupt_stops_the_run_and_the_next_call_is_not_stopped_by_it(tiny_bert, toy_csv, tmp_path):
    """The Python API in-process (a notebook's *interrupt* is SIGINT): RunStopped with the checkpoint kept, the
    previous handlers back afterwards, and the request does not outlive the call: --resume trains to the end."""
    import tuneoff
    from tuneoff.training import stop

    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **RESUMABLE))
    before = signal.getsignal(signal.SIGINT)

    def interrupt(step, metrics):
        if step == 8:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(tuneoff.Stopped, match="stopped by SIGINT at step 8 of 15") as stopped:
        train(cfg, progress=False, run_id="nb", on_evaluate=interrupt)
    assert isinstance(stopped.value, stop.RunStopped) and stopped.value.signal_name == "SIGINT"
    assert signal.getsignal(signal.SIGINT) is before and signal.getsignal(signal.SIGTERM) is not stop.request
    assert (tmp_path / ".nb.tmp" / "checkpoints" / "step-0000008").is_dir()
    result = train(cfg, progress=False, run_id="nb", resume=True)
    assert json.loads((result.run_dir / "resources.json").read_text())["resumed_from_step"] == "step-0000008"
    steps = [json.loads(h)["step"] for h in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert steps == [4, 5, 8, 10, 12, 15], "every 4 steps and at epoch ends, step 8's once"


def test_a_second_ctrl_c_stops_at_once_but_a_repeated_sigterm_or_a_workers_sigint_never_does(monkeypatch):
    """And the request lives as long as a study's worker does, but only as long as one call in the main process."""
    from tuneoff.training import stop

    monkeypatch.setitem(stop._state, "requested", None)
    monkeypatch.setitem(stop._state, "worker", False)
    stop.request(signal.SIGTERM)
    stop.request(signal.SIGTERM)  # a driver forwarding what the process group already got
    assert stop.requested() == "SIGTERM"
    with pytest.raises(KeyboardInterrupt):
        stop.request(signal.SIGINT)
    monkeypatch.setitem(stop._state, "worker", True)
    stop.request(signal.SIGINT)
    assert stop.requested() == "SIGINT"
    with stop.on_signals():  # a worker asked while it prepared its run: the run still stops
        assert stop.requested() == "SIGINT" and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert stop.requested() is None, "served: a worker someone signalled alone trains its next run"
    monkeypatch.setitem(stop._state, "worker", False)
    with stop.on_signals():  # a new call in the main process starts without the last one's request
        assert stop.requested() is None and signal.getsignal(signal.SIGTERM) is stop.request


def test_checkpoints_keep_the_last_k_and_ignore_torn_ones(tmp_path):
    ck = tmp_path / "checkpoints"
    for step in (2, 4, 6):
        (ck / f"step-{step:07d}").mkdir(parents=True)
        (ck / f"step-{step:07d}" / "state.json").write_text("{}")
    (ck / ".tmp-step-0000008").mkdir()
    (ck / "step-0000010").mkdir()  # no state.json: incomplete
    assert checkpoint.latest(tmp_path).name == "step-0000006"
    assert not (ck / ".tmp-step-0000008").exists()


def test_non_finite_loss_stops_with_step_and_fixes_and_keeps_last_good_checkpoint(
    tiny_bert, toy_csv, tmp_path, monkeypatch
):
    import tuneoff.training.loss as loss_module

    real = loss_module.F.cross_entropy
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 7 else loss

    # Only the training loop's loss is poisoned (from the 8th micro-batch on); evaluation is untouched.
    monkeypatch.setattr(loss_module, "F", SimpleNamespace(cross_entropy=poisoned))
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{**RESUMABLE, "train.checkpoint_every": 1}))
    with pytest.raises(TuneoffError, match=r"non-finite \(NaN/inf\) by optimizer step 8\. Lower train.lr"):
        train(cfg, progress=False)
    (work,) = list(tmp_path.iterdir())
    assert json.loads((work / "failed.json").read_text())["status"] == "failed"
    last = checkpoint.latest(work)
    assert last.name == "step-0000007"
    weights = load_file(last / "trainable.safetensors")
    assert all(torch.isfinite(t).all() for t in weights.values()), "the kept checkpoint is a good one"


def test_oom_retry_halves_batch_and_doubles_accumulation(monkeypatch):
    import tuneoff.training.retry as train_module

    seen = []

    def fake_train(cfg, progress, run_id, resume, on_evaluate=None):
        seen.append((cfg.train.batch_size, cfg.train.grad_accum))
        if cfg.train.batch_size > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected)")
        return "ok"

    monkeypatch.setattr(train_module, "train", fake_train)
    cfg = build_config({}, ["train.batch_size=16", "train.grad_accum=1"])
    assert train_with_oom_retry(cfg) == "ok"
    assert seen == [(16, 1), (8, 2), (4, 4)]
    seen.clear()
    with pytest.raises(TuneoffError, match="Out of GPU memory even at batch size 8"):
        train_with_oom_retry(build_config({}, ["train.batch_size=16", "train.min_batch_size=5"]))


def test_output_dir_that_cannot_exist(tiny_bert, toy_csv, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, blocker / "runs"))
    with pytest.raises(TuneoffError, match="Cannot create the output directory"):
        train(cfg, progress=False)


def test_disk_full_is_a_clear_error_and_nothing_is_published(tiny_bert, toy_csv, tmp_path, monkeypatch):
    import errno

    import tuneoff.models.saving as saving

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "save_adapter", full)
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{"train.epochs": 1}))
    with pytest.raises(TuneoffError, match="No space left on the device.*--resume"):
        train(cfg, progress=False)
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == []


def test_model_dir_missing_files(tmp_path, toy_csv):
    from tuneoff.models.assets import resolve_model
    from tuneoff.models.loading import load_classifier

    with pytest.raises(TuneoffError, match="has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bert",
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "intermediate_size": 64,
                "vocab_size": 30,
            }
        )
    )
    with pytest.raises(TuneoffError, match="has no tokenizer vocabulary"):  # words would all become [UNK]
        resolve_model(str(tmp_path))
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad"]))
    with pytest.raises(TuneoffError, match="Could not load the model"):  # a config and a vocabulary, no weights
        load_classifier(resolve_model(str(tmp_path)), ["a", "b"])


def test_checkpoint_optimizer_state_is_never_unpickled(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    ck = tmp_path / "step-0000001"
    ck.mkdir()
    with open(ck / "optimizer.pt", "wb") as fh:
        pickle.dump({"optimizer": Evil()}, fh)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ck / "optimizer.pt", weights_only=True)  # exactly how checkpoint.load reads it
    assert "weights_only=True" in Path(checkpoint.__file__).read_text()
    assert not (tmp_path / "pwned").exists()


def test_names_cannot_escape_the_output_dir(tiny_bert, toy_csv, tmp_path):
    cfg = build_config(
        {}, tiny_overrides(tiny_bert, toy_csv, tmp_path / "runs", **{"train.epochs": 1, "name": "../../evil"})
    )
    result = train(cfg, progress=False)
    assert result.run_dir.parent == tmp_path / "runs" and ".." not in result.run_dir.name
    weights = {p.suffix for p in (result.run_dir / "model").iterdir()}
    assert ".bin" not in weights and ".pt" not in weights and ".safetensors" in weights
