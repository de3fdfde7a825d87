"""End to end on the real packaged all-MiniLM-L6-v2 and the real Rotten Tomatoes snippets (offline)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneoff.config import build_config
from tuneoff.train import train

pytestmark = pytest.mark.slow


def test_minilm_lora_learns_rotten_tomatoes_and_reloads_through_pipeline(tmp_path):
    from transformers import pipeline

    cfg = build_config({}, [
        "data.max_train_samples=2000", "data.max_eval_samples=300",
        "train.epochs=2", "train.lr=1e-3", "train.batch_size=32", f"output_dir={tmp_path}",
    ], names={"model": "minilm", "data": "rotten_tomatoes", "method": "lora"})
    result = train(cfg, progress=False)
    test = result.metrics["test"]
    assert test["accuracy"] > 0.62, test  # chance (majority class) is 0.58
    assert result.resources["trainable_params"] == 6 * 2 * (8 * 384 * 2) + 384 * 2 + 2

    preds = pd.read_csv(result.run_dir / "predictions.csv")
    clf = pipeline("text-classification", model=str(result.run_dir / "model"), top_k=None)
    outputs = clf(list(preds.text[:64]))
    probs = np.array([[{o["label"]: o["score"] for o in row}[n] for n in ("fresh", "rotten")] for row in outputs])
    np.testing.assert_allclose(probs, preds[["prob_fresh", "prob_rotten"]].values[:64], atol=1e-5)
