"""How fast each condition learns, with the uncertainty a claim like "LoRA+ converges faster" needs.

Speed is the number of optimizer steps until validation accuracy first reaches a target, read per seed from the
run's evaluation history, at two targets:

- **its own plateau**: 95% of the run's best validation accuracy (how soon a condition gets near where it ends);
- **a common bar**: 95% of the weakest eligible condition's mean best validation accuracy, the same for every
  condition, so a method that plateaus lower is not credited with reaching its own lower plateau sooner.

Each condition is compared with the best on validation by Welch's t test on its seeds' step counts (scipy), Holm-
adjusted over the table. A step count is only known to the evaluation interval (the crossing happened somewhere in
the last ``eval_every`` steps), so a difference no larger than one interval is never called, whatever its p-value.
A second, exploratory table (``speed_pairs``) compares every pair at the common bar, for questions the decision does
not ask (report 4's "LoRA+ converges faster than LoRA", neither of them the best).
"""

from __future__ import annotations

import warnings
from itertools import combinations

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


def common_steps(conditions: list[Condition], eligible: set[str]):
    """Each condition's evaluation histories, step counts to the common bar per seed, the bar and the resolution
    (None when the runs recorded no evaluation history)."""
    histories = {c.name: [_evaluations(r.get("history") or []) for r in c.runs] for c in conditions}
    histories = {name: hs for name, hs in histories.items() if hs and all(hs)}
    if not histories:
        return None
    plateaus = {name: float(np.mean([max(e["val_accuracy"] for e in h) for h in hs])) for name, hs in histories.items()}
    bar = COMMON * min((p for name, p in plateaus.items() if name in eligible), default=min(plateaus.values()))
    resolution = max(_interval(h) for hs in histories.values() for h in hs)
    steps = {name: np.array([steps_to(h, bar) for h in hs]) for name, hs in histories.items()}
    return histories, steps, bar, resolution


def _welch(values: np.ndarray, reference: np.ndarray, alpha: float) -> dict:
    """Mean difference in steps (values - reference), its Welch interval and p-value."""
    with warnings.catch_warnings():  # seeds that cross at the same evaluation: identical values, expected
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_ind(values, reference, equal_var=False)
    diff = float(values.mean() - reference.mean())
    ci = test.confidence_interval(1 - alpha) if np.isfinite(test.statistic) else None
    return {
        "diff": diff,
        "ci_low": float(ci.low) if ci else diff,
        "ci_high": float(ci.high) if ci else diff,
        "p_value": float(test.pvalue) if np.isfinite(test.pvalue) else 1.0,
    }


def _per_seed(values: np.ndarray) -> str:
    return " / ".join("never" if np.isnan(s) else f"{s:g}" for s in values)


def speed_table(common, best: str | None, alpha: float = ALPHA) -> pd.DataFrame:
    """Per condition and target: steps per seed, their mean, and the difference from ``best`` (Welch 95% CI, p, Holm,
    and the call: faster, slower, or cannot tell), from ``common_steps`` of a group's conditions. Empty when the runs
    recorded no evaluation history."""
    if common is None:
        return pd.DataFrame()
    histories, bar_steps, bar, resolution = common
    rows = []
    for target in ("own plateau", "common bar"):
        steps = (
            bar_steps
            if target == "common bar"
            else {
                name: np.array([steps_to(h, OWN * max(e["val_accuracy"] for e in h)) for h in hs])
                for name, hs in histories.items()
            }
        )
        for name, values in steps.items():
            row = {
                "condition": name,
                "target": target if target == "own plateau" else f"validation accuracy {bar:.3f}",
                "steps_per_seed": _per_seed(values),
                "mean_steps": float(np.nanmean(values)) if not np.all(np.isnan(values)) else np.nan,
            }
            reference = steps.get(best)
            if name != best and reference is not None and _comparable(values, reference):
                test = _welch(values, reference, alpha)
                row.update(diff_vs_best=test.pop("diff"), **test)
            rows.append(row)
    table = pd.DataFrame(rows)
    if "p_value" in table:
        tested = table.p_value.notna()
        table.loc[tested, "p_holm"] = holm(table.loc[tested, "p_value"].tolist(), alpha)
        table["call"] = [
            _call(r.p_holm, r.diff_vs_best, alpha, resolution, ("faster", "slower")) for r in table.itertuples()
        ]
    table.attrs["resolution_steps"] = resolution
    return table


def speed_pairs(common, alpha: float = ALPHA) -> pd.DataFrame:
    """Exploratory, every pair of conditions at the common bar: steps of a minus steps of b (Welch 95% CI, p, Holm over
    the pairs of this table) and the call. A question the decision does not ask, such as "does LoRA+ learn faster than
    LoRA?" when neither is the best, gets its interval here. Pairs where a seed never reached the bar are left out.
    ``common``: ``common_steps`` of a group's conditions."""
    if common is None:
        return pd.DataFrame()
    _, steps, bar, resolution = common
    rows = [
        {
            "a": a,
            "b": b,
            "target": f"validation accuracy {bar:.3f}",
            "steps_a": _per_seed(steps[a]),
            "steps_b": _per_seed(steps[b]),
            **_welch(steps[a], steps[b], alpha),
        }
        for a, b in combinations(steps, 2)
        if _comparable(steps[a], steps[b])
    ]
    table = pd.DataFrame(rows)
    if len(table):
        table = table.rename(columns={"diff": "steps_diff"})
        table["p_holm"] = holm(table.p_value.tolist(), alpha)
        table["call"] = [
            _call(r.p_holm, r.steps_diff, alpha, resolution, (f"{r.a} faster", f"{r.b} faster"))
            for r in table.itertuples()
        ]
    table.attrs["resolution_steps"] = resolution
    return table


def _comparable(values: np.ndarray, reference: np.ndarray) -> bool:
    """Welch needs two seeds on each side, and every seed must have reached the target."""
    return len(values) > 1 and len(reference) > 1 and not (np.isnan(values).any() or np.isnan(reference).any())


def _call(p_holm: float, diff: float, alpha: float, resolution: float, words: tuple[str, str]) -> str:
    """``words[0]`` when the first side needs significantly fewer steps by more than one evaluation interval,
    ``words[1]`` when more, else "cannot tell" ("" when untested)."""
    if pd.isna(p_holm):
        return ""
    if p_holm < alpha and abs(diff) > resolution:
        return words[0] if diff < 0 else words[1]
    return "cannot tell"
