"""Macro-F1 as what a verdict decides on (analysis.metric: macro_f1): its per-example linearisation is exact in the
mean and right in the variance, its intervals hold their error rates, and a verdict ranked on it picks the method
that finds the rare class where accuracy picks the one that ignores it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from tuneoff.analysis.groups import Condition
from tuneoff.analysis.settings import AnalysisSettings
from tuneoff.analysis.significance import class_f1_values, compare, macro_f1_values
from tuneoff.analysis.tuning import tuning_trials
from tuneoff.analysis.verdict import analyse
from tuneoff.study.protocol import best_trial
from tuneoff.study.spec import expand, metric_note, spec_from_dict
from tuneoff.training.evaluate import compute_metrics

LABELS = ["common", "other", "rare"]


def test_the_values_average_to_scikit_learns_macro_f1_with_absent_classes():
    """Every class counts, F1 0 where a class has no true and no predicted example (labels=all, zero_division=0):
    class 3 is never predicted, class 4 neither true nor predicted, class 0 predicted but never true in one draw."""
    rng = np.random.default_rng(0)
    for n, k in ((50, 5), (500, 5), (2000, 12)):
        truth = rng.integers(1, 4, n)
        pred = np.where(rng.random(n) < 0.6, truth, rng.integers(0, 3, n))
        values = macro_f1_values(truth, pred, k)
        assert values.shape == (n,)
        expected = f1_score(truth, pred, labels=list(range(k)), average="macro", zero_division=0)
        assert values.mean() == pytest.approx(expected, abs=1e-6)
        # per class: each column's mean is that class's F1, and the columns average to the macro values
        per_class = class_f1_values(truth, pred, k)
        expected = f1_score(truth, pred, labels=list(range(k)), average=None, zero_division=0)
        np.testing.assert_allclose(per_class.mean(axis=0), expected, atol=2e-5)  # float32 storage, as compare()
        np.testing.assert_allclose(per_class.mean(axis=1), values, atol=1e-5)


def test_the_values_spread_like_a_bootstrap_over_examples():
    """Their standard error (sd / sqrt(n)) is the delta method's; a bootstrap over the test examples agrees within
    10% on an imbalanced 3-class task (70 / 25 / 5%)."""
    rng = np.random.default_rng(1)
    n = 1000
    truth = rng.choice(3, n, p=[0.7, 0.25, 0.05])
    pred = np.where(rng.random(n) < 0.8, truth, rng.integers(0, 3, n))
    se = macro_f1_values(truth, pred, 3).std(ddof=1) / np.sqrt(n)
    draws = [
        f1_score(truth[i], pred[i], labels=[0, 1, 2], average="macro", zero_division=0)
        for i in (rng.integers(0, n, n) for _ in range(1500))
    ]
    assert se == pytest.approx(np.std(draws), rel=0.1)


def _seeded_predictions(rng, truth, skill, seeds, seed_sd):
    """(n, seeds) predictions: each example right with its chance (shared difficulty x the condition's skill, the
    seed moving the whole logit by N(0, seed_sd)), a wrong one a uniformly drawn other class."""
    n = len(truth)
    logits = np.log(skill / (1 - skill)) + rng.normal(0, 1, n)[:, None] + rng.normal(0, seed_sd, seeds)[None, :]
    right = rng.random((n, seeds)) < 1 / (1 + np.exp(-logits))
    wrong = (truth[:, None] + rng.integers(1, 3, (n, seeds))) % 3
    return np.where(right, truth[:, None], wrong)


def test_null_studies_keep_the_error_rate_and_cover_the_difference():
    """Two conditions drawn from the same process (3 seeds, seeds moving them): the macro-F1 difference's p < 0.05
    in at most about 5% of 300 studies (Monte Carlo sd 1.3 points: bound 9%), the 95% interval covering the true 0 in
    at least 90%. A test that forgot the seed part (seeds moving the logit by 0.5) fails the bound."""
    rng = np.random.default_rng(5)
    n, reps = 800, 300
    rejected = covered = 0
    for _ in range(reps):
        truth = rng.choice(3, n, p=[0.6, 0.3, 0.1])
        mats = {}
        for name in ("a", "b"):
            pred = _seeded_predictions(rng, truth, 0.8, 3, 0.5)
            mats[name] = np.stack([macro_f1_values(truth, pred[:, s], 3) for s in range(3)], axis=1)
        d = compare(mats).difference("a", "b")
        rejected += d["p_value"] < 0.05
        covered += d["ci_low"] <= 0 <= d["ci_high"]
    assert rejected / reps <= 0.09
    assert covered / reps >= 0.9


def _run(seed, truth, pred, val_accuracy, val_macro_f1):
    n = len(truth)
    logits = np.full((n, 3), -4.0)
    logits[np.arange(n), [LABELS.index(p) for p in pred]] = 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    frame = pd.DataFrame(
        {
            "id": [f"x{i}" for i in range(n)],
            "text": [f"t{i}" for i in range(n)],
            "true_label": truth,
            "pred_label": pred,
            **{f"prob_{name}": probs[:, i] for i, name in enumerate(LABELS)},
        }
    )
    res = {
        "trainable_params": 1000,
        "trainable_pct": 1.0,
        "checkpoint_bytes": 4_000_000,
        "trained_bytes": 4000,
        "peak_rss_mb": 1000.0,
        "train_seconds": 100.0,
        "train_samples_per_s": 10.0,
    }
    return {
        "run_id": f"r{seed}",
        "seed": seed,
        "predictions": frame,
        "history": [],
        "metrics": {
            "test": compute_metrics([LABELS.index(t) for t in truth], logits, LABELS),
            "validation": {"accuracy": val_accuracy, "macro_f1": val_macro_f1},
        },
        "resources": res,
        "device": "cpu",
        "config": {"model": {"name": "m"}, "data": {"name": "d"}, "method": {"name": "x"}},
        "info": {"dataset": "d", "label_counts": {"train": {"common": 700, "other": 250, "rare": 50}}},
    }


def _two_methods():
    """On 1,000 test examples (700 / 250 / 50): "ignores" never predicts the rare class and gets the rest nearly all
    right; "finds" catches most rare examples at the price of some common ones. Accuracy favours the first, macro-F1
    the second; validation says the same as test."""
    truth = np.array(["common"] * 700 + ["other"] * 250 + ["rare"] * 50)
    conds = []
    for name, rare_hit, common_miss in (("ignores", 0, 10), ("finds", 40, 70)):
        runs = []
        for seed in (1, 2, 3):
            pred = truth.copy()
            pred[950:] = "common"
            pred[950 : 950 + rare_hit + seed] = "rare"  # each seed a little different
            pred[: common_miss + seed] = "other"
            acc = float(np.mean(pred == truth))
            runs.append(
                _run(seed, truth, pred, acc, f1_score(truth, pred, labels=LABELS, average="macro", zero_division=0))
            )
        conds.append(Condition(name, name, {}, "x", runs))
    return conds


def test_a_verdict_on_macro_f1_picks_the_method_that_finds_the_rare_class():
    (by_accuracy,) = analyse(_two_methods(), AnalysisSettings())
    (by_f1,) = analyse(_two_methods(), AnalysisSettings(metric="macro_f1"))
    assert by_accuracy.best == "ignores" and by_f1.best == "finds"
    assert "validation accuracy" in by_accuracy.lines[0] and "validation macro-F1" in by_f1.lines[0]
    table = by_f1.table.set_index("condition")
    for name in ("ignores", "finds"):
        f1 = table.loc[name, "macro_f1"]
        assert table.loc[name, "macro_f1_ci_low"] < f1 < table.loc[name, "macro_f1_ci_high"]
    # the pairs and the decision are macro-F1 differences: exactly the difference of the seed-averaged macro-F1s
    pair = by_f1.pairs.iloc[0]
    gap = table.loc[pair.a, "macro_f1"] - table.loc[pair.b, "macro_f1"]
    assert pair["diff"] == pytest.approx(gap, abs=1e-6)
    decision = by_f1.decisions.set_index(["condition", "against"]).loc[("ignores", "pick")]
    assert decision["diff"] == pytest.approx(
        table.loc["ignores", "macro_f1"] - table.loc["finds", "macro_f1"], abs=1e-6
    )
    assert decision.significant and decision.ci_high < -0.1
    # F1 per class with its interval: on the rare class (1 to 3 of its 50 examples found by "ignores", 41 to 43 by
    # "finds") the intervals hold each estimate and lie far apart
    classes = by_f1.per_class.set_index(["condition", "class"])
    ignores, finds = classes.loc[("ignores", "rare")], classes.loc[("finds", "rare")]
    assert (
        0
        <= ignores.f1_ci_low
        < ignores.f1
        < ignores.f1_ci_high
        < 0.3
        < finds.f1_ci_low
        < finds.f1
        < finds.f1_ci_high
        <= 1
    )
    assert "macro-F1 points" in " ".join(by_f1.lines) and "macro-F1" not in " ".join(by_accuracy.lines)
    # the majority class (predicts "common" for all) has macro-F1 (2 x 0.7 / 1.7) / 3 and is beaten by both
    base = by_f1.table[by_f1.table.method == "baseline"].iloc[0]
    assert base.macro_f1 == pytest.approx(2 * 0.7 / 1.7 / 3, abs=1e-6)
    assert table.beats_baseline.sum() == 2


def _trial(k, lr, accuracy, macro_f1, metric):
    config = f"train:\n  lr: {lr}\n  metric_for_best: {metric}\n"
    return {
        "run_id": f"lora-tune{k}",
        "variant": "lora",
        "status": "done",
        "params": f'{{"trial": {k}, "train.lr": {lr}}}',
        "metrics": f'{{"validation": {{"accuracy": {accuracy}, "macro_f1": {macro_f1}}}}}',
        "config_yaml": config,
    }


@pytest.mark.parametrize("metric, chosen_lr", [("accuracy", 0.001), ("macro_f1", 0.003)])
def test_the_report_marks_the_trial_the_tuning_chose(metric, chosen_lr):
    """The tuning phase picks a rate on train.metric_for_best; the report's `chosen` marks that same trial (it used
    to mark the best on accuracy whatever the study stopped on)."""
    rows = [_trial(1, 0.001, 0.90, 0.60, metric), _trial(2, 0.003, 0.88, 0.75, metric)]
    frame = tuning_trials(rows)
    assert frame[frame.chosen].lr.tolist() == [chosen_lr]
    assert best_trial(rows)["lr"] == chosen_lr


def test_a_study_deciding_on_macro_f1_while_training_stops_on_accuracy_is_told():
    tree = {
        "name": "s",
        "base": {"model": {"name": "tiny_bert"}, "data": {"name": "toy"}},
        "variants": {"head": {"method": {"name": "head"}}},
        "seeds": [1, 2],
        "analysis": {"metric": "macro_f1"},
    }
    spec = spec_from_dict(tree)
    note = metric_note(spec, expand(spec))
    assert "analysis.metric is macro_f1 but 2 of 2 runs" in note and "metric_for_best: macro_f1" in note
    tree["base"]["train"] = {"metric_for_best": "macro_f1"}
    spec = spec_from_dict(tree)
    assert metric_note(spec, expand(spec)) is None
    with pytest.raises(Exception, match="metric"):
        spec_from_dict({**tree, "analysis": {"metric": "f1"}})
