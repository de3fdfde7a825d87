"""The HTML sections of a study report: one block per group of comparable conditions (verdict, quality, curves,
cost, significance, per-class metrics, confusions, calibration, mistakes), the search, the data and the page."""

from __future__ import annotations

import html
from dataclasses import replace

import numpy as np
import pandas as pd

from tuneoff.analysis import mistakes
from tuneoff.analysis.data_size import size_matrix
from tuneoff.analysis.groups import f1_by_class_with_intervals
from tuneoff.analysis.sentences import LABELS
from tuneoff.data.inspection import summary_rows
from tuneoff.report import plots
from tuneoff.report.plots import plot_lengths
from tuneoff.study.protocol import PHASE_TUNE

QUALITY = [
    "condition",
    "method",
    "seeds",
    "lr",
    "converged_runs",
    "accuracy",
    "accuracy_std",
    "accuracy_per_seed",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "val_accuracy",
    "macro_f1",
    "macro_f1_ci_low",
    "macro_f1_ci_high",
    "ece",
    "vs_best",
]
COST = [
    "condition",
    "trainable_params",
    "trainable_pct",
    "trained_mb",
    "peak_memory_mb",
    "train_seconds",
    "train_samples_per_s",
]
SHOWN = QUALITY + COST[1:]  # the Markdown summary's one table; the HTML report shows QUALITY and COST side by side

HOW_TO_READ_MD = (
    "How to read the verdict: each method's learning rate was tuned on validation where the study asked for it, and "
    "each run trained to its validation plateau; a condition whose runs did not converge is **budget-limited** and is "
    "called worse only when even its recent gain, kept up for as long again, could not close the gap. The **pick** is "
    "the best on **validation** {metric}, read on each condition's held-apart tuning trial (a seed no final run uses) where every candidate has one, so the "
    "test comparison with it is unbiased; otherwise on the final runs' validation, and the verdict says their luck is "
    "shared. Intervals are 95% t intervals over both sources of noise: the test examples and the training seeds (each "
    "condition's own seed variance, moderated toward what earlier studies measured; Welch-Satterthwaite degrees of "
    "freedom; one seed is given the largest seed spread ever measured). A method is cheaper when its cost "
    "(`analysis.prefer`; overall: the geometric mean of its trained-weights, peak-memory and training-time ratios) is "
    "at least {cost_margin:g}% lower; a method is **as good** as the best (within the −{margin:g}-point {metric} margin, "
    "whichever condition is the best) when the lower end of its interval of multiple comparisons with the best (Hsu's "
    "MCB, 95% simultaneous over the candidates) lies above the margin, and **worse** when its difference from the pick "
    "lies below it at 95% simultaneous over the comparisons with the pick; otherwise the report says it cannot decide. "
    "The recommendation is the cheapest condition as good as the best; when none is shown, by default the cheapest that scored within the margin of the pick on test and may lose at most `analysis.tolerance` against the best, else the pick. Significance against "
    "the pick is Holm-adjusted over the group's comparisons with it, against the majority-class baseline over the "
    "study's; the all-pairs table is exploratory, with its own Holm adjustment. Runs that collapsed to one class, or "
    "cannot be shown above the baseline, are never recommended; a condition whose seeds disagree (one far from the "
    "others) is never called as good or worse."
)

DECISION_NOTE = (
    "The decision: each candidate against the pick (difference in test {metric}, its 95% t interval, t "
    "degrees of freedom, p raw and Holm-adjusted over the group's comparisons with the pick; `pick_high`, "
    "the upper end of the difference at 95% simultaneous over them: below the −margin it is **worse**), "
    "within the margin of the best (`best_low`: Hsu's MCB lower bound of its distance from the best, "
    "simultaneous over the candidates: above the −margin it is **as good**), and each condition against the "
    "majority-class baseline (Holm over the study)."
)
DECISION_SHOWN = [
    "condition",
    "against",
    "diff",
    "ci_low",
    "ci_high",
    "df",
    "p_value",
    "p_adjusted",
    "significant",
    "best_low",
    "pick_high",
    "call",
]


def decision_note(metric: str) -> str:
    return DECISION_NOTE.format(metric=LABELS[metric])


def decision_table(decisions: pd.DataFrame) -> pd.DataFrame:
    return decisions[[c for c in DECISION_SHOWN if c in decisions.columns]]


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}.sub{color:#666}
table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}table.t th,table.t td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right;vertical-align:top}
table.t td{max-width:32em;overflow-wrap:break-word}table.t th{background:#f4f4f4}img{max-width:100%;height:auto;margin:.5em 0}
.head{background:#f5f9ff;border-left:4px solid #36c;padding:.6em 1em}
.card{border:2px solid #36c;border-radius:6px;padding:.4em 1em;margin:.6em 0;background:#fbfdff}.card ul{margin:.2em 0}.note{color:#555;font-size:13px}
code{background:#f2f2f2;padding:0 .3em}.scroll{overflow-x:auto;max-width:100%}pre{white-space:pre-wrap;overflow-wrap:anywhere}"""


def page(title: str, sub: str, parts: list[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
        f"<p class='sub'>{html.escape(sub)}</p>{body}</body></html>"
    )


def table_html(df: pd.DataFrame, floatfmt: str = "{:.4g}", bold: bool = False) -> str:
    """An HTML table, every cell escaped; with ``bold``, text cells' **…** turn bold (after escaping)."""
    df = df.astype(object).where(df.notna(), None).replace({None: ""}) if len(df) else df
    df.columns.name = None
    if bold:
        df = df.map(lambda x: md_inline(x) if isinstance(x, str) else x)
    return (
        "<div class='scroll'>"
        + df.to_html(
            index=False, float_format=lambda x: floatfmt.format(x), border=0, classes="t", escape=not bold, na_rep=""
        )
        + "</div>"
    )


def img(b64: str) -> str:
    return f"<img src='data:image/png;base64,{b64}' alt=''>"


def md_inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def card_html(v) -> str:
    """One group's verdict card (``analysis.card``): its Markdown lines, in a box."""
    lines = v.card.lines()
    return (
        f"<div class='card'><p class='sub'>{html.escape(v.group.title)}</p><p>{md_inline(lines[0])}</p><ul>"
        + "".join(f"<li>{md_inline(line)}</li>" for line in lines[1:])
        + "</ul></div>"
    )


def cards_html(verdicts) -> str:
    return "".join(card_html(v) for v in verdicts)


def how_to_read_md(settings) -> str:
    return HOW_TO_READ_MD.format(
        margin=100 * settings.margin, cost_margin=100 * settings.cost_margin, metric=LABELS[settings.metric]
    )


def how_to_read(settings) -> str:
    return f"<p class='note'>{md_inline(how_to_read_md(settings))}</p>"


def speed_note(speed) -> str:
    """The paragraph above a speed table (``analysis.speed``), in Markdown."""
    return SPEED_NOTE.format(resolution=speed.attrs.get("resolution_steps", float("nan")))


SPEED_NOTE = (
    "Speed: optimizer steps until validation accuracy first reached 95% of the run's own best (*own plateau*) "
    "and a bar common to every condition (95% of the weakest eligible condition's plateau), per seed; each "
    "condition against the best on validation by Welch's t test over seeds, Holm-adjusted over this table. "
    "Steps are read at evaluations every {resolution:g} steps, so a difference of one evaluation or less is "
    "never called faster or slower."
)

SPEED_PAIRS_NOTE = (
    "Exploratory, every pair at the common bar ({target}): steps of a minus steps of b over seeds, Welch's "
    "95% interval, p Holm-adjusted over this table; for questions the decision does not ask (is one "
    "cheaper method faster than another?). A difference of one evaluation ({resolution:g} steps) or less "
    "is never called; a pair with a seed that never reached the bar is left out."
)


def speed_pairs_shown(v) -> bool:
    """The all-pairs speed table adds something only beyond the comparisons with the best (three conditions or more)."""
    return v.speed_pairs is not None and len(v.speed_pairs) > 0 and len(v.group.conditions) > 2


def speed_pairs_note(pairs) -> str:
    return SPEED_PAIRS_NOTE.format(
        target=pairs.target.iloc[0], resolution=pairs.attrs.get("resolution_steps", float("nan"))
    )


def data_size_title(table) -> str:
    """The section's title: the verdict's metric by training-set size ("Accuracy by training-set size")."""
    label = LABELS[table.metric.iloc[0]]
    return f"{label[0].upper()}{label[1:]} by training-set size"


def data_size_note(table) -> str:
    return (
        "Each training-set size has its own verdict (below): how much labelled data there is is the user's "
        f"situation, not a choice among methods. Test {LABELS[table.metric.iloc[0]]} in percent with its 95% "
        "interval over seeds and test examples; **bold**: the condition that size's verdict recommends; †: "
        "budget-limited (runs still improving when they stopped), never called worse."
    )


def data_size_html(table) -> str:
    """The verdicts of a study over training-set sizes side by side: where the methods' curves cross."""
    out = [f"<p class='note'>{md_inline(data_size_note(table))}</p>", img(plots.plot_data_size(table))]
    for (dataset, model), sub in table.groupby(["dataset", "model"], sort=False):
        out += [f"<p>{html.escape(f'{dataset} · {model}')}:</p>", table_html(size_matrix(sub), bold=True)]
    return "".join(out)


def group_html(v) -> str:
    """Everything about one group: the verdict first, the evidence after."""
    conds = v.group.conditions
    table = v.table[v.table.method != "baseline"]
    order = [
        next(c for c in conds if c.name == n) for n in table.sort_values(f"val_{v.metric}", ascending=False).condition
    ]
    # The plots name each condition by what sets it apart in this group (its title names the rest): the full names
    # of a study over sizes ("lora_r8_qv max_train_samples=3000 data=rotten_tomatoes") crowded the axes out.
    short = plots.short_names([c.name for c in order])
    shown = [replace(c, name=short[c.name]) for c in order]
    ptable = table.assign(condition=table.condition.map(short))
    colors = plots._colors([c.name for c in shown])
    baseline = float(v.table[v.table.method == "baseline"].accuracy.iloc[0])
    out = [
        "<h3>Verdict</h3><div class='head'>" + "".join(f"<p>{md_inline(l)}</p>" for l in v.lines) + "</div>",
        "<h3>Quality</h3>",
        img(plots.plot_quality(ptable, colors, baseline)),
        "<p class='note'>Test accuracy per seed beside the mean; <i>vs_best</i> is the call against the best (as "
        "good, worse, undecided; see Significance). The last row is the majority-class baseline.</p>",
        table_html(v.table[[c for c in QUALITY if c in v.table.columns]]),
        "<p class='note'>What each condition cost (mean over its runs):</p>",
        table_html(v.table[[c for c in COST if c in v.table.columns]]),
        "<h3>Learning curves</h3>",
        img(plots.plot_curves(shown, colors)),
        "<p class='note'>Time to target: the first evaluation at which validation accuracy reached 95% / 99% of the "
        "run's best (mean over seeds; seconds of training, evaluation excluded).</p>",
        table_html(table[["condition", "steps_to_95", "seconds_to_95", "steps_to_99", "seconds_to_99"]]),
    ]
    if v.speed is not None and len(v.speed):
        out += [f"<p class='note'>{md_inline(speed_note(v.speed))}</p>", table_html(v.speed)]
    if speed_pairs_shown(v):
        out += [
            f"<p class='note'>{md_inline(speed_pairs_note(v.speed_pairs))}</p>",
            table_html(v.speed_pairs.drop(columns="target")),
        ]
    out += ["<h3>Cost</h3>", img(plots.plot_costs(ptable, colors)), img(plots.plot_pareto(ptable, colors, v.metric))]
    sweep = plots.plot_sweeps(ptable, shown)
    if sweep:
        out += ["<h3>Sweeps</h3>", img(sweep)]
    if v.decisions is not None and len(v.decisions):
        out += [
            f"<h3>Significance</h3><p class='note'>{md_inline(decision_note(v.metric))}</p>",
            table_html(decision_table(v.decisions)),
        ]
    if len(v.pairs):
        out += [
            f"<p class='note'>Exploratory: every pair (test {LABELS[v.metric]} a − b), Holm-adjusted over every pair of the study (a family "
            "of its own); McNemar's exact test on each seed both ran, with the direction it favours.</p>",
            table_html(v.pairs.drop(columns=["mcnemar_favours_a", "mcnemar_favours_b"])),
        ]
    classes = v.per_class
    out += [
        "<h3>Per-class metrics</h3><p class='note'>F1 per class on test, mean over seeds, with its 95% interval "
        "over seeds and test examples (precision and recall below).</p>",
        table_html(f1_by_class_with_intervals(classes)),
        "<details><summary>precision and recall per class</summary>"
        + table_html(
            classes.pivot_table(index="class", columns="condition", values=["precision", "recall"], sort=False)
            .reset_index()
            .pipe(_flat)
        )
        + "</details>",
        "<h3>Confusion matrices</h3>",
        img(plots.plot_confusions(shown)),
        "<h3>Calibration</h3><p class='note'>Expected calibration error of each run's model (15 bins), mean ± std over "
        "seeds; the diagram pools the runs of a condition." + md_inline(weighted_note(order)) + "</p>",
        img(plots.plot_reliability(shown, colors)),
    ]
    out.append(mistakes_html(order, shown, colors))
    return "".join(out)


def unfinished_note(rows) -> str:
    """A study read before it finished (stopped, interrupted, or still running): the verdict covers only the runs that
    have, and may change. ``rows``: the study's pending and running runs."""
    if not rows:
        return ""
    running = sum(r["status"] == "running" for r in rows)
    trials = sum(r["phase"] == PHASE_TUNE for r in rows)
    return (
        f"**Not finished**: {len(rows)} planned run(s) of this study have not finished ({running} running or interrupted, "
        f"{len(rows) - running} still to run"
        + (f"; {trials} of them tuning trials, whose conditions' seeds are planned once they end" if trials else "")
        + "). The verdict reads only the finished runs and may change; `tuneoff run <study file> --resume` "
        "continues the study."
    )


def weighted_note(conditions) -> str:
    """A class-weighted model's probabilities answer the weighted question (its confidence on the common classes is
    lowered by design), so its calibration is not comparable as it stands: say so, and how to divide them out."""
    weighted = [c.name for c in conditions if any(r["info"].get("class_weights") for r in c.runs)]
    if not weighted:
        return ""
    return (
        f" Trained with class weights (train.class_weight): {', '.join(weighted)}; this is the calibration of the "
        "model as trained, whose probabilities the weights shift by design (tuneoff predict and evaluate with "
        "--undo-class-weights divide them out, for the data's own posterior)."
    )


def _flat(df: pd.DataFrame) -> pd.DataFrame:
    df.columns = [" ".join(str(x) for x in c if x) if isinstance(c, tuple) else c for c in df.columns]
    return df


def mistakes_html(order, shown, colors) -> str:
    """``order``: the group's conditions, best on validation first; ``shown``: the same under their plots' names."""
    shares = {c.name: mistakes.error_shares(c) for c in shown}
    overlap = mistakes.error_overlap(shown)
    words = {c.name: mistakes.word_statistics(c) for c in order}
    stability = mistakes.word_rank_stability(words)
    out = [
        "<h3>Mistakes</h3>",
        img(plots.plot_errors(shares, overlap, order[0].label_names)),
        img(plots.plot_gaps({c.name: mistakes.probability_gaps(c) for c in shown}, colors)),
        "<h4>Most confidently wrong examples</h4>",
    ]
    for c in order:
        wrong = mistakes.confident_errors(c)
        out.append(f"<p><b>{html.escape(c.name)}</b></p>" + (table_html(wrong) if len(wrong) else "<p>no errors</p>"))
    dis = mistakes.disagreements(order)
    if len(dis):
        out += [
            "<h4>Examples the methods disagree on</h4><p class='note'>Right / wrong in at least half of each "
            "condition's seeds.</p>",
            table_html(dis),
        ]
    supported = pd.concat(
        [w[w.supported].head(15).assign(condition=n) for n, w in words.items() if len(w)] or [pd.DataFrame()]
    )
    out.append(
        "<h4>Words that go with errors</h4><p class='note'>Words (both texts of a pair, stop-words removed) in at "
        f"least {mistakes.MIN_COUNT} misclassified examples whose share among errors exceeds their share among "
        "correct examples by Fisher's exact test, Benjamini-Hochberg FDR 10%."
    )
    if stability["mean"] is not None:
        out.append(f" Agreement of word ranks across methods (Spearman, mean over pairs): {stability['mean']:.2f}.")
    out.append("</p>")
    out.append(
        table_html(supported[["condition", "word", "in_errors", "in_correct", "ratio", "p_value"]])
        if len(supported)
        else "<p>No word passes: the counts do not support any.</p>"
    )
    return "".join(out)


def tuning_html(trials: pd.DataFrame, emp: pd.DataFrame) -> str:
    counts = trials.status.value_counts().to_dict()
    chosen = trials[trials.chosen.astype(bool)][["condition", "lr", "val_accuracy", "trial"]]
    last = emp.sort_values("trials").groupby("condition").tail(1).set_index("condition")
    first = emp[emp.trials == 1].set_index("condition")
    gains = pd.DataFrame(
        {
            "condition": last.index,
            "expected best of 1 trial": first.reindex(last.index).expected_best_val_accuracy.values,
            "of all": last.expected_best_val_accuracy.values,
            "trials": last.trials.values,
        }
    )
    return (
        "<p class='note'>Each condition's learning rate was chosen on validation among its tuning trials (log-uniform "
        "draws over the method's prior range, one seed of their own; pruned trials were stopped below the median of "
        f"the finished ones): {', '.join(f'{n} {s}' for s, n in counts.items())}. The seeds compared above trained at "
        "the chosen rate. A method whose expected best keeps rising with k wins only when tuned hard.</p>"
        + "".join(
            img(plots.plot_tuning(t, emp[emp.condition.isin(t.condition)], cell))
            for cell, t in trials.groupby("cell", sort=False)
        )
        + "<p class='note'>Chosen learning rates:</p>"
        + table_html(chosen)
        + table_html(gains)
        + "<details><summary>every trial</summary>"
        + table_html(trials)
        + "</details>"
    )


def search_html(trials: pd.DataFrame, search) -> str:
    counts = trials.status.value_counts().to_dict()
    limits = ", ".join(f"{k} &le; {v:g}" for k, v in search.constraints.items())
    return (
        f"<p>Optuna TPE, {search.trials} trials per variant, {'maximizing' if search.maximize else 'minimizing'} "
        f"<code>{html.escape(search.metric)}</code>{' subject to ' + limits if limits else ''}; "
        f"{', '.join(f'{n} {s}' for s, n in counts.items())}. The comparisons above use each variant's best "
        "feasible trial (one seed: run the winners again on more seeds before trusting small differences).</p>"
        + img(plots.plot_search(trials, search.metric, search.maximize))
        + table_html(trials)
    )


def data_html(report: dict, cfg) -> str:
    report = {**report, "_lengths": {k: np.asarray(v) for k, v in report["_lengths"].items()}}
    histogram, boxplot = plot_lengths(report)
    leaks = {k: v for k, v in report["leakage"].items() if v}
    return (
        f"<h3>{html.escape(report['dataset'])} (tokens of {html.escape(cfg.model.name)})</h3>"
        + table_html(summary_rows(report))
        + img(histogram)
        + img(boxplot)
        + f"<p>Recommended max_length {report['recommended_max_length']} (truncates {report['recommended_truncates']:.1%} "
        f"of training examples); this study used {cfg.data.max_length}. Texts shared across splits: "
        f"{html.escape(str(leaks or 'none'))}.</p>"
    )
