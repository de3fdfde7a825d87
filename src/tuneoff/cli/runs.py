"""`tuneoff runs`: query the results store (list, show, rebuild), and the --results option every command shares."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tuneoff.cli.terminal import console, fitted, run_summary, say, user_errors, verbosity
from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.results.store import DB_NAME, Store, loads

RESULTS = typer.Option(
    "results",
    "--results",
    "-r",
    envvar="TUNEOFF_RESULTS",
    help="Results root: holds tuneoff.sqlite and one directory per study.",
)


def open_store(results: Path):
    if not (results / DB_NAME).is_file():
        raise TuneoffError(
            f"No results store in {results} ({DB_NAME} missing): run a study first (tuneoff run), or pass --results."
        )
    return Store(results)


runs_app = typer.Typer(help="Query the results store.", no_args_is_help=True)


@runs_app.command("list")
@user_errors
def runs_list(
    results: Path = RESULTS,
    study: Optional[str] = typer.Option(None, help="Only this study."),
    status: Optional[str] = typer.Option(None, help="done, failed, pruned, running or pending."),
) -> None:
    """List runs: study, run id, status, accuracy (validation for a tuning trial, test for a final run), trainable
    params, train time."""
    store = open_store(results)
    rows = []
    for row in store.runs(study, status):
        m, r = loads(row, "metrics", {}) or {}, loads(row, "resources", {}) or {}
        # a tuning trial is judged on validation, so that is all it shows: a test number beside it would invite
        # choosing on test
        trial = row["phase"] == "tune" if "phase" in row.keys() else False
        accuracy = (m.get("validation") if trial else m.get("test") or {}) or {}
        accuracy = accuracy.get("accuracy")
        # a pending run with a note was stopped on request (its checkpoint kept: the next --resume continues it)
        state = "pending (stopped)" if row["status"] == "pending" and row["error"] else row["status"]
        rows.append(
            [
                row["run_id"],
                row["study"],
                state,
                f"{accuracy:.4f} {'val' if trial else 'test'}" if accuracy is not None else "",
                f"{r['trainable_params']:,}" if "trainable_params" in r else "",
                f"{r['train_seconds']:.0f}" if "train_seconds" in r else "",
            ]
        )
    store.close()
    console().print(
        fitted(
            "runs",
            ["run", "study", "status", "accuracy", "trainable", "train s"],
            rows,
            numeric=("accuracy", "trainable", "train s"),
        )
    )


@runs_app.command("show")
@user_errors
def runs_show(
    run_id: str = typer.Argument(..., help="Run id, a unique prefix, or <study>/<run id>."),
    results: Path = RESULTS,
    study: Optional[str] = typer.Option(None, help="The study the run belongs to (run ids repeat across studies)."),
    as_json: bool = typer.Option(False, "--json", help="The raw stored record as JSON."),
) -> None:
    """One run: what it was, how it did, what it cost, where it is."""
    store = open_store(results)
    rows = store.run(run_id, study)
    store.close()
    if not rows:
        raise TuneoffError(
            f"No run {run_id!r} in {results}{f' (study {study!r})' if study else ''}. `tuneoff runs list` "
            "shows the runs."
        )
    if len(rows) > 1:
        where = ", ".join(f"{r['study']}/{r['run_id']}" for r in rows[:5])
        raise TuneoffError(
            f"{run_id!r} matches {len(rows)} runs ({where}{'...' if len(rows) > 5 else ''}). Say which: "
            f"`tuneoff runs show <study>/<run id>` or --study <study>."
        )
    row = dict(rows[0])
    for key in ("metrics", "resources", "versions", "params", "run_info"):
        row[key] = loads(rows[0], key, None)
    if as_json:
        if row.get("metrics"):
            row["metrics"].get("test", {}).pop("confusion_matrix", None)
        console().print_json(json.dumps(row, default=str))
        return
    console().print(run_summary(row))


@runs_app.command("rerun")
@user_errors
def runs_rerun(
    runs: list[str] = typer.Argument(..., help="<study>/<run id> of each run to train again."), results: Path = RESULTS
) -> None:
    """Mark finished runs of a study to be trained again by the next `tuneoff run <study> --resume` (their measurements
    were disturbed: the machine slept, other work shared the cores); their directories are kept under
    <study>/replaced/."""
    from tuneoff.study.execution import rerun

    by_study: dict[str, list[str]] = {}
    for ref in runs:
        if "/" not in ref:
            raise TuneoffError(f"{ref!r}: name the run as <study>/<run id> (`tuneoff runs list` shows both).")
        study, run_id = ref.rsplit("/", 1)
        by_study.setdefault(study, []).append(run_id)
    open_store(results).close()
    for study, run_ids in by_study.items():
        moved = rerun(results, study, run_ids)
        kept = f"; their directories kept aside in {moved[0].parent}" if moved else ""
        say(
            f"{study}: {len(run_ids)} run(s) to train again ({', '.join(run_ids)}){kept}. "
            f"`tuneoff run <its study file> --results {results} --resume` trains them."
        )


@runs_app.command("rebuild")
@user_errors
def runs_rebuild(results: Path = RESULTS) -> None:
    """Index every study run directory under --results again into a new store (the run directories are the source of
    truth); the old store file is kept aside."""
    from tuneoff.study.execution import rebuild_store

    logs.terminal(verbosity())
    path, count = rebuild_store(results)
    say(f"{count} run(s) indexed into {path}")
