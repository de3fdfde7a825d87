"""The answer a study gives, per group of comparable conditions: which method to use and what it costs.

The rules, each there because the naive version misleads:

- **chosen on validation, confirmed on test**: the winner and runner-up are ranked by validation accuracy; the
  test set only confirms (choosing on test and then testing on it overstates the winner);
- **both sources of noise**: intervals and p-values come from the two-level bootstrap (seeds, then test
  examples; ``significance``), so a method whose seeds scatter is not called better on one lucky seed;
- **Holm's correction** over every pair of the study: 15 pairs at alpha 0.05 would otherwise find a
  "difference" by chance about half the time;
- **non-inferiority, not "not significantly worse"**: a cheaper method counts as good as the best only when the
  whole CI of (it - best) lies above -margin; a wide CI is reported as "cannot decide", with what would;
- **a baseline**: every group carries the majority-class predictor; a condition that collapsed to one class in any
  run, or does not beat the baseline significantly, is flagged and never recommended;
- **costs as ratios** against a reference (full fine-tuning when the study has it, else the best), as the
  background reports wrote "LoRA used 1.77x the memory and ran 1.66x slower".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from tuneoff.analysis.groups import Condition, Group, condition_row, groups
from tuneoff.analysis.settings import AnalysisSettings, Decide
from tuneoff.analysis.significance import (
    holm,
    mcnemar_exact,
    non_inferiority,
    pareto_front,
    two_level_bootstrap,
    variance_parts,
    what_would_decide,
)

COSTS = {"trainable_params": "trainable parameters", "trained_mb": "trained weights to keep (MB)",
         "peak_memory_mb": "peak memory (MB)", "train_seconds": "train time (s)"}
RATIO_COSTS = ("trained_mb", "peak_memory_mb", "train_seconds")
BASELINE = "baseline"
TRAINS_EVERYTHING = 99.999  # trainable_pct of a condition that is the cost reference


@dataclass
class GroupVerdict:
    group: Group
    table: pd.DataFrame                  # one row per condition (+ the baseline row)
    pairs: pd.DataFrame                  # every pair of conditions: difference, CI, p (raw and Holm), McNemar
    best: str | None = None
    reference: str | None = None
    recommended: str | None = None
    lines: list[str] = field(default_factory=list)
    family: int = 0                      # comparisons in the study (Holm's family)


def _pair_rows(group: Group, resamples, mats: dict, alpha: float) -> list[dict]:
    """Every pair of the group: the two-level bootstrap difference, and McNemar on each seed both have run."""
    rows = []
    for a, b in combinations(group.conditions, 2):
        d = resamples.difference(a.name, b.name, 1 - alpha)
        seeds_b = [r["seed"] for r in b.runs]
        tests = [(r["seed"], mcnemar_exact(mats[a.name][:, i], mats[b.name][:, seeds_b.index(r["seed"])]))
                 for i, r in enumerate(a.runs) if r["seed"] in seeds_b]
        rows.append({"a": a.name, "b": b.name, "n": len(group.ids), "accuracy_diff": d["diff"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"], "p_value": d["p_value"],
                     "mcnemar": "; ".join(f"seed {s}: {_favour(t, a.name, b.name)} (p={t['p_value']:.3g})" for s, t in tests),
                     "mcnemar_favours_a": sum(t["favours"] == "a" and t["p_value"] < alpha for _, t in tests),
                     "mcnemar_favours_b": sum(t["favours"] == "b" and t["p_value"] < alpha for _, t in tests),
                     "paired_seeds": len(tests)})
    return rows


def _favour(test: dict, a: str, b: str) -> str:
    return {"a": f"favours {a}", "b": f"favours {b}", None: "even"}[test["favours"]]


def analyse(conditions: list[Condition], settings: AnalysisSettings | None = None) -> list[GroupVerdict]:
    """One verdict per group; Holm's adjustment runs over the pairs of every group together."""
    settings = settings or AnalysisSettings()
    confidence = 1 - settings.alpha
    verdicts, resampled = [], []
    for gi, group in enumerate(groups(conditions)):
        mats = {c.name: c.correct(group.ids) for c in group.conditions}
        resamples = two_level_bootstrap({**mats, BASELINE: group.baseline_correct()}, seed=gi)
        rows = [condition_row(c) for c in group.conditions]
        for row, c in zip(rows, group.conditions):
            row["accuracy_ci_low"], row["accuracy_ci_high"] = resamples.interval(c.name, confidence)
            row["ci_covers"] = "seeds and test examples" if len(c.runs) > 1 else "test examples only (one seed)"
            vs = resamples.difference(c.name, BASELINE, confidence)
            row["beats_baseline"] = vs["ci_low"] > 0
            row["eligible"] = row["beats_baseline"] and row["collapsed_runs"] == 0
            row["fits"] = _fits(row, settings.decide)
        base_acc = float(group.baseline_correct().mean())
        low, high = resamples.interval(BASELINE, confidence)
        rows.append({"condition": f"majority class ({group.majority})", "method": BASELINE, "seeds": 0, "accuracy": base_acc,
                     "accuracy_ci_low": low, "accuracy_ci_high": high, "ci_covers": "test examples",
                     "eligible": False, "fits": False, "beats_baseline": False, "collapsed_runs": 0})
        table = pd.DataFrame(rows)
        verdicts.append(GroupVerdict(group, table, pd.DataFrame(_pair_rows(group, resamples, mats, settings.alpha))))
        resampled.append((resamples, mats))
    adjusted = holm([p for v in verdicts for p in v.pairs.get("p_value", [])], settings.alpha)
    family = len(adjusted)
    for v, (resamples, mats) in zip(verdicts, resampled):
        v.family = family
        if len(v.pairs):
            v.pairs["p_holm"], adjusted = adjusted[:len(v.pairs)], adjusted[len(v.pairs):]
            v.pairs["significant"] = v.pairs["p_holm"] < settings.alpha
        _decide(v, resamples, mats, settings)
    return verdicts


def _fits(row: dict, decide: Decide) -> bool:
    limits = (("peak_memory_mb", decide.max_peak_memory_mb), ("train_seconds", decide.max_train_seconds),
              ("trainable_params", decide.max_trainable_params))
    return all(limit is None or pd.isna(row.get(key)) or row[key] <= limit for key, limit in limits)


def _ratio(value: float, ref: float) -> str:
    if pd.isna(value) or pd.isna(ref) or not ref:
        return "n/a"
    r = value / ref
    return f"1/{1 / r:,.0f}" if r < 0.5 else f"{r:.2f}x"


def _overall_cost(row: pd.Series, ref: pd.Series) -> float:
    """Geometric mean of the cost ratios against the reference (costs a run did not measure left out)."""
    logs = [np.log(row[k] / ref[k]) for k in RATIO_COSTS if pd.notna(row.get(k)) and pd.notna(ref.get(k)) and row[k] > 0 and ref[k] > 0]
    return float(np.exp(np.mean(logs))) if logs else 1.0


def _decide(v: GroupVerdict, resamples, mats: dict, settings: AnalysisSettings) -> None:
    t = v.table.set_index("condition", drop=False)
    runs = t[t.method != BASELINE]
    confidence, margin = 1 - settings.alpha, settings.margin
    for key in COSTS:  # Pareto fronts of accuracy against each cost
        pts = [(r.condition, r.accuracy, r[key]) for _, r in runs.iterrows() if pd.notna(r.get(key))]
        v.table[f"pareto_{key}"] = v.table["condition"].isin(pareto_front(pts))
    flagged = runs[~runs.eligible.astype(bool)]
    ok = runs[runs.eligible.astype(bool)]
    fitting = ok[ok.fits.astype(bool)]
    base = t[t.method == BASELINE].iloc[0]
    lines = []
    if ok.empty:
        v.lines = [f"**No method learned more than the majority-class baseline** ({base.condition}, test accuracy "
                   f"{_pct(base.accuracy)}): none is recommended. " + _flag_text(flagged) +
                   " Train longer (train.epochs), on more data, or at another learning rate (train.lr), then re-run."]
        return
    rank = lambda d: d.sort_values(["val_accuracy", "val_macro_f1"], ascending=False, kind="stable")  # noqa: E731
    overall = rank(ok).iloc[0]
    if fitting.empty:
        v.lines = [f"**No method fits the constraints** ({_constraint_text(settings.decide)}); the best without them is "
                   f"{overall.condition}."]
        return
    ranked = rank(fitting)
    best = ranked.iloc[0]
    v.best = best.condition
    fulls = rank(runs[runs.trainable_pct >= TRAINS_EVERYTHING])  # full fine-tuning, whatever the method is called
    ref = fulls.iloc[0] if len(fulls) else best
    v.reference = ref.condition
    lines.append(f"**Best on validation: {best.condition}** (validation accuracy {_pct(best.val_accuracy)}); on test "
                 f"{_pct(best.accuracy)} (95% CI {_pct(best.accuracy_ci_low)}–{_pct(best.accuracy_ci_high)}, covering "
                 f"{best.ci_covers}; {best.seeds} seed(s): {best.accuracy_per_seed}).")
    if len(ranked) > 1:
        lines.append(_runner_up_line(v, best, ranked.iloc[1]))
    calls = {}
    for col in ("vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high"):
        v.table[col] = None if col == "vs_best" else np.nan
    for name, row in fitting.iterrows():
        if name == best.condition:
            continue
        d = resamples.difference(name, best.condition, confidence)
        call = non_inferiority(d, margin)
        calls[name] = (call, d)
        v.table.loc[v.table.condition == name, ["vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high"]] = (
            call, d["diff"], d["ci_low"], d["ci_high"])
    as_good = [best.condition] + [n for n, (call, _) in calls.items() if call == "as good"]
    pool = t.loc[as_good]
    score = (pool.apply(lambda r: _overall_cost(r, ref), axis=1) if settings.prefer == "overall" else pool[settings.prefer])
    rec = t.loc[score.astype(float).idxmin()] if score.notna().any() else best
    v.recommended = rec.condition
    lines.append(_recommendation(rec, best, ref, calls, margin))
    cheaper_undecided = [n for n, (call, _) in calls.items() if call == "undecided" and _overall_cost(t.loc[n], ref) < _overall_cost(rec, ref)]
    for name in cheaper_undecided:
        d = calls[name][1]
        parts = variance_parts(mats[name] - mats[best.condition].mean(axis=1, keepdims=True))
        lines.append(f"Cannot decide whether cheaper {name} is as good: the 95% CI of its difference from {best.condition} "
                     f"({_pts(d['ci_low'])} to {_pts(d['ci_high'])} points) crosses the −{100 * margin:g}-point margin; "
                     f"{what_would_decide(d, margin, parts)}.")
    worse = [n for n, (call, _) in calls.items() if call == "worse"]
    if worse:
        lines.append(f"Worse than {best.condition} by more than the {100 * margin:g}-point margin: {', '.join(worse)}.")
    if len(flagged):
        lines.append("Not recommended: " + _flag_text(flagged))
    excluded = ok[~ok.fits.astype(bool)]
    if len(excluded):
        lines.append(f"Over the constraints ({_constraint_text(settings.decide)}): {', '.join(excluded.condition)}"
                     + (f"; the best without them would be {overall.condition}." if overall.condition != best.condition else "."))
    if (runs.seeds == 1).any():
        lines.append("With one seed, an interval covers test-set sampling only: another training run can land elsewhere.")
    v.lines = lines


def _runner_up_line(v: GroupVerdict, best: pd.Series, runner: pd.Series) -> str:
    p = v.pairs
    row = p[((p.a == best.condition) & (p.b == runner.condition)) | ((p.b == best.condition) & (p.a == runner.condition))].iloc[0]
    sign = 1 if row.a == best.condition else -1
    lo, hi = sorted((sign * row.ci_low, sign * row.ci_high))
    verdict = "a **significant** difference" if row.significant else "**not a significant** difference"
    mc = (f"; McNemar per seed: {row.mcnemar}" if row.paired_seeds else "")
    conflict = " (the seeds disagree on the direction)" if row.mcnemar_favours_a and row.mcnemar_favours_b else ""
    return (f"Against the runner-up on validation, {runner.condition}: {_pts(sign * row.accuracy_diff)} points on test "
            f"(95% CI {_pts(lo)} to {_pts(hi)}), {verdict} (Holm-adjusted p = {row.p_holm:.3g} over "
            f"{v.family} comparison(s)){mc}{conflict}.")


def _recommendation(rec: pd.Series, best: pd.Series, ref: pd.Series, calls: dict, margin: float) -> str:
    if rec.condition == best.condition:
        quality = "the best on validation"
    else:
        d = calls[rec.condition][1]
        quality = (f"within {abs(100 * d['diff']):.1f} points of {best.condition} on test (non-inferior at a "
                   f"{100 * margin:g}-point margin: 95% CI of the difference {_pts(d['ci_low'])} to {_pts(d['ci_high'])}, "
                   f"{rec.seeds} seed(s))")
    costs = [f"{rec.trainable_pct:.3g}% of the parameters trained"]
    if rec.condition != ref.condition:
        costs += [f"{_ratio(rec.trained_mb, ref.trained_mb)} the trained weights to keep",
                  f"{_ratio(rec.peak_memory_mb, ref.peak_memory_mb)} the peak memory",
                  f"{_ratio(rec.train_seconds, ref.train_seconds)} the training time of {ref.condition}"]
    return f"**Use {rec.condition}**: {quality}, {', '.join(costs)}."


def _flag_text(flagged: pd.DataFrame) -> str:
    parts = []
    for _, r in flagged.iterrows():
        why = []
        if r.collapsed_runs:
            why.append(f"predicted a single class in {int(r.collapsed_runs)} of {int(r.seeds)} run(s)")
        if not r.beats_baseline:
            why.append("does not beat the majority-class baseline significantly")
        parts.append(f"{r.condition} ({'; '.join(why)})")
    return "; ".join(parts) + "." if parts else ""


def _constraint_text(decide: Decide) -> str:
    return ", ".join(f"{k} ≤ {v:g}" for k, v in decide.model_dump().items() if v is not None) or "none"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"
