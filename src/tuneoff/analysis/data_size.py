"""Accuracy (or the verdict's metric) against the number of training examples: the groups of one test set that differ only in training size.

A study over training-set sizes (``data.max_train_samples``) gets one verdict per size (``groups``); this module
lines those verdicts up so a reader sees where the methods' curves cross: each condition's test accuracy with its
95% interval (over seeds and test examples) at every size, the majority class beside them, and which condition
each size's verdict recommends. Nothing is re-tested here: every number is a verdict's own.
"""

from __future__ import annotations

import pandas as pd

from tuneoff.analysis.groups import condition_name

SIZE_PARAM = "data.max_train_samples"


def curve_label(condition) -> str:
    """A condition's name without what its group already says (dataset, model, training size): its line in the plot."""
    hidden = {SIZE_PARAM, "data.name", "model.name"}
    return condition_name(condition.variant, {k: v for k, v in condition.params.items() if k not in hidden})


def size_table(verdicts) -> pd.DataFrame:
    """One row per condition per training size (and the majority class per size), for each test set that was
    trained at more than one size; empty when there is none."""
    rows = []
    for v in verdicts:
        g = v.group
        if not g.by_size:
            continue
        labels = {c.name: curve_label(c) for c in g.conditions}
        for r in v.table.itertuples():
            baseline = r.method == "baseline"
            rows.append(
                {
                    "dataset": g.dataset,
                    "model": g.model,
                    "train_examples": g.train_examples,
                    "line": "majority class" if baseline else labels[r.condition],
                    "metric": v.metric,
                    "score": getattr(r, v.metric),
                    "ci_low": getattr(r, f"{v.metric}_ci_low"),
                    "ci_high": getattr(r, f"{v.metric}_ci_high"),
                    "budget_limited": bool(r.budget_limited),
                    "recommended": r.condition == v.recommended,
                }
            )
    return pd.DataFrame(rows)


def size_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a reader scans it: a row per line, a column per size, each cell "score (interval)" in
    percent, **bold** where that size's verdict recommends it, † where its runs were budget-limited."""

    def cell(r) -> str:
        text = f"{100 * r.score:.1f} ({100 * r.ci_low:.1f}–{100 * r.ci_high:.1f})"
        return (f"**{text}**" if r.recommended else text) + (" †" if r.budget_limited else "")

    cells = table.assign(cell=[cell(r) for r in table.itertuples()])
    out = cells.pivot_table(index="line", columns="train_examples", values="cell", aggfunc="first", sort=False)
    out.columns = [f"{int(n):,} examples" for n in out.columns]
    return out.reset_index().rename(columns={"line": "condition"})
