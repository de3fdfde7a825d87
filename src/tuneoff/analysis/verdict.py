"""The answer a study gives, per group of comparable conditions: which method to use and what it costs.

The rules, each there because the naive version misleads:

- **chosen on validation, confirmed on test**: the best condition is ranked by validation accuracy (or macro-F1:
  ``analysis.metric``, for imbalanced classes; every interval and difference is then in macro-F1); the test set
  confirms, and when it significantly contradicts the pick the verdict says so;
- **both sources of noise, calibrated**: intervals and p-values come from ``significance`` (test-sampling variance
  plus each condition's seed variance component, t with Welch-Satterthwaite degrees of freedom), so a method whose seeds
  scatter is not called better on one lucky seed, and two seeds are not treated as if they were ten;
- **Holm over the decision's comparisons**: each condition against the validation-best and against the
  majority-class baseline is one family, adjusted together across the study; the all-pairs table is exploratory,
  with its own adjustment;
- **non-inferiority, not "not significantly worse"**: a cheaper method counts as good as the best only when the
  whole CI of (it - best) lies above -margin; a wide CI is reported as "cannot decide", with what would;
- **convergence**: a condition with a run that did not reach its validation plateau is *budget-limited*: never
  called worse (a longer budget may change the comparison), never recommended over a converged one;
- **a baseline**: a condition that collapsed to one class in any run, or does not beat the majority class
  significantly, is flagged and never recommended; if nothing beats it, the verdict says so;
- **costs as ratios** against a reference (the condition that trains every parameter when the study has one,
  else the best), as the background reports wrote "LoRA used 1.77x the memory and ran 1.66x slower".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from tuneoff.analysis import sentences
from tuneoff.analysis.groups import Condition, Group, condition_row, groups, per_class
from tuneoff.analysis.settings import AnalysisSettings, Decide
from tuneoff.analysis.significance import (
    compare,
    holm,
    mcnemar_exact,
    non_inferiority,
    pareto_front,
    what_would_decide,
)
from tuneoff.analysis.speed import common_steps, speed_pairs, speed_table

COSTS = {"trainable_params": "trainable parameters", "trained_mb": "trained weights to keep (MB)",
         "peak_memory_mb": "peak memory (MB)", "train_seconds": "train time (s)"}
RATIO_COSTS = ("trained_mb", "peak_memory_mb", "train_seconds")
BASELINE = "baseline"
DECISION_KEYS = ("diff", "ci_low", "ci_high", "df", "p_value", "test", "seed")
TRAINS_EVERYTHING = 99.999  # trainable_pct of a condition that is the cost reference
METRICS = ("accuracy", "macro_f1")  # each gets intervals; analysis.metric's decides


@dataclass
class GroupVerdict:
    group: Group
    table: pd.DataFrame                  # one row per condition (+ the baseline row)
    pairs: pd.DataFrame                  # every pair of conditions (exploratory): difference, CI, p (raw, Holm), McNemar
    decisions: pd.DataFrame = None       # the decision family: each condition vs the best and vs the baseline
    best: str | None = None
    reference: str | None = None
    recommended: str | None = None
    lines: list[str] = field(default_factory=list)
    family: int = 0                      # comparisons in the decision family (Holm's), over the whole study
    comparisons: object = None           # significance.Comparisons of the group
    against_baseline: dict = field(default_factory=dict)  # condition -> its difference from the majority class
    budget_limited: list[str] = field(default_factory=list)
    speed: pd.DataFrame = None           # steps to a target accuracy per condition, against the best (analysis.speed)
    speed_pairs: pd.DataFrame = None     # steps to the common bar, every pair (exploratory)
    per_class: pd.DataFrame = None       # precision, recall, F1 per class and condition, mean over seeds (groups.per_class)
    metric: str = "accuracy"             # what the decision ranks and compares (analysis.metric)


def _pair_rows(group: Group, cmp, mats: dict, alpha: float) -> list[dict]:
    """Every pair of the group: the difference in the decision's metric with its interval, and McNemar (on the 0/1
    correctness ``mats``) on each seed both have run."""
    rows = []
    for a, b in combinations(group.conditions, 2):
        d = cmp.difference(a.name, b.name, 1 - alpha)
        seeds_b = [r["seed"] for r in b.runs]
        tests = [(r["seed"], mcnemar_exact(mats[a.name][:, i], mats[b.name][:, seeds_b.index(r["seed"])]))
                 for i, r in enumerate(a.runs) if r["seed"] in seeds_b]
        rows.append({"a": a.name, "b": b.name, "n": len(group.ids), "diff": d["diff"], "ci_low": d["ci_low"],
                     "ci_high": d["ci_high"], "df": d["df"], "p_value": d["p_value"],
                     "mcnemar": "; ".join(f"seed {s}: {_favour(t, a.name, b.name)} (p={t['p_value']:.3g})" for s, t in tests),
                     "mcnemar_favours_a": sum(t["favours"] == "a" and t["p_value"] < alpha for _, t in tests),
                     "mcnemar_favours_b": sum(t["favours"] == "b" and t["p_value"] < alpha for _, t in tests),
                     "paired_seeds": len(tests)})
    return rows


def _favour(test: dict, a: str, b: str) -> str:
    return {"a": f"favours {a}", "b": f"favours {b}", None: "even"}[test["favours"]]


def analyse(conditions: list[Condition], settings: AnalysisSettings | None = None) -> list[GroupVerdict]:
    """One verdict per group; Holm's adjustment runs over the decision comparisons of every group together."""
    settings = settings or AnalysisSettings()
    confidence = 1 - settings.alpha
    verdicts = []
    for group in groups(conditions):
        # Both metrics get their intervals; the decision (ranking, differences, eligibility) uses analysis.metric's.
        by_metric = {m: compare({**{c.name: c.scores(group.ids, m) for c in group.conditions},
                                 BASELINE: group.baseline_scores(m)}, fixed={BASELINE}, assumed_sd=settings.assumed_seed_sd)
                     for m in METRICS}
        cmp = by_metric[settings.metric]
        rows, against_baseline = [condition_row(c) for c in group.conditions], {}
        for row, c in zip(rows, group.conditions):
            for m, stats in by_metric.items():
                row[f"{m}_ci_low"], row[f"{m}_ci_high"] = stats.interval(c.name, confidence)
            row["ci_covers"] = "seeds and test examples" + (" (seed variance assumed)" if cmp.seeds.assumed else "")
            vs = cmp.difference(c.name, BASELINE, confidence)
            row["vs_baseline"], row["p_vs_baseline"] = vs["diff"], vs["p_value"]
            against_baseline[c.name] = vs
            row["budget_limited"] = bool(row["convergence_known"]) and row["converged_runs"] < row["convergence_known"]
            row["fits"] = _fits(row, settings.decide)
        baseline = {"condition": f"majority class ({group.majority})", "method": BASELINE, "seeds": 0,
                    "ci_covers": "test examples", "eligible": False, "fits": False, "beats_baseline": False,
                    "collapsed_runs": 0, "budget_limited": False}
        for m, stats in by_metric.items():
            baseline[m] = stats.estimate(BASELINE)
            baseline[f"{m}_ci_low"], baseline[f"{m}_ci_high"] = stats.interval(BASELINE, confidence)
        rows.append(baseline)
        correct = {k: m for k, m in by_metric["accuracy"].mats.items() if k != BASELINE}
        v = GroupVerdict(group, pd.DataFrame(rows), pd.DataFrame(_pair_rows(group, cmp, correct, settings.alpha)),
                         comparisons=cmp, against_baseline=against_baseline, metric=settings.metric)
        verdicts.append(v)
    _adjust_pairs(verdicts, settings.alpha)
    _decision_family(verdicts, settings)
    for v in verdicts:
        _decide(v, settings)
        eligible = set(v.table.condition[v.table.eligible.astype(bool)])
        common = common_steps(v.group.conditions, eligible)  # each run's evaluation history, read once
        v.speed = speed_table(common, v.best, settings.alpha)
        v.speed_pairs = speed_pairs(common, settings.alpha)
        v.per_class = per_class(v.group.conditions, 1 - settings.alpha, settings.assumed_seed_sd)
    return verdicts


def _adjust_pairs(verdicts: list[GroupVerdict], alpha: float) -> None:
    """The exploratory all-pairs table: Holm over every pair of the study, a family of its own."""
    adjusted = holm([p for v in verdicts for p in v.pairs.get("p_value", [])], alpha)
    for v in verdicts:
        if len(v.pairs):
            v.pairs["p_holm"], adjusted = adjusted[:len(v.pairs)], adjusted[len(v.pairs):]
            v.pairs["significant"] = v.pairs["p_holm"] < alpha


def _rank(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Validation's order on the decision metric, the other breaking ties."""
    return frame.sort_values([f"val_{m}" for m in sorted(METRICS, key=lambda m: m != metric)], ascending=False,
                             kind="stable")


def _choose_best(t: pd.DataFrame, metric: str) -> str | None:
    """The validation-best among eligible conditions that fit; converged ones first (a budget-limited condition
    leads only when no converged one qualifies)."""
    pool = t[(t.method != BASELINE) & t.eligible.astype(bool) & t.fits.astype(bool)]
    if pool.empty:
        return None
    converged = pool[~pool.budget_limited.astype(bool)]
    return _rank(converged if len(converged) else pool, metric).iloc[0].condition


def _decision_family(verdicts: list[GroupVerdict], settings: AnalysisSettings) -> None:
    """Each condition against its group's validation-best and against the baseline, Holm-adjusted together across
    the study. Eligibility (beats the baseline significantly, never collapsed) uses the adjusted p-values; the best
    depends on eligibility and the family on the best, so both are iterated to a fixed point: a condition whose
    adjusted comparison with the baseline is not significant leaves the eligible set, and the family is formed again."""
    confidence = 1 - settings.alpha
    for v in verdicts:
        t = v.table
        runs = t.method != BASELINE
        t.loc[runs, "eligible"] = (t.loc[runs, "collapsed_runs"] == 0) & (t.loc[runs, "vs_baseline"] > 0) & (
            t.loc[runs, "p_vs_baseline"] < settings.alpha)
    while True:
        entries = []
        for gi, v in enumerate(verdicts):
            t = v.table
            v.best = _choose_best(t, v.metric)
            for _, row in t[t.method != BASELINE].iterrows():
                entries.append((gi, "baseline", row.condition, v.against_baseline[row.condition]))
                if v.best is not None and row.condition != v.best:
                    entries.append((gi, "best", row.condition, v.comparisons.difference(row.condition, v.best, confidence)))
        adjusted = holm([e[3]["p_value"] for e in entries], settings.alpha)
        changed = False
        for v in verdicts:
            v.family = len(entries)
        frames: dict[int, list] = {}
        for (gi, against, name, d), p in zip(entries, adjusted):
            frames.setdefault(gi, []).append({"condition": name, "against": against, **{k: d[k] for k in DECISION_KEYS},
                                              "p_holm": p, "significant": p < settings.alpha})
            if against == "baseline":
                t = verdicts[gi].table
                # Only ever removed: a condition that loses eligibility changes the best and the family, and letting
                # it back in could oscillate; the fixed point is the largest consistent set.
                if bool(t.loc[t.condition == name, "eligible"].iloc[0]) and not p < settings.alpha:
                    t.loc[t.condition == name, "eligible"] = False
                    changed = True
        for gi, v in enumerate(verdicts):
            v.decisions = pd.DataFrame(frames.get(gi, []))
        if not changed:
            break
    for v in verdicts:
        t = v.table
        t["beats_baseline"] = [m != BASELINE and bool(_decision(v, name, "baseline", "significant")) and d > 0
                               for m, name, d in zip(t.method, t.condition, t.get("vs_baseline", pd.Series(0, index=t.index)).fillna(0))]


def _decision(v: GroupVerdict, name: str, against: str, key: str):
    d = v.decisions
    if d is None or d.empty:
        return None
    hit = d[(d.condition == name) & (d.against == against)]
    return hit.iloc[0][key] if len(hit) else None


def _fits(row: dict, decide: Decide) -> bool:
    limits = (("peak_memory_mb", decide.max_peak_memory_mb), ("train_seconds", decide.max_train_seconds),
              ("trainable_params", decide.max_trainable_params))
    return all(limit is None or pd.isna(row.get(key)) or row[key] <= limit for key, limit in limits)


def _overall_cost(row: pd.Series, ref: pd.Series) -> float:
    """Geometric mean of the cost ratios against the reference (costs a run did not measure left out)."""
    logs = [np.log(row[k] / ref[k]) for k in RATIO_COSTS if pd.notna(row.get(k)) and pd.notna(ref.get(k)) and row[k] > 0 and ref[k] > 0]
    return float(np.exp(np.mean(logs))) if logs else 1.0


def _cost(row: pd.Series, ref: pd.Series, prefer: str) -> float:
    """What "cheaper" means for the study: the overall cost against the reference, or the one cost it prefers."""
    return _overall_cost(row, ref) if prefer == "overall" else float(row[prefer])


def _decide(v: GroupVerdict, settings: AnalysisSettings) -> None:
    t = v.table.set_index("condition", drop=False)
    runs = t[t.method != BASELINE]
    margin = settings.margin
    metric = v.metric
    for key in COSTS:  # Pareto fronts of the metric against each cost
        pts = [(r.condition, r[metric], r[key]) for _, r in runs.iterrows() if pd.notna(r.get(key))]
        v.table[f"pareto_{key}"] = v.table["condition"].isin(pareto_front(pts))
    flagged = runs[~runs.eligible.astype(bool)]
    ok = runs[runs.eligible.astype(bool)]
    fitting = ok[ok.fits.astype(bool)]
    base = t[t.method == BASELINE].iloc[0]
    v.budget_limited = list(runs[runs.budget_limited.astype(bool)].condition)
    if ok.empty:
        v.lines = [f"**No method learned more than the majority-class baseline** ({base.condition}, test "
                   f"{sentences.LABELS[metric]} {sentences.pct(base[metric])}): none is recommended. " + sentences.flag_text(flagged)
                   + sentences.budget_text(runs) + " Train longer (train.epochs), on more data, or let the study tune "
                   "each method's learning rate (tune: {lr: true}), then re-run."]
        return
    overall = _rank(ok, metric).iloc[0]
    if fitting.empty:
        v.lines = [f"**No method fits the constraints** ({sentences.constraint_text(settings.decide)}); the best "
                   f"without them is {overall.condition}."]
        return
    best = t.loc[v.best]
    fulls = _rank(runs[runs.trainable_pct >= TRAINS_EVERYTHING], metric)  # full fine-tuning, whatever the method is called
    ref = fulls.iloc[0] if len(fulls) else best
    v.reference = ref.condition
    lines = [sentences.best_line(best, metric)]
    calls = {}
    for col in ("vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high"):
        v.table[col] = None if col == "vs_best" else np.nan
    for name, row in fitting.iterrows():
        if name == best.condition:
            continue
        d = v.comparisons.difference(name, best.condition, 1 - settings.alpha)
        call = non_inferiority(d, margin)
        if call == "worse" and row.budget_limited:
            call = "budget-limited"  # a longer budget may change it: never called worse
        calls[name] = (call, d)
        v.table.loc[v.table.condition == name, ["vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high"]] = (
            call, d["diff"], d["ci_low"], d["ci_high"])
    others = _rank(fitting.drop(index=best.condition), metric)  # not the second overall: a budget-limited leader is no pick
    if len(others):
        lines.append(sentences.runner_up_line(v, best, others.iloc[0]))
    lines += sentences.contradictions(v, best, runs)
    as_good = [best.condition] + [n for n, (call, _) in calls.items() if call == "as good" and not t.loc[n].budget_limited]
    pool = t.loc[as_good]
    cost = lambda r: _cost(r, ref, settings.prefer)  # noqa: E731
    # Cheaper means cheaper by at least cost_margin: a few percent of training time is run-to-run noise on a shared
    # machine, no reason to give up the validation-best, nor to list a method as a cheaper alternative.
    bar = 1 - settings.cost_margin
    score = pool.apply(cost, axis=1).astype(float)
    score = score[(score <= bar * cost(best)) | (score.index == best.condition)]
    rec = t.loc[score.idxmin()] if score.notna().any() else best
    v.recommended = rec.condition
    cheaper = {n: c for n, c in calls.items() if cost(t.loc[n]) < bar * cost(rec)}
    lines.append(sentences.recommendation(rec, best, ref, calls, cheaper, margin, settings.cost_margin, metric))
    for name, (call, d) in cheaper.items():
        if call == "undecided":
            lines.append(f"Cannot decide whether cheaper {name} is as good: the 95% CI of its difference from "
                         f"{best.condition} ({sentences.pts(d['ci_low'])} to {sentences.pts(d['ci_high'])} {sentences.unit(metric)}) "
                         f"crosses the −{100 * margin:g}-point margin; {what_would_decide(d, margin)}.")
    worse = [n for n, (call, _) in calls.items() if call == "worse"]
    if worse:
        lines.append(f"Worse than {best.condition} by more than the {100 * margin:g}-point margin: {', '.join(worse)}.")
    limited = [n for n in v.budget_limited if n in t.index]
    if limited:
        lines.append("**Budget-limited** (a run did not reach its validation plateau, so none of these is called worse; "
                     "a longer budget may change the comparison): "
                     + "; ".join(f"{n} ({t.loc[n].not_converged})" for n in limited) + ". "
                     + sentences.budget_advice(t.loc[limited]))
    if len(flagged):
        lines.append("Not recommended: " + sentences.flag_text(flagged))
    excluded = ok[~ok.fits.astype(bool)]
    if len(excluded):
        lines.append(f"Over the constraints ({sentences.constraint_text(settings.decide)}): "
                     f"{', '.join(excluded.condition)}"
                     + (f"; the best without them would be {overall.condition}." if overall.condition != best.condition else "."))
    lines += sentences.seed_caveats(v, runs) + sentences.memory_caveat(v.group.conditions)
    v.lines = lines


