"""End to end on the real packaged all-MiniLM-L6-v2 and the real Rotten Tomatoes snippets (offline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneoff.config import build_config
from tuneoff.training.loop import train

pytestmark = pytest.mark.slow


def test_minilm_lora_learns_rotten_tomatoes_and_reloads_through_pipeline(tmp_path):
    from transformers import pipeline

    cfg = build_config(
        {},
        [
            "data.max_train_samples=2000",
            "data.max_eval_samples=300",
            "train.epochs=2",
            "train.lr=1e-3",
            "train.batch_size=32",
            f"output_dir={tmp_path}",
        ],
        names={"model": "minilm", "data": "rotten_tomatoes", "method": "lora"},
    )
    result = train(cfg, progress=False)
    test = result.metrics["test"]
    assert test["accuracy"] > 0.62, test  # chance (majority class) is 0.58
    assert result.resources["trainable_params"] == 6 * 2 * (8 * 384 * 2) + 384 * 2 + 2

    preds = pd.read_csv(result.run_dir / "predictions.csv")
    clf = pipeline("text-classification", model=str(result.run_dir / "model"), top_k=None)
    outputs = clf(list(preds.text[:64]))
    probs = np.array([[{o["label"]: o["score"] for o in row}[n] for n in ("fresh", "rotten")] for row in outputs])
    np.testing.assert_allclose(probs, preds[["prob_fresh", "prob_rotten"]].values[:64], atol=1e-5)


def test_mpnet_is_assembled_from_its_five_parts_and_loads(tmp_path, monkeypatch):
    from tuneoff.config import build_config
    from tuneoff.methods import get_method
    from tuneoff.models.assets import resolve_model
    from tuneoff.models.loading import load_classifier
    from tuneoff.training.resources import param_counts

    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path))
    path = resolve_model("mpnet")
    assert path == str(tmp_path / "models" / "all-mpnet-base-v2") and resolve_model("mpnet") == path  # unzipped once
    model, arch = load_classifier(path, ["a", "b", "c"], num_hidden_layers=1)
    assert (arch.model_type, arch.lora_targets, arch.num_layers) == ("mpnet", ["q", "v"], 1)
    model = get_method("lora").prepare(model, build_config({}, ["method.r=8"]).method, arch)
    # LoRA on q and v of one 768-wide layer, plus MPNet's head (dense 768x768 + out_proj 768x3).
    assert param_counts(model)["trainable_params"] == 2 * (8 * 768 * 2) + (768 * 768 + 768) + (768 * 3 + 3)


def test_model_name_typo_fails_fast():
    from tuneoff.core.errors import TuneoffError
    from tuneoff.models.assets import resolve_model

    with pytest.raises(TuneoffError, match="did you mean 'bert-base'"):
        resolve_model("bert-bsae")
