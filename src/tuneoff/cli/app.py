"""Command line (Typer). No logic lives here: each command parses, calls one function, and prints."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tuneoff.cli.runs import RESULTS, runs_app
from tuneoff.cli.terminal import (
    console,
    fitted,
    inspect_tables,
    metrics_table,
    next_steps,
    plan_markdown,
    plan_table,
    plan_title,
    predictions_table,
    say,
    set_verbosity,
    user_errors,
    verbosity,
    verdict_lines,
)
from tuneoff.config import load_config, read_yaml
from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text
from tuneoff.data.builtins import BUILTIN_DATASETS
from tuneoff.methods import all_methods
from tuneoff.models.assets import BUILTIN_MODELS
from tuneoff.study.spec import dry_run as plan_runs
from tuneoff.study.spec import expand, load_spec, metric_note
from tuneoff.training import stop
from tuneoff.training.launcher import (
    announce_rank,
    end_processes,
    is_main_process,
    launched,
    relaunch,
)
from tuneoff.training.tracking import log_study_report

app = typer.Typer(
    help="Fine-tune text classifiers and compare the methods on accuracy and cost: "
    + ", ".join(all_methods())
    + " (`tuneoff methods`). Each study tunes every method's learning rate and trains it to its plateau before its verdict.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _options(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show debug records and every evaluation."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors (results are still printed)."),
) -> None:
    """How much of tuneoff's log reaches the terminal; each run's train.log always gets everything."""
    set_verbosity(1 if verbose else -1 if quiet else 0)


OVERRIDES = typer.Argument(
    None, help="Dotted overrides key=value, e.g. method.r=8 train.epochs=2 data.max_train_samples=2000."
)


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


@app.command()
@user_errors
def train(
    *,  # options, passed by name (typer calls with keywords)
    overrides: Optional[list[str]] = OVERRIDES,
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="YAML run config (model:, data:, method:, train:)."
    ),
    model: Optional[str] = typer.Option(
        None, help="Model: built-in short name (minilm, mpnet, ...), hub id, or local dir."
    ),
    data: Optional[str] = typer.Option(
        None, help="Dataset: built-in name (see `tuneoff datasets`), CSV/JSONL/Parquet path, or hub id."
    ),
    method: Optional[str] = typer.Option(
        None, help="Method: " + ", ".join(all_methods()) + " (parameters: `tuneoff methods`)."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
    resume: bool = typer.Option(
        False, "--resume", help="Continue the unfinished run of this same config from its newest checkpoint."
    ),
    num_processes: int = typer.Option(
        1,
        "--num-processes",
        help="Data-parallel processes (one per GPU; CPU processes without one), started with `accelerate launch`.",
    ),
    accelerate_config: Optional[Path] = typer.Option(
        None, help="An `accelerate config` file (e.g. FSDP) for --num-processes."
    ),
    results: Path = typer.Option(
        "results",
        "--results",
        "-r",
        envvar="TUNEOFF_RESULTS",
        help="Results store that indexes the run (`tuneoff runs list`).",
    ),
    threads: Optional[int] = typer.Option(
        None,
        help="CPU threads for the run (default: the cores other work leaves free; on a machine another job is using, fewer threads than cores run faster).",
    ),
) -> None:
    """Fine-tune one model with one method; write a run directory (model, metrics, predictions, resources)."""

    cfg = load_config(config, overrides or [], names={"model": model, "data": data, "method": method})
    from tuneoff.data.files import check_local_columns  # pandas, not torch: a wrong column is said at once

    check_local_columns(cfg.data)
    if num_processes > 1 and not launched():
        raise typer.Exit(relaunch(num_processes, sys.argv[1:], str(accelerate_config) if accelerate_config else None))
    announce_rank()  # relaunched: `kill` / Ctrl-C to the command that launched this process reaches it as SIGTERM
    _quiet_libraries()
    from tuneoff import api

    logs.terminal(verbosity(), progress_lines=not progress)  # --no-progress: one line per evaluation instead of a bar
    try:
        run = api.train(cfg, results=results, progress=progress, resume=resume, threads=threads)
    finally:
        end_processes()
    if is_main_process():
        console().print(metrics_table(f"test metrics — {cfg.method.name}", run.metrics["test"], run.resources))
        console().print(f"run saved to [bold]{escape(str(run.path))}[/]")
        say(next_steps(run.path))


@app.command()
@user_errors
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run directory written by `tuneoff train`."),
    data: Optional[str] = typer.Option(
        None,
        help="Dataset to evaluate on (default: the run's own). A CSV/JSONL/Parquet file is scored whole: every row (the run's own training file: its --split).",
    ),
    split: str = typer.Option(
        "test",
        help="Split of a built-in or hub dataset, or of the file the run trained on: train, validation or test (any other file given to --data is scored whole).",
    ),
    overrides: Optional[list[str]] = typer.Argument(None, help="data.* overrides, e.g. data.max_eval_samples=500."),
    undo_class_weights: bool = typer.Option(
        False,
        "--undo-class-weights",
        help="A run trained with train.class_weight: divide the weights out of its probabilities (the data's own posterior, calibrated; the rare-class recall the weights bought is given back).",
    ),
) -> None:
    """Evaluate a saved run on a dataset split; writes eval-<dataset>-<split>.json into the run directory."""
    _quiet_libraries()
    from tuneoff.training.saved import evaluate_run

    metrics, out = evaluate_run(run_dir, data, split, overrides or [], undo_class_weights)
    console().print(
        metrics_table(f"{metrics['dataset']} / {metrics['split']}", {k: v for k, v in metrics.items() if k != "note"})
    )
    if metrics.get("note"):
        say(metrics["note"])
    say(f"scored {metrics['rows_scored']:,} rows of {metrics['dataset']} ({metrics['split']}); written to {out}")


@app.command()
@user_errors
def predict(
    *,  # options, passed by name (typer calls with keywords)
    run_dir: Path = typer.Argument(..., help="A run directory written by `tuneoff train`."),
    file: Optional[Path] = typer.Argument(None, help="CSV/JSONL/Parquet file with a text column (labels not needed)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write the file's predictions (CSV)."),
    text: Optional[list[str]] = typer.Option(
        None,
        "--text",
        "-t",
        help="A text to classify, instead of a file (repeat for more): the label and each class's probability are printed beside it.",
    ),
    text_column: Optional[str] = typer.Option(
        None, help="Column holding the text (default: the run's data.text_column, as it trained)."
    ),
    text_pair_column: Optional[str] = typer.Option(
        None, help="Column holding the second text (pair tasks; default: the run's data.text_pair_column)."
    ),
    id_column: Optional[str] = typer.Option(None, help="Column to copy as the row id (default: row number)."),
    format: str = typer.Option(
        "full",
        "--format",
        help="full: id, predicted label, each class's probability. submission: a competition's id,label with integer labels.",
    ),
    raw: bool = typer.Option(
        False,
        "--raw",
        help="Write cells as they are; by default a cell a spreadsheet would run as a formula (=, +, -, @) is written with a leading apostrophe.",
    ),
    undo_class_weights: bool = typer.Option(
        False,
        "--undo-class-weights",
        help="A run trained with train.class_weight: divide the weights out of its probabilities (the data's own posterior, calibrated; the rare-class recall the weights bought is given back).",
    ),
) -> None:
    """Predict labels for an unlabeled file (id, predicted label and each class's probability, with the text beside
    them), or for texts given with --text (printed)."""
    if format not in ("full", "submission"):
        raise TuneoffError(f"--format {format!r}: choose full or submission.")
    if (file is None) == (not text):
        raise TuneoffError(
            "Give a file to predict (tuneoff predict RUN file.csv --out predictions.csv) or texts with "
            '--text (tuneoff predict RUN --text "a triumph" --text "a mess"), one of the two.'
        )
    if file is not None and out is None:
        raise TuneoffError("--out: say where to write the file's predictions (e.g. --out predictions.csv).")
    _quiet_libraries()
    if text:
        from tuneoff import api

        frame = api.load_run(run_dir).predict(list(text), undo_class_weights=undo_class_weights)
        console().print(predictions_table(frame.assign(text=list(text))))
        return
    from tuneoff.training.saved import predict_file

    with stop.interrupting("predict"):
        n = predict_file(
            run_dir,
            file,
            out,
            text_column,
            text_pair_column,
            id_column,
            fmt=format,
            raw=raw,
            undo_class_weights=undo_class_weights,
        )
    console().print(f"{n} predictions written to [bold]{escape(str(out))}[/]")


@app.command()
@user_errors
def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `tuneoff train` or a study."),
    format: str = typer.Option("onnx", "--format", help="onnx: the model for ONNX Runtime (adapters merged first)."),
    int8: bool = typer.Option(
        False,
        "--int8",
        help="Also a dynamically quantized int8 copy (smaller, faster; its agreement with the run is recorded).",
    ),
    out: Optional[Path] = typer.Option(None, "--out", help="Where to write it (default: <run dir>/onnx)."),
) -> None:
    """Export a finished run for serving, verified against the run's own test predictions (export.json beside it)."""
    if format != "onnx":
        raise TuneoffError(
            f"--format {format!r}: onnx is the format tuneoff exports (the run directory itself is the "
            "Hugging Face format: from_pretrained and pipeline() load it)."
        )
    _quiet_libraries()
    from tuneoff.training.export import export_onnx, summary

    with stop.interrupting("export"):
        record = export_onnx(run_dir, out, int8)
    for line in summary(record):
        say(line)
    console().print(
        f"exported to [bold]{escape(str(out or run_dir / 'onnx'))}[/] (export.json says how it was checked)"
    )


@app.command()
@user_errors
def inspect(
    data: str = typer.Argument(..., help="Built-in dataset name, CSV/JSONL/Parquet file, or hub id."),
    overrides: Optional[list[str]] = typer.Argument(None, help="data.* overrides, e.g. data.text_column=review."),
    model: str = typer.Option("minilm", help="Model whose tokenizer counts the tokens."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default: inspect/<dataset>)."),
) -> None:
    """Inspect a dataset: labels, lengths in characters and tokens, duplicates, leakage, and a max_length to use."""
    _quiet_libraries()
    from tuneoff import api

    report, out_dir = api.inspect(data, model, overrides or [], out)
    c = console()

    inspect_tables(c, report, model)
    c.print(f"written to [bold]{escape(str(out_dir))}[/] (inspect.json, histogram.png, boxplot.png)")


@app.command()
@user_errors
def plan(
    *,  # options, passed by name (typer calls with keywords)
    config: Optional[str] = typer.Argument(
        None, help="A run config YAML or a study YAML (default: the built-in default study)."
    ),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="Overrides (run config keys, or study keys for a study)."
    ),
    batch_size: Optional[int] = typer.Option(None, help="Batch size (default: the config's train.batch_size)."),
    seq_len: Optional[int] = typer.Option(None, help="Sequence length (default: the config's data.max_length)."),
    precision: str = typer.Option("fp32", help="fp32 or bf16 (autocast, as on a GPU)."),
    device: Optional[str] = typer.Option(
        None, help="cpu or cuda: where the runs will train (default: this machine's)."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Also write the table as Markdown (headed with the command, date, device and versions)."
    ),
    time_it: bool = typer.Option(
        True,
        "--time/--no-time",
        help="A study: also predict its time by probing each condition here for a few steps (--no-time skips it).",
    ),
) -> None:
    """Predict each method's peak memory (weights / gradients / optimizer / activations) and FLOPs per step; for a
    study, also what it can decide and how long it will take."""
    _quiet_libraries()
    from tuneoff.training.planner import plan_configs, plan_device

    if precision not in ("fp32", "bf16", "fp16"):
        raise TuneoffError(f"--precision {precision!r}: choose fp32, bf16 or fp16.")
    tree = read_yaml(config) if config else None
    if tree is None or "variants" in tree or "base" in tree:
        runs = expand(load_spec(config, overrides or []))
        first_seed = {}
        for r in runs:
            first_seed.setdefault(" ".join([r.variant, *map(str, r.params.values())]), r.config)
        configs = list(first_seed.items())
    else:
        cfg = load_config(config, overrides or [])
        configs = [(cfg.method.name, cfg)]

    where = plan_device(device)
    plans = plan_configs(configs, batch_size, seq_len, precision, where)
    title = plan_title(batch_size, seq_len, precision, where)
    console().print(plan_table(plans, title))
    if tree is None or "variants" in tree or "base" in tree:  # a study: what it can decide, too
        from tuneoff.study.design import plan_lines

        spec = load_spec(config, overrides or [])
        for line in plan_lines(spec):
            say(line)
        if time_it:
            from tuneoff.study.timing import predict_lines

            for line in predict_lines(spec, say=say):
                say(line)
    if out is not None:
        atomic_write_text(out, plan_markdown(plans, title))
        console().print(f"written to [bold]{escape(str(out))}[/]")


@app.command()
def methods() -> None:
    """List fine-tuning methods and their parameters."""

    for name, method in all_methods().items():
        rows = [
            [f"method.{field}", repr(info.default), info.description or ""]
            for field, info in method.Params.model_fields.items()
            if field != "name"
        ]
        console().print(
            fitted(
                f"{name} — {method.summary} (default lr {method.default_lr:g})",
                ["parameter", "default", "meaning"],
                rows,
                wrap=("meaning",),
            )
        )


@app.command()
def datasets() -> None:
    """List built-in datasets: where each comes from, licence, classes and size."""

    columns = ["name", "offline", "what", "source", "licence", "classes", "size"]
    rows = [
        [name, "yes" if spec.offline else "hub", spec.description, spec.source, spec.licence, spec.classes, spec.size]
        for name, spec in BUILTIN_DATASETS.items()
    ]
    console().print(fitted("built-in datasets (offline ones need no network)", columns, rows, wrap=tuple(columns[2:])))
    console().print(
        "Also: any CSV/JSONL/Parquet path (data.text_column, data.label_column, data.text_pair_column) or hub id."
    )


@app.command()
def models() -> None:
    """List built-in model short names."""

    rows = [[name, "yes" if spec.offline else "hub", spec.description] for name, spec in BUILTIN_MODELS.items()]
    console().print(fitted("built-in models", ["name", "offline", "what"], rows, wrap=("what",)))
    console().print("Also: any Hugging Face hub id or local model directory.")


@app.command("run")
@user_errors
def run_study(
    *,  # options, passed by name (typer calls with keywords)
    study: Optional[str] = typer.Argument(None, help="Study YAML file (default: the built-in default study)."),
    overrides: Optional[list[str]] = typer.Argument(
        None, help="Study overrides, e.g. seeds=[1,2,3] base.train.epochs=2."
    ),
    results: Path = RESULTS,
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted study; finished runs are not redone."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run grids larger than the study's max_runs."),
    progress: bool = typer.Option(False, help="Show each run's step progress bar."),
    executor: str = typer.Option(
        "local", help="local: runs one after another here. ray: each run a Ray task (pip install 'tuneoff\\[ray]')."
    ),
    address: Optional[str] = typer.Option(
        None, help="Ray cluster: auto, ray://host:10001, or none to start a local one."
    ),
    cpus_per_run: float = typer.Option(1, help="Ray: CPUs each run asks for."),
    gpus_per_run: Optional[float] = typer.Option(
        None, help="Ray: GPUs each run asks for (default: one per process if the cluster has GPUs, else 0)."
    ),
    max_retries: int = typer.Option(
        3, help="Ray: retries of a run whose worker died (it resumes from its checkpoint)."
    ),
    processes_per_run: int = typer.Option(
        1, help="Train each run data-parallel on this many processes (one per GPU; CPU processes without GPUs)."
    ),
    parallel: str = typer.Option(
        "auto",
        envvar="TUNEOFF_PARALLEL",
        help="Local executor: runs at once, each in its own process with the cores split between them (auto: as many as the cores, memory or GPU hold; 1: one after another here).",
    ),
    threads: Optional[int] = typer.Option(
        None,
        help="Local executor: threads per run (default: the cores other work leaves free, split between the runs at once; on a machine another job is using, one thread per run is often fastest).",
    ),
    isolate_runs: bool = typer.Option(
        False,
        "--isolate-runs",
        help="Local executor: each run in a new worker process, so its CPU peak memory is its own (a reused worker's peak counts what its earlier runs left resident); costs the library imports again for every run.",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Only show the runs and their recipes (and what they need from the hub), what the study can decide and how long it will take; download nothing.",
    ),
    time_it: bool = typer.Option(
        True,
        "--time/--no-time",
        help="With --dry-run: predict the study's time by probing each condition here for a few steps (seconds to a minute or two; --no-time skips it).",
    ),
    until_decided: bool = typer.Option(
        False,
        "--until-decided",
        help="Decide mode: after its seeds, add seeds where they can settle an open comparison until the recommendation is decided (the study's until_decided: section, else max_seeds 10, no time budget).",
    ),
) -> None:
    """Run a study: every variant x grid point x seed (or a search), stored in the results database, then the report."""

    if study and "=" in study and not Path(study).exists():  # `tuneoff run seeds=[1,2]`: overrides of the default study
        overrides, study = [study, *(overrides or [])], None
    spec = load_spec(study, overrides or [])
    if until_decided and spec.until_decided is None:
        spec = load_spec(study, [*(overrides or []), "until_decided={}"])
    if dry_run:
        rows = plan_runs(spec)
        tune = [r for r in rows if r["phase"] == "tune"]
        say(
            f"study {spec.name}: {len(rows)} runs (dry run: nothing downloaded; "
            + ("each condition probed for a few steps to time it, nothing kept)" if time_it else "nothing trained)")
            + (
                f": phase 1 tunes the learning rate ({len(tune)} trials), phase 2 trains {len(rows) - len(tune)} runs "
                "at the rates it chose"
                if tune
                else ""
            )
        )
        note = metric_note(spec, expand(spec))
        if note:
            say(f"note: {note}")
        for r in rows:
            say(f"{r['run']} [{r['phase']}]: {r['method']} on {r['model']} / {r['data']}")
            say(
                f"    at most {r['budget']}{r['stop']}, lr {r['lr']}, batch {r['batch']}, max_length {r['max_length']}, "
                f"{r['schedule']}; hub: {r['hub']}"
            )
        from tuneoff.study.design import plan_lines

        for line in plan_lines(spec):
            say(line)
        if time_it and executor == "local" and processes_per_run == 1:
            _quiet_libraries()
            from tuneoff.study.timing import predict_lines

            for line in predict_lines(spec, parallel, threads, say=say):
                say(line)
        elif time_it:
            say(
                "time: predicted for the local executor with one process per run only (here: --executor "
                f"{executor}, --processes-per-run {processes_per_run})"
            )
        return
    _quiet_libraries()
    from tuneoff import api

    logs.terminal(verbosity(), progress_lines=False)
    result = api.run_study(
        spec,
        results=results,
        resume=resume,
        yes=yes,
        executor=executor,
        progress=progress,
        address=address,
        cpus_per_run=cpus_per_run,
        gpus_per_run=gpus_per_run,
        max_retries=max_retries,
        processes_per_run=processes_per_run,
        parallel=parallel,
        threads=threads,
        isolate=isolate_runs,
    )
    for line in verdict_lines(result.report.parent):
        say(line)
    log_study_report(spec, result.directory / "runs", result.report.parent)
    console().print(
        f"study results in [bold]{escape(str(result.directory))}[/], report: [bold]{escape(str(result.report))}[/]"
    )


@app.command()
@user_errors
def report(
    *,  # options, passed by name (typer calls with keywords)
    study_dir: Path = typer.Argument(..., help="A study's results directory, e.g. results/default."),
    metric: Optional[str] = typer.Option(
        None,
        help="What the verdict ranks and decides on: accuracy, or macro_f1 (each class weighs the same: imbalanced classes). Default: the study's analysis.metric, else accuracy.",
    ),
    margin: Optional[float] = typer.Option(
        None, help="Non-inferiority margin in the metric (default: the study's analysis.margin, else 0.01)."
    ),
    prefer: Optional[str] = typer.Option(
        None,
        help="Among methods as good as the best, the cheapest on: overall, trained_mb, peak_memory_mb, train_seconds, trainable_params.",
    ),
    cost_margin: Optional[float] = typer.Option(
        None,
        help="A method counts as cheaper only when its cost is lower by at least this fraction (default: the study's analysis.cost_margin, else 0.1).",
    ),
    max_peak_memory_mb: Optional[float] = typer.Option(
        None, help="Recommend only methods whose peak memory is at most this."
    ),
    max_train_seconds: Optional[float] = typer.Option(
        None, help="Recommend only methods that trained in at most this many seconds."
    ),
    max_trainable_params: Optional[int] = typer.Option(
        None, help="Recommend only methods that train at most this many parameters."
    ),
    export: Optional[Path] = typer.Option(
        None,
        help="Also write <study>.md/.csv/.json (headed with commands, date, devices, versions) into this folder, e.g. studies/results.",
    ),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        help="Write the report here instead of <study dir>/report (a results directory you cannot write is read and reported elsewhere).",
    ),
) -> None:
    """(Re)build a study's report from stored results; nothing is trained, no model or dataset is loaded."""
    _quiet_libraries()
    from tuneoff import api

    flags = {
        "metric": metric,
        "margin": margin,
        "prefer": prefer,
        "cost_margin": cost_margin,
        "max_peak_memory_mb": max_peak_memory_mb,
        "max_train_seconds": max_train_seconds,
        "max_trainable_params": max_trainable_params,
    }
    result = api.load_study(study_dir, out, **{k: v for k, v in flags.items() if v is not None})
    for line in verdict_lines(result.report.parent):
        say(line)
    console().print(f"report: [bold]{escape(str(result.report))}[/]")
    if export is not None:
        from tuneoff.report.build import export as export_report

        console().print(
            f"exported: [bold]{escape(str(export_report(result.name, study_dir.parent, export, result.report.parent)))}[/]"
        )


app.add_typer(runs_app, name="runs")


def main() -> None:  # pragma: no cover
    app()
