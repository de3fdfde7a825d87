"""Error analysis and calibration checked against values computed by hand on small fixed inputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy.stats import hypergeom

from tuneoff.analysis.groups import Condition
from tuneoff.analysis.mistakes import (
    confident_errors,
    disagreements,
    error_overlap,
    error_shares,
    probability_gaps,
    word_rank_stability,
    word_statistics,
)
from tuneoff.analysis.significance import expected_calibration_error, pareto_front


def test_ece_by_hand():
    # Two bins used: conf 0.9 (2 examples, 1 right: |0.5 - 0.9| = 0.4) and conf 0.6 (2 examples, both right:
    # |1 - 0.6| = 0.4). ECE = 2/4 * 0.4 + 2/4 * 0.4 = 0.4.
    ece, bins = expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1]))
    assert ece == pytest.approx(0.4)
    assert list(bins["count"]) == [2, 2] and list(bins["accuracy"]) == [1.0, 0.5]
    # Perfect calibration: confidence equals accuracy in every bin.
    assert expected_calibration_error(np.array([1.0, 1.0, 0.5, 0.5]), np.array([1, 1, 1, 0]))[0] == pytest.approx(0.0)


def test_pareto_front_by_hand():
    points = [("full", 0.90, 100.0), ("lora", 0.89, 40.0), ("head", 0.70, 5.0), ("bad", 0.85, 60.0)]
    assert pareto_front(points) == {"full", "lora", "head"}  # "bad" is beaten by lora on both


def _condition(rows, name="m", seeds=1, pair=False):
    cols = ["id", "text", "true_label", "pred_label", "prob_a", "prob_b"]
    preds = pd.DataFrame(rows, columns=cols)
    if pair:
        preds.insert(2, "text_pair", ["" for _ in rows])
    runs = [
        {"seed": s + 1, "predictions": preds.copy(), "metrics": {}, "resources": {}, "history": []}
        for s in range(seeds)
    ]
    return Condition(name, name, {}, name, runs)


ROWS = [
    ("1", "terrible awful plot", "a", "b", 0.2, 0.8),
    ("2", "awful boring", "a", "b", 0.4, 0.6),
    ("3", "the awful acting", "b", "a", 0.7, 0.3),
    ("4", "great fun", "a", "a", 0.9, 0.1),
    ("5", "great plot", "b", "b", 0.1, 0.9),
    ("6", "awful great", "b", "b", 0.2, 0.8),
]


def test_shares_gaps_and_confident_errors_by_hand():
    c = _condition(ROWS, seeds=2)
    s = error_shares(c)
    assert s["errors_per_seed"] == 3
    assert s["from_share"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert s["to_share"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3)}
    # p(pred) - p(true) on the misclassified: 0.8-0.2, 0.6-0.4, 0.7-0.3, in each of the 2 seeds.
    assert sorted(probability_gaps(c)) == pytest.approx(sorted([0.6, 0.2, 0.4] * 2))
    top = confident_errors(c, k=2)
    assert list(top["id"]) == ["1", "3"] and list(top["probability"]) == [0.8, 0.7]  # each example once


def test_words_need_counts_and_leave_out_stop_words():
    c = _condition(ROWS)
    table = word_statistics(c, min_count=2)
    # Only "awful" occurs in >= 2 errors ("the" is a stop-word). In 3 of 3 errors and 1 of 3 correct examples.
    assert list(table["word"]) == ["awful"]
    row = table.iloc[0]
    assert (row.in_errors, row.in_correct) == (3, 1)
    assert row.ratio == pytest.approx(((3 + 1) / 4) / ((1 + 1) / 4))  # add-one smoothed: 2.0
    # Fisher's exact one-sided p: P(X >= 3) for X ~ hypergeometric(6 examples, 4 with the word, 3 errors drawn).
    assert row.p_value == pytest.approx(hypergeom(6, 4, 3).sf(2))
    assert not row.supported  # p = 0.2: six examples do not support any word
    assert word_statistics(c, min_count=5).empty


def test_words_read_both_texts_of_a_pair():
    rows = [(str(i), "same premise", "a", "b" if i < 8 else "a", 0.4, 0.6) for i in range(16)]
    c = _condition(rows, pair=True)
    c.runs[0]["predictions"]["text_pair"] = ["cats sleep" if i < 8 else "dogs bark" for i in range(16)]
    table = word_statistics(c, min_count=5).set_index("word")
    assert {"cats", "sleep"} <= set(table.index)
    assert table.loc["cats", "in_errors"] == 8 and table.loc["cats", "in_correct"] == 0
    assert bool(table.loc["cats", "supported"])  # 8 of 8 errors, 0 of 8 correct: p = 1 / C(16, 8)
    stability = word_rank_stability({"x": table.reset_index(), "y": table.reset_index()})
    assert stability["mean"] is None or stability["mean"] == pytest.approx(1.0)


def test_word_rank_stability_by_hand_and_undefined_pairs():
    import warnings

    x = pd.DataFrame({"word": ["a", "b", "c"], "rank": [1, 2, 3]})
    y = pd.DataFrame({"word": ["c", "b", "a"], "rank": [1, 2, 3]})
    z = pd.DataFrame({"word": ["d", "e", "f"], "rank": [1, 2, 3]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an undefined correlation is skipped, not computed with a warning
        out = word_rank_stability({"x": x, "y": y, "z": z})
    # x, y: the same three words in reverse order, rho = -1. x, z: no shared word, so over the union a..f x ranks
    # [1, 2, 3, 4, 4, 4] and z [4, 4, 4, 1, 2, 3] (a word a side never tested ranks last); as midranks [1, 2, 3, 5, 5, 5]
    # and [5, 5, 5, 1, 2, 3], Pearson's r = -13.5 / 15.5 = -27/31.
    assert out["pairs"][("x", "y")] == pytest.approx(-1.0)
    assert out["pairs"][("x", "z")] == pytest.approx(-27 / 31)
    # A side with only tied ranks (it ranks none of the words) gives no value at all.
    empty = pd.DataFrame({"word": pd.Series([], dtype=str), "rank": pd.Series([], dtype=int)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert word_rank_stability({"x": x, "e": empty}) == {"mean": None, "pairs": {}}


def test_overlap_and_disagreements_by_hand():
    c = _condition(ROWS, name="m")
    other = _condition([(i, t, y, "a", 0.9, 0.1) for i, t, y, *_ in ROWS], name="n")  # always predicts a
    overlap = error_overlap([c, other])
    # m wrong on {1,2,3}, n wrong on {3,5,6}: shared {3}, union 5.
    assert overlap.iloc[0].to_dict() == {"a": "m", "b": "n", "errors_a": 3, "errors_b": 3, "shared": 1, "jaccard": 0.2}
    dis = disagreements([c, other])
    assert set(dis["id"]) == {"1", "2", "5", "6"}
    assert dis.set_index("id").loc["1", "right"] == "n" and dis.set_index("id").loc["5", "wrong"] == "n"


def _trial_row(variant, cell, trial, lr, accuracy, status="done"):
    suffix = "".join(f"-{v}" for v in cell.values())
    return {
        "run_id": f"{variant}{suffix}-tune{trial}",
        "variant": variant,
        "status": status,
        "params": json.dumps({**cell, "train.lr": lr, "trial": trial}),
        "metrics": json.dumps({"validation": {"accuracy": accuracy}, "best_step": 10}),
        "config_yaml": yaml.safe_dump({"train": {"lr": lr}}),
    }


def test_tuning_is_drawn_one_plot_per_grid_cell_in_a_palette_png():
    """A study over sizes tunes each method once per size: one plot per cell holds only the methods a reader compares
    there (one plot of every cell drew 32 curves in 10 repeating colours under a legend that covered them)."""
    import base64
    import io
    import re

    from PIL import Image

    from tuneoff.analysis.tuning import expected_best, tuning_trials
    from tuneoff.report.sections import tuning_html

    rows = [
        _trial_row(v, {"data.max_train_samples": n}, k, lr, acc)
        for n in (100, 300)
        for v in ("head", "lora")
        for k, (lr, acc) in enumerate([(1e-3, 0.6), (1e-2, 0.7)])
    ]
    trials = tuning_trials(rows)
    assert list(dict.fromkeys(trials.cell)) == ["data.max_train_samples=100", "data.max_train_samples=300"]
    assert trials[trials.chosen].lr.tolist() == [1e-2] * 4, "each condition's best trial on validation"
    html = tuning_html(trials, expected_best(trials))
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(images) == 2
    image = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert image.mode == "P" and image.width > 1000, "quantised to a palette, at full size"
    # Without a grid the cell is empty and every condition shares one plot.
    single = tuning_trials([_trial_row(v, {}, 0, 1e-3, 0.6) for v in ("head", "lora")])
    assert single.cell.tolist() == ["", ""]
    assert len(re.findall("data:image/png", tuning_html(single, expected_best(single)))) == 1


def test_plots_name_conditions_by_what_differs_within_their_group():
    from tuneoff.report.plots import short_names

    sized = ["lora_r8 max_train_samples=300 data=bbc_news", "full max_train_samples=300 data=bbc_news"]
    assert short_names(sized) == {sized[0]: "lora_r8", sized[1]: "full"}
    swept = ["lora r=8 lr=0.001", "lora r=16 lr=0.001"]  # the variant stays, though both share it
    assert short_names(swept) == {swept[0]: "lora r=8", swept[1]: "lora r=16"}
    assert short_names(["head", "full"]) == {"head": "head", "full": "full"}
    alike = ["a x=1 y=2", "a y=2 x=1"]  # dropping the shared words would leave two "a": keep the full names
    assert short_names(alike) == {n: n for n in alike}


def test_by_class_lines_conditions_up_per_class_with_test_support():
    from tuneoff.analysis.groups import by_class

    classes = pd.DataFrame(
        {
            "condition": ["lora"] * 2 + ["full"] * 2,
            "class": ["ship", "grain"] * 2,
            "precision": [1.0, 0.0, 1.0, 0.9],
            "recall": [0.5, 0.0, 1.0, 0.9],
            "f1": [2 / 3, 0.0, 1.0, 0.9],
            "support": [36.0, 10.0, 36.0, 10.0],
        }
    )
    table = by_class(classes)
    assert list(table.columns) == ["class", "lora", "full", "test_examples"], "label and group order, not sorted"
    assert table["class"].tolist() == ["ship", "grain"]
    assert table.loc[1, ["lora", "full", "test_examples"]].tolist() == [0.0, 0.9, 10]
    assert by_class(classes, "recall").loc[0, ["lora", "full"]].tolist() == [0.5, 1.0]
