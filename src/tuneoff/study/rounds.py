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
for clinical trials", with O'Brien & Fleming's 1979 shape ``A(t) = 2 - 2 Phi(z_{1 - alpha / 2} / sqrt(t))`` at
information fraction ``t = S / max_seeds``): ``boundaries`` turns the spending into each look's nominal level, the
group-sequential boundary that leaves ``alpha`` over every look that can happen (early looks test at a few in ten
thousand, the last near ``alpha``). ``tuneoff report`` reads the study at the level of its last look. ``bench/verdict_simulation.py --decide`` measures its error rates and the runs it takes against fixed designs.
"""

from __future__ import annotations

import functools
import logging
import time

import numpy as np
from scipy import optimize, stats

from tuneoff.analysis import power
from tuneoff.study.protocol import seconds

log = logging.getLogger(__name__)
OPEN = ("undecided", "budget-limited", "seeds disagree")


def spent(t: float, alpha: float) -> float:
    """O'Brien-Fleming-type alpha spending (Lan & DeMets, 1983): the error spent by information fraction ``t``."""
    if t <= 0:
        return 0.0
    return float(min(alpha, 2 - 2 * stats.norm.cdf(stats.norm.ppf(1 - alpha / 2) / t**0.5)))


@functools.lru_cache(maxsize=64)
def boundaries(first: int, max_seeds: int, alpha: float) -> tuple[float, ...]:
    """The nominal two-sided level of each look (seeds ``first`` .. ``max_seeds``): the group-sequential boundaries of
    the spending function above, each look's one-sided crossing spending its share of ``alpha / 2`` given that no
    earlier look crossed (Jennison & Turnbull, 2000, "Group Sequential Methods", ch. 7: the statistic at the looks is a
    Brownian motion at information fractions ``S / max_seeds``; the density of the paths still open is carried from
    look to look on a grid, the recursive integration of Armitage, McPherson & Rowe, 1969). The fractions count seeds
    only: the test examples are shared by every look, so the looks are more correlated than that, and the boundaries
    are conservative."""
    grid = np.linspace(-9.0, 9.0, 1201)
    step = grid[1] - grid[0]
    fractions = [s / max_seeds for s in range(first, max_seeds + 1)]
    density, before, levels, done = None, 0.0, [], 0.0
    for t in fractions:
        share = spent(t, alpha) / 2 - done  # one-sided error to spend at this look
        if density is None:

            def crossing(b, t=t):
                return stats.norm.sf(b / np.sqrt(t))
        else:
            delta = t - before

            def crossing(b, delta=delta, density=density):
                return float(np.sum(density * stats.norm.sf((b - grid) / np.sqrt(delta))) * step)

        bound = optimize.brentq(lambda b: crossing(b) - share, -10.0, 12.0) if share > 1e-15 else 12.0
        levels.append(float(2 * stats.norm.sf(bound / np.sqrt(t))))  # as a two-sided level on the look's z
        open_ = grid < bound
        if density is None:
            density = stats.norm.pdf(grid / np.sqrt(t)) / np.sqrt(t) * open_
        else:
            spread = np.sqrt(t - before)
            kernel = np.exp(-0.5 * ((grid[:, None] - grid[None, :]) / spread) ** 2) / (spread * np.sqrt(2 * np.pi))
            density = (kernel @ density) * step * open_
        done += crossing(bound) if share > 1e-15 else 0.0
        before = t
    return tuple(levels)


def look_alpha(seeds: int, first: int, max_seeds: int, alpha: float) -> float:
    """The level of the look made with ``seeds`` seeds (the most any condition has), ``first`` the study's own."""
    seeds = min(max(seeds, first), max_seeds)
    return boundaries(first, max_seeds, alpha)[seeds - first]


def round_seed(used: set[int], tune_seed: int | None) -> int:
    """The next round's seed: one past every seed the study has used (its trials' too)."""
    return max(used | ({tune_seed} if tune_seed is not None else set())) + 1


def who_gets_a_seed(verdicts, max_seeds: int, margin: float, last_alpha: float = 0.05) -> tuple[set[str], list[str]]:
    """The conditions that get another seed after a look (by their names in the verdicts), and why an open comparison
    gets none when it gets none. ``verdicts``: the look's ``verdict.GroupVerdict`` list; ``last_alpha``: the level of
    the look at ``max_seeds`` (``look_alpha``), where seeds would have to settle it."""
    chosen, notes = set(), []
    for v in verdicts:
        if v.decided:
            continue
        cmp = v.comparisons
        # ahead of the majority class but not shown above it yet (one seed measures no seed spread): more seeds may
        t = v.table
        ahead = t[(t.method != "baseline") & ~t.eligible.astype(bool) & (t.collapsed_runs == 0) & (t.vs_baseline > 0)]
        for name in ahead.condition:
            if cmp.n_seeds(name) < max_seeds:
                chosen.add(name)
            else:
                notes.append(f"{name}: not shown above the majority class at max_seeds ({max_seeds})")
        if v.recommended is None or v.decisions is None or "call" not in v.decisions:
            continue  # no candidate against the pick (one alone above the baseline): only the seeds above decide
        rows = v.decisions[(v.decisions.against == "pick") & v.decisions.call.isin(OPEN)]
        for r in rows.itertuples():
            seeds = min(cmp.n_seeds(r.condition), cmp.n_seeds(v.best))
            if seeds >= max_seeds:
                notes.append(f"{r.condition} against {v.best}: open at max_seeds ({max_seeds})")
                continue
            n = len(next(iter(cmp.mats.values())))
            noise = power.Noise(r.test * n, cmp.seeds_of(r.condition).tau2, cmp.seeds_of(v.best).tau2)
            level = last_alpha / max(len(v.with_best) - 1, 1)
            # Futility (non-binding, so it costs no error): even at max_seeds, would the comparison be settled either
            # way, as good or worse, one time in five, if its difference is what it looks like now?
            if power.settle(noise, max_seeds, n, margin, level, r.diff) < 0.2:
                if power.settle(noise, power.MAX_SEEDS, n, margin, level, r.diff) >= 0.2:
                    held = f"it would need more than max_seeds ({max_seeds}) seeds"
                elif power.settle(noise, max_seeds, power.MAX_EXAMPLES, margin, level, r.diff) >= 0.2:
                    held = f"its {n:,} test examples limit it (more test examples would settle it)"
                else:
                    held = "its difference sits near the margin"
                notes.append(f"{r.condition} against {v.best}: more seeds would hardly settle it; {held}")
                continue
            chosen |= {name for name in (r.condition, v.best) if cmp.n_seeds(name) < max_seeds}
    return chosen, notes


class Clock:
    """The rounds' budget, from this command's start."""

    def __init__(self, budget: str | None):
        self.start, self.limit = time.monotonic(), seconds(budget) if budget else None

    def spent(self) -> bool:
        return self.limit is not None and time.monotonic() - self.start >= self.limit
