"""Statistics checked against values computed by hand on small fixed inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tuneoff.analysis import (Condition, bootstrap_ci, error_analysis, error_overlap, expected_calibration_error,
                              mcnemar_exact, paired_bootstrap_diff, pareto_front)


def test_mcnemar_exact_by_hand():
    # a right & b wrong on 1 example, a wrong & b right on 6: exact two-sided p = 2 * P(X <= 1 | n=7, 1/2)
    #   = 2 * (C(7,0) + C(7,1)) / 2^7 = 2 * 8 / 128 = 0.125
    a = np.array([1] * 10 + [1] + [0] * 6 + [0] * 3)
    b = np.array([1] * 10 + [0] + [1] * 6 + [0] * 3)
    res = mcnemar_exact(a, b)
    assert res["table"] == [[10, 1], [6, 3]]
    assert res["p_value"] == pytest.approx(0.125)
    # b = c = 0: identical correctness, no evidence of a difference.
    assert mcnemar_exact(a, a)["p_value"] == 1.0


def test_ece_by_hand():
    # Two bins used: conf 0.9 (2 examples, 1 right: |0.5 - 0.9| = 0.4) and conf 0.6 (2 examples, both right:
    # |1 - 0.6| = 0.4). ECE = 2/4 * 0.4 + 2/4 * 0.4 = 0.4.
    ece, bins = expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 0, 1, 1]))
    assert ece == pytest.approx(0.4)
    assert list(bins["count"]) == [2, 2] and list(bins["accuracy"]) == [1.0, 0.5]
    # Perfect calibration: confidence equals accuracy in every bin.
    assert expected_calibration_error(np.array([1.0, 1.0, 0.5, 0.5]), np.array([1, 1, 1, 0]))[0] == pytest.approx(0.0)


def test_bootstrap_cis():
    values = np.array([1] * 80 + [0] * 20, dtype=float)
    lo, hi = bootstrap_ci(values)
    assert lo < 0.8 < hi and hi - lo < 0.2
    # The normal-approximation 95% interval is 0.8 +- 1.96 * sqrt(0.8 * 0.2 / 100) = [0.72, 0.88]; BCa is close.
    assert lo == pytest.approx(0.72, abs=0.025) and hi == pytest.approx(0.88, abs=0.025)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
    diff, lo, hi = paired_bootstrap_diff(values, values)
    assert (diff, lo, hi) == (0.0, 0.0, 0.0)
    better = values.copy()
    better[80:95] = 1  # 15 more right out of 100
    diff, lo, hi = paired_bootstrap_diff(better, values)
    assert diff == pytest.approx(0.15) and 0.05 < lo < 0.15 < hi


def test_pareto_front_by_hand():
    points = [("full", 0.90, 100.0), ("lora", 0.89, 40.0), ("head", 0.70, 5.0), ("bad", 0.85, 60.0)]
    assert pareto_front(points) == {"full", "lora", "head"}  # "bad" is beaten by lora on both


def _condition(rows, name="m"):
    preds = pd.DataFrame(rows, columns=["id", "text", "true_label", "pred_label", "prob_a", "prob_b"])
    return Condition(name, name, {}, name, [{"seed": 1, "predictions": preds, "metrics": {}, "resources": {}, "history": []}])


def test_error_analysis_by_hand():
    c = _condition([
        ("1", "terrible awful plot", "a", "b", 0.2, 0.8),
        ("2", "awful boring", "a", "b", 0.4, 0.6),
        ("3", "awful acting", "b", "a", 0.7, 0.3),
        ("4", "great fun", "a", "a", 0.9, 0.1),
        ("5", "great plot", "b", "b", 0.1, 0.9),
        ("6", "awful great", "b", "b", 0.2, 0.8),
    ])
    e = error_analysis(c, min_count=2)
    assert e["errors"] == 3 and e["error_ids"] == {"1", "2", "3"}
    assert e["from_share"] == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3)}
    assert e["to_share"] == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3)}
    # "awful" is in all 3 errors and 1 of 3 correct: ratio (3+1)/(3+1) / ((1+1)/(3+1)) = 2.0
    top = e["overrepresented_words"][0]
    assert (top["word"], top["in_errors"], top["in_correct"], top["ratio"]) == ("awful", 3, 1, pytest.approx(2.0))
    # Mean predicted probability of a: (0.2+0.4+0.7+0.9+0.1+0.2)/6 = 0.4166..; true share of a: 3/6.
    assert e["probability_gap"]["a"] == pytest.approx(2.5 / 6 - 0.5)
    other = error_analysis(_condition([("1", "x", "a", "b", 0.1, 0.9), ("4", "y", "a", "b", 0.1, 0.9)]), min_count=1)
    overlap = error_overlap({"m": e, "n": other})
    assert overlap.iloc[0].to_dict() == {"a": "m", "b": "n", "errors_a": 3, "errors_b": 2, "shared": 1, "jaccard": 0.25}
