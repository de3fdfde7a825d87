"""Running a study: check it, take its lock, register its runs in the store, and execute the unfinished ones on an
executor; a failed run is recorded and the study goes on.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import safe_name
from tuneoff.results.store import Store
from tuneoff.study.executors import Job, LocalExecutor, drive
from tuneoff.study.search import run_search
from tuneoff.study.spec import PlannedRun, StudySpec, expand, require_hub, study_dir

log = logging.getLogger(__name__)


def prepare(spec: StudySpec, results: str | Path, resume: bool, yes: bool):
    """Check the study (size, hub), take its lock, check it against the store, register its runs; return the store,
    what to run, the study directory and the lock (held until the caller closes it)."""
    runs = expand(spec)
    require_hub(spec.name, runs)
    if spec.search is not None:  # trials are registered as the search asks for them
        runs = []
        if len(spec.variants or {"base": {}}) * spec.search.trials > spec.max_runs and not yes:
            raise TuneoffError(f"Study {spec.name!r} would launch {len(spec.variants or {'base': {}}) * spec.search.trials} "
                               f"trials, more than max_runs={spec.max_runs}. Pass --yes, or raise max_runs in the study file.")
    if len(runs) > spec.max_runs and not yes:
        raise TuneoffError(
            f"Study {spec.name!r} would launch {len(runs)} runs, more than max_runs={spec.max_runs}. "
            "Pass --yes to run them all, or raise max_runs in the study file."
        )
    lock = hold_study(study_dir(results, spec.name), spec.name)
    try:
        store, directory = _register(spec, results, resume, runs)
    except BaseException:
        lock.close()
        raise
    return store, runs, directory, lock


def _register(spec: StudySpec, results: str | Path, resume: bool, runs: list[PlannedRun]) -> tuple[Store, Path]:
    store = Store(results)
    # Absolute: runs may execute on other machines (Ray) whose working directory is not this one.
    directory = study_dir(Path(results).resolve(), spec.name)
    for other in store.studies():
        if other["name"] != spec.name and safe_name(other["name"]) == safe_name(spec.name):
            store.close()
            raise TuneoffError(
                f"Study {spec.name!r} and the study {other['name']!r} already in {results} would share the same folder "
                f"({directory}) and each other's runs. Rename this study, or use another --results directory.")
    known = store.study(spec.name)
    if known is not None:
        if known["spec_hash"] != spec.digest():
            raise TuneoffError(
                f"{directory} already holds results of a different study named {spec.name!r} (its spec differs). "
                "Rename the study, or use another --results directory; nothing was changed."
            )
        if not resume and store.runs(spec.name, "done"):
            raise TuneoffError(
                f"Study {spec.name!r} already has finished runs in {directory}. Use --resume to continue it "
                "(finished runs are kept, not redone), or another --results directory."
            )
    (directory / "runs").mkdir(parents=True, exist_ok=True)
    (directory / "study.yaml").write_text(spec.to_yaml(), encoding="utf-8")
    _log_command(directory)
    store.add_study(spec.name, spec.to_yaml(), spec.digest(), directory)
    for run in runs:
        store.plan_run(spec.name, run.run_id, run.variant, run.params, run.seed, run.config.to_yaml())
    return store, directory


def _log_command(directory: Path) -> None:
    """Append the command that ran (or resumed) the study to ``commands.log``: a result file cites it."""

    argv = ["tuneoff", *sys.argv[1:]] if Path(sys.argv[0]).name in ("tuneoff", "__main__.py") else sys.argv
    with open(directory / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}  {shlex.join(argv)}\n")


def execute(spec: StudySpec, results: str | Path, resume: bool = False, yes: bool = False,
            progress: bool = False, executor=None) -> Path:
    """Run every unfinished run of the study on ``executor`` (default: here, in order); a failed run is recorded and
    the study goes on. Only this process writes the results store."""

    executor = executor or LocalExecutor(progress)
    try:
        store, runs, directory, lock = prepare(spec, results, resume, yes)
    except BaseException:
        executor.close()
        raise
    try:
        if spec.search is not None:
            bases = {r.variant: r.config for r in expand(spec) if r.seed == spec.seeds[0]}
            run_search(spec, bases, store, directory, Path(results), executor)
            return directory
        done = {r["run_id"] for r in store.runs(spec.name, "done")}
        todo = [r for r in runs if r.run_id not in done]
        log.info(f"study {spec.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run on {executor.name}")
        jobs = (Job(run.run_id, _in_study(run.config, spec.name, directory)) for run in todo)

        def start(job) -> None:
            store.mark_running(spec.name, job.run_id)
            if executor.name == "local":
                log.info(f"    start {job.run_id}")

        drive(executor, jobs, len(todo), lambda job, outcome: store.record(spec.name, outcome), start)
    finally:
        executor.close()
        store.close()
        lock.close()
    return directory


def _in_study(cfg: RunConfig, name: str, directory: Path) -> RunConfig:
    """A study's run writes under the study's directory and is one run of the study's MLflow experiment."""
    train = cfg.train.model_copy(update={"experiment": cfg.train.experiment or name})
    return cfg.model_copy(update={"output_dir": str(directory / "runs"), "train": train})


def hold_study(directory: Path, name: str):
    """An exclusive lock on the study for as long as this process runs it (``<study>/.lock``, flock). A second
    ``tuneoff run`` of the same study would mark this one's running runs failed; it is refused with the holder."""

    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open(directory / ".lock", "a+", encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise TuneoffError(f"Cannot create the study directory {directory}: {exc}. Choose another --results.") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TuneoffError(f"Study {name!r} is being run by another process ({holder}). Wait for it to finish, or stop "
                           "it; then `--resume` continues the study. One study is run by one process at a time.") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(timezone.utc).isoformat(timespec='seconds')}")
    handle.flush()
    return handle
