"""Statistics of a comparison: confidence intervals that respect both sources of noise, paired differences,
McNemar per seed with its direction, Holm's correction, non-inferiority, calibration.

Two sources of noise decide whether method A really beats method B: which test examples happened to be drawn
(test-set sampling) and which training run happened to be drawn (the seed: initialisation, data order,
dropout). Resampling test examples of *seed-averaged* correctness ignores the second and calls a method with
seeds at 88.9% and 71.3% "significantly better" than one at 78.2% and 78.9%. So intervals here come from a
**two-level bootstrap** (Davison & Hinkley, 1997, "Bootstrap Methods and their Application", sec. 3.8,
hierarchical data): each resample draws the seeds of every condition with replacement, then the test examples
with replacement; the same example draw is shared by every condition, which makes differences paired.

Memory stays bounded: a resample of test examples is a vector of counts (how often each example was drawn),
drawn in batches; a resampled accuracy is the counts times the correctness matrix. Nothing of size n x n (the
BCa jackknife's n x (n-1) array) is ever built: at n = 25,000 a study's resampling stays well under 100 MB.
Intervals are percentile intervals (the BCa acceleration has no accepted two-level form).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
RESAMPLES = 2000
BATCH_BYTES = 32 * 1024 * 1024  # working memory for one batch of example draws


@dataclass
class Resamples:
    """Bootstrap distribution of each condition's mean accuracy, from draws shared by all conditions."""

    accuracy: dict[str, np.ndarray]   # condition -> (B,) resampled accuracies
    estimate: dict[str, float]        # condition -> mean over seeds of the test accuracy
    seeds: dict[str, int]

    def interval(self, name: str, confidence: float = 0.95) -> tuple[float, float]:
        return _percentile(self.accuracy[name], confidence)

    def difference(self, a: str, b: str, confidence: float = 0.95) -> dict:
        """a - b: estimate, percentile CI, and the two-sided bootstrap p-value of 'no difference'
        (the smallest alpha whose (1 - alpha) interval excludes 0)."""
        draws = self.accuracy[a] - self.accuracy[b]
        low, high = _percentile(draws, confidence)
        below, above = int(np.sum(draws <= 0)), int(np.sum(draws >= 0))
        p = 1.0 if np.all(draws == 0) else min(1.0, 2 * (min(below, above) + 1) / (len(draws) + 1))
        return {"diff": self.estimate[a] - self.estimate[b], "ci_low": low, "ci_high": high, "p_value": p}


def _percentile(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def two_level_bootstrap(correct: dict[str, np.ndarray], resamples: int = RESAMPLES, seed: int = 0) -> Resamples:
    """``correct[name]`` is an (n, S) 0/1 matrix: test example i right in seed s. Every matrix has the same n
    examples in the same order. Returns each condition's resampled mean accuracy (seeds, then examples)."""
    names = list(correct)
    mats = [np.asarray(correct[k], dtype=np.float32).reshape(len(correct[k]), -1) for k in names]
    n = mats[0].shape[0]
    if any(m.shape[0] != n for m in mats):
        raise ValueError("every condition must be scored on the same test examples")
    stacked = np.concatenate(mats, axis=1)  # (n, total seeds)
    offsets = np.cumsum([0] + [m.shape[1] for m in mats])
    rng = np.random.default_rng(seed)
    sums = np.empty((resamples, stacked.shape[1]), dtype=np.float64)  # examples-resampled correct counts per seed
    batch = max(1, min(resamples, BATCH_BYTES // max(24 * n, 1)))  # int64 draws + counts, float32 copy
    for start in range(0, resamples, batch):
        b = min(batch, resamples - start)
        draws = rng.integers(0, n, size=(b, n))
        counts = np.bincount((draws + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
        sums[start:start + b] = counts.astype(np.float32) @ stacked
    out, estimate = {}, {}
    for k, name in enumerate(names):
        s = mats[k].shape[1]
        picks = rng.integers(0, s, size=(resamples, s)) + offsets[k]  # seeds drawn with replacement
        out[name] = np.take_along_axis(sums, picks, axis=1).mean(axis=1) / n
        estimate[name] = float(mats[k].mean(dtype=np.float64))
    return Resamples(out, estimate, {name: m.shape[1] for name, m in zip(names, mats)})


def variance_parts(correct: np.ndarray) -> dict:
    """Variance of a seed-mean accuracy (or of a paired difference, given per-example differences) split into
    seed-to-seed and test-sampling parts: Var = Var_seed / S + Var_example(seed-mean) / n."""
    m = np.asarray(correct, dtype=float).reshape(len(correct), -1)
    n, s = m.shape
    per_seed = m.mean(axis=0)
    seed_var = float(per_seed.var(ddof=1) / s) if s > 1 else 0.0
    test_var = float(m.mean(axis=1).var(ddof=1) / n) if n > 1 else 0.0
    return {"seed": seed_var, "test": test_var}


def holm(p_values: list[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (statsmodels), controlling the family-wise error over all pairs of a study."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, alpha=alpha, method="holm")[1]]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on the 2x2 table of (a right?, b right?) over the same examples, with its direction:
    ``favours`` is "a" when a alone was right more often than b alone, "b" the other way, None when equal."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    a_only, b_only = table[0][1], table[1][0]
    p = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    favours = "a" if a_only > b_only else "b" if b_only > a_only else None
    return {"table": table, "a_only": a_only, "b_only": b_only, "p_value": p, "favours": favours}


def non_inferiority(diff: dict, margin: float) -> str:
    """Reading of the CI of (candidate - best) against a margin (e.g. 0.01 = one accuracy point):
    "as good" when the whole CI lies above -margin (non-inferior), "worse" when it lies below -margin,
    "undecided" when it straddles -margin (the study is too small to tell)."""
    if diff["ci_low"] > -margin:
        return "as good"
    if diff["ci_high"] < -margin:
        return "worse"
    return "undecided"


def what_would_decide(diff: dict, margin: float, parts: dict) -> str:
    """For an undecided non-inferiority call: how much more data the CI needs to shrink past -margin, and
    whether seeds or test examples dominate its width."""
    half = (diff["ci_high"] - diff["ci_low"]) / 2
    gap = abs(diff["diff"] + margin)
    if gap < 1e-9:
        return "its estimate sits on the margin: more data will not settle it quickly"
    factor = (half / gap) ** 2
    source = "more seeds" if parts["seed"] > parts["test"] else "a larger test set"
    where = ("seed-to-seed variation dominates the interval: more seeds would narrow it most" if source == "more seeds"
             else "test sampling dominates the interval: a larger test set would narrow it most")
    if factor > 100:
        return (f"its estimate ({100 * diff['diff']:+.1f} points) sits so close to the margin that even 100x the data "
                f"might not settle it; {where}")
    return f"about {factor:.1f}x the data would settle it if the estimate held; {where}"


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> tuple[float, pd.DataFrame]:
    """ECE (Guo et al., 2017, "On Calibration of Modern Neural Networks"): sum_b |B|/n |acc(B) - conf(B)| over
    equal-width confidence bins; returns it with the per-bin table for a reliability diagram."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append({"bin_low": edges[b], "bin_high": edges[b + 1], "count": int(mask.sum()),
                         "confidence": float(confidence[mask].mean()), "accuracy": float(correct[mask].mean())})
    table = pd.DataFrame(rows, columns=["bin_low", "bin_high", "count", "confidence", "accuracy"])
    ece = float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(confidence)) if rows else 0.0
    return ece, table


def pareto_front(points: list[tuple[str, float, float]]) -> set[str]:
    """Names not dominated on (quality: higher is better, cost: lower is better)."""
    front = set()
    for name, q, c in points:
        dominated = any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for n2, q2, c2 in points if n2 != name)
        if not dominated:
            front.add(name)
    return front
