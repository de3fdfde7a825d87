"""Decide mode: a study that spends its seeds where they decide, and stops when its answer is decided.

With ``until_decided:`` in the study (or ``tuneoff run --until-decided``), the study runs its tuning phase and its
``seeds`` as usual, then looks at its verdict and runs rounds: each round gives one more seed (the same seed to every
condition that gets one: common random numbers) to the conditions whose comparisons are still open and that seeds
could settle, and looks again. The racing of Birattari et al. (2002, F-Race) and López-Ibáñez et al. (2016, irace):

- a condition shown worse than the best by more than the margin, or that cannot be shown above the majority class,
  gets no more seeds;
- a comparison that more seeds cannot settle (its test examples limit it: ``analysis.power``) gets none either; the
  study says more test examples would;
- the study stops when every group's recommendation is decided, when ``max_seeds`` is reached, or when the ``budget``
  (wall-clock, from this command's start) is spent, and says which comparison stayed open and why.

Looking after every round and stopping when a call is made would call a false difference more often than 5%: each look
is one more chance. The error is spent across the looks instead (Lan & DeMets, 1983, "Discrete sequential boundaries
for clinical trials", with O'Brien & Fleming's 1979 shape): the look with ``S`` seeds tests at
``A(S / max_seeds) - A((S - 1) / max_seeds)``, ``A(t) = 2 - 2 Phi(z_{1 - alpha / 2} / sqrt(t))`` (the first look at
``A(S0 / max_seeds)``). The levels sum to ``alpha`` over every look that can happen, so by Bonferroni every call the
study makes, at whichever look, holds at ``alpha`` (conservative against an exact group-sequential boundary, which
would need the looks' correlation; valid whatever it is). ``tuneoff report`` reads the study at the level of its last
look. ``bench/verdict_simulation.py --decide`` measures its error rates and the runs it takes against fixed designs.
"""

from __future__ import annotations

import logging
import time

from scipy import stats

from tuneoff.analysis import power
from tuneoff.study.protocol import seconds

log = logging.getLogger(__name__)
OPEN = ("undecided", "budget-limited", "seeds disagree")


def spent(t: float, alpha: float) -> float:
    """O'Brien-Fleming-type alpha spending (Lan & DeMets, 1983): the error spent by information fraction ``t``."""
    if t <= 0:
        return 0.0
    return float(min(alpha, 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / t ** 0.5)))


def look_alpha(seeds: int, first: int, max_seeds: int, alpha: float) -> float:
    """The level of the look made with ``seeds`` seeds (the most any condition has), ``first`` the study's own."""
    seeds = min(max(seeds, first), max_seeds)
    before = spent((seeds - 1) / max_seeds, alpha) if seeds > first else 0.0
    return spent(seeds / max_seeds, alpha) - before


def round_seed(used: set[int], tune_seed: int | None) -> int:
    """The next round's seed: one past every seed the study has used (its trials' too)."""
    return max(used | ({tune_seed} if tune_seed is not None else set())) + 1


def who_gets_a_seed(verdicts, max_seeds: int, margin: float) -> tuple[set[str], list[str]]:
    """The conditions that get another seed after a look (by their names in the verdicts), and why an open comparison
    gets none when it gets none. ``verdicts``: the look's ``verdict.GroupVerdict`` list."""
    chosen, notes = set(), []
    for v in verdicts:
        if v.recommended is None or v.decided or v.decisions is None:
            continue
        cmp = v.comparisons
        rows = v.decisions[(v.decisions.against == "pick") & v.decisions.call.isin(OPEN)]
        for r in rows.itertuples():
            seeds = min(cmp.n_seeds(r.condition), cmp.n_seeds(v.best))
            if seeds >= max_seeds:
                notes.append(f"{r.condition} against {v.best}: open at max_seeds ({max_seeds})")
                continue
            n = len(next(iter(cmp.mats.values())))
            noise = power.Noise(r.test * n, cmp.seeds_of(r.condition).tau2, cmp.seeds_of(v.best).tau2)
            # even at max_seeds, one chance in five or less: the test set, not the seeds, holds it open
            if power.chance(noise, max_seeds, n, margin, v.alpha / max(len(v.with_best) - 1, 1)) < 0.2:
                notes.append(f"{r.condition} against {v.best}: its {n:,} test examples limit it; more seeds would not "
                             "settle it (more test examples would)")
                continue
            chosen |= {name for name in (r.condition, v.best) if cmp.n_seeds(name) < max_seeds}
    return chosen, notes


class Clock:
    """The rounds' budget, from this command's start."""

    def __init__(self, budget: str | None):
        self.start, self.limit = time.monotonic(), seconds(budget) if budget else None

    def spent(self) -> bool:
        return self.limit is not None and time.monotonic() - self.start >= self.limit
