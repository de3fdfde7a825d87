"""The study report: one self-contained HTML file (plots embedded), a Markdown summary and CSV tables.

Everything is rebuilt from the results store and the run directories' text files, so ``tuneoff report`` needs
no training, no model directory and no network. The numbers that need a model or a dataset (the planner's
prediction, the data inspection) are computed once, while ``tuneoff run`` still has them, and kept next to the
report (``report/derived/``); a rebuild reuses them, or says why a section is missing.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import platform
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import yaml
from pydantic import ValidationError

from tuneoff.analysis import groups as analysis
from tuneoff.analysis.data_size import size_matrix, size_table
from tuneoff.analysis.sentences import LABELS
from tuneoff.analysis.settings import AnalysisSettings
from tuneoff.analysis.tuning import expected_best, tuning_trials
from tuneoff.analysis.verdict import analyse
from tuneoff.config import RunConfig, format_validation_error
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text, safe_name
from tuneoff.core.outputs import markdown_text, write_csv
from tuneoff.core.provenance import tuneoff_commit, tuneoff_version
from tuneoff.data.corpus import load_corpus
from tuneoff.data.inspection import inspect_corpus, model_max_length
from tuneoff.models.assets import resolve_model
from tuneoff.models.loading import load_tokenizer
from tuneoff.report import sections
from tuneoff.results.store import DB_NAME, Store
from tuneoff.study.rounds import look_alpha
from tuneoff.study.search import SearchSpec, best_run_ids, trials_frame
from tuneoff.training.planner import plan_as_trained


def settings_of(spec_yaml: str, overrides: dict | None = None) -> AnalysisSettings:
    """The study's ``analysis:`` (and ``decide:``) sections, with ``tuneoff report`` flags on top."""
    spec = yaml.safe_load(spec_yaml) or {}
    tree = dict(spec.get("analysis") or {})
    given = lambda section: {k: v for k, v in (section or {}).items() if v is not None}  # noqa: E731
    tree["decide"] = {**given(tree.get("decide")), **given(spec.get("decide"))}
    for key, value in (overrides or {}).items():
        if value is not None:
            (tree["decide"] if key.startswith("max_") else tree)[key] = value
    try:
        return AnalysisSettings.model_validate(tree)
    except ValidationError as exc:
        raise TuneoffError(
            format_validation_error(exc, "the study's analysis: / decide: sections and report flags", AnalysisSettings)
        ) from None


def build(study: str, results: str | Path, overrides: dict | None = None, out: str | Path | None = None) -> Path:
    """Write ``report.html``, ``summary.md``, ``verdict.json`` and CSV tables into ``<results>/<study>/report/``."""
    return build_report(study, results, overrides, out)[0]


def build_report(study: str, results: str | Path, overrides: dict | None = None, out: str | Path | None = None):
    """``build``, returning the report's path with the verdicts and the tuning trials it was written from."""
    results = Path(results)
    if not (results / DB_NAME).is_file():
        raise TuneoffError(f"No results store in {results} ({DB_NAME} missing). Run a study first: tuneoff run.")
    store = Store(results)
    try:
        known = store.study(study)
        if known is None:
            names = [s["name"] for s in store.studies()]
            raise TuneoffError(f"No study {study!r} in {results}; studies there: {', '.join(names) or 'none'}.")
        spec_yaml = known["spec_yaml"]
        conditions = analysis.load_conditions(store, study)
        runs = store.runs(study)
        failed = [r for r in runs if r["status"] == "failed"]
        unfinished = sections.unfinished_note([r for r in runs if r["status"] in ("pending", "running")])
        tuning = tuning_trials([r for r in runs if r["phase"] == "tune"])
        search, trials = _search_of(spec_yaml), None
        if search is not None:  # compare each variant's best trial; every trial is listed in the Search section
            trials = trials_frame(runs, search)
            best = best_run_ids(trials, search)
            conditions = [c for c in conditions if any(r["run_id"] in best for r in c.runs)] or conditions
    finally:
        store.close()

    settings = settings_of(spec_yaml, overrides)
    sequential = (yaml.safe_load(spec_yaml) or {}).get("until_decided")
    if sequential:  # decide mode: read at the level of its last look, as its rounds did (study.rounds)
        first, most = len((yaml.safe_load(spec_yaml) or {}).get("seeds") or [1]), max(len(c.runs) for c in conditions)
        settings = settings.model_copy(
            update={"alpha": look_alpha(most, first, sequential.get("max_seeds", 10), settings.alpha)}
        )
    verdicts = analyse(conditions, settings)
    if sequential:
        for v in verdicts:
            v.card.evidence += (
                f"; decide mode, its last look at {100 * settings.alpha:.2g}% (alpha spent over the looks "
                "so every call holds at 5%)"
            )
    out = Path(out) if out is not None else results / safe_name(study) / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
        if not os.access(out, os.W_OK):
            raise PermissionError(out)
    except OSError:
        raise TuneoffError(
            f"The report's folder {out} is read-only for this user: the results can still be read and "
            "reported elsewhere, with --out <a writable folder> (tuneoff report <study dir> --out DIR; "
            "load_study(..., out=DIR) in Python)."
        ) from None
    _write_tables(out, verdicts)
    for v in verdicts:
        recommended_card(v, study)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    # the statistics change between versions (a result re-exported later may read differently): say which code analysed it
    analysed_by = f"tuneoff {tuneoff_version()}, commit {(tuneoff_commit() or 'unknown')[:19]}"
    md = [
        f"# Study {markdown_text(study)}",
        "",
        f"Analysed {stamp} by {analysed_by}.",
        "",
        *([unfinished, ""] if unfinished else []),
        "## The answer",
        "",
    ]
    for v in verdicts:
        md += [f"{markdown_text(v.group.title)}:", "", *(f"- {markdown_text(line)}" for line in v.card.lines()), ""]
    md += [sections.how_to_read_md(settings), ""]
    by_size = size_table(verdicts)
    if len(by_size):
        md += [f"## {sections.data_size_title(by_size)}", "", sections.data_size_note(by_size), ""]
        for (dataset, model), sub in by_size.groupby(["dataset", "model"], sort=False):
            md += [f"{markdown_text(dataset)} · {markdown_text(model)}:", "", _md_table(size_matrix(sub)), ""]
    for v in verdicts:
        shown = v.table[[c for c in sections.SHOWN if c in v.table.columns]]
        md += [f"## {markdown_text(v.group.title)}", "", *map(markdown_text, v.lines), "", _md_table(shown), ""]
        classes = v.per_class
        if len(classes):
            md += [
                "F1 per class on test (mean over seeds; 95% interval over seeds and test examples):",
                "",
                _md_table(analysis.f1_by_class_with_intervals(classes)),
                "",
                "Recall per class on test (mean over seeds; the share of each class's test examples predicted as it):",
                "",
                _md_table(analysis.by_class(classes, "recall")),
                "",
            ]
        if v.decisions is not None and len(v.decisions):
            md += [sections.decision_note(v.metric), "", _md_table(sections.decision_table(v.decisions)), ""]
        if v.speed is not None and len(v.speed):
            md += [sections.speed_note(v.speed), "", _md_table(v.speed), ""]
        if sections.speed_pairs_shown(v):
            md += [sections.speed_pairs_note(v.speed_pairs), "", _md_table(v.speed_pairs.drop(columns="target")), ""]
        if len(v.pairs):
            md += [
                f"Exploratory, every pair (test {LABELS[v.metric]} a − b; p Holm-adjusted over every pair of the study):",
                "",
                _md_table(
                    v.pairs[["a", "b", "diff", "ci_low", "ci_high", "p_value", "p_holm", "significant", "mcnemar"]]
                ),
                "",
            ]
    if len(tuning):
        write_csv(tuning, out / "tuning_trials.csv")
        chosen = tuning[tuning.chosen.astype(bool)][["condition", "lr", "val_accuracy", "trial"]]
        md += [
            "## Tuning",
            "",
            "Each condition's learning rate, chosen on validation among its tuning trials (the seeds "
            "above trained at it):",
            "",
            _md_table(chosen),
            "",
            "Expected best validation accuracy after k trials (Dodge et al., 2019):",
            "",
            _md_table(
                expected_best(tuning)
                .pivot(index="trials", columns="condition", values="expected_best_val_accuracy")
                .reset_index()
            ),
            "",
        ]
    if trials is not None:
        write_csv(trials, out / "search_trials.csv")
        md += [
            "## Search",
            "",
            f"Objective {search.metric} ({'maximize' if search.maximize else 'minimize'}); the "
            "comparison above uses each variant's best feasible trial.",
            "",
            _md_table(trials),
        ]
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")

    parts = [("Not finished", f"<div class='head'><p>{sections.md_inline(unfinished)}</p></div>")] if unfinished else []
    parts.append(("The answer", sections.cards_html(verdicts)))
    parts.append(("How to read this report", sections.how_to_read(settings)))
    if len(by_size):
        parts.append((sections.data_size_title(by_size), sections.data_size_html(by_size)))
    for v in verdicts:
        parts.append((v.group.title, sections.group_html(v)))
    if len(tuning):
        parts.append(("Tuning", sections.tuning_html(tuning, expected_best(tuning))))
    if trials is not None:
        parts.append(("Search", sections.search_html(trials, search)))
    parts.append(("Plan vs measured", plan_section(out, conditions, verdicts)))
    if failed:
        parts.append(
            (
                "Failed runs",
                sections.table_html(
                    pd.DataFrame([{"run": f["run_id"], "error": (f["error"] or "")[-400:]} for f in failed])
                ),
            )
        )
    parts.append(("Data", data_section(out, conditions)))
    log = results / safe_name(study) / "commands.log"
    commands = log.read_text().strip().splitlines() if log.is_file() else []
    description = (yaml.safe_load(spec_yaml) or {}).get("description") or ""
    parts.append(
        (
            "Study spec",
            (f"<p>{html.escape(description)}</p>" if description else "")
            + (
                "<p class='note'>Run by (overrides on the command line change the spec below, not the description "
                "above):</p><pre>" + html.escape("\n".join(commands)) + "</pre>"
                if commands
                else ""
            )
            + f"<p class='note'>The spec as run:</p><pre>{html.escape(spec_yaml)}</pre>",
        )
    )
    device = conditions[0].runs[0]["device"]
    sub = (
        f"{len(conditions)} conditions in {len(verdicts)} group(s), {sum(len(c.runs) for c in conditions)} finished runs, "
        f"{len(failed)} failed · device: {device} · analysed {stamp} by {analysed_by}"
    )
    atomic_write_text(out / "report.html", sections.page(f"tuneoff study: {study}", sub, parts))
    return out / "report.html", verdicts, tuning


CHOSEN = "## Chosen by a tuneoff study"


def recommended_card(v, study: str) -> None:
    """The model card of each run of the recommended condition gains the study's verdict card and the alternatives'
    costs beside it (a section replaced at each rebuild); a run directory this user cannot write is left as it is."""
    rec = next((c for c in v.group.conditions if c.name == v.recommended), None)
    if rec is None:
        return
    table = v.table[v.table.method != "baseline"][
        [
            "condition",
            v.metric,
            f"{v.metric}_ci_low",
            f"{v.metric}_ci_high",
            "trainable_params",
            "trained_mb",
            "peak_memory_mb",
            "train_seconds",
        ]
    ]
    section = [
        CHOSEN,
        "",
        f"Study `{markdown_text(study)}`, {markdown_text(v.group.title)}:",
        "",
        *(f"- {markdown_text(line)}" for line in v.card.lines()),
        "",
        "The conditions it compared:",
        "",
        _md_table(table),
        "",
    ]
    for run in rec.runs:
        path = Path(run.get("run_dir") or "") / "model" / "README.md"
        try:
            text = path.read_text(encoding="utf-8")
            atomic_write_text(path, text.split(f"\n{CHOSEN}")[0].rstrip("\n") + "\n\n" + "\n".join(section))
        except OSError:
            continue


def _md_table(frame: pd.DataFrame) -> str:
    """A table for summary.md: user-given names (conditions, labels) escaped for Markdown, numbers to 4 digits."""
    frame = frame.copy()
    frame.columns = [markdown_text(c) for c in frame.columns]
    for column in frame.columns:
        if frame[column].dtype.kind == "O":
            frame[column] = frame[column].map(lambda v: markdown_text(v) if isinstance(v, str) else v)
    return frame.to_markdown(index=False, floatfmt=".4g")


def _write_tables(out: Path, verdicts) -> None:
    def stacked(frames):
        frames = [f for f in frames if len(f)]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def tagged(v, frame):
        return frame.assign(dataset=v.group.dataset, model=v.group.model) if len(frame) else frame

    # every table a person may open in a spreadsheet: its user-given names cannot run as formulas (core.outputs)
    write_csv(stacked(tagged(v, v.table) for v in verdicts), out / "summary.csv")
    write_csv(stacked(tagged(v, v.pairs) for v in verdicts), out / "comparisons.csv")
    write_csv(stacked(tagged(v, v.speed) for v in verdicts if v.speed is not None), out / "speed.csv")
    write_csv(stacked(tagged(v, v.speed_pairs) for v in verdicts if v.speed_pairs is not None), out / "speed_pairs.csv")
    write_csv(stacked(tagged(v, v.decisions) for v in verdicts if v.decisions is not None), out / "decisions.csv")
    write_csv(stacked(tagged(v, v.per_class) for v in verdicts), out / "per_class.csv")
    verdict = [
        {
            "dataset": v.group.dataset,
            "model": v.group.model,
            "test_examples": len(v.group.ids),
            **({"train_examples": v.group.train_examples} if v.group.by_size else {}),
            "metric": v.metric,
            "best_on_validation": v.best,
            "recommended": v.recommended,
            "reference": v.reference,
            "decided": v.decided,
            "card": v.card.as_dict(),
            "card_lines": v.card.lines(),
            "lines": v.lines,
        }
        for v in verdicts
    ]
    atomic_write_text(
        out / "verdict.json", json.dumps({"format_version": EXPORT_FORMAT, "groups": verdict}, indent=2) + "\n"
    )


def _search_of(spec_yaml: str):
    section = (yaml.safe_load(spec_yaml) or {}).get("search")
    return SearchSpec.model_validate(section) if section else None


def _derived(out: Path, key: str, compute):
    """A number that needs a model or a dataset, computed once and kept in ``report/derived/`` for rebuilds."""
    path = out / "derived" / f"{key}.json"
    if path.is_file():
        return json.loads(path.read_text())
    value = compute()
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps(value))
    return value


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan_section(out: Path, conditions, verdicts) -> str:
    """The planner's prediction for each condition next to what its runs measured."""

    rows, missing = [], []
    measured = {r.condition: r for v in verdicts for _, r in v.table.iterrows()}
    for c in conditions:
        config = c.runs[0]["config"]

        def compute(config=config, c=c):
            p = plan_as_trained(RunConfig.model_validate(config), c.name, num_labels=len(c.label_names))
            return {**asdict(p), "total_mb": p.total_mb}

        train = config["train"]
        try:
            p = _derived(
                out,
                "plan-"
                + _key(
                    config["model"],
                    config["method"],
                    train["batch_size"],
                    train.get("grad_accum"),
                    train.get("mixed_precision"),
                    train.get("device"),
                    config["data"]["max_length"],
                    len(c.label_names),
                ),
                compute,
            )
        except (TuneoffError, OSError, ValueError, RuntimeError) as exc:
            missing.append(f"{c.name}: {str(exc).splitlines()[0][:160]}")
            continue
        m = measured.get(c.name)
        rows.append(
            {
                "condition": c.name,
                "planned weights MB": p["weights_mb"],
                "gradients MB": p["gradients_mb"],
                "optimizer MB": p["optimizer_mb"],
                "activations MB": p["activations_mb"],
                "planned peak MB": p["total_mb"],
                "GFLOP/step": p["gflops_per_step"],
                "measured peak MB": None if m is None else m["peak_memory_mb"],
                "measured samples/s": None if m is None else m["train_samples_per_s"],
            }
        )
    note = (
        f"<p>Not planned (the model could not be loaded here, and no stored plan exists): {html.escape('; '.join(missing))}</p>"
        if missing
        else ""
    )
    return (
        "<p>Planned: one step at the configured batch size and <code>data.max_length</code> (no padding), at the "
        "precision and for the device the runs used, counted by <code>tuneoff plan</code>. Measured: CUDA max allocated on GPU, or the process's peak RSS on CPU "
        "(which also holds the Python runtime, libraries and data, and runs used dynamic padding).</p>"
        + (sections.table_html(pd.DataFrame(rows)) if rows else "")
        + note
    )


def data_section(out: Path, conditions) -> str:
    """`tuneoff inspect` for each dataset of the study, with the tokenizer of the model it was trained with."""

    seen, parts = set(), []
    for c in conditions:
        cfg = RunConfig.model_validate(c.runs[0]["config"])
        key = _key(cfg.data.model_dump(mode="json", exclude={"max_length", "augment"}), cfg.model.name)
        if key in seen:
            continue
        seen.add(key)
        try:
            report = _derived(out, f"data-{key}", lambda cfg=cfg: _inspect(cfg))
        except (TuneoffError, OSError, ValueError) as exc:
            parts.append(
                f"<p>{html.escape(cfg.data.name)}: not inspected ({html.escape(str(exc).splitlines()[0][:200])}).</p>"
            )
            continue
        parts.append(sections.data_html(report, cfg))
    return "".join(parts)


def _inspect(cfg) -> dict:
    from transformers import AutoConfig

    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.revision)
    report = inspect_corpus(
        load_corpus(cfg.data), tokenizer, model_max_length(AutoConfig.from_pretrained(source), tokenizer)
    )
    report["_lengths"] = {k: [int(x) for x in v] for k, v in report["_lengths"].items()}
    return report


def _spec_lines(spec_file: Path) -> list[str]:
    """What the study says about itself, for a result file's header: its description (what it compares, at what
    size, and why that size) and where it departs from a published recipe it reproduces. Read from the spec the runs
    were registered under, so the header describes what ran, not a later edit of the YAML."""
    spec = yaml.safe_load(spec_file.read_text(encoding="utf-8")) if spec_file.is_file() else {}
    spec = spec if isinstance(spec, dict) else {}
    lines = [f"- study: {' '.join(str(spec['description']).split())}"] if spec.get("description") else []
    if spec.get("differences"):
        lines.append(
            "- differences from the recipe it reproduces:"
            + "".join(f"\n  - `{key}`: {why}" for key, why in spec["differences"].items())
        )
    return lines


EXPORT_FORMAT = 3  # 2: tuneoff 0.2 (tuned learning rates, convergence, calibrated intervals); 3: the held-apart pick, MCB, the verdict card


def export(study: str, results: str | Path, dest: str | Path, report: str | Path | None = None) -> Path:
    """Copy a built report's summary into ``dest`` as evidence a README can cite: ``<study>.md`` headed with the
    commands that ran it, the date, devices and library versions of its runs, plus ``<study>.csv`` (the summary
    table) and ``<study>.json`` (the verdicts)."""

    results, dest = Path(results), Path(dest)
    report = Path(report) if report is not None else results / safe_name(study) / "report"
    if not (report / "summary.md").is_file():
        raise TuneoffError(f"No built report in {report}: run `tuneoff report {results / safe_name(study)}` first.")
    store = Store(results)
    try:
        every = store.runs(study)
    finally:
        store.close()
    rows = [r for r in every if r["status"] == "done"]
    pruned = sum(r["status"] == "pruned" for r in every)
    unfinished = sum(r["status"] in ("pending", "running") for r in every)
    trials = sum(r["phase"] == "tune" for r in rows)
    devices = sorted({r["device"] for r in rows if r["device"]})
    versions = sorted({r["versions"] for r in rows if r["versions"]})
    # machines differ (a CPU without native bf16 trains in fp32, about 3x slower): say which the runs used
    precisions = sorted(
        {str(json.loads(r["run_info"]).get("mixed_precision")) for r in rows if r["run_info"]} - {"None"}
    )
    commits = sorted({(r["tuneoff_commit"] or "")[:19] for r in rows if r["tuneoff_commit"]})
    log = results / safe_name(study) / "commands.log"
    commands = log.read_text().strip().splitlines() if log.is_file() else []
    started = min((r["started"] for r in rows if r["started"]), default="?")
    finished = max((r["finished"] for r in rows if r["finished"]), default="?")
    header = [
        f"<!-- written by tuneoff report --export (format {EXPORT_FORMAT}); do not edit by hand -->",
        f"# Result: study {markdown_text(study)}",
        "",
        *_spec_lines(results / safe_name(study) / "study.yaml"),
        f"- runs: {len(rows) - trials} compared"
        + (f", after {trials + pruned} learning-rate trials ({pruned} pruned)" if trials + pruned else "")
        + f", {started} to {finished} (UTC)"
        + (f"; **incomplete**: {unfinished} planned run(s) not finished" if unfinished else ""),
        "- commands:" + "".join(f"\n  - `{c}`" for c in commands),
        f"  - `tuneoff report {results / safe_name(study)} --export {dest}`",
        f"- device(s): {'; '.join(devices)}; Python {platform.python_version()} on {sys.platform}"
        + (f"; mixed precision: {', '.join(precisions)}" if precisions else ""),
        "- versions: " + "; ".join(versions),
        f"- tuneoff commit(s) of the runs: {', '.join(commits) or 'unknown'}",
        "",
        "---",
        "",
    ]
    body = (report / "summary.md").read_text().split("\n", 1)[1]  # its own title is replaced by the header
    dest.mkdir(parents=True, exist_ok=True)
    name = safe_name(study)
    atomic_write_text(dest / f"{name}.md", "\n".join(header) + body)
    atomic_write_text(dest / f"{name}.csv", (report / "summary.csv").read_text())
    atomic_write_text(dest / f"{name}.json", (report / "verdict.json").read_text())
    return dest / f"{name}.md"
