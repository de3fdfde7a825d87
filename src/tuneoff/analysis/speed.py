"""How fast each condition learns, with the uncertainty a claim like "LoRA+ converges faster" needs.

Speed is the number of optimizer steps until validation accuracy first reaches a target, read per seed from the
run's evaluation history, at two targets:

- **its own plateau**: 95% of the run's best validation accuracy (how soon a condition gets near where it ends);
- **a common bar**: 95% of the weakest eligible condition's mean best validation accuracy, the same for every
  condition, so a method that plateaus lower is not credited with reaching its own lower plateau sooner.

Each condition is compared with the best on validation by Welch's t test on its seeds' step counts (scipy), Holm-
adjusted over the table. A step count is only known to the evaluation interval (the crossing happened somewhere in
the last ``eval_every`` steps), so a difference no larger than one interval is never called, whatever its p-value.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats

from tuneoff.analysis.groups import Condition, first_reaching
from tuneoff.analysis.significance import ALPHA, holm

OWN, COMMON = 0.95, 0.95


def steps_to(history: list[dict], target: float) -> float:
    """First evaluated step whose validation accuracy reaches ``target`` (nan if none does)."""
    hit = first_reaching(history, target)
    return float(hit["step"]) if hit else float("nan")


def _evaluations(history: list[dict]) -> list[dict]:
    return [e for e in history if e.get("val_accuracy") is not None and e.get("step") is not None]


def _interval(history: list[dict]) -> float:
    """The run's usual gap between evaluations (the median): a crossing is known only to within it. Not the
    narrowest: an evaluation at an epoch's end 6 steps before a regular one (report 2's 94 and 100) does not make
    every step count exact; nor one odd gap (an evaluation lost to a resumed run) every count coarse."""
    steps = sorted({e["step"] for e in history})
    return float(np.median(np.diff(steps))) if len(steps) > 1 else float(steps[0]) if steps else float("nan")


def speed_table(conditions: list[Condition], best: str | None, eligible: set[str], alpha: float = ALPHA) -> pd.DataFrame:
    """Per condition and target: steps per seed, their mean, and the difference from ``best`` (Welch 95% CI, p, Holm,
    and the call: faster, slower, or cannot tell). Empty when the runs recorded no evaluation history."""
    histories = {c.name: [_evaluations(r.get("history") or []) for r in c.runs] for c in conditions}
    histories = {name: hs for name, hs in histories.items() if hs and all(hs)}
    if not histories:
        return pd.DataFrame()
    plateaus = {name: float(np.mean([max(e["val_accuracy"] for e in h) for h in hs])) for name, hs in histories.items()}
    bar = COMMON * min((p for name, p in plateaus.items() if name in eligible), default=min(plateaus.values()))
    resolution = max(_interval(h) for hs in histories.values() for h in hs)
    rows = []
    for target in ("own plateau", "common bar"):
        steps = {name: np.array([steps_to(h, OWN * max(e["val_accuracy"] for e in h) if target == "own plateau" else bar)
                                 for h in hs]) for name, hs in histories.items()}
        for name, values in steps.items():
            row = {"condition": name, "target": target if target == "own plateau" else f"validation accuracy {bar:.3f}",
                   "steps_per_seed": " / ".join("never" if np.isnan(s) else f"{s:g}" for s in values),
                   "mean_steps": float(np.nanmean(values)) if not np.all(np.isnan(values)) else np.nan}
            reference = steps.get(best)
            if name != best and reference is not None and _comparable(values, reference):
                with warnings.catch_warnings():  # seeds that cross at the same evaluation: identical values, expected
                    warnings.simplefilter("ignore", RuntimeWarning)
                    test = stats.ttest_ind(values, reference, equal_var=False)
                diff = float(values.mean() - reference.mean())
                ci = test.confidence_interval(1 - alpha) if np.isfinite(test.statistic) else None
                row.update(diff_vs_best=diff, ci_low=float(ci.low) if ci else diff, ci_high=float(ci.high) if ci else diff,
                           p_value=float(test.pvalue) if np.isfinite(test.pvalue) else 1.0)
            rows.append(row)
    table = pd.DataFrame(rows)
    if "p_value" in table:
        tested = table.p_value.notna()
        table.loc[tested, "p_holm"] = holm(table.loc[tested, "p_value"].tolist(), alpha)
        table["call"] = [_call(r, alpha, resolution) for r in table.itertuples()]
    table.attrs["resolution_steps"] = resolution
    return table


def _comparable(values: np.ndarray, reference: np.ndarray) -> bool:
    """Welch needs two seeds on each side, and every seed must have reached the target."""
    return len(values) > 1 and len(reference) > 1 and not (np.isnan(values).any() or np.isnan(reference).any())


def _call(row, alpha: float, resolution: float) -> str:
    if pd.isna(getattr(row, "p_holm", np.nan)):
        return ""
    if row.p_holm < alpha and abs(row.diff_vs_best) > resolution:
        return "faster" if row.diff_vs_best < 0 else "slower"
    return "cannot tell"
