"""Statistics of a comparison: intervals and tests that cover both sources of noise and stay calibrated at the seed
counts people use; McNemar per seed with its direction, Holm's correction, calibration.

Two sources of noise decide whether method A really beats method B on a task: which test examples happened to be
drawn (test-set sampling) and which training run happened to be drawn (the seed: initialisation, data order,
dropout). With correctness ``y[c, s, i]`` of condition c, seed s, test example i, the seed-averaged accuracy of c is
``A_c = mean_s mean_i y[c, s, i]`` and a paired difference ``D = A_a - A_b`` has variance

    Var(D) = Var_i(p_a,i - p_b,i) / n  +  tau2_a / S_a  +  tau2_b / S_b

(law of total variance over the test draw and the seed draws; ``p_c,i`` is the chance c gets example i right,
``tau2_c`` the *systematic* seed variance: how much a seed moves the whole accuracy). Both parts are estimated
without counting anything twice:

- **test part**: the variance across examples of the per-example difference of seed-averaged correctness, over n.
  It already holds the seed x example interaction (a seed flipping individual examples) once, averaged over seeds;
- **seed part**: the ANOVA (method-of-moments) estimator of the seed variance component in the crossed
  seed x example design without replication (Searle, Casella & McCulloch, 1992, "Variance Components", ch. 4):
  ``tau2 = (MS_seed - MS_seed:example) / n``, which removes the interaction that ``MS_seed`` also contains. It is
  estimated **per condition**, not pooled over the group: methods differ in how much a seed moves them (prompt
  tuning's seeds spanned 16 points in the method zoo, LoRA's one), and a group-wide pool under-states an erratic
  condition's variance and over-states every stable one's (simulated, 14 conditions x 3 seeds, one with 8 points of
  seed sd against 1: 39% false positives at the 5% level for the erratic one against a stable one, 1% instead of 5%
  between two stable ones).
- **moderated by what earlier studies measured** (``SeedPrior``): with 2 or 3 seeds the estimate rests on 1 or 2
  degrees of freedom; two seeds that land close read as "no seed variance" about a quarter of the time, and a seed
  that fails now and then (AdaLoRA's 79.3 / 62.8 / 69.4% in the method zoo) is absent from most draws of three, so the
  interval under-covers. The estimate is shrunk toward the seed variance measured over every committed study, as
  Smyth (2004, "Linear models and empirical Bayes methods for assessing differential expression in microarray
  experiments") moderates a gene's variance: ``(d tau2 + d0 s0^2) / (d + d0)`` on ``d + d0`` degrees of freedom,
  ``d = S - 1``; ``bench/seed_prior.py`` fits (s0, d0) on the committed results. More seeds outweigh the prior. The
  prior only ever raises an estimate: shrinking a large spread toward the population's would under-state a method
  whose seeds truly scatter (Cui et al., 2005, "Improved statistical tests for differential expression by shrinking
  variance components estimates", shrink toward a common value; here the larger of the two is kept).
- **one seed** measures nothing: its seed part is the largest seed sd any committed study measured
  (``analysis.assumed_seed_sd``, 8.3 points: AdaLoRA in the method zoo), taken as a known bound, so a one-seed
  comparison decides only differences no measured seed spread could make.

The interval is ``D +- t * sqrt(Var)`` with Satterthwaite's degrees of freedom (Satterthwaite, 1946) for the sum of
the estimated parts (Welch-Satterthwaite: the test part on n - 1 df, each condition's seed part on its own ``d + d0``,
so one erratic condition's few degrees of freedom are not credited with a stable one's; the sum's df is never below
the fewest of its parts'): with few seeds the seed part is uncertain and the t quantile widens the interval honestly.
p-values come from the same t distribution, so they are resolved finely (no resampling floor) and Holm's correction can
still find a difference among hundreds of comparisons.
``bench/calibration.py`` simulates null studies (1, 2, 3, 5 seeds; seed sd 0 to 5 points; 400 to 5,000 test
examples; and groups where one condition's seeds scatter far more than the rest) and records the false-positive
rate and the interval coverage (``bench/results/calibration-*.md``); ``bench/verdict_simulation.py`` simulates the
verdict built on them (``analysis.verdict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar

from tuneoff.analysis.settings import ASSUMED_SEED_SD

ALPHA = 0.05


@dataclass(frozen=True)
class SeedPrior:
    """What earlier studies measured of seed-to-seed spread: a scale ``sd`` (fraction) and its weight ``df`` in degrees
    of freedom (Smyth, 2004; see the module's docstring)."""

    sd: float
    df: float


# Fitted by bench/seed_prior.py on the 97 (accuracy) and 34 (macro-F1) conditions of the committed studies
# (bench/results/seed-prior-20261207.md): d0 is Smyth's maximum-likelihood weight; the scale is the root-mean-square
# seed sd measured, the mean seed variance (the likelihood's scale s0, 0.96 accuracy points, is the typical condition's:
# shrinking toward it under-covers the conditions whose seeds sometimes fail, bench/results/verdict-simulation-*.md).
SEED_PRIOR = {"accuracy": SeedPrior(0.0176, 2.47), "macro_f1": SeedPrior(0.0238, 2.58)}
# The same fit's scale s0: the seed sd of a typical condition (half of them scatter less), what a plan expects a
# condition to measure before it has run (``power``, ``study.design``).
TYPICAL_SEED_SD = {"accuracy": 0.0096, "macro_f1": 0.0128}


@dataclass
class SeedVariance:
    """The systematic seed variance of one condition (or a pool of them) and what it rests on: the mean squares of
    the crossed seed x example ANOVA (for Satterthwaite) and the prior's share, when moderated."""

    tau2: float  # the variance the intervals use: moderated by the prior when there is one
    df: float  # its nominal degrees of freedom: S - 1 (+ the prior's); inf when assumed (a known bound)
    raw: float = 0.0  # the conditions' own ANOVA estimate, clipped at 0 (what their seeds alone say)
    seeds: int = 1  # the fewest seeds of the pooled conditions
    assumed: bool = False  # one seed: nothing measured, ``assumed_sd`` taken
    ms_seed: float = 0.0  # the pooled seed mean square, on ``df_seed`` df
    ms_res: float = 0.0  # the pooled seed x example mean square, on ``df_res`` df
    df_seed: float = 0.0
    df_res: float = 0.0
    n: int = 1
    weight: float = 1.0  # the data's share of a moderated estimate, d / (d + d0) (1: not moderated)
    prior_term: float = 0.0  # the prior's share, d0 s0^2 / (d + d0), on ``prior_df`` degrees of freedom
    prior_df: float = 0.0

    @property
    def sd(self) -> float:
        return float(np.sqrt(self.tau2))

    def variance_of(self, factor: float) -> float:
        """Satterthwaite's term (``term^2 / df``) of ``factor * tau2``. The data's part is a difference of mean
        squares, ``(MS_seed - MS_res) / n``, charged the noise of each (MS_seed on S - 1 df holds the seed x example
        noise too: charging the estimate as a chi-square of its own size credited it too many degrees of freedom, and
        the comparisons with the pick called 7.7% of equal conditions different at 3 seeds and 3 points of spread);
        a prior's part is a scaled chi-square on its own d0."""
        if self.assumed or not self.df_seed:
            return 0.0
        data = (factor * self.weight / self.n) ** 2 * (
            self.ms_seed**2 / self.df_seed + (self.ms_res**2 / self.df_res if self.df_res else 0.0)
        )
        prior = (factor * self.prior_term) ** 2 / self.prior_df if self.prior_df else 0.0
        return data + prior


def seed_variance(
    mats: dict[str, np.ndarray], assumed_sd: float = ASSUMED_SEED_SD, prior: SeedPrior | None = None
) -> SeedVariance:
    """The ANOVA estimate of the systematic seed variance, pooled over every condition with at least two seeds, and
    moderated by ``prior`` (when given).

    For one condition (n examples x S seeds, one observation per cell): ``MS_seed = n * var_s(per-seed accuracy)``
    on S - 1 df, ``MS_res`` the residual mean square on (S - 1)(n - 1) df; pooled over conditions (weighted by their
    df), ``tau2 = (MS_seed - MS_res) / n`` clipped at 0, then ``(d tau2 + d0 s0^2) / (d + d0)`` on ``d + d0`` df."""
    ss_seed = ss_res = dof = dof_res = 0.0
    n_examples, fewest = 1, None
    for m in mats.values():
        m = np.asarray(m, dtype=np.float64)
        n, s = m.shape
        if s < 2 or n < 2:
            continue
        n_examples, fewest = n, s if fewest is None else min(fewest, s)
        seed_means, example_means, grand = m.mean(axis=0), m.mean(axis=1), m.mean()
        ss_seed += n * float(np.sum((seed_means - grand) ** 2))
        resid = m - seed_means[None, :] - example_means[:, None] + grand
        ss_res += float(np.sum(resid**2))
        dof += s - 1
        dof_res += (s - 1) * (n - 1)
    if dof == 0:
        return SeedVariance(assumed_sd**2, float("inf"), assumed_sd**2, 1, assumed=True)
    ms_seed, ms_res = ss_seed / dof, ss_res / dof_res
    raw = max((ms_seed - ms_res) / n_examples, 0.0)
    parts = dict(ms_seed=ms_seed, ms_res=ms_res, df_seed=dof, df_res=dof_res, n=n_examples)
    moderated = (dof * raw + prior.df * prior.sd**2) / (dof + prior.df) if prior is not None else 0.0
    if raw >= moderated:
        # The prior only ever raises an estimate: pulled down toward the population's, a method whose seeds truly
        # scatter more (3 points against the prior's 1.8) gets intervals too narrow (bench/results/verdict-simulation).
        return SeedVariance(raw, dof, raw, fewest, **parts)
    return SeedVariance(
        moderated,
        dof + prior.df,
        raw,
        fewest,
        **parts,
        weight=dof / (dof + prior.df),
        prior_term=prior.df * prior.sd**2 / (dof + prior.df),
        prior_df=prior.df,
    )


def seeds_disagree(per_seed: np.ndarray, prior: SeedPrior | None) -> bool:
    """A seed far from the condition's others: more than ``3 sqrt(2) s0`` (7.5 accuracy points) from the median of the
    rest, three times the spread of a difference between two typical seeds. A seed that fails now and then (AdaLoRA's
    79.3 / 62.8 / 69.4% in the method zoo) makes a skewed seed distribution that no interval on three seeds covers
    well: the verdict says so and never counts the condition as decided."""
    values = np.asarray(per_seed, dtype=float)
    if prior is None or len(values) < 2:
        return False
    gaps = [abs(values[i] - np.median(np.delete(values, i))) for i in range(len(values))]
    return bool(max(gaps) > 3 * np.sqrt(2) * prior.sd)


@dataclass
class Comparisons:
    """Means, intervals and paired differences of a group's conditions (every matrix scored on the same examples)."""

    mats: dict[str, np.ndarray]  # condition -> (n, seeds) 0/1 correctness; a baseline has one "seed" and no spread
    seeds: SeedVariance  # pooled over the whole group: what the verdict reports of seed-to-seed spread
    fixed: frozenset = frozenset()  # conditions without seed variance (the majority-class baseline)
    assumed_sd: float = ASSUMED_SEED_SD
    prior: SeedPrior | None = None
    _own: dict = field(default_factory=dict, repr=False, compare=False)  # name -> its SeedVariance

    def seeds_of(self, name: str) -> SeedVariance:
        """The seed variance of one condition: its own (see the module's docstring for why not the group's); with one
        seed, the assumed bound."""
        if name not in self._own:
            self._own[name] = seed_variance({name: self.mats[name]}, self.assumed_sd, self.prior)
        return self._own[name]

    def disagree(self, name: str) -> bool:
        """Whether one of the condition's seeds lies far from the others (``seeds_disagree``)."""
        return name not in self.fixed and seeds_disagree(np.asarray(self.mats[name]).mean(axis=0), self.prior)

    def estimate(self, name: str) -> float:
        return float(np.asarray(self.mats[name], dtype=np.float64).mean())

    def n_seeds(self, name: str) -> int:
        return np.asarray(self.mats[name]).reshape(len(self.mats[name]), -1).shape[1]

    def _seed_parts(self, *names: str) -> list[tuple[float, SeedVariance]]:
        """(1 / S_c, seed variance) per condition with seed variance."""
        return [(1.0 / self.n_seeds(name), self.seeds_of(name)) for name in names if name not in self.fixed]

    def _spread(self, per_example: np.ndarray, parts: list[tuple[float, SeedVariance]]) -> dict:
        """Variance parts and Satterthwaite df of a mean of ``per_example`` plus each part's factor x its seed variance:
        the test part on n - 1 df, each seed part on its own (Welch-Satterthwaite, so one erratic condition's few
        degrees of freedom are not credited with a stable one's; an assumed part is a known bound, no df)."""
        n = len(per_example)
        test = float(np.var(per_example, ddof=1) / n) if n > 1 else 0.0
        seed = sum(factor * seeds.tau2 for factor, seeds in parts)
        total = test + seed
        if total <= 0:
            return {"test": 0.0, "seed": 0.0, "se": 0.0, "df": float("inf")}
        denominator = (test**2 / (n - 1) if n > 1 else 0.0) + sum(seeds.variance_of(f) for f, seeds in parts)
        df = total**2 / denominator if denominator > 0 else float("inf")
        # Never below the fewest seed degrees of freedom of a measured part (S - 1): a part that is a difference of
        # mean squares can drive Satterthwaite's df below 1 when it is small beside its noise (LoRA against DoRA at
        # r=8, trained with the same seeds: 0.82, an interval of +-11 points for seeds within 2 points).
        floor = min((seeds.df_seed for _, seeds in parts if seeds.df_seed and not seeds.assumed), default=0.0)
        return {"test": test, "seed": seed, "se": float(np.sqrt(total)), "df": float(max(df, floor))}

    def interval(self, name: str, confidence: float = 0.95) -> tuple[float, float]:
        m = np.asarray(self.mats[name], dtype=np.float64)
        spread = self._spread(m.reshape(len(m), -1).mean(axis=1), self._seed_parts(name))
        half = _quantile(confidence, spread["df"]) * spread["se"]
        estimate = self.estimate(name)
        # Accuracy is a proportion: a t interval near 100% (few seeds, a wide seed spread) spills past it; clipping
        # to [0, 1] only removes impossible values, so the coverage is unchanged.
        return max(0.0, estimate - half), min(1.0, estimate + half)

    def difference(self, a: str, b: str, confidence: float = 0.95) -> dict:
        """a - b: estimate, t interval, two-sided p-value of "no difference", and the variance parts behind them."""
        ma, mb = (np.asarray(self.mats[k], dtype=np.float64) for k in (a, b))
        per_example = ma.reshape(len(ma), -1).mean(axis=1) - mb.reshape(len(mb), -1).mean(axis=1)
        spread = self._spread(per_example, self._seed_parts(a, b))
        diff = float(per_example.mean())
        if spread["se"] == 0:
            p = 1.0 if diff == 0 else 0.0
            return {"diff": diff, "ci_low": diff, "ci_high": diff, "p_value": p, **spread}
        half = _quantile(confidence, spread["df"]) * spread["se"]
        p = float(2 * stats.t.sf(abs(diff) / spread["se"], spread["df"]))
        return {
            "diff": diff,
            "ci_low": max(-1.0, diff - half),
            "ci_high": min(1.0, diff + half),
            "p_value": p,
            **spread,
        }


def macro_f1_values(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-example values whose mean is the macro-F1 of ``pred`` against ``truth`` (class indices; every one of the
    ``n_classes`` classes counts, F1 0 where it has no true or predicted example, as scikit-learn's ``labels=all,
    zero_division=0``): its linearisation (the influence function, the delta method's per-example terms).

    Macro-F1 is not a mean over examples, so the accuracy machinery above cannot take it directly; its first-order
    expansion is one. With ``a_ik`` = [example i is class k and predicted k] and ``b_ik`` = [i is k] + [i predicted k],
    F1_k = 2 mean(a_k) / mean(b_k), whose influence at example i is (2 a_ik - F1_k b_ik) / mean(b_k) (the ratio
    estimator's); macro-F1's is their mean over classes. The values sum exactly to n x macro-F1, their variance over n
    is the delta-method variance of the test draw, and their per-seed means are each seed's exact macro-F1, so the
    seed x example ANOVA of ``seed_variance`` and the intervals of ``Comparisons`` apply unchanged (checked against a
    bootstrap over examples in tests/test_macro_f1.py and in null simulations by bench/calibration.py)."""
    truth, pred = np.asarray(truth, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = len(truth)
    right = truth == pred
    mean_a = np.bincount(truth[right], minlength=n_classes) / n
    mean_b = (np.bincount(truth, minlength=n_classes) + np.bincount(pred, minlength=n_classes)) / n
    f1 = np.divide(2 * mean_a, mean_b, out=np.zeros(n_classes), where=mean_b > 0)
    # b_ik is non-zero only at k = truth_i and k = pred_i, a_ik only at k = truth_i when i is right: O(n), not O(n K).
    influence = (2 * right - f1[truth]) / mean_b[truth] - f1[pred] / mean_b[pred]
    return (f1.mean() + influence / n_classes).astype(np.float32)


def class_f1_values(truth: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n, n_classes): column k holds per-example values whose mean is class k's F1, the per-class terms of
    ``macro_f1_values`` (whose mean over columns it is), so each class's F1 gets the same two-level interval."""
    truth, pred = np.asarray(truth, dtype=np.int64), np.asarray(pred, dtype=np.int64)
    n = len(truth)
    t, p = np.eye(n_classes)[truth], np.eye(n_classes)[pred]
    mean_a, mean_b = (t * p).mean(axis=0), (t + p).mean(axis=0)
    f1 = np.divide(2 * mean_a, mean_b, out=np.zeros(n_classes), where=mean_b > 0)
    safe = np.where(mean_b > 0, mean_b, 1.0)
    return (f1 + (2 * t * p - f1 * (t + p)) / safe).astype(np.float32) if n else np.zeros((0, n_classes), np.float32)


def _quantile(confidence: float, df: float) -> float:
    q = 0.5 + confidence / 2
    return float(stats.norm.ppf(q) if not np.isfinite(df) else stats.t.ppf(q, df))


def compare(
    mats: dict[str, np.ndarray], fixed=(), assumed_sd: float = ASSUMED_SEED_SD, prior: SeedPrior | None = None
) -> Comparisons:
    """Comparisons of a group: ``mats[name]`` is (n, S) 0/1 correctness, rows the same examples in the same order;
    names in ``fixed`` (a deterministic baseline) carry no seed variance and do not enter the pooled estimate;
    ``prior`` moderates each condition's seed variance (the verdict passes ``SEED_PRIOR[metric]``)."""
    mats = {k: np.asarray(v, dtype=np.float32).reshape(len(v), -1) for k, v in mats.items()}
    n = len(next(iter(mats.values())))
    if any(len(m) != n for m in mats.values()):
        raise ValueError("every condition must be scored on the same test examples")
    seeds = seed_variance({k: v for k, v in mats.items() if k not in fixed}, assumed_sd, prior)
    return Comparisons(mats, seeds, frozenset(fixed), assumed_sd, prior)


def holm(p_values: list[float], alpha: float = ALPHA) -> list[float]:
    """Holm-adjusted p-values (Holm, 1979), controlling the family-wise error over a family of comparisons:
    ``max_{j <= i} min(1, (m - j + 1) p_(j))`` over the sorted p-values. statsmodels' ``multipletests(method="holm")``
    gives the same numbers (tests/test_verdict.py checks it) but runs a garbage collection on every call, 40 ms that
    dominated the verdict simulation's thousands of studies. ``alpha`` is kept for the callers' symmetry."""
    p = np.asarray(p_values, dtype=float)
    if not len(p):
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, np.maximum.accumulate((len(p) - np.arange(len(p))) * p[order]))
    out = np.empty_like(scaled)
    out[order] = scaled
    return [float(x) for x in out]


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> dict:
    """McNemar's exact test on the 2x2 table of (a right?, b right?) over the same examples, with its direction:
    ``favours`` is "a" when a alone was right more often than b alone, "b" the other way, None when equal."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    a_only, b_only = table[0][1], table[1][0]
    p = 1.0 if a_only + b_only == 0 else float(mcnemar(table, exact=True).pvalue)
    favours = "a" if a_only > b_only else "b" if b_only > a_only else None
    return {"table": table, "a_only": a_only, "b_only": b_only, "p_value": p, "favours": favours}


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
) -> tuple[float, pd.DataFrame]:
    """ECE (Guo et al., 2017, "On Calibration of Modern Neural Networks"): sum_b |B|/n |acc(B) - conf(B)| over
    equal-width confidence bins; returns it with the per-bin table for a reliability diagram."""
    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append(
                {
                    "bin_low": edges[b],
                    "bin_high": edges[b + 1],
                    "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    table = pd.DataFrame(rows, columns=["bin_low", "bin_high", "count", "confidence", "accuracy"])
    ece = (
        float((table["count"] * (table["accuracy"] - table["confidence"]).abs()).sum() / len(confidence))
        if rows
        else 0.0
    )
    return ece, table


def expected_max(values, budgets=None) -> np.ndarray:
    """Expected best of n trials drawn (with replacement) from the observed ones, for n = 1..N (Dodge et al., 2019,
    "Show Your Work: Improved Reporting of Experimental Results", eq. 1): with the values sorted,
    E[max_n] = sum_i v_(i) [(i/N)^n - ((i-1)/N)^n]."""
    v = np.sort(np.asarray(values, dtype=float))
    big_n = len(v)
    budgets = np.arange(1, big_n + 1) if budgets is None else np.asarray(budgets)
    ranks = np.arange(1, big_n + 1) / big_n
    return np.array([float(np.sum(v * (ranks**n - (ranks - 1 / big_n) ** n))) for n in budgets])


def pareto_front(points: list[tuple[str, float, float]]) -> set[str]:
    """Names not dominated on (quality: higher is better, cost: lower is better)."""
    front = set()
    for name, q, c in points:
        dominated = any(q2 >= q and c2 <= c and (q2 > q or c2 < c) for n2, q2, c2 in points if n2 != name)
        if not dominated:
            front.add(name)
    return front
