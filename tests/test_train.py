"""The training loop end to end on the tiny model: every method learns, runs are complete and reload exactly."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import tiny_overrides

from tuneoff.config import build_config
from tuneoff.training.loop import train

# Learning rates that suit a 32-wide random encoder (real models use the methods' defaults).
LEARNS = [
    ("full", 1e-3, "tiny_bert"),
    ("partial", 5e-3, "tiny_bert"),
    ("lora", 2e-2, "tiny_bert"),
    ("lora_plus", 5e-3, "tiny_bert"),
    ("lora_fa", 2e-2, "tiny_bert"),
    ("head", 1e-2, "tiny_bert_pretrained"),
]


def run(model_dir, data, out, method, **extra):
    cfg = build_config({}, tiny_overrides(model_dir, data, out, **extra), names={"method": method})
    return train(cfg, progress=False)


@pytest.mark.parametrize("method, lr, encoder", LEARNS)
def test_every_method_learns_a_separable_task(method, lr, encoder, request, toy_csv, tmp_path):
    result = run(request.getfixturevalue(encoder), toy_csv, tmp_path, method, **{"train.lr": lr, "train.epochs": 15})
    # Chance is 0.5; the held-out test split is 24 examples never seen in training or checkpoint selection: 18 right
    # has a chance of 1% under guessing.
    assert result.metrics["test"]["accuracy"] >= 0.75, result.metrics["test"]
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 15 and history[-1]["train_loss"] < history[0]["train_loss"]


def test_run_directory_is_complete(tiny_bert, toy_csv, tmp_path):
    from tuneoff.core.provenance import VERSION
    from tuneoff.training.session import precision_words

    result = run(tiny_bert, toy_csv, tmp_path, "lora", **{"method.r": 4})
    d = result.run_dir
    assert {p.name for p in d.iterdir()} == {
        "config.yaml",
        "run.json",
        "metrics.json",
        "history.jsonl",
        "predictions.csv",
        "resources.json",
        "train.log",
        "model",
    }
    log = (d / "train.log").read_text().splitlines()
    steps = json.loads((d / "run.json").read_text())["total_steps"]
    assert log[0].endswith(
        f"run {d.name}: lora on {tiny_bert} / toy.csv, {steps} optimizer steps at lr 0.0005, "
        f"{json.loads((d / 'run.json').read_text())['device']}, "
        f"{precision_words(yaml.safe_load((d / 'config.yaml').read_text())['train']['mixed_precision'], torch.device('cpu'))}; "
        f"tuneoff {VERSION}"
    )
    assert sum(" step " in line and "validation loss" in line for line in log) == 6, "one record per evaluation"
    assert [p.name for p in tmp_path.iterdir()] == [d.name], "no temporary directory left behind"
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    assert cfg["method"] == {**cfg["method"], "name": "lora", "r": 4} and cfg["train"]["epochs"] == 6
    # Resolved: the values the run used, not "null" / "auto" (the method's default lr, warmup steps, precision).
    assert cfg["train"]["lr"] == 5e-4 and isinstance(cfg["train"]["warmup_steps"], int)
    assert cfg["train"]["mixed_precision"] in ("no", "bf16")
    assert cfg["train"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    preds = pd.read_csv(d / "predictions.csv")
    assert list(preds.columns) == ["id", "text", "true_label", "pred_label", "prob_neg", "prob_pos"]
    assert np.allclose(preds[["prob_neg", "prob_pos"]].sum(axis=1), 1, atol=1e-5)
    metrics = json.loads((d / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == pytest.approx((preds.true_label == preds.pred_label).mean())
    res = json.loads((d / "resources.json").read_text())
    assert res["trainable_params"] == 2 * 2 * (4 * 32 * 2) + 66
    assert res["train_tokens_per_s"] > 0
    # The CUDA meter reads None on the CPU, a real peak on a GPU (an H100 measured 66 MB for this tiny run).
    assert res["cuda_max_allocated_mb"] is None if not torch.cuda.is_available() else res["cuda_max_allocated_mb"] > 0
    model_files = {p.name for p in (d / "model").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "config.json", "tokenizer.json"} <= model_files
    config = json.loads((d / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "neg", "1": "pos"} and config["problem_type"] == "single_label_classification"
    assert res["checkpoint_bytes"] < 200_000, "the adapter dir links the base weights instead of copying them"


@pytest.mark.parametrize(
    "method, encoder",
    [
        ("lora", "tiny_bert"),
        ("full", "tiny_bert"),
        ("partial", "tiny_bert"),
        ("lora", "tiny_distilbert"),
        ("lora_fa", "tiny_distilbert"),
    ],
)
def test_saved_model_reloads_with_identical_predictions(method, encoder, request, toy_csv, tmp_path, caplog):
    import logging
    import stat

    from transformers import AutoModelForSequenceClassification, pipeline

    result = run(request.getfixturevalue(encoder), toy_csv, tmp_path, method, **{"train.epochs": 2, "train.lr": 1e-2})
    preds = pd.read_csv(result.run_dir / "predictions.csv")
    model_dir = str(result.run_dir / "model")
    umask = os.umask(0)
    os.umask(umask)
    for path in Path(
        model_dir
    ).iterdir():  # weights are shared like any file: the umask decides, not a temp file's 0600
        if not path.is_symlink():
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path.name

    caplog.set_level(logging.WARNING)
    caplog.clear()  # training itself loads the base with a fresh head: that report is expected
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    assert model.config.id2label == {0: "neg", 1: "pos"}
    clf = pipeline("text-classification", model=model_dir, top_k=None)
    outputs = clf(list(preds.text))
    probs = np.array([[{o["label"]: o["score"] for o in row}[name] for name in ("neg", "pos")] for row in outputs])
    # The classic bug (head or DistilBERT pre_classifier not saved) shows up here as different probabilities.
    np.testing.assert_allclose(probs, preds[["prob_neg", "prob_pos"]].values, atol=1e-5)
    # ...and loading it says nothing alarming: no "classifier.weight MISSING ... newly initialized" for adapter runs.
    assert not [r for r in caplog.records if "MISSING" in r.getMessage() or "newly initialized" in r.getMessage()]


def test_same_seed_same_results(tiny_bert, toy_csv, tmp_path):
    a = run(tiny_bert, toy_csv, tmp_path / "a", "lora")
    b = run(tiny_bert, toy_csv, tmp_path / "b", "lora")
    assert a.metrics["test"] == b.metrics["test"]
    pa, pb = pd.read_csv(a.run_dir / "predictions.csv"), pd.read_csv(b.run_dir / "predictions.csv")
    pd.testing.assert_frame_equal(pa, pb)
    c = run(tiny_bert, toy_csv, tmp_path / "c", "lora", **{"train.seed": 1})
    assert not pa.equals(pd.read_csv(c.run_dir / "predictions.csv")), "a different seed changes the run"


def test_early_stopping_and_best_checkpoint(tiny_bert, toy_csv, tmp_path):
    # lr 0 never improves after the first evaluation: patience 2 stops after 3 evaluations, best is the first.
    result = run(
        tiny_bert,
        toy_csv,
        tmp_path,
        "lora",
        **{
            "train.lr": 1e-12,
            "train.patience": 2,
            "train.min_epochs": 0,
            "train.metric_for_best": "loss",
            "train.eval_every": 3,
        },
    )
    assert result.metrics["stopped_early"]
    assert result.resources["optimizer_steps"] == 9 and result.metrics["best_step"] <= 3


def test_max_steps_and_grad_accum(tiny_bert, toy_csv, tmp_path):
    result = run(tiny_bert, toy_csv, tmp_path, "head", **{"train.max_steps": 5, "train.grad_accum": 2})
    assert result.resources["optimizer_steps"] == 5
    assert result.resources["train_samples"] == 5 * 2 * 16
    assert result.resources["effective_batch_size"] == 32


@pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="torch.compile (inductor) needs a C compiler"
)
def test_compiled_training_matches_eager(no_dropout_bert, toy_csv, tmp_path):
    """train.compile=true compiles the training forward only (same parameters); in fp32 on the CPU it must train to
    the same weights as eager mode, up to float reassociation by the fused kernels."""
    settings = {"train.epochs": 2, "train.lr": 1e-2, "train.mixed_precision": "no", "method.dropout": 0.0}
    eager = run(no_dropout_bert, toy_csv, tmp_path / "eager", "lora", **settings)
    compiled = run(no_dropout_bert, toy_csv, tmp_path / "compiled", "lora", **settings, **{"train.compile": True})
    a = pd.read_csv(eager.run_dir / "predictions.csv")[["prob_neg", "prob_pos"]].to_numpy()
    b = pd.read_csv(compiled.run_dir / "predictions.csv")[["prob_neg", "prob_pos"]].to_numpy()
    np.testing.assert_allclose(b, a, atol=1e-3)
    assert compiled.metrics["test"]["accuracy"] == eager.metrics["test"]["accuracy"]


def test_runs_with_different_precisions_in_one_process(tiny_bert, toy_csv, tmp_path):
    """A study trains its runs in one process; Accelerate's process-wide state must not pin the first run's precision."""
    bf16 = run(tiny_bert, toy_csv, tmp_path / "a", "lora", **{"train.mixed_precision": "bf16", "train.epochs": 1})
    fp32 = run(tiny_bert, toy_csv, tmp_path / "b", "lora", **{"train.mixed_precision": "no", "train.epochs": 1})
    assert [json.loads((r.run_dir / "run.json").read_text())["mixed_precision"] for r in (bf16, fp32)] == ["bf16", "no"]


@pytest.mark.parametrize("method", ["head", "partial", "bitfit"])
def test_trained_only_save_is_small_and_reloads_to_the_same_predictions(method, tiny_bert, toy_csv, tmp_path, caplog):
    import logging

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    extra = {"train.epochs": 2, **({"method.k": 1} if method == "partial" else {})}  # k=2 of 2 layers trains all
    full = run(tiny_bert, toy_csv, tmp_path / "full", method, **extra)
    small = run(tiny_bert, toy_csv, tmp_path / "small", method, **extra, **{"train.save": "trained_only"})
    assert small.resources["checkpoint_bytes"] < full.resources["checkpoint_bytes"] * 0.6
    from safetensors import safe_open

    with safe_open(small.run_dir / "model" / "trained.safetensors", "pt") as f:  # exactly the trained tensors
        assert sum(f.get_tensor(k).numel() for k in f.keys()) == small.resources["trainable_params"]
    caplog.set_level(logging.WARNING)
    caplog.clear()
    model = AutoModelForSequenceClassification.from_pretrained(small.run_dir / "model").eval()
    assert not [r for r in caplog.records if "MISSING" in r.getMessage() or "UNEXPECTED" in r.getMessage()]
    tok = AutoTokenizer.from_pretrained(small.run_dir / "model")
    preds = pd.read_csv(small.run_dir / "predictions.csv")
    import torch

    with torch.no_grad():
        probs = torch.softmax(model(**tok(list(preds.text), padding=True, return_tensors="pt")).logits, -1).numpy()
    np.testing.assert_allclose(probs, preds[["prob_neg", "prob_pos"]].values, atol=1e-5)
    pd.testing.assert_frame_equal(preds, pd.read_csv(full.run_dir / "predictions.csv"))  # the same run, saved smaller


def test_the_precision_a_run_trains_in_is_said_plainly(monkeypatch):
    """Accelerate's "no" read as "no precision" to a new user: it is fp32, and on a CPU without native bf16 the line
    says why it is slower than the README's bf16 figures."""
    from tuneoff.training import session

    monkeypatch.setattr(session, "cpu_has_native_bf16", lambda: False)
    assert session.precision_words("no", torch.device("cpu")) == "fp32 (this CPU has no native bf16)"
    assert session.precision_words("bf16", torch.device("cpu")) == "bf16 mixed precision"
    monkeypatch.setattr(session, "cpu_has_native_bf16", lambda: True)
    assert session.precision_words("no", torch.device("cpu")) == "fp32"


def test_every_run_carries_a_model_card_the_hub_reads(tiny_bert, toy_csv, tmp_path):
    """peft wrote its empty template ("Model Card for Model ID") with base_model set to the local path the base came
    from; other methods had no card. Every run's model/README.md is now a card huggingface_hub parses back: library,
    pipeline tag, the base model by hub id where known (never a path of this machine), test metrics, how it trained."""
    from huggingface_hub import ModelCard

    from tuneoff.models.card import base_model_id

    for method in ("lora", "partial"):
        extra = {"method.r": 4} if method == "lora" else {"method.k": 1}
        result = run(tiny_bert, toy_csv, tmp_path / method, method, **extra)
        path = result.run_dir / "model" / "README.md"
        card = ModelCard.load(path)
        assert card.data.library_name == ("peft" if method == "lora" else "transformers")
        assert card.data.pipeline_tag == "text-classification" and "tuneoff" in card.data.tags
        accuracy = next(r for r in card.data.eval_results if r.metric_type == "accuracy")
        assert accuracy.metric_value == round(result.metrics["test"]["accuracy"], 4)
        text = path.read_text()
        assert "Model Card for Model ID" not in text and str(tmp_path) not in text and "/tmp" not in text
        assert card.data.base_model is None, "a local tiny model with no hub id: named by no path"
    assert base_model_id("minilm", "/anywhere") == "sentence-transformers/all-MiniLM-L6-v2"
