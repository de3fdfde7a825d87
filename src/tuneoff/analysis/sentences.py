"""The verdict's sentences, written from its tables: the best condition and its runner-up, the recommendation with
its costs as ratios, what cannot be decided and why, flags and caveats. ``verdict`` decides; this module words it
(``v`` is a ``verdict.GroupVerdict``, not imported: the dependency points from verdict to here)."""

from __future__ import annotations

import pandas as pd

from tuneoff.analysis import power
from tuneoff.analysis.settings import Decide

LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def strip_bold(line: str) -> str:
    """A Markdown line for a plain terminal or text."""
    return line.replace("**", "")


def unit(metric: str) -> str:
    """What a difference is counted in: accuracy's "points" as the reports wrote them, else the metric's points."""
    return "points" if metric == "accuracy" else f"{LABELS[metric]} points"


def ratio(value: float, ref: float) -> str:
    if pd.isna(value) or pd.isna(ref) or not ref:
        return "n/a"
    r = value / ref
    return f"1/{1 / r:,.0f}" if r < 0.5 else f"{r:.2f}x"


def best_line(best: pd.Series, metric: str = "accuracy", source: str = "final", level: str = "95%") -> str:
    lr = f"; learning rate {best.lr:.3g}" if pd.notna(best.get("lr")) else ""
    name = "" if metric == "accuracy" else f"{LABELS[metric]} "
    if source == "held-apart":
        head = (
            f"**Picked: {best.condition}** on held-apart validation (its tuning trial, seed {int(best.pick_seed)}, "
            f"which no final run shares: validation {LABELS[metric]} {pct(best[f'sel_{metric}'])} at its plateau{lr})"
        )
    else:
        head = (
            f"**Picked: {best.condition}** on its final runs (validation {LABELS[metric]} "
            f"{pct(best[f'plateau_{metric}'])} at their plateau{lr}; no tuning trial to pick on, so the test "
            "comparison with it shares its seeds' luck: its lead below leans its way)"
        )
    return (
        f"{head}; on test {name}{pct(best[metric])} ({level} CI {pct(best[f'{metric}_ci_low'])}–"
        f"{pct(best[f'{metric}_ci_high'])}, covering {best.ci_covers}; {best.seeds} seed(s): {best[f'{metric}_per_seed']})."
    )


def _decision_row(v, name: str):
    d = v.decisions
    hit = d[(d.condition == name) & (d.against == "pick")]
    return hit.iloc[0] if len(hit) else None


def runner_up_line(v, best: pd.Series, runner: pd.Series) -> str:
    row = _decision_row(v, runner.condition)
    p = v.pairs
    pair = (
        p[((p.a == best.condition) & (p.b == runner.condition)) | ((p.b == best.condition) & (p.a == runner.condition))]
        if len(p)
        else p
    )
    mc = conflict = ""
    if len(pair) and pair.iloc[0].paired_seeds:
        pair = pair.iloc[0]
        mc = f"; McNemar per seed: {pair.mcnemar}"
        conflict = " (the seeds disagree on the direction)" if pair.mcnemar_favours_a and pair.mcnemar_favours_b else ""
    verdict = (
        f"**significantly below** {best.condition}" if row.significant else f"not significantly below {best.condition}"
    )
    return (
        f"Against the runner-up, {runner.condition}: {pts(-row['diff'])} {unit(v.metric)} on test for "
        f"{best.condition} ({v.level} CI {pts(-row.ci_high)} to {pts(-row.ci_low)}); {runner.condition} is {verdict} "
        f"(Holm-adjusted p = {row.p_adjusted:.3g} over the group's comparisons with the pick){mc}{conflict}."
    )


def contradictions(v, best: pd.Series) -> list[str]:
    """Conditions significantly better than the pick on test: the test set contradicts the choice."""
    d = v.decisions
    if d is None or d.empty:
        return []
    ahead = d[(d.against == "pick") & d.significant & (d["diff"] > 0)]
    return [
        f"**The test set contradicts the pick**: {r.condition} is better than {best.condition} on test by "
        f"{pts(r['diff'])} {unit(v.metric)} ({v.level} CI {pts(r.ci_low)} to {pts(r.ci_high)}, Holm-adjusted p = "
        f"{r.p_adjusted:.3g}) though it ranked lower on validation. The validation evidence the pick rests on may be "
        "too small or unlike the test split: read the recommendation with care, or enlarge validation "
        "(data.validation_fraction)."
        for _, r in ahead.iterrows()
    ]


def _costs(rec: pd.Series, ref: pd.Series) -> list[str]:
    costs = [f"{rec.trainable_pct:.3g}% of the parameters trained"]
    if rec.condition != ref.condition:
        costs += [
            f"{ratio(rec.trained_mb, ref.trained_mb)} the trained weights to keep",
            f"{ratio(rec.peak_memory_mb, ref.peak_memory_mb)} the peak memory",
            f"{ratio(rec.train_seconds, ref.train_seconds)} the training time of {ref.condition}",
        ]
    return costs


def recommendation(v, rec: pd.Series, best: pd.Series, ref: pd.Series, calls: dict, cheaper: dict, settings) -> str:
    margin, metric = settings.margin, v.metric
    costs = ", ".join(_costs(rec, ref))
    if rec.condition != best.condition and not v.decided:
        d = calls[rec.condition][1]
        low = v.with_best.set_index("condition").loc[rec.condition, "best_low"]
        return (
            f"**Use {rec.condition} by default**: the study could not decide, and {rec.condition} is the cheapest "
            f"condition that scored within the margin of the pick {best.condition} on test ({pts(d['diff'])} "
            f"{unit(metric)}, {v.level} CI {pts(d['ci_low'])} to {pts(d['ci_high'])}) and may lose at most "
            f"{abs(100 * low):.1f} {unit(metric)} against the best ({v.level}, simultaneous; within the "
            f"{100 * settings.tolerance:g}-point tolerance, analysis.tolerance); {costs}."
        )
    if rec.condition != best.condition:
        d = calls[rec.condition][1]
        low = v.with_best.set_index("condition").loc[rec.condition, "best_low"]
        return (
            f"**Use {rec.condition}**: within the {100 * margin:g}-point margin of the best, whichever it is (it may "
            f"lose at most {abs(100 * low):.1f} {unit(metric)} against it, {v.level} simultaneous over the candidates; "
            f"{pts(d['diff'])} {unit(metric)} against {best.condition} on test, {v.level} CI {pts(d['ci_low'])} to "
            f"{pts(d['ci_high'])}, {rec.seeds} seed(s)); {costs}."
        )
    open_ = [n for n, (call, _) in cheaper.items() if call in ("undecided", "budget-limited", "seeds disagree")]
    if open_:
        return (
            f"**Use {rec.condition} by default**: the pick, but this study could not decide whether cheaper "
            f"{', '.join(open_)} {'is' if len(open_) == 1 else 'are'} within the margin of the best (see below): the "
            f"default for lack of evidence, not a finding that {'it is' if len(open_) == 1 else 'they are'} worse; "
            f"{costs}."
        )
    if not v.decided:
        return (
            f"**Use {rec.condition} by default**: the pick, and nothing that qualified is cheaper, but this study "
            f"could not show it within the {100 * margin:g}-point margin of the best (a condition that cost more may be "
            f"better by more); {costs}."
        )
    if cheaper:
        return (
            f"**Use {rec.condition}**: within the margin of the best, and every cheaper method is worse than the best "
            f"by more than the {100 * margin:g}-point margin; {costs}."
        )
    by = f" by {100 * settings.cost_margin:g}% or more" if settings.cost_margin else ""
    return (
        f"**Use {rec.condition}**: within the margin of the best, and no method that qualified is cheaper{by}; {costs}."
    )


def undecided_line(v, name: str, best: pd.Series, d: dict, margin: float) -> str:
    low = v.with_best.set_index("condition").loc[name, "best_low"]
    return (
        f"Cannot decide whether cheaper {name} is within the margin of the best: it may lose up to "
        f"{abs(100 * low):.1f} {unit(v.metric)} against it ({v.level}, simultaneous), past the −{100 * margin:g}-point margin "
        f"({pts(d['diff'])} against {best.condition} on test, {v.level} CI {pts(d['ci_low'])} to {pts(d['ci_high'])}); "
        f"{what_would_decide(v, name, best.condition, margin)}."
    )


def what_would_decide(v, name: str, best: str, margin: float) -> str:
    """The two levers, each alone: seeds per condition, and test examples (only where the data could have more), for
    an 80% chance of deciding at the margin if the two were truly equal (``power``)."""
    cmp = v.comparisons
    d = cmp.difference(name, best)
    n, seeds = len(next(iter(cmp.mats.values()))), min(cmp.n_seeds(name), cmp.n_seeds(best))
    # the seed variance a run of more seeds would measure: a one-seed condition's assumed worst case is not it
    typical = cmp.prior.sd**2 if cmp.prior else cmp.assumed_sd**2
    tau2 = [typical if cmp.seeds_of(c).assumed else cmp.seeds_of(c).tau2 for c in (name, best)]
    noise = power.Noise(d["test"] * n, *tau2, cmp.prior.df if cmp.prior else 0.0)
    k = len(v.with_best) if v.with_best is not None else 2
    level = v.alpha / max(k - 1, 1)
    more_seeds = power.seeds_for(noise, n, margin, level)
    more_examples = power.examples_for(noise, seeds, margin, level)
    now = power.chance(noise, seeds, n, margin, level)
    share = d["seed"] / (d["seed"] + d["test"]) if d["seed"] + d["test"] > 0 else 0.0
    resolves = power.resolvable(noise, seeds, n, level)
    now_text = (
        f"between truly equal methods this design decides at the margin {100 * now:.0f}% of the time (it "
        f"resolves about {100 * resolves:.1f} {unit(v.metric)} 80% of the time; the seeds make {100 * share:.0f}% "
        "of the interval's variance)"
    )
    capped = test_capped(v)
    levers, limits = [], []
    if more_seeds:
        levers.append(f"about {more_seeds} seeds per condition")
    else:
        limits.append(f"more seeds alone cannot (the {n:,} test examples limit it)")
    if more_examples and capped is not False:
        levers.append(
            f"about {more_examples:,} test examples" + ("" if capped else " if the data has them") + f" (now {n:,})"
        )
    elif more_examples is None:
        limits.append("more test examples alone cannot (the seeds limit it)")
    out = now_text + (f"; for 80%: {' or '.join(levers)}" if levers else "")
    return out + (f"; {'; '.join(limits)}" if limits else "")


def test_capped(v) -> bool | None:
    """Whether the group's test set was cut short by data.max_eval_samples / max_test_samples (the data has more),
    None when unknown (no run config)."""
    runs = [r for c in v.group.conditions for r in c.runs]
    if not runs:
        return None
    data = runs[0]["config"].get("data") or {}
    cap = data.get("max_test_samples") or data.get("max_eval_samples")
    return bool(cap) and cap <= len(v.group.ids)


def disagree_line(rows: pd.DataFrame, metric: str) -> str:
    """Conditions with a seed far from their others (``significance.seeds_disagree``)."""
    return (
        "**Seeds disagree**: "
        + "; ".join(f"{r.condition} ({r[f'{metric}_per_seed']})" for _, r in rows.iterrows())
        + ": one seed lies far from the others, as when a method fails now and then. Such a seed distribution is "
        "skewed, and an interval on a few seeds may miss its mean (most draws show no failure), so "
        + ("these are" if len(rows) > 1 else "it is")
        + " never called within the margin of the best or worse, "
        "nor recommended as a finding; more seeds would show how often the failure comes."
    )


def none_above_baseline(base: pd.Series, metric: str, flagged: pd.DataFrame, runs: pd.DataFrame) -> str:
    return (
        f"**No method could be shown above the majority-class baseline** ({base.condition}, test "
        f"{LABELS[metric]} {pct(base[metric])}; Holm over the study's comparisons with it): none is recommended. "
        + flag_text(flagged)
        + budget_text(runs)
        + " Train longer (train.epochs), on more data, with more test "
        "examples or seeds, or let the study tune each method's learning rate (tune: {lr: true}), then re-run."
    )


def budget_line(limited: pd.DataFrame, calls: dict) -> str:
    """The budget-limited conditions: which a longer budget could change, and which it could not (their gap to the
    best is beyond what their recent gain would add)."""
    protected = [n for n in limited.condition if calls.get(n, ("",))[0] == "budget-limited"]
    beyond = [n for n in limited.condition if calls.get(n, ("",))[0] == "worse"]
    line = (
        "**Budget-limited** (a run did not reach its validation plateau): "
        + "; ".join(f"{n} ({limited.loc[n].not_converged})" for n in limited.condition)
        + ". "
    )
    if protected:
        line += f"A longer budget could change the comparison of {', '.join(protected)}, so it is not called worse. "
    if beyond:
        line += (
            f"{', '.join(beyond)} {'is' if len(beyond) == 1 else 'are'} worse than the best by more than "
            "the margin even if "
            f"{'its' if len(beyond) == 1 else 'their'} runs kept their recent gain for as long again. "
        )
    return line + budget_advice(limited)


def seed_caveats(v, runs: pd.DataFrame) -> list[str]:
    cmp = v.comparisons
    one = [c for c in runs.condition if cmp.n_seeds(c) < 2]
    out = []
    if one:
        out.append(
            f"With one seed the seed-to-seed variation cannot be measured ({', '.join(one)}): it is taken as "
            f"{100 * cmp.assumed_sd:.1f} {LABELS[v.metric]} points, the largest any committed study measured "
            "(analysis.assumed_seed_sd), so only differences no seed could make are called; run at least three "
            "seeds per condition."
        )
    few = [c for c in runs.condition if 1 < cmp.n_seeds(c) < 3]
    if few:
        quiet = [c for c in few if cmp.seeds_of(c).raw == 0]
        out.append(
            f"Two seeds cannot show a condition's seed-to-seed variation ({', '.join(few)}"
            + (f"; {', '.join(quiet)} landed so close that on their own they would read as none" if quiet else "")
            + "): each is moderated toward the spread measured in earlier studies, so the intervals allow for "
            "seeds that scatter more than these did; run three or more."
        )
    return out


def memory_caveat(conditions) -> list[str]:
    """CPU peaks measured after other runs in one process (a packed study's reused worker) count what those left
    resident: say how many, and how to measure each alone. (Runs recorded before tuneoff counted them say nothing.)"""
    cpu = [
        r["resources"]
        for c in conditions
        for r in c.runs
        if r["resources"].get("peak_rss_mb") and not r["resources"].get("cuda_max_allocated_mb")
    ]
    reused = sum(bool(res.get("runs_before_in_process")) for res in cpu)
    if not reused:
        return []
    return [
        f"Peak memory: {reused} of {len(cpu)} runs were measured on the CPU in a worker process that had trained "
        "other runs before, so their peaks count what those runs left resident and are upper bounds; "
        "`tuneoff run --isolate-runs` measures each run in a process of its own."
    ]


def budget_text(runs: pd.DataFrame) -> str:
    limited = runs[runs.budget_limited.astype(bool)]
    return " Budget-limited (not converged): " + ", ".join(limited.condition) + "." if len(limited) else ""


def budget_advice(limited: pd.DataFrame) -> str:
    """What to change, naming the cap that ended the runs (``train.max_steps`` or ``train.epochs``)."""
    reasons = " ".join(limited.not_converged.astype(str))
    caps = sorted(
        {c for cell in limited.get("stopped_by", pd.Series(dtype=str)).fillna("") for c in str(cell).split(", ") if c}
    )
    cap = " and ".join(caps) or "train.epochs"
    if "too few evaluations" in reasons:
        return f"Evaluate more often (train.eval_every) and raise {cap} with early stopping (train.patience)."
    if "still improving" in reasons or "under-confident" in reasons:
        return (
            f"Raise {cap}, which ended these runs (early stopping with train.patience ends each run at its "
            "plateau), or tune the learning rate."
        )
    return "Tune the learning rate (tune: {lr: true}) or train longer."


def flag_text(flagged: pd.DataFrame) -> str:
    parts = []
    for _, r in flagged.iterrows():
        why = []
        if r.collapsed_runs:
            why.append(f"predicted a single class in {int(r.collapsed_runs)} of {int(r.seeds)} run(s)")
        if not r.beats_baseline:
            why.append("could not be shown above the majority-class baseline")
        parts.append(f"{r.condition} ({'; '.join(why)})")
    return "; ".join(parts) + "." if parts else ""


def constraint_text(decide: Decide) -> str:
    return ", ".join(f"{k} ≤ {v:g}" for k, v in decide.model_dump().items() if v is not None) or "none"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def contenders_line(rows, best, metric: str, margin: float) -> str:
    """Conditions that score within the margin of the pick (or above it) but are not yet shown above the majority
    class: left out of the comparisons, they may hold the best, so the verdict is a default."""
    names = ", ".join(f"{r.condition} ({pct(r[metric])})" for _, r in rows.iterrows())
    one = len(rows) == 1
    return (
        f"**Still open**: {names} {'scores' if one else 'score'} within the {100 * margin:g}-point margin of the "
        f"pick's {pct(best[metric])} on test or above it, but {'is' if one else 'are'} not yet shown above the "
        f"majority-class baseline ({'its' if one else 'their'} seeds scatter, or are too few): "
        f"{'it' if one else 'one of them'} may be the best, so nothing is decided. More seeds would settle it."
    )
