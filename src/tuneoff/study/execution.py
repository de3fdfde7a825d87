"""Running a study: check it, take its lock, register its runs in the store, and execute the unfinished ones on an
executor; a failed run is recorded and the study goes on.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shlex
import socket
import sys
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import yaml

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text, open_own, read_json, safe_name
from tuneoff.data.files import check_local_columns
from tuneoff.results.store import DB_NAME, Store, writable
from tuneoff.study import protocol, rounds
from tuneoff.study.executors import Job, LocalExecutor, drive
from tuneoff.study.search import run_search
from tuneoff.study.spec import (
    PlannedRun,
    StudySpec,
    expand,
    load_spec,
    metric_note,
    require_hub,
    study_dir,
)
from tuneoff.training import stop

log = logging.getLogger(__name__)


def prepare(spec: StudySpec, results: str | Path, resume: bool, yes: bool):
    """Check the study (size, hub), take its lock, check it against the store, register its first phase's runs;
    return the store, the study's conditions (protocol), the study directory and the lock (held until the caller
    closes it)."""
    runs = expand(spec)
    require_hub(spec.name, runs)
    for data in {r.config.data.model_dump_json(): r.config.data for r in runs}.values():
        check_local_columns(data)  # a wrong column name is said before any run starts, every one of them at once
    conds = protocol.conditions(spec, runs)
    total = sum(len(c.trials) + len(c.runs) for c in conds)
    if spec.search is not None:  # trials are registered as the search asks for them
        conds = []
        total = len(spec.variants or {"base": {}}) * spec.search.trials
    if total > spec.max_runs and not yes:
        raise TuneoffError(
            f"Study {spec.name!r} would launch {total} runs (tuning trials included), more than "
            f"max_runs={spec.max_runs}. Pass --yes to run them all, or raise max_runs in the study file."
        )
    lock = hold_study(study_dir(results, spec.name), spec.name)
    try:
        store, directory = _register(spec, results, resume, first_phase(conds))
    except BaseException:
        lock.close()
        raise
    return store, conds, directory, lock


def first_phase(conds: list) -> list[PlannedRun]:
    """What can run at once: every tuning trial, and the runs of conditions whose learning rate is pinned."""
    return [run for c in conds for run in (c.trials if c.tuned else c.runs)]


def _register(spec: StudySpec, results: str | Path, resume: bool, runs: list[PlannedRun]) -> tuple[Store, Path]:
    store = Store(results)
    # Absolute: runs may execute on other machines (Ray) whose working directory is not this one.
    directory = study_dir(Path(results).resolve(), spec.name)
    for other in store.studies():
        if other["name"] != spec.name and safe_name(other["name"]) == safe_name(spec.name):
            store.close()
            raise TuneoffError(
                f"Study {spec.name!r} and the study {other['name']!r} already in {results} would share the same folder "
                f"({directory}) and each other's runs. Rename this study, or use another --results directory."
            )
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
    atomic_write_text(directory / "study.yaml", spec.to_yaml())
    _log_command(directory)
    store.add_study(spec.name, spec.to_yaml(), spec.digest(), directory)
    for run in runs:
        store.plan_run(spec.name, run.run_id, run.variant, run.params, run.seed, run.config.to_yaml(), phase=run.phase)
    return store, directory


def _log_command(directory: Path) -> None:
    """Append the command that ran (or resumed) the study to ``commands.log``: a result file cites it."""

    argv = ["tuneoff", *sys.argv[1:]] if Path(sys.argv[0]).name in ("tuneoff", "__main__.py") else sys.argv
    with open_own(directory / "commands.log", "a") as log:
        log.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}  {shlex.join(argv)}\n")


def execute(
    spec: StudySpec, results: str | Path, resume: bool = False, yes: bool = False, progress: bool = False, executor=None
) -> Path:
    """Run every unfinished run of the study on ``executor`` (default: here, in order); a failed run is recorded and
    the study goes on. Only this process writes the results store."""

    executor = executor or LocalExecutor(progress)
    try:
        store, conds, directory, lock = prepare(spec, results, resume, yes)
    except BaseException:
        executor.close()
        raise
    # SIGTERM or Ctrl-C: no run starts, the runs in flight save a checkpoint where they are (training.stop)
    with stop.on_signals(), _closing(executor, store, lock):
        if spec.search is not None:
            bases = {r.variant: r.config for r in expand(spec) if r.seed == spec.seeds[0]}
            run_search(spec, bases, store, directory, Path(results), executor)
            return directory
        note = metric_note(spec, [r for c in conds for r in (*c.trials, *c.runs)])
        if note:
            log.warning(note)
        tuned = [c for c in conds if c.tuned]
        _run_phase(
            spec,
            store,
            directory,
            executor,
            first_phase(conds),
            conds,
            later=[r.config.method.name for c in tuned for r in c.runs],
        )
        if tuned:
            finals = []
            for cond in tuned:
                best = protocol.best_trial(
                    r
                    for r in store.runs(spec.name, phase=protocol.PHASE_TUNE)
                    if r["run_id"] in {trial.run_id for trial in cond.trials}
                )
                if best is None:
                    log.warning(
                        f"{cond.key}: no tuning trial finished, so its seeds are not run (see the failed trials)"
                    )
                    continue
                log.info(
                    f"{cond.key}: learning rate {best['lr']:g} (best of its trials on validation, {best['run_id']})"
                )
                finals += protocol.final_runs(cond, best["lr"])
            for run in finals:
                store.plan_run(
                    spec.name, run.run_id, run.variant, run.params, run.seed, run.config.to_yaml(), phase=run.phase
                )
            _run_phase(spec, store, directory, executor, finals, conds)
        if spec.until_decided is not None:
            _until_decided(spec, store, directory, executor, conds)
    return directory


def look(spec: StudySpec, store: Store):
    """The study's verdicts as they stand, at the level of this look (decide mode spends alpha over its looks), with
    the look's seed count and level."""
    from tuneoff.analysis.groups import load_conditions
    from tuneoff.analysis.verdict import analyse

    found = load_conditions(store, spec.name)
    seeds = max(len(c.runs) for c in found)
    level = rounds.look_alpha(seeds, len(spec.seeds), spec.until_decided.max_seeds, spec.analysis.alpha)
    decide = {**spec.analysis.decide.model_dump(exclude_none=True), **spec.decide.model_dump(exclude_none=True)}
    settings = spec.analysis.model_copy(update={"alpha": level, "decide": type(spec.decide)(**decide)})
    return analyse(found, settings), seeds, level


def _until_decided(spec: StudySpec, store: Store, directory: Path, executor, conds: list) -> None:
    """Decide mode's rounds (``rounds``): look, give one more seed to the conditions whose open comparisons seeds can
    settle, run them, look again; until decided, max_seeds or the budget."""
    clock, by_key = rounds.Clock(spec.until_decided.budget), {c.key: c for c in conds}
    # a round that a stop (or a crash) interrupted is finished first: its runs resume from their checkpoints
    own = {r.run_id for r in expand(spec)}
    left = [
        PlannedRun(
            r["run_id"],
            r["variant"],
            json.loads(r["params"]),
            r["seed"],
            RunConfig.model_validate(yaml.safe_load(r["config_yaml"])),
        )
        for r in store.runs(spec.name, phase=protocol.PHASE_FINAL)
        if r["run_id"] not in own and r["status"] != "done"
    ]
    if left:
        log.info(f"decide mode: finishing the interrupted round first ({', '.join(r.run_id for r in left)})")
        _run_phase(spec, store, directory, executor, left, conds)
    while True:
        verdicts, seeds, level = look(spec, store)
        most = spec.until_decided.max_seeds
        chosen, notes = rounds.who_gets_a_seed(
            verdicts, most, spec.analysis.margin, rounds.look_alpha(most, len(spec.seeds), most, spec.analysis.alpha)
        )
        state = f"look with {seeds} seeds at level {level:.2g}"
        if all(v.decided for v in verdicts):
            log.info(f"decide mode: decided ({state})")
            return
        if not chosen or clock.spent():
            why = "the budget is spent" if chosen else "no open comparison that seeds can settle is left"
            log.info(f"decide mode: stopped undecided, {why} ({state})" + "".join(f"; {n}" for n in notes))
            return
        used = {r["seed"] for r in store.runs(spec.name)}
        seed = rounds.round_seed(used, spec.tune.seed if spec.tune is not None else None)
        runs = []
        for v in verdicts:
            for cond in v.group.conditions:
                if cond.name in chosen:
                    key = protocol.seedless_id(cond.runs[0]["run_id"], cond.runs[0]["seed"])
                    runs.append(_another_seed(by_key[key], cond.runs[0], seed))
        log.info(
            f"decide mode: {state}; another seed ({seed}) for {', '.join(sorted(chosen))}"
            + "".join(f"; {n}" for n in notes)
        )
        for run in runs:
            store.plan_run(
                spec.name, run.run_id, run.variant, run.params, run.seed, run.config.to_yaml(), phase=run.phase
            )
        _run_phase(spec, store, directory, executor, runs, conds)
        if any(r["status"] != "done" for r in store.runs(spec.name) if r["run_id"] in {p.run_id for p in runs}):
            log.warning("decide mode: a run of this round did not finish; stopping the rounds (see the failed runs)")
            return


def _another_seed(cond, first: dict, seed: int) -> PlannedRun:
    """The condition's run at ``seed``, with the config its other seeds trained with (the tuned learning rate)."""
    config = RunConfig.model_validate(first["config"])
    config = config.model_copy(update={"train": config.train.model_copy(update={"seed": seed})})
    return PlannedRun(f"{cond.key}-s{seed}", cond.variant, cond.params, seed, config)


@contextlib.contextmanager
def _closing(executor, store: Store, lock):
    try:
        yield
    finally:
        executor.close()
        store.close()
        lock.close()


def _run_phase(
    spec: StudySpec,
    store: Store,
    directory: Path,
    executor,
    runs: list[PlannedRun],
    conds: list,
    *,
    later: list[str] = (),
) -> None:
    """Run what is not finished yet (a pruned trial is finished: it is not tried again). ``later``: the methods of the
    comparison runs planned once these trials have chosen their learning rates."""
    finished = {r["run_id"] for r in store.runs(spec.name) if r["status"] in ("done", "pruned")}
    todo = [r for r in runs if r.run_id not in finished]
    stopped = {r["run_id"] for r in store.runs(spec.name, "pending") if r["error"]} & {r.run_id for r in todo}
    trials = sum(r.phase == protocol.PHASE_TUNE for r in runs)
    pinned = f", {len(runs) - trials} comparison runs" if len(runs) > trials else ""
    what = f"{len(runs)} runs" + (f" ({trials} tuning trials{pinned})" if trials else "")
    then = f"; then {len(later)} comparison runs at the learning rates the trials choose" if later else ""
    again = f" ({len(stopped)} stopped earlier continue from their checkpoints)" if stopped else ""
    log.info(
        f"study {spec.name}: {what}, {len(runs) - len(todo)} already done, {len(todo)} to run{again} on "
        f"{executor.name}{then}"
    )
    trials_of = {c.key: [t.run_id for t in c.trials] for c in conds if c.tuned}
    tune = spec.tune

    def job(run: PlannedRun) -> Job:
        config = _in_study(run.config, spec.name, directory)
        on_evaluate = None
        if run.phase == protocol.PHASE_TUNE and tune is not None and tune.pruning:
            key = protocol.seedless_id(run.run_id, -1).rsplit("-tune", 1)[0]
            siblings = [r for r in trials_of.get(key, []) if r != run.run_id]
            on_evaluate = partial(
                protocol.MedianStop,
                config.output_dir,
                siblings,
                config.train.metric_for_best,
                tune.min_trials_to_prune,
                tune.prune_after_epochs,
            )
        return Job(run.run_id, config, on_evaluate, trial=run.phase == protocol.PHASE_TUNE)

    def start(job) -> None:
        store.mark_running(spec.name, job.run_id)

    drive(
        executor,
        (job(run) for run in todo),
        len(todo),
        lambda job, outcome: store.record(spec.name, outcome),
        before_submit=start,
        later=len(later),
        methods=[r.config.method.name for r in todo],
        later_methods=list(later),
    )


def _in_study(cfg: RunConfig, name: str, directory: Path) -> RunConfig:
    """A study's run writes under the study's directory and is one run of the study's MLflow experiment."""
    train = cfg.train.model_copy(update={"experiment": cfg.train.experiment or name})
    return cfg.model_copy(update={"output_dir": str(directory / "runs"), "train": train})


def hold_study(directory: Path, name: str):
    """An exclusive lock on the study for as long as this process runs it (``<study>/.lock``, flock). A second
    ``tuneoff run`` of the same study would mark this one's running runs failed; it is refused with the holder."""

    try:
        directory.mkdir(parents=True, exist_ok=True)
        handle = open_own(directory / ".lock", "a+")
    except PermissionError:
        raise TuneoffError(
            f"The study directory {directory} is read-only for this user: a study writes its runs, lock "
            "and log there. Run it as the directory's owner, or give another --results; reading and "
            "reporting need no write (tuneoff report <study dir> --out DIR)."
        ) from None
    except (OSError, ValueError) as exc:
        raise TuneoffError(f"Cannot create the study directory {directory}: {exc}. Choose another --results.") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise TuneoffError(
            f"Study {name!r} is being run by another process ({holder}). Wait for it to finish, or stop "
            "it; then `--resume` continues the study. One study is run by one process at a time."
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(
        f"pid {os.getpid()} on {socket.gethostname()}, since {datetime.now(timezone.utc).isoformat(timespec='seconds')}"
    )
    handle.flush()
    return handle


def rebuild_store(results: str | Path) -> tuple[Path, int]:
    """A new results store indexing every finished study run under ``results`` (``<study>/study.yaml`` and
    ``<study>/runs/<run id>/run.json``: the run directories are the source of truth), each run with its variant, grid
    point, seed and protocol phase from the study's own expansion. The old file, if any, is kept aside as
    ``tuneoff.sqlite.damaged-<time>``. Single runs of ``tuneoff train`` live in their own output directories and are
    indexed again when they are next trained, not here. Returns the store's path and the number of runs indexed."""
    results = Path(results)
    path = results / DB_NAME
    if results.is_dir() and not writable(results):
        raise TuneoffError(
            f"{results} is read-only for this user: `tuneoff runs rebuild` writes a new store there. Run it "
            "as the directory's owner, or copy the results somewhere writable and rebuild the copy."
        )
    if path.exists():
        aside = path.with_name(f"{DB_NAME}.damaged-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}")
        os.replace(path, aside)
        for extra in ("-wal", "-shm"):
            Path(str(path) + extra).unlink(missing_ok=True)
        log.warning(f"the old store is kept as {aside}")
    store, count = Store(results), 0
    try:
        for spec_file in sorted(results.glob("*/study.yaml")):
            try:
                spec = load_spec(spec_file)
                planned = {r.run_id: r for c in protocol.conditions(spec, expand(spec)) for r in [*c.trials, *c.runs]}
            except TuneoffError as exc:
                log.warning(f"rebuild: {spec_file} skipped ({str(exc).splitlines()[0]})")
                continue
            store.add_study(spec.name, spec.to_yaml(), spec.digest(), spec_file.parent)
            for info_file in sorted((spec_file.parent / "runs").glob("*/run.json")):
                run_dir, run = info_file.parent, planned.get(info_file.parent.name)
                if run is None and spec.until_decided is not None:
                    run = _round_run(planned, info_file.parent.name)
                if run is None:
                    log.warning(f"rebuild: {run_dir} is not a run of study {spec.name!r} as it is written now; skipped")
                    continue
                try:
                    info, metrics, resources = (
                        read_json(run_dir / f) for f in ("run.json", "metrics.json", "resources.json")
                    )
                    config = (run_dir / "config.yaml").read_text(encoding="utf-8")
                except (OSError, ValueError) as exc:
                    log.warning(f"rebuild: {run_dir} skipped ({exc})")
                    continue
                store.plan_run(spec.name, run.run_id, run.variant, run.params, run.seed, config, phase=run.phase)
                store.mark_done(spec.name, run.run_id, run_dir.resolve(), metrics, resources, info)
                count += 1
    finally:
        store.close()
    return path, count


def _round_run(planned: dict, run_id: str) -> PlannedRun | None:
    """A run a decide-mode round added (``<condition>-s<seed>`` past the study's own seeds), as the study plans it."""
    key, _, seed = run_id.rpartition("-s")
    first = next(
        (
            r
            for r in planned.values()
            if r.phase == protocol.PHASE_FINAL and protocol.seedless_id(r.run_id, r.seed) == key
        ),
        None,
    )
    if first is None or not seed.isdigit():
        return None
    return PlannedRun(run_id, first.variant, first.params, int(seed), first.config)


def rerun(results: str | Path, study: str, run_ids: list[str]) -> list[Path]:
    """Mark finished comparison runs of a study to be trained again by the next ``tuneoff run --resume`` (a run whose
    measurements were disturbed: the machine slept, or other work shared its cores). Each run's directory is moved
    aside to ``<study>/replaced/<run id>-<time>``, never deleted; returns where they went. Refused while the study
    runs (its lock), for unknown ids, and for tuning trials (a trial chose its condition's learning rate: the seeds
    already trained at it)."""
    results = Path(results)
    store = Store(results)
    lock = None
    try:
        if store.study(study) is None:
            known = ", ".join(s["name"] for s in store.studies()) or "none"
            raise TuneoffError(f"No study {study!r} in {results} (studies: {known}).")
        directory = study_dir(results, study)
        lock = hold_study(directory, study)
        known_runs, rows = {r["run_id"]: r for r in store.runs(study)}, []
        for run_id in run_ids:
            row = known_runs.get(run_id)
            if row is None:
                raise TuneoffError(
                    f"Study {study!r} has no run {run_id!r}; `tuneoff runs list --study {study}` lists them."
                )
            if row["phase"] == protocol.PHASE_TUNE:
                raise TuneoffError(
                    f"{study}/{run_id} is a tuning trial: it chose the learning rate its condition's seeds "
                    "trained at, so it is not re-run alone; re-run the study in a new --results instead."
                )
            rows.append(row)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        moved = []
        for row in rows:
            run_dir = directory / "runs" / row["run_id"]
            if run_dir.exists():
                aside = directory / "replaced" / f"{row['run_id']}-{stamp}"
                aside.parent.mkdir(exist_ok=True)
                os.replace(run_dir, aside)  # first: a crash before the store changes leaves a run to mark again
                moved.append(aside)
            store.mark_pending(study, row["run_id"])
        return moved
    finally:
        store.close()
        if lock is not None:
            lock.close()
