"""What a design can decide: the chance that a comparison at the margin is decided with S seeds per condition and n
test examples, and the seeds or test examples that would give a target chance. Used after a study (what would settle
an open comparison) and before one (``tuneoff plan``: is the margin within reach?).

A difference between two conditions has variance ``v / n + tau2_a / S + tau2_b / S`` (``significance``: ``v`` the
per-example variance of the difference, ``tau2`` each condition's seed variance). "As good" is decided when the
interval's lower end clears ``-margin``: with a true difference ``delta`` that happens with chance about
``Phi((delta + margin) / se - q)``, ``q`` the one-sided t quantile at the level the verdict uses (Hsu's MCB over
``k`` candidates: ``alpha / (k - 1)``) on Welch-Satterthwaite degrees of freedom, which grow with the seeds (the seed
parts on ``S - 1 + d0`` each, as the verdict moderates them). The normal approximation to the t interval's lower end
is the usual one for sample-size planning (Julious, 2004, "Sample sizes for clinical trials with normal data",
Statistics in Medicine 23); ``tests/test_power.py`` checks it against a simulation slice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from tuneoff.analysis.significance import SEED_PRIOR

TARGET = 0.8  # the chance of deciding a plan aims for
MAX_SEEDS = 64
MAX_EXAMPLES = 10_000_000


@dataclass(frozen=True)
class Noise:
    """The variance parts of one comparison: per-example variance of the difference and each side's seed variance
    (fractions squared), and the prior the verdict moderates a measured seed variance with (``prior_sd`` 0: none)."""

    per_example: float
    seed_a: float
    seed_b: float
    prior_df: float = SEED_PRIOR["accuracy"].df
    prior_sd: float = 0.0
    per_example_per_seed: float = 0.0  # the part of the per-example variance that averaging over seeds shrinks

    def test(self, seeds: int, examples: int) -> float:
        return (self.per_example + self.per_example_per_seed / seeds) / examples

    def _seed(self, tau2: float, seeds: int) -> float:
        """The seed variance the verdict will use with ``seeds`` seeds: the measured one, raised toward the prior's
        with its weight (as ``significance.seed_variance``; the expectation of the measured part)."""
        d = seeds - 1
        return max(tau2, (d * tau2 + self.prior_df * self.prior_sd**2) / (d + self.prior_df)) if self.prior_sd else tau2

    def se(self, seeds: int, examples: int) -> float:
        return float(
            np.sqrt(
                self.test(seeds, examples) + (self._seed(self.seed_a, seeds) + self._seed(self.seed_b, seeds)) / seeds
            )
        )

    def df(self, seeds: int, examples: int) -> float:
        test = self.test(seeds, examples)
        parts = [self._seed(self.seed_a, seeds) / seeds, self._seed(self.seed_b, seeds) / seeds]
        denominator = test**2 / max(examples - 1, 1) + sum(p**2 / (seeds - 1 + self.prior_df) for p in parts)
        return float((test + sum(parts)) ** 2 / denominator) if denominator > 0 else float("inf")


def quantile(level: float, df: float) -> float:
    return float(stats.norm.ppf(1 - level) if not np.isfinite(df) else stats.t.ppf(1 - level, df))


def chance(noise: Noise, seeds: int, examples: int, margin: float, level: float, true_diff: float = 0.0) -> float:
    """Chance that "as good" is decided (the interval's lower end above -margin) when the true difference is
    ``true_diff``; ``level`` is the one-sided error rate of each interval (0.05 / (k - 1) for MCB over k)."""
    se = noise.se(seeds, examples)
    if se == 0:
        return float(true_diff > -margin)
    return float(stats.norm.cdf((true_diff + margin) / se - quantile(level, noise.df(seeds, examples))))


def settle(noise: Noise, seeds: int, examples: int, margin: float, level: float, true_diff: float) -> float:
    """Chance that the comparison is settled either way: shown within the margin ("as good", as ``chance``) or shown
    below it ("worse": the interval's upper end under -margin), when the true difference is ``true_diff`` (conditional
    power under the current trend, for deciding whether more seeds are worth running)."""
    se = noise.se(seeds, examples)
    if se == 0:
        return 1.0
    q = quantile(level, noise.df(seeds, examples))
    worse = stats.norm.cdf((-margin - true_diff) / se - q)
    return float(min(1.0, chance(noise, seeds, examples, margin, level, true_diff) + worse))


def resolvable(noise: Noise, seeds: int, examples: int, level: float, target: float = TARGET) -> float:
    """The smallest margin decided with chance ``target`` between truly equal conditions at this design."""
    return float((quantile(level, noise.df(seeds, examples)) + stats.norm.ppf(target)) * noise.se(seeds, examples))


def _fewest(decides, low: int, high: int) -> int | None:
    """The smallest integer in [low, high] for which ``decides`` holds, by bisection (the chance of deciding only
    grows with seeds or examples: the standard error shrinks and the t quantile with it); None when even ``high``
    does not."""
    if not decides(high):
        return None
    while low < high:
        mid = (low + high) // 2
        if decides(mid):
            high = mid
        else:
            low = mid + 1
    return low


def seeds_for(
    noise: Noise, examples: int, margin: float, level: float, target: float = TARGET, true_diff: float = 0.0
) -> int | None:
    """The fewest seeds per condition that decide with chance ``target`` (test examples as given); None when no
    number up to ``MAX_SEEDS`` does (the test part alone is too wide)."""
    return _fewest(lambda seeds: chance(noise, seeds, examples, margin, level, true_diff) >= target, 2, MAX_SEEDS)


def examples_for(
    noise: Noise, seeds: int, margin: float, level: float, target: float = TARGET, true_diff: float = 0.0
) -> int | None:
    """The fewest test examples that decide with chance ``target`` (seeds as given); None when none do (the seed
    part alone is too wide: more seeds, not more examples)."""
    return _fewest(lambda n: chance(noise, seeds, n, margin, level, true_diff) >= target, 2, MAX_EXAMPLES)
