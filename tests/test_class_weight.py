"""train.class_weight: the resolved weights, bad input, and a run whose predictions follow the weights."""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from conftest import FILLER, tiny_overrides
from pydantic import ValidationError
from scipy.special import softmax
from typer.testing import CliRunner

import tuneoff
from tuneoff.cli.app import app
from tuneoff.config import TrainConfig, build_config
from tuneoff.core.errors import TuneoffError
from tuneoff.training.loop import train
from tuneoff.training.loss import class_weights, prior_shift


def test_balanced_is_n_over_classes_times_count():
    # 3 of class 0, 1 of class 1: 4 / (2 x 3) and 4 / (2 x 1)
    assert class_weights("balanced", ["a", "b"], [0, 0, 0, 1]) == pytest.approx([2 / 3, 2.0])
    assert class_weights("none", ["a", "b"], [0, 1]) is None


def test_a_class_the_training_split_lacks_weighs_one():
    assert class_weights("balanced", ["a", "b", "c"], [0, 0, 2, 2]) == pytest.approx([1.0, 1.0, 1.0])


def test_a_mapping_weighs_unlisted_labels_one_and_names_an_unknown_label():
    assert class_weights({"b": 3.0}, ["a", "b", "c"], [0, 1, 2]) == [1.0, 3.0, 1.0]
    with pytest.raises(TuneoffError, match=r"train.class_weight names label\(s\) \['grain'\].*labels are \['a', 'b'\]"):
        class_weights({"grain": 2.0}, ["a", "b"], [0, 1])


def test_the_prior_shift_divides_the_weights_out_of_the_probabilities():
    # Saerens et al. 2002: p(k|x) proportional to q(k|x) / w_k. Subtracting log w from the logits does exactly that
    rng = np.random.default_rng(0)
    logits, weights = rng.normal(size=(5, 3)) * 3, [0.5, 1.0, 7.0]
    divided = softmax(logits, axis=-1) / np.array(weights)
    np.testing.assert_allclose(
        softmax(logits - prior_shift(weights), axis=-1), divided / divided.sum(-1, keepdims=True)
    )
    assert prior_shift([1.0, 1.0]).tolist() == [0.0, 0.0]  # unweighted: nothing moves


def test_the_config_reads_yaml_spellings_and_refuses_bad_weights():
    assert TrainConfig(class_weight=None).class_weight == "none"
    assert TrainConfig(class_weight={1: 2}).class_weight == {"1": 2.0}  # YAML reads a label 1 as an int
    for bad in ({"a": 0}, {"a": -1.0}, {"a": "x"}, {"a": float("inf")}, "inverse"):
        with pytest.raises(ValidationError, match="class_weight"):
            TrainConfig(class_weight=bad)


@pytest.fixture(scope="module")
def noise_csv(tmp_path_factory):
    """Texts that say nothing about their label, 3 of 4 labelled "a": the best a model can do is the class prior."""
    rng = random.Random(0)
    rows = [{"text": " ".join(rng.sample(FILLER, 5)), "label": "a" if i % 4 else "b"} for i in range(320)]
    path = tmp_path_factory.mktemp("noise") / "noise.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize("weights, share_b", [(None, (0.0, 0.1)), ({"b": 9.0}, (0.9, 1.0))])
def test_the_weights_reach_the_loss(tiny_bert, noise_csv, tmp_path, weights, share_b):
    # Weighted, the loss is minimised at p(b) = 9 x 0.25 / (9 x 0.25 + 0.75) = 0.75: every test text goes to b.
    extra = {"method.name": "head", "train.lr": 5e-2, "train.epochs": 4}
    if weights:
        extra["train.class_weight"] = json.dumps(weights)
    result = train(build_config({}, tiny_overrides(tiny_bert, noise_csv, tmp_path, **extra)), progress=False)
    predicted = pd.read_csv(result.run_dir / "predictions.csv")
    low, high = share_b
    assert low <= (predicted["pred_label"] == "b").mean() <= high
    recorded = json.loads((result.run_dir / "run.json").read_text())["class_weights"]
    assert recorded == (None if weights is None else {"a": 1.0, "b": 9.0})
    run, texts = tuneoff.load_run(result.run_dir), predicted["text"].tolist()
    if weights is None:
        with pytest.raises(TuneoffError, match="trained without class weights"):
            run.predict(texts, undo_class_weights=True)
        return
    # Dividing the weights out gives back the data's own posterior: p(b) about the prior 0.25, "a" predicted again,
    # exactly the weighted probabilities / w renormalised; the CLI's evaluate and predict do the same.
    weighted, undone = run.predict(texts), run.predict(texts, undo_class_weights=True)
    expected = weighted[["prob_a", "prob_b"]].to_numpy() / [1.0, 9.0]
    np.testing.assert_allclose(
        undone[["prob_a", "prob_b"]].to_numpy(), expected / expected.sum(axis=1, keepdims=True), atol=1e-5
    )
    assert (undone["label"] == "a").mean() >= 0.9 and 0.1 < undone["prob_b"].mean() < 0.4
    metrics = run.evaluate(undo_class_weights=True)
    assert metrics["class_weights_undone"] and metrics["accuracy"] > run.evaluate()["accuracy"] + 0.3  # a, not b
    table = tmp_path / "texts.csv"
    pd.DataFrame({"text": texts}).to_csv(table, index=False)
    done = CliRunner().invoke(
        app, ["predict", str(result.run_dir), str(table), "--out", str(tmp_path / "p.csv"), "--undo-class-weights"]
    )
    assert done.exit_code == 0, done.output
    np.testing.assert_allclose(pd.read_csv(tmp_path / "p.csv")["prob_b"], undone["prob_b"], atol=1e-4)


def test_a_run_naming_an_unknown_label_fails_before_anything_is_written(tiny_bert, toy_csv, tmp_path):
    cfg = build_config(
        {}, tiny_overrides(tiny_bert, toy_csv, tmp_path / "out", **{"train.class_weight": '{"grain": 2}'})
    )
    with pytest.raises(TuneoffError, match="grain"):
        train(cfg, progress=False)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_the_report_says_a_weighted_models_calibration_is_that_of_the_weighted_question():
    """Through the verdict and the report's group section, as `tuneoff report` builds it: the calibration section
    names the condition that trained with class weights, and says nothing when none did."""
    from test_verdict import condition, fake_run, rights, truth_of

    from tuneoff.analysis.verdict import analyse
    from tuneoff.report.sections import group_html, weighted_note

    n, truth = 200, truth_of(200)
    plain = condition("lora", "lora", [fake_run(s, rights(n, 160 + s, s), truth) for s in range(2)])
    weighted = condition("lora_weighted", "lora", [fake_run(s, rights(n, 150 + s, 10 + s), truth) for s in range(2)])
    for run in weighted.runs:
        run["info"]["class_weights"] = {"neg": 0.83, "pos": 1.25}
    (without,) = analyse([plain])
    assert "Trained with class weights" not in group_html(without)
    (with_weights,) = analyse([plain, weighted])
    html = group_html(with_weights)
    calibration = html[html.index("<h3>Calibration</h3>") :]
    assert "Trained with class weights (train.class_weight): lora_weighted;" in calibration
    assert "--undo-class-weights" in calibration and "lora;" not in calibration
    assert weighted_note([plain]) == ""
