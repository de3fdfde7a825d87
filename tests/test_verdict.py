"""Statistics and verdicts on synthetic predictions, each checked against a value worked out by hand (or a
normal approximation of it), and the traps the first version fell into: seed variance, direction, Holm, choosing
on test, "not significantly worse", collapsed runs, mixed datasets, memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tuneoff.analysis.groups import Condition, groups, time_to_target
from tuneoff.analysis.settings import AnalysisSettings, Decide
from tuneoff.analysis.significance import compare, expected_max, mcnemar_exact
from tuneoff.analysis.verdict import analyse
from tuneoff.training.evaluate import compute_metrics

LABELS = ["neg", "pos"]


def fake_run(
    seed,
    right,
    truth,
    val=0.8,
    conf=0.9,
    pred=None,
    dataset="d",
    model="m",
    ids=None,
    texts=None,
    resources=None,
    history=None,
    train_counts=None,
):
    """A stored run whose test predictions are right exactly where ``right`` is 1."""
    n = len(truth)
    ids = ids or [f"x{i}" for i in range(n)]
    other = {"neg": "pos", "pos": "neg"}
    if pred is None:
        pred = [t if r else other[t] for t, r in zip(truth, right)]
    p_pos = np.array([conf if p == "pos" else 1 - conf for p in pred])
    frame = pd.DataFrame(
        {
            "id": ids,
            "text": texts or [f"text {i}" for i in range(n)],
            "true_label": truth,
            "pred_label": pred,
            "prob_neg": 1 - p_pos,
            "prob_pos": p_pos,
        }
    )
    logits = np.log(np.stack([1 - p_pos, p_pos], axis=1))
    test = compute_metrics([LABELS.index(t) for t in truth], logits, LABELS)
    res = {
        "trainable_params": 1000,
        "trainable_pct": 1.0,
        "checkpoint_bytes": 4_000_000,
        "trained_bytes": 4000,
        "peak_rss_mb": 1000.0,
        "train_seconds": 100.0,
        "train_samples_per_s": 10.0,
        **(resources or {}),
    }
    counts = train_counts or {"neg": 600, "pos": 400}
    return {
        "run_id": f"r{seed}",
        "seed": seed,
        "predictions": frame,
        "history": history or [],
        "metrics": {"test": test, "validation": {"accuracy": val, "macro_f1": val}},
        "resources": res,
        "device": "cpu",
        "config": {"model": {"name": model}, "data": {"name": dataset}, "method": {"name": "x"}},
        "info": {"dataset": dataset, "label_counts": {"train": counts}},
    }


def truth_of(n, pos_share=0.4):
    return ["pos" if i < pos_share * n else "neg" for i in range(n)]


def rights(n, k, seed):
    """0/1 vector with exactly k ones at random places."""
    r = np.zeros(n, dtype=int)
    r[np.random.default_rng(seed).choice(n, k, replace=False)] = 1
    return r


def condition(name, method, runs):
    return Condition(name, name, {}, method, runs)


def test_one_seed_ci_with_no_seed_variance_is_the_t_interval_of_the_examples():
    # 320 of 400 right: 0.8 +- t(399) sqrt(0.8 * 0.2 / 399) = 0.8 +- 1.966 * 0.02003 = [0.7606, 0.8394].
    res = compare({"a": rights(400, 320, 0)[:, None]}, assumed_sd=0.0)
    lo, hi = res.interval("a")
    assert res.estimate("a") == 0.8
    assert lo == pytest.approx(0.7606, abs=5e-4) and hi == pytest.approx(0.8394, abs=5e-4)


def test_one_seed_assumes_the_seed_variance_instead_of_ignoring_it():
    # With one seed the seed part cannot be measured: the largest seed sd any committed study measured (8.3 points) is
    # taken as a known bound, sd sqrt(0.0004 + 0.083^2) = 0.0840, a normal quantile (no degrees of freedom to lose).
    res = compare({"a": rights(400, 320, 0)[:, None]})
    lo, hi = res.interval("a")
    assert res.seeds.assumed and hi - lo == pytest.approx(
        2 * 1.96 * np.sqrt(0.8 * 0.2 / 399 / 1 + 0.083**2 / 1), abs=2e-3
    )


def test_four_seeds_ci_carries_the_seed_spread_with_a_t_quantile():
    # Four seeds at 0.70 / 0.75 / 0.80 / 0.85 on 20,000 examples: the ANOVA seed variance is var(0.70..0.85) minus
    # the interaction's share (about 0.19 / 20,000), 0.0041667 - 0.0000094 = 0.004157; the mean's sd sqrt(0.004157 / 4)
    # = 0.03224 (the test part, 0.17 / 20,000, is negligible), on 3 degrees of freedom (t = 3.182): 0.775 +- 0.1026.
    n = 20_000
    m = np.stack([rights(n, int(a * n), s) for s, a in enumerate([0.70, 0.75, 0.80, 0.85])], axis=1)
    res = compare({"a": m})
    assert res.seeds.df == 3 and res.seeds.tau2 == pytest.approx(0.004157, abs=2e-5)
    lo, hi = res.interval("a")
    assert lo == pytest.approx(0.775 - 0.1026, abs=0.003) and hi == pytest.approx(0.775 + 0.1026, abs=0.003)


def test_an_accuracy_interval_never_passes_100_percent():
    """97% on 206 examples with a wide seed spread (the method zoo's BBC News case): the t interval is clipped to what
    an accuracy can be, the lower end unchanged."""
    n = 206
    mat = np.stack([rights(n, k, s) for s, k in ((1, 200), (2, 185), (3, 204))], axis=1)
    res = compare({"a": mat})
    low, high = res.interval("a")
    assert high == 1.0 and 0.8 < low < res.estimate("a")
    d = compare({"a": mat, "b": np.zeros_like(mat)}).difference("a", "b")
    assert d["ci_high"] <= 1.0


def test_paired_difference_by_hand():
    # a alone right on 62 examples, b alone on 39, of 1,000: diff 0.023, per-example sd sqrt((101/1000 - 0.023^2) *
    # 1000/999) = 0.31715, se 0.010029, t(999) 1.9623: 95% CI [0.0033, 0.0427]; p = 2 P(T > 2.2934) = 0.0220.
    a, b = np.zeros(1000), np.zeros(1000)
    a[:700] = b[:700] = 1
    a[700:762] = 1
    b[762:801] = 1
    d = compare({"a": a[:, None], "b": b[:, None]}, assumed_sd=0.0).difference("a", "b")
    assert d["diff"] == pytest.approx(0.023)
    assert d["ci_low"] == pytest.approx(0.0033, abs=2e-4) and d["ci_high"] == pytest.approx(0.0427, abs=2e-4)
    assert d["p_value"] == pytest.approx(0.0220, abs=5e-4) and d["df"] == pytest.approx(999)


def test_seed_variance_is_not_called_significant():
    """The issue's case: A's seeds 88.9% and 71.3%, B's 78.2% and 78.9%. Averaging A's seeds per example and
    testing examples only calls A better; counting the seed variance does not, and A's CI holds both its seeds."""
    n = 4000
    a = np.stack([rights(n, int(0.889 * n), 1), rights(n, int(0.713 * n), 2)], axis=1)
    b = np.stack([rights(n, int(0.782 * n), 3), rights(n, int(0.789 * n), 4)], axis=1)
    naive = compare({"a": a.mean(1, keepdims=True), "b": b.mean(1, keepdims=True)}, assumed_sd=0.0).difference("a", "b")
    assert naive["ci_low"] > 0, "the trap: examples only, seed-averaged correctness, says 'significant'"
    res = compare({"a": a, "b": b})
    d = res.difference("a", "b")
    assert d["ci_low"] < 0 < d["ci_high"] and d["p_value"] > 0.05
    assert d["seed"] > d["test"], "both conditions' seed variance counts, and here it dominates"
    lo, hi = res.interval("a")
    assert lo < 0.713 and hi > 0.889


def _seeds_at(n, accuracies, first_seed):
    return np.stack([rights(n, int(a * n), first_seed + s) for s, a in enumerate(accuracies)], axis=1)


def test_an_erratic_condition_neither_widens_the_others_nor_borrows_their_calm():
    """Prompt tuning's seeds spanned 16 points in the method zoo, LoRA's one: a seed variance pooled over the group
    made every stable pair's interval wider and the erratic one's too narrow. Each condition's seed variance is its
    own: a stable pair's difference is the same with or without the erratic condition in the group, and the
    erratic one's difference carries its own spread, on its own few degrees of freedom."""
    n = 2000
    a, b = _seeds_at(n, [0.80, 0.81, 0.80], 10), _seeds_at(n, [0.78, 0.79, 0.785], 20)
    erratic = _seeds_at(n, [0.64, 0.80, 0.72], 30)
    alone, crowded = compare({"a": a, "b": b}), compare({"a": a, "b": b, "e": erratic})
    assert crowded.difference("a", "b") == alone.difference("a", "b")
    assert crowded.interval("a") == alone.interval("a")
    d = crowded.difference("a", "e")
    own = compare({"e": erratic}).seeds.tau2 / 3 + compare({"a": a}).seeds.tau2 / 3
    assert d["seed"] == pytest.approx(own)
    assert d["seed"] > 1.3 * crowded.seeds.tau2 * (1 / 3 + 1 / 3), "pooled over the group it would be diluted"
    assert d["df"] < 3, "the erratic condition's 2 degrees of freedom dominate; the stable one's are not lent to it"


def test_a_one_seed_condition_is_given_the_largest_measured_seed_spread_not_a_neighbours():
    """A one-seed condition measures nothing: borrowing the seed variance of the condition it is compared with
    assumed it scatters as that one does (prompt tuning's seeds spanned 16 points beside LoRA's 1). It is taken as the
    largest seed sd any committed study measured (8.3 points), a known bound: no degrees of freedom of its own."""
    n = 2000
    a = _seeds_at(n, [0.70, 0.80, 0.75], 40)
    single = _seeds_at(n, [0.74], 50)
    cmp = compare({"a": a, "one": single, "b": _seeds_at(n, [0.75, 0.751, 0.752], 60)})
    d = cmp.difference("a", "one")
    assert d["seed"] == pytest.approx(compare({"a": a}).seeds.tau2 / 3 + 0.083**2)
    assert cmp.seeds_of("one").assumed and not cmp.seeds_of("a").assumed
    test, own = d["test"], compare({"a": a}).seeds
    # a's part is a difference of mean squares, (MS_seed - MS_res) / n, charged the noise of each (Satterthwaite)
    term = (1 / 3 / n) ** 2 * (own.ms_seed**2 / 2 + own.ms_res**2 / own.df_res)
    by_hand = (test + d["seed"]) ** 2 / (test**2 / (n - 1) + term)
    assert own.variance_of(1 / 3) == pytest.approx(term)
    assert d["df"] == pytest.approx(max(by_hand, 2)), "the assumed part adds variance, no degrees of freedom"


def test_the_prior_only_ever_raises_a_seed_variance():
    """Smyth's moderation toward what earlier studies measured (SEED_PRIOR): two seeds that land on the same accuracy
    get the prior's share, (d tau2 + d0 s0^2) / (d + d0) on d + d0 degrees of freedom; a condition whose seeds scatter
    more than the prior keeps its own estimate and its own degrees of freedom."""
    from tuneoff.analysis.significance import SEED_PRIOR, seed_variance

    prior = SEED_PRIOR["accuracy"]
    n = 2000
    close = _seeds_at(n, [0.80, 0.80], 70)
    raw = seed_variance({"c": close}).tau2
    moderated = seed_variance({"c": close}, prior=prior)
    assert moderated.tau2 == pytest.approx((1 * raw + prior.df * prior.sd**2) / (1 + prior.df))
    assert moderated.df == pytest.approx(1 + prior.df) and moderated.tau2 > 2e-4
    wide = _seeds_at(n, [0.70, 0.80, 0.75], 80)
    own = seed_variance({"c": wide})
    assert seed_variance({"c": wide}, prior=prior) == own and own.df == 2


def test_two_conditions_whose_seeds_flip_the_same_examples_keep_the_seed_degrees_of_freedom():
    """LoRA and DoRA at r=8 in the method zoo, trained with the same seeds, flip the same examples: the test part of
    their difference lacks the interaction each seed part subtracts. An earlier version charged each seed part the noise
    of its seed mean square and its df fell to 0.82 (an interval of +-11 points for seed accuracies within 2 points).
    Each seed part is a scaled chi-square on its own S - 1 degrees of freedom, so the sum's are never fewer than 2."""
    n, rng = 1000, np.random.default_rng(3)
    hard = rng.random(n) < 0.35  # examples a seed may get wrong
    a = np.ones((n, 3))
    for s, wrong in enumerate((215, 211, 196)):  # seed accuracies 0.785 / 0.789 / 0.804
        a[rng.choice(np.flatnonzero(hard), wrong, replace=False), s] = 0
    b = a.copy()
    for s in range(3):  # the other method, same seed: 4 to 6 examples differ
        b[rng.choice(n, 5, replace=False), s] = 1
    cmp = compare({"a": a, "b": b})
    d = cmp.difference("a", "b")
    assert d["seed"] > 0 and d["test"] > 0
    assert d["df"] >= 2.0
    assert d["ci_high"] - d["ci_low"] < 0.05, "not an interval of +-11 points"
    assert cmp.interval("a")[1] - cmp.interval("a")[0] < 0.1


def test_calibration_holds_for_conditions_trained_with_the_same_seeds():
    """bench/calibration.py's correlated slice: two conditions as alike as LoRA and DoRA (seed shifts and flips
    correlated 0.9): the false-positive rate stays at most about 5% (300 studies: at most 9%) and the interval covers."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration import _slope, simulate_correlated

    rng = np.random.default_rng(13)
    result = simulate_correlated(1000, 3, 0.01, 0.9, 300, rng, _slope(rng))
    assert result["fp"] <= 0.09 and result["covered"] >= 0.91, result
    assert result["fp_unmoderated"] <= 0.09, result


def test_calibration_of_one_condition_s_intervals():
    """bench/calibration.py's single-condition slice. Its truth by hand: at 80% right and no seed spread the rarest
    class (10%, a wrong prediction one of the 2 other classes) has TP 0.08, FN 0.02, FP 0.9 x 0.2 / 2 = 0.09, so F1
    0.16 / 0.27. With 3 seeds scattering 3 points its accuracy and rarest-class F1 intervals cover about 93% (300
    studies: at least 0.88); with 2 seeds the accuracy interval covers less (the file: 87-89%)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration import _rare_class_truth, _slope, simulate_single

    rng = np.random.default_rng(17)
    accuracy, rare_f1 = _rare_class_truth(0.0, (0.6, 0.3, 0.1), rng)
    assert accuracy == pytest.approx(0.8, abs=0.003)
    assert rare_f1 == pytest.approx(
        2 * 0.1 * accuracy / (2 * 0.1 * accuracy + 0.9 * (1 - accuracy) / 2 + 0.1 * (1 - accuracy))
    )
    assert rare_f1 == pytest.approx(0.16 / 0.27, abs=0.003)
    result = simulate_single(1000, 3, 0.03, 300, rng, _slope(rng))
    assert result["coverage_accuracy"] >= 0.88 and result["coverage_rare_f1"] >= 0.88, result
    assert result["half_width_rare_f1"] > result["half_width_accuracy"], "a rare class's F1 rests on few examples"


def test_memory_is_bounded_at_25000_examples():
    n = 25_000
    mats = {f"c{i}": np.stack([rights(n, 20_000 + 100 * i + s, s) for s in range(3)], axis=1) for i in range(6)}
    tracemalloc.start()
    res = compare(mats)
    d = res.difference("c0", "c5")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 100 * 2**20, f"{peak / 2**20:.0f} MB"
    assert res.interval("c0")[0] < res.estimate("c0") < res.interval("c0")[1] and d["ci_low"] < d["diff"] < d["ci_high"]


def test_calibration_slice_holds_the_error_rates():
    """A fast slice of bench/calibration.py: null studies with 2 and 3 seeds, seed sd 0 and 3 points: the false-positive
    rate stays at most about 5% (here 300 studies each: Monte Carlo sd 1.3 points, so the bound is 9%)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration import simulate

    rng = np.random.default_rng(7)
    for n, seeds, sd in ((400, 2, 0.0), (400, 2, 0.03), (1000, 3, 0.03), (400, 1, 0.05)):
        result = simulate(n, seeds, sd, 300, rng=rng)
        assert result["false_positive_rate"] <= 0.09, result
    assert simulate(400, 3, 0.03, 200, shift=0.06, rng=rng)["coverage"] >= 0.9


def test_calibration_holds_with_one_erratic_condition():
    """bench/calibration.py's erratic slice: 8 conditions, 3 seeds, one whose seeds scatter 8 points against the
    others' 1. The interval against it still covers the truth about 95% of the time (200 studies: at least 0.9); a
    seed variance pooled over the group would not (about 0.8: why it is estimated per condition)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    from calibration import _slope, simulate_erratic

    rng = np.random.default_rng(11)
    result = simulate_erratic(400, 3, 8, 200, rng, _slope(rng))
    assert result["coverage_erratic"] >= 0.9 and result["coverage_stable"] >= 0.9, result
    assert result["coverage_erratic_pooled"] < 0.85, result


def test_mcnemar_direction_by_hand():
    a = np.array([1] * 10 + [1] + [0] * 6 + [0] * 3)
    b = np.array([1] * 10 + [0] + [1] * 6 + [0] * 3)
    t = mcnemar_exact(a, b)
    # exact two-sided p = 2 * (C(7,0) + C(7,1)) / 2^7 = 0.125; b alone was right 6 times to a's 1.
    assert t["table"] == [[10, 1], [6, 3]] and t["p_value"] == pytest.approx(0.125) and t["favours"] == "b"
    assert mcnemar_exact(a, a)["favours"] is None and mcnemar_exact(a, a)["p_value"] == 1.0


def test_multiple_comparisons_with_the_best_by_hand():
    """Hsu's constrained MCB intervals on three conditions at 0.80 / 0.79 / 0.75, every pair's standard error 0.01 on
    infinite df: the one-sided quantile at 0.05 / 2 is 1.96, so U_a = 0.0296, U_b = 0.0096 (both may be the best),
    U_c = 0 (c is not); L_a = 0.01 - 0.0196, L_b = -0.01 - 0.0196, L_c = -0.04 - 0.0196 - 0.01. Within a 1-point
    margin of the best: a only. c's adjusted p of not being the best: 2 x P(Z > 5)."""
    from scipy import stats

    from tuneoff.analysis import best

    means = {"a": 0.80, "b": 0.79, "c": 0.75}

    class Fixed:
        def difference(self, i, j):
            return {"diff": means[i] - means[j], "se": 0.01, "df": float("inf")}

    frame = best.with_the_best(Fixed(), ["a", "b", "c"], 0.05).set_index("condition")
    z = stats.norm.ppf(1 - 0.025)
    assert frame.best_high.tolist() == pytest.approx([0.01 + 0.01 * z, -0.01 + 0.01 * z, 0.0])
    assert frame.in_best_set.tolist() == [True, True, False]
    assert frame.best_low.tolist() == pytest.approx([0.01 - 0.01 * z, -0.01 - 0.01 * z, -0.05 - 0.01 * z])
    assert [best.as_good(r, 0.01) for _, r in frame.iterrows()] == [True, False, False]
    assert frame.loc["c", "p_not_best"] == pytest.approx(2 * stats.norm.sf(5.0))
    assert not best.is_decided_best(frame.reset_index(), "a")
    means["b"] = 0.70  # now a alone is in the set: the best, its lower bound 0
    alone = best.with_the_best(Fixed(), ["a", "b", "c"], 0.05)
    assert best.is_decided_best(alone, "a") and best.lower_bound(alone, "a") == 0.0


def test_expected_maximum_by_hand():
    # Dodge et al. (2019): values 0.6, 0.7, 0.9. n = 1: the mean, 0.7333; n = 2: sum v_i ((i/3)^2 - ((i-1)/3)^2) =
    # 0.6 / 9 + 0.7 * 3 / 9 + 0.9 * 5 / 9 = 0.8; growing to the maximum.
    e = expected_max([0.9, 0.6, 0.7], [1, 2, 50])
    assert (
        e[0] == pytest.approx(0.7333, abs=1e-4) and e[1] == pytest.approx(0.8) and e[2] == pytest.approx(0.9, abs=1e-6)
    )


def test_time_to_target_by_hand():
    h = [
        {"step": 10, "val_accuracy": 0.50, "seconds": 5.0},
        {"step": 20, "val_accuracy": 0.77, "seconds": 10.0},
        {"step": 30, "val_accuracy": 0.80, "seconds": 15.0},
        {"step": 40, "val_accuracy": 0.79, "seconds": 20.0},
    ]
    # best 0.80: 95% = 0.76 first reached at step 20; 99% = 0.792 at step 30.
    assert time_to_target(h) == {"steps_to_95": 20, "seconds_to_95": 10.0, "steps_to_99": 30, "seconds_to_99": 15.0}


def _study(pairs_of_rights, n, vals, methods=None, **kw):
    truth = truth_of(n)
    out = []
    for i, (name, rs) in enumerate(pairs_of_rights.items()):
        runs = [fake_run(s + 1, r, truth, val=vals[name], **kw.get(name, {})) for s, r in enumerate(rs)]
        out.append(condition(name, (methods or {}).get(name, name), runs))
    return out


EXACT = AnalysisSettings(assumed_seed_sd=0.0)  # one seed each, no seed variance assumed: test sampling only


def test_holm_runs_over_the_comparisons_with_the_pick_and_over_those_with_the_baseline():
    """Two families: each condition against the pick (Holm over the group's), and each against the majority-class
    baseline (Holm over the study's). b against the pick a (p about 0.022, as by hand above) is significant alone;
    with three near-copies of b beside it, the four comparisons with the pick share Holm's correction (4 x 0.02 >
    0.05) and none is."""
    n = 1000
    base = np.zeros(n, dtype=int)
    base[:700] = 1
    a, b = base.copy(), base.copy()
    a[700:762] = 1
    b[762:801] = 1
    alone = analyse(_study({"a": [a], "b": [b]}, n, {"a": 0.9, "b": 0.8}), EXACT)[0]
    row = alone.decisions.set_index(["condition", "against"]).loc[("b", "pick")]
    assert row.p_value == pytest.approx(0.022, abs=1e-3) and row.significant and alone.family == 2
    assert row.p_adjusted == row.p_value and row.adjustment == "Holm"
    copies = {f"c{k}": [_flip(b, 850 + k)] for k in range(3)}
    many = analyse(_study({"a": [a], "b": [b], **copies}, n, {"a": 0.9, "b": 0.8, **{k: 0.7 for k in copies}}), EXACT)[
        0
    ]
    row = many.decisions.set_index(["condition", "against"]).loc[("b", "pick")]
    assert row.p_value < 0.05 < row.p_adjusted and not row.significant and many.family == 5
    assert "exploratory" not in " ".join(many.lines)


def _flip(r, i):
    r = r.copy()
    r[i] = 1 - r[i]
    return r


def test_twelve_conditions_with_one_sixteen_point_gap_call_it():
    """No resampling floor: with 12 conditions (66 pairs; 12 comparisons with the baseline, 11 with the pick) a
    16-point gap is significant, and worse than the best by more than the margin."""
    n = 500
    runs = {f"m{k}": [rights(n, 430 + k, 10 * k + s) for s in range(2)] for k in range(11)}
    runs["bad"] = [rights(n, 350, 200 + s) for s in range(2)]
    vals = {**{f"m{k}": 0.80 + k / 1000 for k in range(11)}, "bad": 0.45}
    v = analyse(_study(runs, n, vals))[0]
    assert v.family == 12 and len(v.pairs) == 66
    row = v.decisions.set_index(["condition", "against"]).loc[("bad", "pick")]
    assert row["diff"] < -0.15 and row.p_adjusted < 1e-6 and row.significant and row.call == "worse"


def test_a_cheaper_method_ahead_on_test_is_better_by_not_within():
    n = 20_000
    truth = truth_of(n)
    full = rights(n, 18_000, 1)
    lora = full.copy()
    lora[np.flatnonzero(full == 0)[:100]] = 1  # 0.5 points above full on test, below on validation
    # ten seeds each: identical seeds are no proof of no seed variance (the prior allows for what earlier studies
    # measured); ten outweigh it enough to decide at a 1-point margin
    conds = [
        condition(
            "full", "full", [fake_run(s, full, truth, val=0.90, resources={"trainable_pct": 100.0}) for s in range(10)]
        ),
        condition(
            "lora",
            "lora",
            [
                fake_run(s, lora, truth, val=0.89, resources={"trainable_pct": 0.3, "trained_bytes": 300})
                for s in range(10)
            ],
        ),
    ]
    v = analyse(conds)[0]
    rec = next(line for line in v.lines if line.startswith("**Use"))
    assert rec.startswith("**Use lora**: within the 1-point margin of the best, whichever it is") and v.decided
    assert "+0.5 points against full on test" in rec


def test_the_test_set_contradicting_the_validation_pick_is_said():
    n = 2000
    truth = truth_of(n)
    worse_on_test = rights(n, 1500, 1)  # best on validation, 75% on test
    better_on_test = rights(n, 1640, 2)  # 82% on test
    conds = [
        condition("a", "full", [fake_run(s, worse_on_test, truth, val=0.90) for s in (1, 2)]),
        condition("b", "lora", [fake_run(s, better_on_test, truth, val=0.85) for s in (1, 2)]),
    ]
    v = analyse(conds)[0]
    assert v.best == "a"
    line = next(line for line in v.lines if "contradicts the pick" in line)
    assert line.startswith("**The test set contradicts the pick**: b is better than a on test by +7.0 points")


def test_the_best_by_default_is_not_read_as_a_finding():
    """One seed each: nothing cheaper can be shown as good or worse, so the best is the default for lack of evidence,
    and the verdict says what one seed cannot know."""
    n = 400
    truth = truth_of(n)
    conds = [
        condition(
            "full",
            "full",
            [
                fake_run(
                    1, rights(n, 330, 1), truth, val=0.84, resources={"trainable_pct": 100.0, "train_seconds": 300.0}
                )
            ],
        ),
        condition(
            "lora",
            "lora",
            [
                fake_run(
                    1,
                    rights(n, 326, 2),
                    truth,
                    val=0.83,
                    resources={"trainable_pct": 0.3, "train_seconds": 100.0, "trained_bytes": 300},
                )
            ],
        ),
    ]
    v = analyse(conds)[0]
    rec = next(line for line in v.lines if line.startswith("**Use"))
    assert (
        rec.startswith(
            "**Use full by default**: the pick, but this study could not decide whether cheaper lora is "
            "within the margin of the best"
        )
        and not v.decided
    )
    assert any(
        line.startswith(
            "With one seed the seed-to-seed variation cannot be measured (full, lora): it is taken "
            "as 8.3 accuracy points, the largest any committed study measured"
        )
        for line in v.lines
    )


def test_a_budget_limited_condition_without_a_history_to_judge_is_not_called_worse():
    n = 2000
    truth = truth_of(n)
    still = {"converged": False, "status": "still improving", "reason": "still improving when its budget ended"}
    done = {"converged": True, "status": "plateau", "reason": "early stopping"}
    best_runs = [fake_run(s, rights(n, 1800, s), truth, val=0.9) for s in (1, 2)]
    slow_runs = [fake_run(s, rights(n, 1500, 10 + s), truth, val=0.74) for s in (1, 2)]
    for r in best_runs:
        r["info"]["convergence"] = done
    for r in slow_runs:
        r["info"]["convergence"] = still
    conds = [condition("full", "full", best_runs), condition("lora", "lora", slow_runs)]
    v = analyse(conds)[0]
    table = v.table.set_index("condition")
    assert table.loc["lora", "vs_best"] == "budget-limited" and table.loc["lora", "budget_limited"]
    assert not any(line.startswith("Worse than") for line in v.lines)
    line = next(line for line in v.lines if line.startswith("**Budget-limited**"))
    assert (
        "lora (2 of 2 runs still improving: still improving when its budget ended)" in line and "train.epochs" in line
    )
    assert v.budget_limited == ["lora"]


def _climbing(start, per_eval, evals=8, every=25):
    return [
        {"step": every * (i + 1), "val_accuracy": start + per_eval * i, "val_macro_f1": start + per_eval * i}
        for i in range(evals)
    ]


def test_budget_limited_is_protected_only_where_a_longer_budget_could_close_the_gap():
    """A new user's head run was 17 points below the best (its whole interval far below) and never called worse
    because one run was still improving. Now: "slow" gains half a point per evaluation at the end of its 8: kept up
    for as long again, 4 points, not the 18 it is behind: worse. "steep" gains 5 points per evaluation: 40 more
    could close it: protected. Both stopped at train.max_steps, and the advice says so, not train.epochs."""
    n = 2000
    truth = truth_of(n)
    still = {"converged": False, "status": "still improving", "reason": "still improving when its budget ended"}
    done = {"converged": True, "status": "plateau", "reason": "early stopping"}
    capped = {
        "model": {"name": "m"},
        "data": {"name": "d"},
        "method": {"name": "x"},
        "train": {"max_steps": 200, "patience": 2},
    }
    best = [fake_run(s, rights(n, 1800, s), truth, val=0.9) for s in (1, 2, 3)]
    slow = [fake_run(s, rights(n, 1440, 10 + s), truth, val=0.72, history=_climbing(0.685, 0.005)) for s in (1, 2, 3)]
    steep = [fake_run(s, rights(n, 1440, 20 + s), truth, val=0.72, history=_climbing(0.37, 0.05)) for s in (1, 2, 3)]
    for r in best:
        r["info"]["convergence"] = done
    for r in slow + steep:
        r["info"]["convergence"], r["config"] = still, capped
    v = analyse([condition("full", "full", best), condition("slow", "head", slow), condition("steep", "head", steep)])[
        0
    ]
    table = v.table.set_index("condition")
    assert table.loc["slow", "budget_gain"] == pytest.approx(0.005 * 8) and table.loc["steep", "budget_gain"] > 0.3
    assert table.loc["slow", "vs_best"] == "worse" and table.loc["steep", "vs_best"] == "budget-limited"
    line = next(line for line in v.lines if line.startswith("**Budget-limited**"))
    assert "A longer budget could change the comparison of steep" in line
    assert "slow is worse than the best by more than the margin even if its runs kept their recent gain" in line
    assert "Raise train.max_steps, which ended these runs" in line and "train.epochs" not in line


def test_advice_never_asks_for_test_examples_the_data_does_not_have():
    """An open comparison says what would settle it, seeds and test examples as separate levers, each for an 80%
    chance of deciding between truly equal methods (analysis.power). At a 5-point margin on 150 test examples the test
    set limits it; more test examples are offered only where data.max_eval_samples cut the test split short: a test
    split that is all the data has no more to give."""
    n = 150
    truth = truth_of(n)

    def line(data):
        conds = []
        for i, (name, k, pct) in enumerate((("full", 124, 100.0), ("lora", 122, 0.3))):
            runs = [
                fake_run(
                    s,
                    rights(n, k, 10 * i + s),
                    truth,
                    val=0.84 - i / 100,
                    resources={"trainable_pct": pct, "train_seconds": 300.0 if i == 0 else 100.0},
                )
                for s in (1, 2, 3)
            ]
            for r in runs:
                r["config"]["data"] = data
            conds.append(condition(name, name, runs))
        verdict = analyse(conds, AnalysisSettings(margin=0.05))[0]
        return next(line for line in verdict.lines if line.startswith("Cannot decide whether cheaper lora"))

    whole, capped = line({"name": "d"}), line({"name": "d", "max_eval_samples": 150})
    assert "test examples (now 150)" in capped and "x the data" not in capped
    assert "(now 150)" not in whole and "more seeds alone cannot (the 150 test examples limit it)" in whole


def test_a_budget_limited_leader_on_validation_leaves_the_converged_pick_and_its_runner_up():
    """The method zoo's case: the validation leader did not converge, so the pick is the best converged condition and
    the runner-up line compares it with the next one on validation (once crashed on an empty decision row)."""
    n = 2000
    truth = truth_of(n)
    still = {"converged": False, "status": "still improving", "reason": "still improving when its budget ended"}
    done = {"converged": True, "status": "plateau", "reason": "early stopping"}
    runs = {"leader": (0.95, still, 1800), "pick": (0.90, done, 1780), "third": (0.85, done, 1700)}
    conds = []
    for i, (name, (val, conv, k)) in enumerate(runs.items()):
        rs = [fake_run(s, rights(n, k, 10 * i + s), truth, val=val) for s in (1, 2, 3)]
        for r in rs:
            r["info"]["convergence"] = conv
        conds.append(condition(name, "lora", rs))
    v = analyse(conds)[0]
    assert v.best == "pick"
    line = next(line for line in v.lines if line.startswith("Against the runner-up"))
    assert line.startswith("Against the runner-up, leader:")
    assert v.budget_limited == ["leader"]


def test_winner_is_chosen_on_validation_and_conflicting_seeds_are_said():
    n = 6000
    truth = truth_of(n)
    # a: better than b on test in seed 1, worse in seed 2, each significantly (McNemar); b steady. b wins on validation.
    b1 = np.zeros(n, int)
    b1[:5400] = 1
    a1, a2 = b1.copy(), b1.copy()
    a1[5400:5500] = 1
    a2[:100] = 0
    conds = [
        condition("a", "lora", [fake_run(1, a1, truth, val=0.70), fake_run(2, a2, truth, val=0.70)]),
        condition("b", "full", [fake_run(1, b1, truth, val=0.75), fake_run(2, b1, truth, val=0.75)]),
    ]
    v = analyse(conds)[0]
    assert v.best == "b"  # on test a's mean equals b's, on validation b leads
    pair = v.pairs.iloc[0]
    assert pair.mcnemar_favours_a == 1 and pair.mcnemar_favours_b == 1
    assert "seeds disagree" in " ".join(v.lines)


def test_recommendation_with_cost_ratios_against_full():
    n = 20_000
    truth = truth_of(n)
    full = rights(n, 18_000, 1)
    lora = full.copy()
    lora[np.flatnonzero(full)[:40]] = 0  # 0.2 points below full
    conds = [
        condition(
            "full",
            "full",
            [
                fake_run(
                    s,
                    full,
                    truth,
                    val=0.90,
                    resources={
                        "trainable_params": 22_700_000,
                        "trainable_pct": 100.0,
                        "trained_bytes": 90_800_000,
                        "peak_rss_mb": 2000.0,
                        "train_seconds": 100.0,
                    },
                )
                for s in range(10)
            ],
        ),
        condition(
            "lora r8",
            "lora",
            [
                fake_run(
                    s,
                    lora,
                    truth,
                    val=0.89,
                    resources={
                        "trainable_params": 74_498,
                        "trainable_pct": 0.33,
                        "trained_bytes": 297_992,
                        "peak_rss_mb": 1600.0,
                        "train_seconds": 120.0,
                    },
                )
                for s in range(10)
            ],
        ),
    ]
    v = analyse(conds)[0]
    assert v.best == "full" and v.reference == "full" and v.recommended == "lora r8"
    rec = next(line for line in v.lines if line.startswith("**Use"))
    assert rec.startswith("**Use lora r8**: within the 1-point margin of the best, whichever it is")
    assert (
        "0.33% of the parameters trained, 1/305 the trained weights to keep, 0.80x the peak memory, "
        "1.20x the training time of full" in rec
    )
    assert v.table.set_index("condition").loc["lora r8", "vs_best"] == "as good"


def test_cheaper_means_cheaper_by_the_cost_margin():
    """Two runs of full fine-tuning at two rates, identical on test: the one 4% quicker is not a cheaper method (time
    noise), so the validation-best stays the pick and nothing is listed as cheaper; 30% quicker is; so is 4% when the
    study sets cost_margin to 0."""
    n = 20_000
    truth = truth_of(n)
    full = rights(n, 18_000, 1)
    res = {"trainable_pct": 100.0, "trained_bytes": 90_800_000, "peak_rss_mb": 2000.0}

    def verdict(seconds_b, **settings):
        conds = [
            condition(
                "full_a",
                "full",
                [fake_run(s, full, truth, val=0.90, resources={**res, "train_seconds": 100.0}) for s in range(10)],
            ),
            condition(
                "full_b",
                "full",
                [fake_run(s, full, truth, val=0.89, resources={**res, "train_seconds": seconds_b}) for s in range(10)],
            ),
        ]
        return analyse(conds, AnalysisSettings(**settings))[0]

    near = verdict(96.0)
    assert near.recommended == "full_a" and near.table.set_index("condition").loc["full_b", "vs_best"] == "as good"
    assert any(
        line.startswith(
            "**Use full_a**: within the margin of the best, and no method that qualified is cheaper by 10% or more"
        )
        for line in near.lines
    )
    assert verdict(70.0).recommended == "full_b"
    assert verdict(96.0, cost_margin=0.0).recommended == "full_b"
    with pytest.raises(ValueError):
        AnalysisSettings(cost_margin=1.0)


def test_cpu_peaks_measured_after_other_runs_in_one_process_are_called_upper_bounds():
    n = 2000
    truth = truth_of(n)

    def verdict(before_per_seed, cuda=None):
        conds = [
            condition(
                name,
                name,
                [
                    fake_run(
                        s,
                        rights(n, k, s),
                        truth,
                        val=k / n,
                        resources={"runs_before_in_process": before_per_seed[s - 1], "cuda_max_allocated_mb": cuda},
                    )
                    for s in (1, 2)
                ],
            )
            for name, k in (("full", 1800), ("lora", 1700))
        ]
        return " ".join(analyse(conds)[0].lines)

    assert (
        "Peak memory: 2 of 4 runs were measured on the CPU in a worker process that had trained other runs before"
        in verdict([0, 1])
        and "--isolate-runs" in verdict([0, 1])
    )
    assert "Peak memory" not in verdict([0, 0])  # each run measured alone (or in a fresh worker)
    assert "Peak memory" not in verdict([0, 1], cuda=900.0)  # GPU peaks are reset per run: nothing carried


def test_a_four_point_gap_on_400_examples_is_not_a_tie():
    n = 400
    truth = truth_of(n)
    best = rights(n, 340, 1)  # 85%
    cheap = best.copy()
    cheap[np.flatnonzero(best)[:16]] = 0  # 81%: 4 points worse
    conds = [
        condition("full", "full", [fake_run(1, best, truth, val=0.85, resources={"train_seconds": 300.0})]),
        condition("head", "head", [fake_run(1, cheap, truth, val=0.80, resources={"train_seconds": 10.0})]),
    ]
    v = analyse(conds)[0]
    assert v.recommended == "full"
    call = v.table.set_index("condition").loc["head", "vs_best"]
    assert call in ("undecided", "worse")
    if call == "undecided":
        assert any(line.startswith("Cannot decide whether cheaper head") for line in v.lines)


def test_collapsed_runs_and_the_baseline():
    n = 500
    truth = truth_of(n)  # 60% neg: the training majority (600 neg / 400 pos) predicts neg
    only_neg = ["neg"] * n
    right = [1 if t == "neg" else 0 for t in truth]
    conds = [
        condition("head", "head", [fake_run(1, right, truth, val=0.6, pred=only_neg)]),
        condition("lora", "lora", [fake_run(1, right, truth, val=0.61, pred=only_neg)]),
    ]
    v = analyse(conds)[0]
    assert v.recommended is None and v.best is None
    assert v.lines[0].startswith("**No method could be shown above the majority-class baseline**")
    base = v.table[v.table.method == "baseline"].iloc[0]
    assert base.condition == "majority class (neg)" and base.accuracy == pytest.approx(0.6)
    # A good method next to a collapsed one: the collapsed one is flagged even when it leads on validation.
    good = rights(n, 450, 5)
    conds.append(condition("full", "full", [fake_run(1, good, truth, val=0.5)]))
    v = analyse(conds)[0]
    assert v.best == "full" and v.recommended == "full"
    assert any("head (predicted a single class in 1 of 1 run(s)" in line for line in v.lines)


def test_constraints_pick_the_best_that_fits():
    n = 2000
    truth = truth_of(n)
    conds = [
        condition(
            "full",
            "full",
            [fake_run(s, rights(n, 1800, 1), truth, val=0.9, resources={"peak_rss_mb": 3000.0}) for s in (1, 2, 3)],
        ),
        condition(
            "lora",
            "lora",
            [fake_run(s, rights(n, 1500, 2), truth, val=0.75, resources={"peak_rss_mb": 1000.0}) for s in (1, 2, 3)],
        ),
    ]
    v = analyse(conds, AnalysisSettings(decide=Decide(max_peak_memory_mb=2000)))[0]
    assert v.best == "lora" and v.recommended == "lora"
    assert any(
        "Over the constraints (max_peak_memory_mb ≤ 2000): full; the best without them would be full." in line
        for line in v.lines
    )


def test_groups_never_pair_across_datasets_or_different_test_files():
    n = 100
    truth = truth_of(n)
    r = rights(n, 80, 1)
    same_ids_other_text = [f"another text {i}" for i in range(n)]
    conds = [
        condition("a", "lora", [fake_run(1, r, truth, dataset="rt")]),
        condition("b", "lora", [fake_run(1, r, truth, dataset="bbc", texts=same_ids_other_text)]),
        condition("c", "full", [fake_run(1, r, truth, dataset="rt")]),
    ]
    gs = groups(conds)
    assert sorted([c.name for c in g.conditions] for g in gs) == [["a", "c"], ["b"]]
    # Same dataset name, same ids, different texts (two local test.csv files): not the same examples.
    conds[1].runs[0]["info"]["dataset"] = "rt"
    assert len(groups(conds)) == 2
    verdicts = analyse(conds)
    assert [len(v.pairs) for v in verdicts] == [1, 0]


def test_ece_is_per_run_then_averaged():
    from tuneoff.analysis.groups import condition_row

    n = 100
    truth = truth_of(n)
    # Run 1: 90% right at confidence 0.9 -> ECE 0. Run 2: 70% right at confidence 0.9 -> ECE 0.2. Mean 0.1, std 0.1414.
    c = condition("a", "lora", [fake_run(1, rights(n, 90, 1), truth), fake_run(2, rights(n, 70, 2), truth)])
    row = condition_row(c)
    assert row["ece"] == pytest.approx(0.1) and row["ece_std"] == pytest.approx(np.sqrt(0.02))
    assert row["accuracy_per_seed"] == "0.900 / 0.700"


def _curve(reach_step, plateau, every=20, last=200):
    """A validation curve that jumps to ``plateau`` at ``reach_step`` (0.5 before), evaluated every ``every`` steps."""
    return [{"step": s, "val_accuracy": plateau if s >= reach_step else 0.5} for s in range(every, last + 1, every)]


def _verdict_of(curves: dict):
    """One group whose conditions (validation accuracy falling in the order given) have the given curves per seed."""
    n = 400
    truth = truth_of(n)
    conds = [
        condition(
            name,
            name,
            [
                fake_run(s, rights(n, 340, 10 * i + s), truth, val=0.9 - 0.01 * i, history=h)
                for s, h in enumerate(hs, 1)
            ],
        )
        for i, (name, hs) in enumerate(curves.items())
    ]
    return analyse(conds)[0]


def _speed_of(curves: dict) -> pd.DataFrame:
    return _verdict_of(curves).speed


def test_speed_is_compared_over_seeds_and_never_below_the_evaluation_interval():
    """The best on validation (a) reaches its plateau at step 20 in every seed; b at 100/120/100: b is slower (Welch
    over seeds, Holm). c's 40/40/40 is one 20-step evaluation behind: never called, even though identical seeds make
    its p-value tiny."""
    speed = _speed_of(
        {
            "a": [_curve(20, 0.8)] * 3,
            "b": [_curve(100, 0.8), _curve(120, 0.8), _curve(100, 0.8)],
            "c": [_curve(40, 0.8)] * 3,
        }
    )
    own = speed[speed.target == "own plateau"].set_index("condition")
    assert own.loc["b", "steps_per_seed"] == "100 / 120 / 100" and own.loc["b", "call"] == "slower"
    assert own.loc["b", "diff_vs_best"] == pytest.approx(320 / 3 - 20) and own.loc["b", "ci_low"] > 0
    assert own.loc["c", "call"] == "cannot tell" and own.loc["c", "p_value"] < 0.05
    assert speed.attrs["resolution_steps"] == 20

    # An extra evaluation at an epoch's end (step 94, 6 before 100) does not make the resolution 6 steps.
    def with_epoch_end(h):
        return sorted(
            h + [{"step": 94, "val_accuracy": next(e["val_accuracy"] for e in h if e["step"] == 100)}],
            key=lambda e: e["step"],
        )

    speed = _speed_of({"a": [with_epoch_end(_curve(20, 0.8))] * 3, "c": [with_epoch_end(_curve(40, 0.8))] * 3})
    assert speed.attrs["resolution_steps"] == 20
    assert speed[speed.target == "own plateau"].set_index("condition").loc["c", "call"] == "cannot tell"


def test_speed_to_a_common_bar_does_not_credit_a_lower_plateau():
    """d plateaus at 0.6 from step 20: it reaches its own plateau first, but the common bar (95% of the weakest
    eligible plateau) only the others reach; a seed that never does is shown as 'never' and not tested."""
    speed = _speed_of(
        {
            "a": [_curve(100, 0.8), _curve(120, 0.8), _curve(100, 0.8)],
            "d": [_curve(20, 0.6), _curve(20, 0.6), _curve(20, 0.7)],
        }
    )
    own = speed[speed.target == "own plateau"].set_index("condition")
    assert own.loc["d", "diff_vs_best"] < 0
    bar = speed[speed.target != "own plateau"].set_index("condition")
    assert bar.index.tolist() == ["a", "d"] and "never" in bar.loc["d", "steps_per_seed"]
    assert pd.isna(bar.loc["d", "p_value"]) and bar.loc["d", "call"] == ""


def test_speed_pairs_give_every_pair_its_interval_at_the_common_bar():
    """b (100/120/100) and c (200/220/200) are both slower than the best a (20); whether c is slower than b, a question
    the table against the best cannot answer, gets its own Welch interval here: 100 steps, five evaluations."""
    pairs = _verdict_of(
        {
            "a": [_curve(20, 0.8)] * 3,
            "b": [_curve(100, 0.8), _curve(120, 0.8), _curve(100, 0.8)],
            "c": [_curve(200, 0.8), _curve(220, 0.8, last=240), _curve(200, 0.8)],
            "d": [_curve(20, 0.8)] * 2,
        }
    ).speed_pairs.set_index(["a", "b"])
    assert len(pairs) == 6
    bc = pairs.loc[("b", "c")]
    assert bc.steps_b == "200 / 220 / 200" and bc.steps_diff == pytest.approx(-100)
    assert bc.ci_high < 0 and bc.p_holm < 0.05 and bc.call == "b faster"
    # a and d both cross at step 20 in every seed: no difference, never called.
    assert pairs.loc[("a", "d")].call == "cannot tell" and pairs.loc[("a", "d")].steps_diff == 0
    assert pairs.attrs["resolution_steps"] == 20


def test_speed_pairs_leave_out_a_pair_with_a_seed_that_never_reached_the_bar():
    """b's third seed stays at 0.5, under the common bar (95% of b's mean plateau, 0.665): its pairs are left out, not
    compared on the seeds that got there; a and c, both there in every seed, keep theirs."""
    pairs = _verdict_of(
        {
            "a": [_curve(20, 0.8)] * 3,
            "b": [_curve(100, 0.8), _curve(100, 0.8), _curve(1000, 0.8)],
            "c": [_curve(60, 0.8)] * 3,
        }
    ).speed_pairs
    assert pairs.target.iloc[0] == "validation accuracy 0.665"
    assert list(zip(pairs.a, pairs.b)) == [("a", "c")]


def test_a_condition_not_shown_above_the_baseline_is_flagged_in_words_that_say_so():
    """The comparisons with the majority class are one Holm family of their own: a (70 / 100 right in both seeds)
    against 50% and b (55 / 100) are its two comparisons. b cannot be shown above the baseline, and the verdict says
    that ("could not be shown above"), not that it learned nothing."""
    n = 100
    truth = truth_of(n, 0.5)
    a = condition("a", "x", [fake_run(s, rights(n, 70, 10 + s), truth, val=0.7) for s in (1, 2)])
    b = condition("b", "y", [fake_run(s, rights(n, 55, 20 + s), truth, val=0.6) for s in (1, 2)])
    (v,) = analyse([a, b])
    assert v.family == 2
    base = v.decisions[v.decisions.against == "baseline"].set_index("condition")
    pa, pb = base.p_value["a"], base.p_value["b"]
    assert pa < 0.025 < 0.05 < pb  # Holm by hand: the smaller p times 2, the larger kept
    assert base.p_adjusted["a"] == pytest.approx(2 * pa) and base.p_adjusted["b"] == pytest.approx(pb)
    assert v.table.set_index("condition").eligible.to_dict() == {"a": True, "b": False, "majority class (neg)": False}
    line = " ".join(v.lines)
    assert "b (could not be shown above the majority-class baseline)" in line
    assert "learned" not in line and "not detected" not in line


def test_when_nothing_is_decided_the_default_is_the_cheapest_that_scored_within_the_margin():
    """A new user's study (573 test examples, 2 seeds) read "use full by default" while partial top-2 scored higher
    on test in a quarter of the time: the default went to the most expensive leader on validation. Now the default is
    the cheapest condition within the margin of the pick on test whose worst case against the best is within
    analysis.tolerance (5 points); with tolerance 0 the pick stays; a cheaper one 3 points behind on test is not it."""
    n = 573
    truth = truth_of(n)
    full_res = {"trainable_pct": 100.0, "trained_bytes": 90_800_000, "train_seconds": 400.0, "peak_rss_mb": 2000.0}
    part_res = {"trainable_pct": 16.0, "trained_bytes": 14_000_000, "train_seconds": 100.0, "peak_rss_mb": 1200.0}

    def verdict(partial_right, **settings):
        conds = [
            condition(
                "full", "full", [fake_run(s, rights(n, 532, s), truth, val=0.945, resources=full_res) for s in (1, 2)]
            ),
            condition(
                "partial_top2",
                "partial",
                [fake_run(s, rights(n, partial_right, 10 + s), truth, val=0.94, resources=part_res) for s in (1, 2)],
            ),
        ]
        return analyse(conds, AnalysisSettings(**settings))[0]

    v = verdict(537)
    assert v.best == "full" and v.recommended == "partial_top2" and not v.decided
    rec = next(line for line in v.lines if line.startswith("**Use"))
    assert rec.startswith(
        "**Use partial_top2 by default**: the study could not decide, and partial_top2 is the "
        "cheapest condition that scored within the margin of the pick full on test (+0.9 points"
    )
    assert "within the 5-point tolerance, analysis.tolerance" in rec
    assert verdict(537, tolerance=0.0).recommended == "full"
    assert verdict(515).recommended == "full", "3 points behind on test: not within the margin"


def test_the_verdict_card_says_the_answer_its_status_cost_worst_case_and_what_would_change_it():
    """One screen per group (analysis.card): the method, decided or by default, its costs against the reference, the
    most it may lose against the best (MCB's lower bound), what would change the answer, how it was chosen."""
    n = 573
    truth = truth_of(n)
    full_res = {"trainable_pct": 100.0, "trained_bytes": 90_800_000, "train_seconds": 400.0, "peak_rss_mb": 2000.0}
    part_res = {"trainable_pct": 16.0, "trained_bytes": 14_000_000, "train_seconds": 100.0, "peak_rss_mb": 1200.0}
    conds = [
        condition(
            "full", "full", [fake_run(s, rights(n, 532, s), truth, val=0.945, resources=full_res) for s in (1, 2)]
        ),
        condition(
            "partial_top2",
            "partial",
            [fake_run(s, rights(n, 537, 10 + s), truth, val=0.94, resources=part_res) for s in (1, 2)],
        ),
    ]
    v = analyse(conds)[0]
    card = v.card
    low = v.with_best.set_index("condition").loc["partial_top2", "best_low"]
    lines = card.lines()
    assert lines[0].startswith(
        "**Use partial_top2** (by default): the study could not decide; the cheapest that scored"
    )
    assert lines[1] == "Cost: 1/6 the trained weights, 0.60x the peak memory, 1/4 the training time of full"
    assert lines[2] == (
        f"Worst case: it may lose up to {abs(100 * low):.1f} points of accuracy against the best (95%, "
        "simultaneous over the candidates)"
    )
    assert lines[3].startswith(
        "What would change it: open: partial_top2; for partial_top2, between truly equal methods"
    )
    assert "the cheapest on overall cost" in lines[4] and "within the 1-point margin" in lines[4]
    assert lines[5] == "Evidence: 2 conditions, 4 runs, 573 test examples; 17 minutes of training (summed over runs)"
    assert card.as_dict()["recommended"] == v.recommended == "partial_top2" and card.status == "by default"
