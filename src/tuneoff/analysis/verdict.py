"""The answer a study gives, per group of comparable conditions: which method to use and what it costs.

The rules, each there because the naive version misleads:

- **picked on evidence the test comparison does not share**: a seed that lands high lands high on validation and on
  test alike, so ranking the final runs on validation and then comparing them with the pick on test favours the pick
  (among four equal conditions, 3 seeds, 3 points of seed sd: other - pick averaged -2.2 points). The pick is made on
  each condition's *held-apart* run instead: its tuning phase's best trial, trained with ``tune.seed``, which no final
  run uses (a study refuses ``tune.seed`` among ``seeds``); the final runs then compare with it on test unbiased
  (sample splitting: Cox, 1975, "A note on data-splitting for the evaluation of significance levels"). Its score is the
  trial's *plateau*, the mean validation from its best evaluation to its last, not that maximum (which favours runs
  with many or noisy evaluations). A study without a tuning phase for every candidate (pinned rates) picks on its final
  runs' plateaus and the verdict says the comparison with the pick shares its luck; every call below holds either way;
- **"as good" is asked of the best, for every candidate at once** (``best``: Hsu's multiple comparisons with the
  best): "within the margin of the best, whichever it is" holds simultaneously at 95% over the group's candidates, so
  the recommendation (the cheapest condition within the margin) is wrong at most 5% of the time however many cheaper
  candidates there are; "worse than the best by more than the margin" and "significantly below the pick" are read
  against the held-apart pick, adjusted over the comparisons with it (Bonferroni; Holm);
- **both sources of noise, calibrated**: intervals and p-values come from ``significance`` (test-sampling variance
  plus each condition's seed variance, moderated by what earlier studies measured, t with Welch-Satterthwaite degrees
  of freedom), so a method whose seeds scatter is not called better on one lucky seed;
- **a baseline**: a condition that collapsed to one class in any run, or cannot be shown above the majority class
  (Holm over every such comparison of the study), is flagged and never recommended;
- **convergence**: a condition with a run that did not reach its validation plateau is *budget-limited*: never
  recommended over a converged one, and not called worse where a longer budget could plausibly close the gap (its runs'
  recent gain, continued for as long again as they trained, would reach it);
- **costs as ratios** against a reference (the condition that trains every parameter when the study has one, else
  the pick), as the background reports wrote "LoRA used 1.77x the memory and ran 1.66x slower".

``bench/verdict_simulation.py`` drives ``decide`` (the pick, Holm, MCB, the recommendation) on simulated studies and
records its error rates (``bench/results/verdict-simulation-*.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

import numpy as np
import pandas as pd

from tuneoff.analysis import best as mcb
from tuneoff.analysis import power, sentences
from tuneoff.analysis.card import Card, card
from tuneoff.analysis.groups import Condition, Group, condition_row, groups, per_class
from tuneoff.analysis.settings import AnalysisSettings, Decide
from tuneoff.analysis.significance import (
    SEED_PRIOR,
    Comparisons,
    compare,
    holm,
    mcnemar_exact,
    pareto_front,
)
from tuneoff.analysis.speed import common_steps, speed_pairs, speed_table

COSTS = {
    "trainable_params": "trainable parameters",
    "trained_mb": "trained weights to keep (MB)",
    "peak_memory_mb": "peak memory (MB)",
    "train_seconds": "train time (s)",
}
RATIO_COSTS = ("trained_mb", "peak_memory_mb", "train_seconds")
BASELINE = "baseline"
DECISION_KEYS = ("diff", "ci_low", "ci_high", "df", "p_value", "test", "seed")
TRAINS_EVERYTHING = 99.999  # trainable_pct of a condition that is the cost reference
METRICS = ("accuracy", "macro_f1")  # each gets intervals; analysis.metric's decides
HELD_APART, FINAL = "held-apart", "final"  # where the pick's validation scores come from


@dataclass
class GroupVerdict:
    group: Group
    table: pd.DataFrame  # one row per condition (+ the baseline row)
    pairs: pd.DataFrame  # every pair of conditions (exploratory): difference, CI, p (raw, Holm), McNemar
    decisions: pd.DataFrame = None  # each condition against the pick (and the best: MCB) and against the baseline
    best: str | None = None  # the pick
    reference: str | None = None
    recommended: str | None = None
    decided: bool = False  # the recommendation is a finding, not a default for lack of evidence
    lines: list[str] = field(default_factory=list)
    family: int = 0  # comparisons with the baseline, Holm's family over the whole study
    comparisons: Comparisons = None  # the group's, in the decision metric
    against_baseline: dict = field(default_factory=dict)  # condition -> its difference from the majority class
    budget_limited: list[str] = field(default_factory=list)
    contenders: list[str] = field(default_factory=list)  # within the margin of the pick, not yet above the baseline
    pick_source: str = FINAL  # HELD_APART: the pick rests on the tuning phase's trials; FINAL: on the final runs
    with_best: pd.DataFrame = None  # best.with_the_best over the candidates: distance from the best, simultaneous
    card: Card = None  # the one-screen answer (analysis.card), the same in every front end
    speed: pd.DataFrame = None  # steps to a target accuracy per condition, against the best (analysis.speed)
    speed_pairs: pd.DataFrame = None  # steps to the common bar, every pair (exploratory)
    per_class: pd.DataFrame = None  # precision, recall, F1 per class and condition, mean over seeds (groups.per_class)
    metric: str = "accuracy"  # what the decision ranks and compares (analysis.metric)
    alpha: float = 0.05  # the error rate of every call (a decide-mode look's share of analysis.alpha)

    @property
    def level(self) -> str:
        """The confidence of the intervals and calls, as the sentences say it: "95%"."""
        return f"{100 * (1 - self.alpha):.4g}%"


def _pair_rows(group: Group, cmp: Comparisons, mats: dict, alpha: float) -> list[dict]:
    """Every pair of the group: the difference in the decision's metric with its interval, and McNemar (on the 0/1
    correctness ``mats``) on each seed both have run."""
    rows = []
    for a, b in combinations(group.conditions, 2):
        d = cmp.difference(a.name, b.name, 1 - alpha)
        seeds_b = [r["seed"] for r in b.runs]
        tests = [
            (r["seed"], mcnemar_exact(mats[a.name][:, i], mats[b.name][:, seeds_b.index(r["seed"])]))
            for i, r in enumerate(a.runs)
            if r["seed"] in seeds_b
        ]
        rows.append(
            {
                "a": a.name,
                "b": b.name,
                "n": len(group.ids),
                "diff": d["diff"],
                "ci_low": d["ci_low"],
                "ci_high": d["ci_high"],
                "df": d["df"],
                "p_value": d["p_value"],
                "mcnemar": "; ".join(
                    f"seed {s}: {_favour(t, a.name, b.name)} (p={t['p_value']:.3g})" for s, t in tests
                ),
                "mcnemar_favours_a": sum(t["favours"] == "a" and t["p_value"] < alpha for _, t in tests),
                "mcnemar_favours_b": sum(t["favours"] == "b" and t["p_value"] < alpha for _, t in tests),
                "paired_seeds": len(tests),
            }
        )
    return rows


def _favour(test: dict, a: str, b: str) -> str:
    return {"a": f"favours {a}", "b": f"favours {b}", None: "even"}[test["favours"]]


def comparisons(
    scores: dict[str, np.ndarray], baseline: np.ndarray, metric: str, settings: AnalysisSettings
) -> Comparisons:
    """A group's comparisons in ``metric``: each condition's (n, seeds) per-example values and the baseline's."""
    return compare(
        {**scores, BASELINE: baseline}, fixed={BASELINE}, assumed_sd=settings.assumed_seed_sd, prior=SEED_PRIOR[metric]
    )


def table_of(
    readings: list[dict], by_metric: dict[str, Comparisons], settings: AnalysisSettings, majority: str
) -> tuple[pd.DataFrame, dict]:
    """The group's table: each condition's readings (``groups.condition_row``) with its intervals in each metric and
    its difference from the majority-class baseline, then the baseline's row."""
    confidence = 1 - settings.alpha
    cmp = by_metric[settings.metric]
    rows, against_baseline = [dict(r) for r in readings], {}
    for row in rows:
        name = row["condition"]
        for m, stats in by_metric.items():
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = stats.interval(name, confidence)
        row["ci_covers"] = "seeds and test examples" + (
            " (seed variance assumed)" if cmp.seeds_of(name).assumed else ""
        )
        vs = cmp.difference(name, BASELINE, confidence)
        row["vs_baseline"], row["p_vs_baseline"] = vs["diff"], vs["p_value"]
        against_baseline[name] = vs
        row["seeds_disagree"] = cmp.disagree(name)
        row["budget_limited"] = bool(row["convergence_known"]) and row["converged_runs"] < row["convergence_known"]
        row["fits"] = _fits(row, settings.decide)
    baseline = {
        "condition": f"majority class ({majority})",
        "method": BASELINE,
        "seeds": 0,
        "ci_covers": "test examples",
        "eligible": False,
        "fits": False,
        "beats_baseline": False,
        "collapsed_runs": 0,
        "budget_limited": False,
        "seeds_disagree": False,
    }
    for m, stats in by_metric.items():
        baseline[m] = stats.estimate(BASELINE)
        baseline[f"{m}_ci_low"], baseline[f"{m}_ci_high"] = stats.interval(BASELINE, confidence)
    return pd.DataFrame(rows + [baseline]), against_baseline


def analyse(conditions: list[Condition], settings: AnalysisSettings | None = None) -> list[GroupVerdict]:
    """One verdict per group; the comparisons with the baseline are one Holm family over the whole study."""
    settings = settings or AnalysisSettings()
    verdicts = []
    for group in groups(conditions):
        # Both metrics get their intervals; the decision (ranking, differences, eligibility) uses analysis.metric's.
        by_metric = {
            m: comparisons(
                {c.name: c.scores(group.ids, m) for c in group.conditions}, group.baseline_scores(m), m, settings
            )
            for m in METRICS
        }
        table, against = table_of([condition_row(c) for c in group.conditions], by_metric, settings, group.majority)
        cmp = by_metric[settings.metric]
        correct = {k: m for k, m in by_metric["accuracy"].mats.items() if k != BASELINE}
        verdicts.append(
            GroupVerdict(
                group,
                table,
                pd.DataFrame(_pair_rows(group, cmp, correct, settings.alpha)),
                comparisons=cmp,
                against_baseline=against,
                metric=settings.metric,
                alpha=settings.alpha,
            )
        )
    _adjust_pairs(verdicts, settings.alpha)
    decide(verdicts, settings)
    for v in verdicts:
        eligible = set(v.table.condition[v.table.eligible.astype(bool)])
        common = common_steps(v.group.conditions, eligible)  # each run's evaluation history, read once
        v.speed = speed_table(common, v.best, settings.alpha)
        v.speed_pairs = speed_pairs(common, settings.alpha)
        v.per_class = per_class(
            v.group.conditions, 1 - settings.alpha, settings.assumed_seed_sd, SEED_PRIOR["macro_f1"]
        )
    return verdicts


def decide(verdicts: list[GroupVerdict], settings: AnalysisSettings) -> None:
    """The decision of every group of a study (what ``bench/verdict_simulation.py`` drives): who beats the baseline
    (Holm over the study), the pick, the comparisons with it and with the best (MCB), the recommendation, its words."""
    _baseline_family(verdicts, settings)
    for v in verdicts:
        _decide(v, settings)
        v.card = card(v, settings)


def _adjust_pairs(verdicts: list[GroupVerdict], alpha: float) -> None:
    """The exploratory all-pairs table: Holm over every pair of the study, a family of its own."""
    adjusted = holm([p for v in verdicts for p in v.pairs.get("p_value", [])], alpha)
    for v in verdicts:
        if len(v.pairs):
            v.pairs["p_holm"], adjusted = adjusted[: len(v.pairs)], adjusted[len(v.pairs) :]
            v.pairs["significant"] = v.pairs["p_holm"] < alpha


def _baseline_family(verdicts: list[GroupVerdict], settings: AnalysisSettings) -> None:
    """Each condition against its group's majority-class baseline, Holm-adjusted over the whole study: a condition is
    eligible when it never collapsed and is significantly above the baseline."""
    entries = [(v, name, d) for v in verdicts for name, d in v.against_baseline.items()]
    adjusted = holm([d["p_value"] for _, _, d in entries], settings.alpha)
    rows: dict[int, list] = {}
    for (v, name, d), p in zip(entries, adjusted):
        v.family = len(entries)
        rows.setdefault(id(v), []).append(
            {
                "condition": name,
                "against": "baseline",
                **{k: d[k] for k in DECISION_KEYS},
                "p_adjusted": p,
                "adjustment": "Holm",
                "significant": p < settings.alpha,
            }
        )
    for v in verdicts:
        t = v.table
        base = pd.DataFrame(rows.get(id(v), []))
        v.decisions = base
        beats = dict(zip(base.condition, base.significant & (base["diff"] > 0))) if len(base) else {}
        t["beats_baseline"] = [bool(beats.get(name, False)) for name in t.condition]
        t["eligible"] = [
            m != BASELINE and bool(beats.get(name, False)) and int(c or 0) == 0
            for m, name, c in zip(t.method, t.condition, t.collapsed_runs)
        ]


def _rank(frame: pd.DataFrame, metric: str, source: str) -> pd.DataFrame:
    """The pick's order on the decision metric (held-apart or final plateaus), the other metric breaking ties."""
    prefix = "sel" if source == HELD_APART else "plateau"
    return frame.sort_values(
        [f"{prefix}_{m}" for m in sorted(METRICS, key=lambda m: m != metric)], ascending=False, kind="stable"
    )


def _source(pool: pd.DataFrame, metric: str) -> str:
    """Held-apart when every candidate has a tuning trial to be picked on, else the final runs (the same footing)."""
    column = f"sel_{metric}"
    return HELD_APART if column in pool and len(pool) and pool[column].notna().all() else FINAL


def _choose_best(pool: pd.DataFrame, metric: str, source: str) -> str | None:
    """The pick among candidates (eligible, fitting): converged ones first (a budget-limited condition leads only
    when no converged one qualifies)."""
    if pool.empty:
        return None
    converged = pool[~pool.budget_limited.astype(bool)]
    return _rank(converged if len(converged) else pool, metric, source).iloc[0].condition


def _fits(row: dict, decide: Decide) -> bool:
    limits = (
        ("peak_memory_mb", decide.max_peak_memory_mb),
        ("train_seconds", decide.max_train_seconds),
        ("trainable_params", decide.max_trainable_params),
    )
    return all(limit is None or pd.isna(row.get(key)) or row[key] <= limit for key, limit in limits)


def _overall_cost(row: pd.Series, ref: pd.Series) -> float:
    """Geometric mean of the cost ratios against the reference (costs a run did not measure left out)."""
    logs = [
        np.log(row[k] / ref[k])
        for k in RATIO_COSTS
        if pd.notna(row.get(k)) and pd.notna(ref.get(k)) and row[k] > 0 and ref[k] > 0
    ]
    return float(np.exp(np.mean(logs))) if logs else 1.0


def _cost(row: pd.Series, ref: pd.Series, prefer: str) -> float:
    """What "cheaper" means for the study: the overall cost against the reference, or the one cost it prefers."""
    return _overall_cost(row, ref) if prefer == "overall" else float(row[prefer])


def _against_pick(v: GroupVerdict, fitting: pd.DataFrame, settings: AnalysisSettings) -> dict:
    """Each candidate against the pick (its difference and 95% interval, unbiased when the pick was held apart;
    "significantly below" by Holm over the group's comparisons with it; "worse than the best by more than the margin"
    when even the upper end of its interval, simultaneous over those comparisons, is below -margin: the best is at least
    the pick) and within the margin of the best (MCB, simultaneous over the candidates)."""
    best, margin, alpha = v.best, settings.margin, settings.alpha
    v.with_best = mcb.with_the_best(v.comparisons, list(fitting.condition), alpha)
    by_name = v.with_best.set_index("condition")
    names = [n for n in fitting.condition if n != best]
    diffs = {n: v.comparisons.difference(n, best, 1 - alpha) for n in names}
    adjusted = dict(zip(names, holm([diffs[n]["p_value"] for n in names], alpha)))
    calls, rows = {}, []
    for name in names:
        row, d, m = fitting.loc[name], diffs[name], by_name.loc[name]
        high = d["diff"] + power.quantile(alpha / len(names), d["df"]) * d["se"]  # Bonferroni, one-sided
        call = "as good" if mcb.as_good(m, margin) else "worse" if high < -margin else "undecided"
        if row.seeds_disagree:
            call = "seeds disagree"  # a skewed seed distribution: its interval may miss; never decided either way
        # A longer budget could close the gap only if the runs' recent gain, kept up for as long again, reaches it.
        elif call == "worse" and row.budget_limited and -high < row.get("budget_gain", np.inf):
            call = "budget-limited"
        calls[name] = (call, d)
        rows.append(
            {
                "condition": name,
                "against": "pick",
                **{k: d[k] for k in DECISION_KEYS},
                "p_adjusted": adjusted[name],
                "adjustment": "Holm",
                "significant": adjusted[name] < alpha,
                "best_low": m.best_low,
                "pick_high": high,
                "call": call,
            }
        )
        v.table.loc[
            v.table.condition == name, ["vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high", "best_low"]
        ] = (call, d["diff"], d["ci_low"], d["ci_high"], m.best_low)
    v.decisions = pd.concat([pd.DataFrame(rows), v.decisions], ignore_index=True) if rows else v.decisions
    return calls


def _default(v: GroupVerdict, t: pd.DataFrame, calls: dict, cost, below: float, settings: AnalysisSettings):
    """When nothing is decided, what a practitioner would act on instead of the most expensive leader: the cheapest
    condition whose test difference from the (held-apart, so unbiased) pick is within the margin and whose worst case
    against the best, at 95% simultaneous, is within ``analysis.tolerance``. None keeps the pick."""
    if not settings.tolerance:
        return None
    worst = v.with_best.set_index("condition").best_low
    fit = [
        n
        for n, (call, d) in calls.items()
        if call in ("undecided", "as good")
        and not t.loc[n].budget_limited
        and not t.loc[n].seeds_disagree
        and d["diff"] >= -settings.margin
        and worst[n] >= -settings.tolerance
        and cost(t.loc[n]) < below
    ]
    return t.loc[min(fit, key=lambda n: cost(t.loc[n]))] if fit else None


def _decide(v: GroupVerdict, settings: AnalysisSettings) -> None:
    t = v.table.set_index("condition", drop=False)
    runs = t[t.method != BASELINE]
    metric = v.metric
    for key in COSTS:  # Pareto fronts of the metric against each cost
        pts = [(r.condition, r[metric], r[key]) for _, r in runs.iterrows() if pd.notna(r.get(key))]
        v.table[f"pareto_{key}"] = v.table["condition"].isin(pareto_front(pts))
    for col in ("vs_best", "diff_vs_best", "diff_ci_low", "diff_ci_high", "best_low"):
        v.table[col] = None if col == "vs_best" else np.nan
    flagged = runs[~runs.eligible.astype(bool)]
    ok = runs[runs.eligible.astype(bool)]
    fitting = ok[ok.fits.astype(bool)]
    base = t[t.method == BASELINE].iloc[0]
    v.budget_limited = list(runs[runs.budget_limited.astype(bool)].condition)
    if ok.empty:
        v.lines = [sentences.none_above_baseline(base, metric, flagged, runs)]
        return
    v.pick_source = _source(fitting if len(fitting) else ok, metric)
    overall = _rank(ok, metric, _source(ok, metric)).iloc[0]
    if fitting.empty:
        v.lines = [
            f"**No method fits the constraints** ({sentences.constraint_text(settings.decide)}); the best "
            f"without them is {overall.condition}."
        ]
        return
    v.best = _choose_best(fitting, metric, v.pick_source)
    best = t.loc[v.best]
    fulls = _rank(runs[runs.trainable_pct >= TRAINS_EVERYTHING], metric, _source(runs, metric))  # full fine-tuning
    ref = fulls.iloc[0] if len(fulls) else best
    v.reference = ref.condition
    calls = _against_pick(v, fitting, settings)
    lines = [sentences.best_line(best, metric, v.pick_source, v.level)]
    others = _rank(fitting.drop(index=best.condition), metric, v.pick_source)
    if len(others):
        lines.append(sentences.runner_up_line(v, best, others.iloc[0]))
    lines += sentences.contradictions(v, best)
    as_good = [best.condition] + [
        n for n, (call, _) in calls.items() if call == "as good" and not t.loc[n].budget_limited
    ]
    pool = t.loc[as_good]
    cost = lambda r: _cost(r, ref, settings.prefer)  # noqa: E731
    # Cheaper means cheaper by at least cost_margin: a few percent of training time is run-to-run noise on a shared
    # machine, no reason to give up the pick, nor to list a method as a cheaper alternative.
    bar = 1 - settings.cost_margin
    score = pool.apply(cost, axis=1).astype(float)
    score = score[(score <= bar * cost(best)) | (score.index == best.condition)]
    rec = t.loc[score.idxmin()] if score.notna().any() else best
    v.recommended = rec.condition
    cheaper = {n: c for n, c in calls.items() if cost(t.loc[n]) < bar * cost(rec)}
    # A finding, not a default: a cheaper method shown within the margin of the best; or the pick, shown within the
    # margin of the best itself, with every cheaper candidate shown worse by more than it.
    pick_low = mcb.lower_bound(v.with_best, best.condition)
    # A condition that scores within the margin of the pick (or above it) but is not yet shown above the majority class
    # is a contender the comparisons leave out, not a loser: while one is there nothing is decided. Found in decide
    # mode, whose early looks test at a few in ten thousand: the best conditions were not yet shown above the baseline
    # at that level, a worse one whose seeds happened to agree was, and as the only candidate it was "decided".
    contenders = flagged[(flagged.collapsed_runs == 0) & (flagged[metric] > best[metric] - settings.margin)]
    v.contenders = list(contenders.condition)
    v.decided = (
        not best.seeds_disagree
        and contenders.empty
        and (
            rec.condition != best.condition
            or ((len(fitting) == 1 or pick_low > -settings.margin) and all(c == "worse" for c, _ in cheaper.values()))
        )
    )
    if not v.decided and rec.condition == best.condition:
        default = _default(v, t, calls, cost, bar * cost(best), settings)
        rec = rec if default is None else default
        v.recommended = rec.condition
    lines.append(sentences.recommendation(v, rec, best, ref, calls, cheaper, settings))
    if v.contenders:
        lines.append(sentences.contenders_line(t.loc[v.contenders], best, metric, settings.margin))
    lines += [
        sentences.undecided_line(v, name, best, d, settings.margin)
        for name, (call, d) in cheaper.items()
        if call == "undecided"
    ]
    worse = [n for n, (call, _) in calls.items() if call == "worse"]
    if worse:
        lines.append(
            f"Worse than the best by more than the {100 * settings.margin:g}-point margin ({v.level}, simultaneous): "
            f"{', '.join(worse)}."
        )
    erratic = runs[runs.seeds_disagree.astype(bool)]
    if len(erratic):
        lines.append(sentences.disagree_line(erratic, metric))
    limited = [n for n in v.budget_limited if n in t.index]
    if limited:
        lines.append(sentences.budget_line(t.loc[limited], calls))
    if len(flagged):
        lines.append("Not recommended: " + sentences.flag_text(flagged))
    excluded = ok[~ok.fits.astype(bool)]
    if len(excluded):
        lines.append(
            f"Over the constraints ({sentences.constraint_text(settings.decide)}): "
            f"{', '.join(excluded.condition)}"
            + (f"; the best without them would be {overall.condition}." if overall.condition != best.condition else ".")
        )
    lines += sentences.seed_caveats(v, runs) + sentences.memory_caveat(v.group.conditions)
    v.lines = lines
