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

CASES = {
    "head": {"method.name": "head", "train.lr": 5e-2},
    "partial": {"method.name": "partial", "method.k": 1, "train.lr": 5e-3},
    "lora_top": {"method.name": "lora", "method.r": 4, "method.layers_to_transform": "[1]", "train.lr": 2e-2},
}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    frozen.COMPUTED.clear()
    return tmp_path / "cache" / "features"


def run(tiny_bert, toy_csv, out, **extra):
    cfg = build_config(
        {},
        tiny_overrides(
            tiny_bert,
            toy_csv,
            out,
            **{"train.epochs": 3, "train.eval_every": 4, "train.mixed_precision": "no", **extra},
        ),
    )
    return train(cfg, progress=False)


def _count_layer0_calls(monkeypatch):
    """Counts the forward calls of every encoder's layer 0 (the frozen one in each case)."""
    import tuneoff.training.model as model_module

    calls = {"n": 0}
    real = model_module.load_classifier

    def load(*args, **kwargs):
        model, arch = real(*args, **kwargs)
        model.get_submodule(arch.layers_path)[0].register_forward_hook(
            lambda *a: calls.__setitem__("n", calls["n"] + 1)
        )
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
    assert (
        cached.resources["feature_cache"] == "used; built by this run"
        and plain.resources["feature_cache"] == "train.feature_cache=off"
    )
    assert cached.resources["frozen_below_layer"] == {"head": 2, "partial": 1, "lora_top": 1}[case]
    assert len(frozen.COMPUTED) == 1
    a = pd.read_csv(cached.run_dir / "predictions.csv")
    b = pd.read_csv(plain.run_dir / "predictions.csv")
    np.testing.assert_allclose(a.filter(like="prob_").values, b.filter(like="prob_").values, atol=2e-4)
    ha = [json.loads(line)["val_loss"] for line in (cached.run_dir / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(line)["val_loss"] for line in (plain.run_dir / "history.jsonl").read_text().splitlines()]
    np.testing.assert_allclose(ha, hb, atol=2e-4)
    info = json.loads((cached.run_dir / "run.json").read_text())
    assert info["frozen"]["eval_mode"] and info["frozen"]["feature_cache"] == "used; built by this run"


def test_every_layer_trains_means_nothing_is_cached(cache, tiny_bert, toy_csv, tmp_path):
    result = run(tiny_bert, toy_csv, tmp_path, **{"method.name": "lora", "train.epochs": 1})
    assert result.resources["feature_cache"] == "every layer trains" and result.resources["frozen_below_layer"] is None
    assert not frozen.COMPUTED


def test_the_cache_is_computed_once_for_many_runs_and_invalidated_by_what_it_depends_on(
    cache, tiny_bert, toy_csv, tmp_path
):
    for seed in (1, 2, 3):  # seeds and learning rates share the frozen features
        run(tiny_bert, toy_csv, tmp_path / f"s{seed}", **CASES["partial"], **{"train.seed": seed, "train.epochs": 1})
    run(tiny_bert, toy_csv, tmp_path / "lr", **{**CASES["partial"], "train.lr": 1e-3, "train.epochs": 1})
    assert len(frozen.COMPUTED) == 1 and len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    partial = {**CASES["partial"], "train.epochs": 1}
    changes = [
        {**partial, "data.max_length": 12},
        {**CASES["head"], "train.epochs": 1},  # another boundary
        {**partial, "train.feature_cache_dtype": "float32"},
        {**partial, "data.max_eval_samples": 10},
        {**partial, "model.num_hidden_layers": 1, "method.k": 1},
    ]
    for n, change in enumerate(changes, start=2):
        run(tiny_bert, toy_csv, tmp_path / f"c{n}", **change)
        assert len(frozen.COMPUTED) == n - (change.get("model.num_hidden_layers") == 1), change
    assert not [p for p in cache.iterdir() if p.name.startswith(".") and p.suffix != ".lock"], (
        "no half-written cache left"
    )


@pytest.mark.slow
def test_a_resumed_cached_run_equals_an_uninterrupted_one(tiny_bert, toy_csv, tmp_path, monkeypatch):
    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    import test_reliability
    from safetensors.torch import load_file

    monkeypatch.setattr(
        test_reliability,
        "RESUMABLE",
        {**test_reliability.RESUMABLE, "method.layers_to_transform": "[1]", "train.feature_cache_dtype": "float32"},
    )
    ref = tmp_path / "ref"
    assert cli_train(tiny_bert, toy_csv, ref).returncode == 0
    out = tmp_path / "killed"
    assert cli_train(tiny_bert, toy_csv, out, crash_at="step:7").returncode == -signal.SIGKILL
    resumed = cli_train(tiny_bert, toy_csv, out, resume=True)
    assert resumed.returncode == 0, resumed.stderr
    got, want = finished_run(out), finished_run(ref)
    assert json.loads((got / "resources.json").read_text())["feature_cache"] == "used"
    a, b = (
        load_file(got / "model" / "adapter_model.safetensors"),
        load_file(want / "model" / "adapter_model.safetensors"),
    )
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


# --- a cache that cannot lie ---------------------------------------------------------------------------------------


def _entry(cache):
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    return entry


def _damage_cases():
    def zeros(entry, other):
        path = entry / "train.states"
        path.write_bytes(b"\0" * path.stat().st_size)

    def copied(entry, other):  # another entry's states of the same shape (another max_length, same lengths)
        (entry / "train.states").write_bytes((other / "train.states").read_bytes())

    def truncated(entry, other):
        path = entry / "train.states"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def no_meta(entry, other):
        (entry / "meta.json").unlink()

    return {"zeros": zeros, "copied": copied, "truncated": truncated, "no_meta": no_meta}


@pytest.mark.parametrize("damage", sorted(_damage_cases()))
def test_a_damaged_cache_entry_is_rebuilt_never_used(damage, cache, tiny_bert, toy_csv, tmp_path, monkeypatch):
    """The issue's cases: zeros of the same size, a states file copied in from another entry of the same shape, a
    truncated file, a missing meta.json: each is caught on the next use (a fresh process would verify it too), the
    entry is rebuilt with a note in the run, and the run predicts what a healthy cached run predicted."""
    case = {**CASES["partial"], "train.epochs": 1, "train.feature_cache_dtype": "float32"}
    healthy = run(tiny_bert, toy_csv, tmp_path / "a", **case)
    entry = _entry(cache)
    # Another entry of the same shape: the states after layer 1 (head) instead of layer 0 (partial top-1).
    run(
        tiny_bert,
        toy_csv,
        tmp_path / "other",
        **{**CASES["head"], "train.epochs": 1, "train.feature_cache_dtype": "float32"},
    )
    other = next(p for p in cache.iterdir() if p != entry and not p.name.startswith("."))
    assert (other / "train.states").stat().st_size == (entry / "train.states").stat().st_size
    _damage_cases()[damage](entry, other)
    frozen._VERIFIED.clear()  # what a new process sees
    frozen.COMPUTED.clear()
    again = run(tiny_bert, toy_csv, tmp_path / "b", **case)
    assert frozen.COMPUTED == [entry.name], "rebuilt, once"
    note = json.loads((again.run_dir / "run.json").read_text())["frozen"]["feature_cache"]
    assert note.startswith("used; the cached frozen-layer states in") and "failed their check" in note, note
    a = pd.read_csv(healthy.run_dir / "predictions.csv")
    b = pd.read_csv(again.run_dir / "predictions.csv")
    np.testing.assert_allclose(a.filter(like="prob_").values, b.filter(like="prob_").values, atol=1e-5)


def test_the_key_covers_the_models_files_by_content(cache, tiny_bert, tmp_path):
    """config.json as a whole (hidden_act), the tokenizer files, and the weights' content even when a rewrite keeps the
    size and the mtime: each change gives another key."""
    import os
    import shutil

    from tuneoff.config import build_config

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    cfg = build_config({}, [f"model.name={model}"])
    frames = {"train": pd.DataFrame({"id": ["1"], "text": ["a"]})}
    key = lambda: frozen.cache_key(str(model), cfg, frames, 1, "float16")  # noqa: E731
    keys = {key()}
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    keys.add(key())
    tokenizer = next(model / name for name in ("tokenizer.json", "vocab.txt") if (model / name).is_file())
    tokenizer.write_text(tokenizer.read_text() + "\n")
    keys.add(key())
    weights = model / "model.safetensors"
    stat = weights.stat()
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # same size
    weights.write_bytes(bytes(data))
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # mtime restored
    keys.add(key())
    assert len(keys) == 4


def test_an_unwritable_cache_directory_runs_uncached(cache, tiny_bert, toy_csv, tmp_path, monkeypatch):
    import os

    if os.geteuid() == 0:  # root writes anywhere: make the cache root a file instead
        cache.parent.mkdir(parents=True)
        cache.write_text("not a directory")
    else:
        cache.mkdir(parents=True)
        cache.chmod(0o500)
    result = run(tiny_bert, toy_csv, tmp_path / "a", **{**CASES["partial"], "train.epochs": 1})
    assert result.resources["feature_cache"].startswith("feature cache off for this run:"), result.resources
    assert result.metrics["test"]["accuracy"] > 0 and not frozen.COMPUTED
