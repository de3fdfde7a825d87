"""Command line (Typer). No logic lives here: each command parses, calls one function, and prints."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tuneoff.cli.runs import runs_app
from tuneoff.cli.study import plan, report, run_study
from tuneoff.cli.terminal import (
    console,
    fitted,
    inspect_tables,
    metrics_table,
    next_steps,
    predictions_table,
    quiet_libraries,
    say,
    set_verbosity,
    user_errors,
    verbosity,
)
from tuneoff.config import load_config
from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.data.builtins import BUILTIN_DATASETS
from tuneoff.methods import all_methods
from tuneoff.models.assets import BUILTIN_MODELS
from tuneoff.training import stop
from tuneoff.training.launcher import (
    announce_rank,
    end_processes,
    is_main_process,
    launched,
    relaunch,
)

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
    quiet_libraries()
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
    quiet_libraries()
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
    quiet_libraries()
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
    quiet_libraries()
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
    quiet_libraries()
    from tuneoff import api

    report, out_dir = api.inspect(data, model, overrides or [], out)
    c = console()

    inspect_tables(c, report, model)
    c.print(f"written to [bold]{escape(str(out_dir))}[/] (inspect.json, histogram.png, boxplot.png)")


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


# The study commands live in cli/study.py; registered here, after the single-run ones.
app.command()(plan)
app.command("run")(run_study)
app.command()(report)

app.add_typer(runs_app, name="runs")


def main() -> None:  # pragma: no cover
    app()
