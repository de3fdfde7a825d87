"""The study report: one self-contained HTML file (plots embedded), a Markdown summary and CSV tables.

Everything is rebuilt from the results store and the run directories, so ``tuneoff report`` needs no training.
The headline answers the user's question in words: which method wins on quality, which on cost, and whether
the quality difference is statistically significant.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from tuneoff import analysis, plots
from tuneoff.errors import TuneoffError
from tuneoff.rundir import atomic_write_text
from tuneoff.store import DB_NAME, Store


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def headline(table: pd.DataFrame, comps: pd.DataFrame) -> list[str]:
    best = table.iloc[0]
    lines = [f"**Best quality: {best.condition}** — test accuracy {_pct(best.accuracy)} "
             f"(95% CI {_pct(best.accuracy_ci_low)}–{_pct(best.accuracy_ci_high)}, {best.seeds} seed(s)), macro-F1 {best.macro_f1:.3f}."]
    if len(table) > 1:
        runner = table.iloc[1]
        row = comps[((comps.a == best.condition) & (comps.b == runner.condition)) | ((comps.b == best.condition) & (comps.a == runner.condition))]
        if not row.empty:
            r = row.iloc[0]
            sign = 1 if r.a == best.condition else -1
            diff, lo, hi = sign * r.accuracy_diff, min(sign * r.ci_low, sign * r.ci_high), max(sign * r.ci_low, sign * r.ci_high)
            verdict = ("a **significant** difference" if r.significant else "**not a significant** difference")
            lines.append(f"Against the runner-up, {runner.condition}: {100 * diff:+.1f} points (95% CI {100 * lo:+.1f} to "
                         f"{100 * hi:+.1f}), {verdict} at the 5% level (paired bootstrap over {r.n} test examples; McNemar "
                         f"p < 0.05 in {r.mcnemar_significant_seeds} of {r.paired_seeds} seed(s)).")
        tied = [best.condition] + [
            (r.b if r.a == best.condition else r.a) for r in comps.itertuples()
            if best.condition in (r.a, r.b) and not r.significant]
        pool = table[table.condition.isin(tied)]
        for key, title in analysis.COSTS.items():
            if pool[key].notna().any():
                cheap = pool.loc[pool[key].idxmin()]
                lines.append(f"Cheapest on {title} among methods not significantly worse than the best: "
                             f"**{cheap.condition}** ({cheap[key]:,.4g}).")
    front = table[table.pareto_train_seconds].condition.tolist()
    lines.append(f"Not dominated on accuracy vs training time (Pareto front): {', '.join(front)}.")
    return lines


def _table_html(df: pd.DataFrame, floatfmt: str = "{:.4g}") -> str:
    return "<div class='scroll'>" + df.to_html(index=False, float_format=lambda x: floatfmt.format(x), border=0, classes="t", escape=True) + "</div>"


CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}.sub{color:#666}
table.t{border-collapse:collapse;font-size:12px;margin:.5em 0}table.t th,table.t td{padding:3px 8px;border-bottom:1px solid #eee;text-align:right}
table.t th{background:#f4f4f4}img{max-width:100%;margin:.5em 0}.head{background:#f5f9ff;border-left:4px solid #36c;padding:.6em 1em}
code{background:#f2f2f2;padding:0 .3em}.scroll{overflow-x:auto}"""


def build(study: str, results: str | Path) -> Path:
    """Write ``report.html``, ``summary.md`` and CSV tables into ``<results>/<study>/report/``."""
    results = Path(results)
    if not (results / DB_NAME).is_file():
        raise TuneoffError(f"No results store in {results} ({DB_NAME} missing). Run a study first: tuneoff run.")
    store = Store(results)
    if store.study(study) is None:
        names = [s["name"] for s in store.studies()]
        raise TuneoffError(f"No study {study!r} in {results}; studies there: {', '.join(names) or 'none'}.")
    conditions = analysis.load_conditions(store, study)
    failed = store.runs(study, "failed")
    spec_yaml = store.study(study)["spec_yaml"]
    search, trials = _search_of(spec_yaml), None
    if search is not None:  # compare each variant's best trial; every trial is listed in the Search section
        from tuneoff.search import best_run_ids, trials_frame

        trials = trials_frame(store.runs(study), search)
        best = best_run_ids(trials, search)
        conditions = [c for c in conditions if any(r["run_id"] in best for r in c.runs)] or conditions
    store.close()

    table = analysis.summary(conditions)
    classes = analysis.per_class(conditions)
    comps = analysis.comparisons(conditions)
    errors = {c.name: analysis.error_analysis(c) for c in conditions}
    overlap = analysis.error_overlap(errors)
    colors = plots._colors([c.name for c in conditions])
    ordered = [next(c for c in conditions if c.name == n) for n in table.condition]

    out = results / study / "report"
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "summary.csv", index=False)
    classes.to_csv(out / "per_class.csv", index=False)
    comps.to_csv(out / "comparisons.csv", index=False)
    overlap.to_csv(out / "error_overlap.csv", index=False)
    words = pd.DataFrame([{"condition": n, **w} for n, e in errors.items() for w in e["overrepresented_words"]])
    words.to_csv(out / "error_words.csv", index=False)

    lines = headline(table, comps)
    show = table[["condition", "method", "seeds", "accuracy", "accuracy_std", "accuracy_ci_low", "accuracy_ci_high", "macro_f1",
                  "ece", "trainable_params", "trainable_pct", "checkpoint_mb", "peak_memory_mb", "train_seconds", "train_samples_per_s"]]
    md = [f"# Study {study}", "", *lines, "", show.to_markdown(index=False, floatfmt=".4g"), "",
          "## Pairwise comparisons", "", comps.drop(columns=["mcnemar_p"]).to_markdown(index=False, floatfmt=".4g") if len(comps) else "(one condition)"]
    if trials is not None:
        trials.to_csv(out / "search_trials.csv", index=False)
        md += ["", "## Search", "", f"Objective {search.metric} ({'maximize' if search.maximize else 'minimize'}); the "
               "comparison above uses each variant's best feasible trial.", "", trials.to_markdown(index=False, floatfmt=".4g")]
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")

    device = conditions[0].runs[0]["device"]
    sections = [
        ("Headline", "<div class='head'>" + "".join(f"<p>{_md_inline(l)}</p>" for l in lines) + "</div>"),
        ("Quality", _img(plots.plot_quality(table, colors)) + _table_html(show)),
        ("Learning curves", _img(plots.plot_curves(ordered, colors))),
        ("Cost", _img(plots.plot_costs(table, colors)) + _img(plots.plot_pareto(table, colors))),
    ]
    sweep = plots.plot_sweeps(table, conditions)
    if sweep:
        sections.append(("Sweeps", _img(sweep)))
    sections += [
        ("Significance", "<p>Paired bootstrap (BCa, 2,000 resamples) of the accuracy difference over the same test examples "
                         "(seed-averaged correctness), and McNemar's exact test per shared seed.</p>" + (_table_html(comps) if len(comps) else "")),
        ("Per-class metrics", _table_html(classes.pivot_table(index="class", columns="condition", values="f1").reset_index())),
        ("Confusion matrices", _img(plots.plot_confusions(ordered))),
        ("Calibration", _img(plots.plot_reliability(ordered, colors))),
        ("Error analysis", _img(plots.plot_errors({c.name: errors[c.name] for c in ordered}, overlap, ordered[0].label_names))
         + "<h3>Words over-represented in misclassified examples</h3>" + (_table_html(words) if len(words) else "<p>none</p>")
         + "<h3>Mean predicted probability minus true share, per class</h3>"
         + _table_html(pd.DataFrame({n: e["probability_gap"] for n, e in errors.items()}).reset_index(names="class"))),
    ]
    if trials is not None:
        sections.append(("Search", search_section(trials, search)))
    sections.append(("Plan vs measured", plan_section(ordered, table)))
    if failed:
        sections.append(("Failed runs", _table_html(pd.DataFrame([{"run": f["run_id"], "error": f["error"][-400:]} for f in failed]))))
    sections.append(("Data", data_sections(conditions)))
    sections.append(("Study spec", f"<pre>{html.escape(spec_yaml)}</pre>"))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f"<h2>{html.escape(t)}</h2>{content}" for t, content in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tuneoff — {html.escape(study)}</title><style>{CSS}</style></head>"
            f"<body><h1>tuneoff study: {html.escape(study)}</h1><p class='sub'>{len(conditions)} conditions, "
            f"{sum(len(c.runs) for c in conditions)} finished runs, {len(failed)} failed · device: {html.escape(str(device))} · {stamp}</p>"
            f"{body}</body></html>")
    atomic_write_text(out / "report.html", page)
    return out / "report.html"


def _search_of(spec_yaml: str):
    import yaml

    from tuneoff.search import SearchSpec

    section = (yaml.safe_load(spec_yaml) or {}).get("search")
    return SearchSpec.model_validate(section) if section else None


def search_section(trials: pd.DataFrame, search) -> str:
    counts = trials.status.value_counts().to_dict()
    limits = ", ".join(f"{k} &le; {v:g}" for k, v in search.constraints.items())
    return (f"<p>Optuna TPE, {search.trials} trials per variant, {'maximizing' if search.maximize else 'minimizing'} "
            f"<code>{html.escape(search.metric)}</code>{' subject to ' + limits if limits else ''}; "
            f"{', '.join(f'{n} {s}' for s, n in counts.items())}. The comparisons above use each variant's best "
            "feasible trial (one seed: run the winners again on more seeds before trusting small differences).</p>"
            + _img(plots.plot_search(trials, search.metric, search.maximize)) + _table_html(trials))


def plan_section(conditions, table: pd.DataFrame) -> str:
    """The planner's prediction for each condition next to what its runs measured."""
    from tuneoff.config import RunConfig
    from tuneoff.planner import plan_run

    rows = []
    for c in conditions:
        cfg = RunConfig.model_validate(c.runs[0]["config"])
        length = cfg.data.max_length if isinstance(cfg.data.max_length, int) else 128
        p = plan_run(cfg, c.name, cfg.train.batch_size, length, "fp32", num_labels=len(c.label_names))
        measured = table.set_index("condition").loc[c.name]
        rows.append({"condition": c.name, "planned weights MB": p.weights_mb, "gradients MB": p.gradients_mb,
                     "optimizer MB": p.optimizer_mb, "activations MB": p.activations_mb, "planned peak MB": p.total_mb,
                     "GFLOP/step": p.gflops_per_step, "measured peak MB": measured["peak_memory_mb"],
                     "measured samples/s": measured["train_samples_per_s"]})
    return ("<p>Planned: one step at the configured batch size and <code>data.max_length</code> (no padding), fp32, "
            "counted by <code>tuneoff plan</code>. Measured: CUDA max allocated on GPU, or the process's peak RSS on CPU "
            "(which also holds the Python runtime, libraries and data, and runs used dynamic padding).</p>"
            + _table_html(pd.DataFrame(rows)))


def data_sections(conditions) -> str:
    """`tuneoff inspect` for each dataset of the study, with the tokenizer of the model it was trained with."""
    from tuneoff.config import RunConfig
    from tuneoff.data import load_corpus
    from tuneoff.inspection import inspect_corpus, model_max_length, plot_lengths, summary_rows
    from tuneoff.models import load_tokenizer, resolve_model

    seen, parts = set(), []
    for c in conditions:
        cfg = RunConfig.model_validate(c.runs[0]["config"])
        key = (cfg.data.model_dump_json(exclude={"max_length"}), cfg.model.name)
        if key in seen:
            continue
        seen.add(key)
        source = resolve_model(cfg.model.name)
        tokenizer = load_tokenizer(source, cfg.model.revision)
        from transformers import AutoConfig

        report = inspect_corpus(load_corpus(cfg.data), tokenizer, model_max_length(AutoConfig.from_pretrained(source), tokenizer))
        histogram, boxplot = plot_lengths(report)
        leaks = {k: v for k, v in report["leakage"].items() if v}
        parts.append(
            f"<h3>{html.escape(report['dataset'])} (tokens of {html.escape(cfg.model.name)})</h3>"
            + _table_html(summary_rows(report)) + _img(histogram) + _img(boxplot)
            + f"<p>Recommended max_length {report['recommended_max_length']} (truncates {report['recommended_truncates']:.1%} "
            f"of training examples); this study used {cfg.data.max_length}. Texts shared across splits: {leaks or 'none'}.</p>")
    return "".join(parts)


def _img(b64: str) -> str:
    return f"<img src='data:image/png;base64,{b64}'>"


def _md_inline(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))
