"""Frozen layers computed once: a cached run equals an uncached one, resumes exactly, is computed once per study, is
invalidated by any change it depends on; and every run says what it costs to serve."""

from __future__ import annotations

import json
import signal

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_overrides
from test_reliability import cli_train, finished_run

from tuneoff.config import build_config
from tuneoff.training import frozen
from tuneoff.training.loop import train

CASES = {"head": {"method.name": "head", "train.lr": 5e-2},
         "partial": {"method.name": "partial", "method.k": 1, "train.lr": 5e-3},
         "lora_top": {"method.name": "lora", "method.r": 4, "method.layers_to_transform": "[1]", "train.lr": 2e-2}}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    frozen.COMPUTED.clear()
    return tmp_path / "cache" / "features"


def run(tiny_bert, toy_csv, out, **extra):
    cfg = build_config({}, tiny_overrides(tiny_bert, toy_csv, out, **{"train.epochs": 3, "train.eval_every": 4,
                                                                   "train.mixed_precision": "no", **extra}))
    return train(cfg, progress=False)


def _count_layer0_calls(monkeypatch):
    """Counts the forward calls of every encoder's layer 0 (the frozen one in each case)."""
    import tuneoff.training.model as model_module

    calls = {"n": 0}
    real = model_module.load_classifier

    def load(*args, **kwargs):
        model, arch = real(*args, **kwargs)
        model.get_submodule(arch.layers_path)[0].register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
        return model, arch

    monkeypatch.setattr(model_module, "load_classifier", load)
    return calls


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_cached_run_predicts_what_an_uncached_run_predicts(case, cache, tiny_bert, toy_csv, tmp_path, monkeypatch):
    calls = _count_layer0_calls(monkeypatch)
    cached = run(tiny_bert, toy_csv, tmp_path / "a", **CASES[case], **{"train.feature_cache_dtype": "float32"})
    # Layer 0 ran only to fill the cache (one pass over each split in batches of 64) and in the final, uncached
    # evaluation of validation and test, plus the latency measurement: never in a training step or in the
    # per-epoch evaluations, which the uncached run does 3 x 13 + 3 x 1 times.
    sizes = json.loads((cached.run_dir / "run.json").read_text())["sizes"]
    batches = sum(-(-n // 64) for n in sizes.values()) + 2 * -(-sizes["validation"] // 64)
    latency = 52 * (2 if case == "lora_top" else 1)
    assert calls["n"] <= batches + latency, calls
    calls["n"] = 0
    plain = run(tiny_bert, toy_csv, tmp_path / "b", **CASES[case], **{"train.feature_cache": "off"})
    assert calls["n"] > 3 * 13, "the uncached run computes layer 0 every step"
    assert cached.resources["feature_cache"] == "used" and plain.resources["feature_cache"] == "train.feature_cache=off"
    assert cached.resources["frozen_below_layer"] == {"head": 2, "partial": 1, "lora_top": 1}[case]
    assert len(frozen.COMPUTED) == 1
    a = pd.read_csv(cached.run_dir / "predictions.csv")
    b = pd.read_csv(plain.run_dir / "predictions.csv")
    np.testing.assert_allclose(a.filter(like="prob_").values, b.filter(like="prob_").values, atol=2e-4)
    ha = [json.loads(line)["val_loss"] for line in (cached.run_dir / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(line)["val_loss"] for line in (plain.run_dir / "history.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(ha, hb, atol=2e-4)
    info = json.loads((cached.run_dir / "run.json").read_text())
    assert info["frozen"]["eval_mode"] and info["frozen"]["feature_cache"] == "used"


def test_every_layer_trains_means_nothing_is_cached(cache, tiny_bert, toy_csv, tmp_path):
    result = run(tiny_bert, toy_csv, tmp_path, **{"method.name": "lora", "train.epochs": 1})
    assert result.resources["feature_cache"] == "every layer trains" and result.resources["frozen_below_layer"] is None
    assert not frozen.COMPUTED


def test_the_cache_is_computed_once_for_many_runs_and_invalidated_by_what_it_depends_on(cache, tiny_bert, toy_csv, tmp_path):
    for seed in (1, 2, 3):  # seeds and learning rates share the frozen features
        run(tiny_bert, toy_csv, tmp_path / f"s{seed}", **CASES["partial"], **{"train.seed": seed, "train.epochs": 1})
    run(tiny_bert, toy_csv, tmp_path / "lr", **{**CASES["partial"], "train.lr": 1e-3, "train.epochs": 1})
    assert len(frozen.COMPUTED) == 1 and len(list(cache.iterdir())) == 1
    partial = {**CASES["partial"], "train.epochs": 1}
    changes = [{**partial, "data.max_length": 12}, {**CASES["head"], "train.epochs": 1},  # another boundary
               {**partial, "train.feature_cache_dtype": "float32"}, {**partial, "data.max_eval_samples": 10},
               {**partial, "model.num_hidden_layers": 1, "method.k": 1}]
    for n, change in enumerate(changes, start=2):
        run(tiny_bert, toy_csv, tmp_path / f"c{n}", **change)
        assert len(frozen.COMPUTED) == n - (change.get("model.num_hidden_layers") == 1), change
    assert not [p for p in cache.iterdir() if p.name.startswith(".")], "no half-written cache left"


@pytest.mark.slow
def test_a_resumed_cached_run_equals_an_uninterrupted_one(tiny_bert, toy_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    import test_reliability
    from safetensors.torch import load_file

    monkeypatch.setattr(test_reliability, "RESUMABLE", {**test_reliability.RESUMABLE, "method.layers_to_transform": "[1]",
                                                        "train.feature_cache_dtype": "float32"})
    ref = tmp_path / "ref"
    assert cli_train(tiny_bert, toy_csv, ref).returncode == 0
    out = tmp_path / "killed"
    assert cli_train(tiny_bert, toy_csv, out, crash_at="step:7").returncode == -signal.SIGKILL
    resumed = cli_train(tiny_bert, toy_csv, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    got, want = finished_run(out), finished_run(ref)
    assert json.loads((got / "resources.json").read_text())["feature_cache"] == "used"
    a, b = load_file(got / "model" / "adapter_model.safetensors"), load_file(want / "model" / "adapter_model.safetensors")
    for key in b:
        torch.testing.assert_close(a[key], b[key], atol=1e-6, rtol=0)


def test_serving_cost_is_measured_for_the_deployed_model(cache, tiny_bert, toy_csv, tmp_path):
    lora = run(tiny_bert, toy_csv, tmp_path / "lora", **{"method.name": "lora", "train.epochs": 1})
    full = run(tiny_bert, toy_csv, tmp_path / "full", **{"method.name": "full", "train.epochs": 1})
    for r in (lora.resources, full.resources):
        assert 0 < r["latency_ms_p50"] <= r["latency_ms_p95"] < 5_000
        assert r["deploy_model_bytes"] == 4 * r["total_params"]
    assert lora.resources["latency_unmerged_ms_p50"] > 0 and "latency_unmerged_ms_p50" not in full.resources
    assert 0 < lora.resources["deploy_adapter_bytes"] < lora.resources["deploy_model_bytes"] / 5
    assert full.resources["deploy_adapter_bytes"] is None
