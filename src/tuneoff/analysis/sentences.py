"""The verdict's sentences, written from its tables: the best condition and its runner-up, the recommendation with
its costs as ratios, what cannot be decided and why, flags and caveats. ``verdict`` decides; this module words it
(``v`` is a ``verdict.GroupVerdict``, not imported: the dependency points from verdict to here)."""

from __future__ import annotations

import pandas as pd

from tuneoff.analysis.settings import Decide

LABELS = {"accuracy": "accuracy", "macro_f1": "macro-F1"}


def unit(metric: str) -> str:
    """What a difference is counted in: accuracy's "points" as the reports wrote them, else the metric's points."""
    return "points" if metric == "accuracy" else f"{LABELS[metric]} points"


def ratio(value: float, ref: float) -> str:
    if pd.isna(value) or pd.isna(ref) or not ref:
        return "n/a"
    r = value / ref
    return f"1/{1 / r:,.0f}" if r < 0.5 else f"{r:.2f}x"


def best_line(best: pd.Series, metric: str = "accuracy") -> str:
    lr = f"; learning rate {best.lr:.3g}" if pd.notna(best.get("lr")) else ""
    name = "" if metric == "accuracy" else f"{LABELS[metric]} "
    return (f"**Best on validation: {best.condition}** (validation {LABELS[metric]} {pct(best[f'val_{metric}'])}{lr}); "
            f"on test {name}{pct(best[metric])} (95% CI {pct(best[f'{metric}_ci_low'])}–{pct(best[f'{metric}_ci_high'])}, "
            f"covering {best.ci_covers}; {best.seeds} seed(s): {best[f'{metric}_per_seed']}).")


def runner_up_line(v, best: pd.Series, runner: pd.Series) -> str:
    d = v.decisions
    row = d[(d.condition == runner.condition) & (d.against == "best")].iloc[0]
    p = v.pairs
    pair = p[((p.a == best.condition) & (p.b == runner.condition)) | ((p.b == best.condition) & (p.a == runner.condition))]
    mc = conflict = ""
    if len(pair) and pair.iloc[0].paired_seeds:
        pair = pair.iloc[0]
        mc = f"; McNemar per seed: {pair.mcnemar}"
        conflict = " (the seeds disagree on the direction)" if pair.mcnemar_favours_a and pair.mcnemar_favours_b else ""
    verdict = "a **significant** difference" if row.significant else "**not a significant** difference"
    return (f"Against the runner-up on validation, {runner.condition}: {pts(-row['diff'])} {unit(v.metric)} on test for "
            f"{best.condition} (95% CI {pts(-row.ci_high)} to {pts(-row.ci_low)}), {verdict} (Holm-adjusted p = "
            f"{row.p_holm:.3g} over the {v.family} comparisons of the decision){mc}{conflict}.")


def contradictions(v, best: pd.Series, runs: pd.DataFrame) -> list[str]:
    """Conditions significantly better than the validation pick on test: the test set contradicts the choice."""
    d = v.decisions
    if d is None or d.empty:
        return []
    ahead = d[(d.against == "best") & d.significant & (d["diff"] > 0)]
    return [f"**The test set contradicts the validation pick**: {r.condition} is better than {best.condition} on test by "
            f"{pts(r['diff'])} {unit(v.metric)} (95% CI {pts(r.ci_low)} to {pts(r.ci_high)}, Holm-adjusted p = {r.p_holm:.3g}) "
            "though it ranked lower on validation. The validation split may be too small or unlike the test split: "
            "read the recommendation with care, or enlarge validation (data.validation_fraction)."
            for _, r in ahead.iterrows()]


def recommendation(rec: pd.Series, best: pd.Series, ref: pd.Series, calls: dict, cheaper: dict, margin: float,
                   cost_margin: float = 0.0, metric: str = "accuracy") -> str:
    costs = [f"{rec.trainable_pct:.3g}% of the parameters trained"]
    if rec.condition != ref.condition:
        costs += [f"{ratio(rec.trained_mb, ref.trained_mb)} the trained weights to keep",
                  f"{ratio(rec.peak_memory_mb, ref.peak_memory_mb)} the peak memory",
                  f"{ratio(rec.train_seconds, ref.train_seconds)} the training time of {ref.condition}"]
    if rec.condition != best.condition:
        d = calls[rec.condition][1]
        how = (f"better by {100 * d['diff']:.1f} {unit(metric)} than" if d["diff"] > 0 else
               f"within {abs(100 * d['diff']):.1f} {unit(metric)} of")
        quality = (f"{how} {best.condition} on test (non-inferior at a {100 * margin:g}-point margin: 95% CI of the "
                   f"difference {pts(d['ci_low'])} to {pts(d['ci_high'])}, {rec.seeds} seed(s))")
        return f"**Use {rec.condition}**: {quality}, {', '.join(costs)}."
    open_ = [n for n, (call, _) in cheaper.items() if call in ("undecided", "budget-limited")]
    if open_:
        return (f"**Use {rec.condition} by default**: it is the best on validation, but this study could not decide "
                f"whether cheaper {', '.join(open_)} {'is' if len(open_) == 1 else 'are'} as good (see below): the "
                f"default for lack of evidence, not a finding that {'it is' if len(open_) == 1 else 'they are'} worse; "
                f"{', '.join(costs)}.")
    if cheaper:
        return (f"**Use {rec.condition}**: the best on validation, and every cheaper method is worse by more than the "
                f"{100 * margin:g}-point margin; {', '.join(costs)}.")
    by = f" by {100 * cost_margin:g}% or more" if cost_margin else ""
    return f"**Use {rec.condition}**: the best on validation, and no method that qualified is cheaper{by}; {', '.join(costs)}."


def seed_caveats(v, runs: pd.DataFrame) -> list[str]:
    seeds = v.comparisons.seeds
    if seeds.assumed:
        return [f"With one seed per condition the seed-to-seed variation cannot be measured: it is assumed to be "
                f"{100 * seeds.sd:.0f} {LABELS[v.metric]} points (analysis.assumed_seed_sd), so intervals are wide and only large "
                "differences can be called; run at least two seeds per condition to measure it."]
    if runs.seeds.min() < 3:
        cmp, few = v.comparisons, int(runs.seeds.min())
        spread = {c: cmp.seeds_of(c).sd for c in runs.condition if cmp.n_seeds(c) > 1}
        widest = max(spread, key=spread.get, default=None)
        if widest is None or spread[widest] == 0:
            return [f"No systematic seed-to-seed variation was detected in any condition ({few} seed(s) each): the "
                    "intervals are mostly test sampling's; with so few seeds that is an estimate, and more seeds would "
                    "make it firm."]
        return [f"Each condition's seed-to-seed variation is estimated from its own seeds, {few} or more (up to "
                f"{100 * spread[widest]:.1f} {unit(v.metric)}, {widest}): with so few seeds the intervals use a wide t quantile, "
                "and more seeds would narrow them."]
    return []


def memory_caveat(conditions) -> list[str]:
    """CPU peaks measured after other runs in one process (a packed study's reused worker) count what those left
    resident: say how many, and how to measure each alone. (Runs recorded before tuneoff counted them say nothing.)"""
    cpu = [r["resources"] for c in conditions for r in c.runs
           if r["resources"].get("peak_rss_mb") and not r["resources"].get("cuda_max_allocated_mb")]
    reused = sum(bool(res.get("runs_before_in_process")) for res in cpu)
    if not reused:
        return []
    return [f"Peak memory: {reused} of {len(cpu)} runs were measured on the CPU in a worker process that had trained "
            "other runs before, so their peaks count what those runs left resident and are upper bounds; "
            "`tuneoff run --isolate-runs` measures each run in a process of its own."]


def budget_text(runs: pd.DataFrame) -> str:
    limited = runs[runs.budget_limited.astype(bool)]
    return (" Budget-limited (not converged): " + ", ".join(limited.condition) + "." if len(limited) else "")


def budget_advice(limited: pd.DataFrame) -> str:
    reasons = " ".join(limited.not_converged.astype(str))
    if "too few evaluations" in reasons:
        return "Evaluate more often (train.eval_every) and train longer (train.epochs) with early stopping (train.patience)."
    if "still improving" in reasons or "under-confident" in reasons:
        return "Raise train.epochs (early stopping with train.patience ends each run at its plateau), or tune the learning rate."
    return "Tune the learning rate (tune: {lr: true}) or train longer."


def flag_text(flagged: pd.DataFrame) -> str:
    parts = []
    for _, r in flagged.iterrows():
        why = []
        if r.collapsed_runs:
            why.append(f"predicted a single class in {int(r.collapsed_runs)} of {int(r.seeds)} run(s)")
        if not r.beats_baseline:
            why.append("does not beat the majority-class baseline significantly")
        elif not r.collapsed_runs:
            # Eligibility is only ever withdrawn (verdict._decision_family): it failed Holm while the family held its
            # comparison with a best; with no best left, the smaller family would pass it. Borderline, said as such.
            why.append("beats the majority-class baseline only narrowly: significant in the smaller family of "
                       "comparisons left when no method qualifies, not in the one with its comparison against a best")
        parts.append(f"{r.condition} ({'; '.join(why)})")
    return "; ".join(parts) + "." if parts else ""


def constraint_text(decide: Decide) -> str:
    return ", ".join(f"{k} ≤ {v:g}" for k, v in decide.model_dump().items() if v is not None) or "none"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def pts(x: float) -> str:
    return f"{100 * x:+.1f}"
