"""Multiple comparisons with the best (Hsu, 1981, 1984: "Constrained simultaneous confidence intervals for multiple
comparisons with the best", Annals of Statistics 12(3); Hsu, 1996, "Multiple Comparisons", ch. 4).

The verdict's questions about the best are not about one chosen condition: "is this cheaper method within the margin
of the best?" asks about whichever condition truly is the best, and asking it of every cheaper candidate asks it
several times. Testing each candidate against the validation pick, each at 95%, gets both wrong: the pick's seed luck
leans the comparison (among equal conditions the pick is the lucky one), and with six candidates at the margin one of
them passes 8% of the time. MCB answers every such question at once, at a stated simultaneous level, whatever was
picked: for each condition i, an interval for theta_i - max_{j != i} theta_j (its distance from the best of the others).

With ``D_ij = mean_i - mean_j``, its standard error ``se_ij`` and a one-sided critical value ``d_ij`` (here the t
quantile at ``alpha / (k - 1)``, Bonferroni's bound on Dunnett's, on the pair's Welch-Satterthwaite degrees of freedom:
the conditions' variances differ, so Hsu's common-variance quantile does not apply):

- ``U_i = max(0, min_{j != i} (D_ij + d_ij se_ij))``; the conditions with ``U_i > 0`` form ``G``, a confidence set for
  the best (the others are significantly below some condition);
- ``L_i = 0`` if ``G = {i}``, else ``min(0, min_{j in G, j != i} (D_ij - d_ij se_ij))``.

On the event that the true best ``i*`` is not out-run by more than ``d se`` by any other (probability >= 1 - alpha
by Bonferroni over its k - 1 comparisons), ``i*`` is in ``G`` and every ``[L_i, U_i]`` covers
``theta_i - max_{j != i} theta_j``. So, simultaneously: ``L_i > -margin`` means i is within the margin of the best,
whichever it is ("as good"); ``G = {i}`` that no condition is better than i. MCB gives no "worse by more than the
margin": for a condition other than the best its upper bound is 0, and a bound below 0 would fail when conditions tie
(``verdict`` makes that call against the held-apart pick instead, simultaneous over the comparisons with it).
"""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

COLUMNS = ["condition", "best_low", "best_high", "in_best_set", "p_not_best"]


def with_the_best(cmp, names: list[str], alpha: float) -> pd.DataFrame:
    """One row per condition of ``names`` (compared through ``cmp``, a ``significance.Comparisons``): the simultaneous
    (1 - alpha) interval of its distance from the best of the others (``best_low``, ``best_high``: Hsu's constrained
    interval, so ``best_high`` is 0 outside the set), whether it is in the confidence set of the best, and the adjusted
    p-value of "it is not the best" (the smallest alpha at which it would leave the set: Bonferroni over its k - 1
    one-sided comparisons)."""
    k = len(names)
    if k < 2:
        return pd.DataFrame(
            [
                {"condition": n, "best_low": 0.0, "best_high": 0.0, "in_best_set": True, "p_not_best": 1.0}
                for n in names
            ],
            columns=COLUMNS,
        )
    level = alpha / (k - 1)
    diff, reach, p_one = {}, {}, {}
    for a, b in combinations(names, 2):
        r = cmp.difference(a, b)
        se, df = r["se"], r["df"]
        q = float(stats.t.ppf(1 - level, df)) * se if se > 0 else 0.0
        for i, j, d in ((a, b, r["diff"]), (b, a, -r["diff"])):
            diff[(i, j)], reach[(i, j)] = d, q
            # one-sided p of "j is above i" (the evidence that i is not the best), from the same t distribution
            p_one[(i, j)] = float(stats.t.sf(-d / se, df)) if se > 0 else (0.0 if d < 0 else 1.0)
    upper = {i: max(0.0, min(diff[(i, j)] + reach[(i, j)] for j in names if j != i)) for i in names}
    # Every interval of zero width (identical scores, no variance) leaves no condition above 0: then the top ones tie.
    best_set = [i for i in names if upper[i] > 0] or [
        i for i in names if all(diff[(i, j)] >= 0 for j in names if j != i)
    ]
    rows = []
    for i in names:
        rivals = [j for j in best_set if j != i]
        low = 0.0 if not rivals else min(0.0, min(diff[(i, j)] - reach[(i, j)] for j in rivals))
        high = upper[i]
        p = min(1.0, (k - 1) * min(p_one[(i, j)] for j in names if j != i))
        rows.append({"condition": i, "best_low": low, "best_high": high, "in_best_set": i in best_set, "p_not_best": p})
    return pd.DataFrame(rows, columns=COLUMNS)


def as_good(row: pd.Series, margin: float) -> bool:
    """Within ``margin`` of the best, whichever it is: the lower end of the MCB interval above -margin."""
    return bool(row.best_low > -margin)


def is_decided_best(frame: pd.DataFrame, name: str) -> bool:
    """The confidence set of the best holds ``name`` alone: it is significantly better than every other condition."""
    in_set = frame[frame.in_best_set.astype(bool)].condition.tolist()
    return in_set == [name]


def lower_bound(frame: pd.DataFrame, name: str) -> float:
    """The most ``name`` may lose against the best at the simultaneous level (``best_low``), NaN when absent."""
    hit = frame[frame.condition == name]
    return float(hit.best_low.iloc[0]) if len(hit) else float(np.nan)
