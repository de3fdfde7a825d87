"""The study commands: ``tuneoff plan`` (memory, FLOPs, what a study can decide and how long it takes), ``tuneoff run``
(a study, fixed or in decide mode) and ``tuneoff report`` (re-read a stored study). ``cli.app`` registers them beside
the single-run commands."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tuneoff.cli.runs import RESULTS
from tuneoff.cli.terminal import (
    console,
    plan_markdown,
    plan_table,
    plan_title,
    quiet_libraries,
    say,
    user_errors,
    verbosity,
    verdict_lines,
)
from tuneoff.config import load_config, read_yaml
from tuneoff.core import logs
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text
from tuneoff.study.spec import dry_run as plan_runs
from tuneoff.study.spec import expand, load_spec, metric_note
from tuneoff.training.tracking import log_study_report


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
    quiet_libraries()
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
            quiet_libraries()
            from tuneoff.study.timing import predict_lines

            for line in predict_lines(spec, parallel, threads, say=say):
                say(line)
        elif time_it:
            say(
                "time: predicted for the local executor with one process per run only (here: --executor "
                f"{executor}, --processes-per-run {processes_per_run})"
            )
        return
    quiet_libraries()
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
    quiet_libraries()
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
