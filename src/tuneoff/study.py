"""Studies: a base run config, named method variants, a grid and seeds, expanded into runs and executed.

A study file looks like::

    name: lora_vs_partial
    base:   {model: {name: minilm}, data: {name: rotten_tomatoes}, train: {epochs: 1}}
    variants:
      partial_top2: {method: {name: partial, k: 2}}
      lora_r8_qv:   {method: {name: lora, r: 8}, grid: {train.lr: [5e-4, 1e-3]}}
    grid:  {data.name: [rotten_tomatoes, bbc_news]}     # applies to every variant
    seeds: [1, 2, 3]

Runs are numbered deterministically (``lora_r8_qv-lr0.001-rotten_tomatoes-s2``), so a resumed study finds its
finished runs by name and redoes none of them.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuneoff.config import RunConfig, build_config, format_validation_error, parse_overrides, read_yaml, set_dotted
from tuneoff.errors import TuneoffError
from tuneoff.search import Dimension, SearchSpec
from tuneoff.rundir import safe_name
from tuneoff.store import Store

DEFAULT_STUDY = Path(__file__).parent / "studies" / "default.yaml"


class Decide(BaseModel):
    """Constraints a recommended method must meet (a study's ``decide:``, or flags of ``tuneoff report``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_peak_memory_mb: float | None = Field(None, gt=0)
    max_train_seconds: float | None = Field(None, gt=0)
    max_trainable_params: int | None = Field(None, ge=1)


class AnalysisSettings(BaseModel):
    """A study's ``analysis:`` section: how verdicts are reached (changing it re-reads results, never re-runs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    margin: float = Field(0.01, gt=0, lt=1, description="Non-inferiority margin in accuracy (0.01 = one point).")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Family-wise error rate (Holm) and 1 - CI level.")
    prefer: Literal["overall", "trained_mb", "peak_memory_mb", "train_seconds", "trainable_params"] = Field(
        "overall", description="Among methods as good as the best, the cheapest on: overall (geometric mean of the "
        "cost ratios against the reference), trained_mb, peak_memory_mb, train_seconds or trainable_params.")
    decide: Decide = Decide()  # also accepted at the study's top level (``decide:``)


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="A run config: model, data, method, train.")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Named method variants.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Dotted key -> values, for every variant.")
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    max_runs: int = Field(64, ge=1, description="Refuse larger grids unless --yes.")
    search: SearchSpec | None = Field(None, description="Optuna search per variant instead of a grid (see search.py).")
    analysis: AnalysisSettings = AnalysisSettings()
    decide: Decide = Decide()

    @model_validator(mode="after")
    def _search_or_grid(self) -> StudySpec:
        if self.search is not None and (self.grid or any("grid" in v for v in self.variants.values())):
            raise ValueError("search: a study has either a grid or a search; give the grid's values to the search as "
                             "`choices` in search.space")
        for name, body in (self.variants or {"base": {}}).items():
            if self.search is not None and not self.search.space and not body.get("space"):
                raise ValueError(f"search.space is empty and variant {name!r} has no space of its own: nothing to search")
            if "space" in body:
                if self.search is None:
                    raise ValueError(f"variants.{name}.space: a variant's search space needs a search: section")
                for key, dim in (body["space"] or {}).items():
                    try:
                        Dimension.model_validate(dim)
                    except ValidationError as exc:
                        raise ValueError(f"variants.{name}.space.{key}: {exc.errors()[0]['msg']}") from None
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        """What identifies the study's runs: how verdicts are read from them (analysis, decide) is left out, so a
        changed margin re-reads the results instead of refusing them as another study's."""
        runs = self.model_dump(mode="json", exclude={"analysis", "decide"})
        return hashlib.sha256(yaml.safe_dump(runs, sort_keys=False).encode()).hexdigest()[:16]


@dataclass
class PlannedRun:
    run_id: str
    variant: str
    params: dict
    seed: int
    config: RunConfig


def load_spec(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    tree = read_yaml(path or DEFAULT_STUDY)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    try:
        return StudySpec.model_validate(tree)
    except ValidationError as exc:
        raise TuneoffError(format_validation_error(exc, str(path or "built-in default study"))) from exc


def _nested(tree: dict) -> dict:
    """Turn dotted keys (``method.r: 8``) into nested sections."""
    out: dict = {}
    for key, value in tree.items():
        if isinstance(value, dict) and "." not in key:
            value = _nested(value)
        if "." in key:
            set_dotted(out, key, value)
        else:
            out[key] = value if not isinstance(out.get(key), dict) else {**out[key], **value}
    return out


def _merge(base: dict, update: dict) -> dict:
    """Deep merge; a ``method`` naming another method replaces the base method instead of merging into it."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if key == "method" and isinstance(value, dict) and value.get("name") not in (None, (out.get("method") or {}).get("name")):
            out["method"] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _grid_points(grid: dict[str, list]) -> list[dict]:
    """Every combination of the grid's values. A key naming several fields (``"method.r,method.alpha"``) takes
    tuples of values that move together, e.g. ``[[4, 8], [8, 16]]`` keeps alpha / r fixed across a rank sweep."""
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TuneoffError(f"grid.{key}: must be a non-empty list of values, e.g. [4, 8, 16].")
        fields = [k.strip() for k in key.split(",")]
        if len(fields) > 1:
            bad = [v for v in values if not isinstance(v, list) or len(v) != len(fields)]
            if bad:
                raise TuneoffError(f"grid.{key}: each value must be a list of {len(fields)} values, one per field "
                                   f"(e.g. [[4, 8], [8, 16]]); got {bad[0]!r}.")
            axes.append([dict(zip(fields, v)) for v in values])
        else:
            axes.append([{key: v} for v in values])
    return [{k: v for part in combo for k, v in part.items()} for combo in itertools.product(*axes)]


def _label(key: str, value: Any) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return f"{Path(str(value)).stem}" if leaf == "name" else f"{leaf}{value}"


def expand(spec: StudySpec) -> list[PlannedRun]:
    """Every run of the study, validated up front (a bad variant fails before anything trains)."""
    variants = spec.variants or {"base": {}}
    base = _nested(spec.base)
    runs, seen = [], set()
    for variant, body in variants.items():
        body = dict(body)
        variant_grid = body.pop("grid", {}) or {}
        body.pop("space", None)  # a variant's own search dimensions (search.py)
        for point in _grid_points({**spec.grid, **variant_grid}) if (spec.grid or variant_grid) else [{}]:
            tree = _merge(base, _nested(body))
            for key, value in point.items():
                tree = _merge(tree, _nested({key: value}))
            for seed in spec.seeds:
                tree_seed = _merge(tree, {"train": {"seed": seed}})
                try:
                    config = build_config(tree_seed, source=f"study {spec.name!r}, variant {variant!r}")
                except TuneoffError as exc:
                    raise TuneoffError(f"{exc}\n  (grid point: {point or 'none'}, seed {seed})") from None
                run_id = safe_name("-".join([variant, *(_label(k, v) for k, v in point.items()), f"s{seed}"]))
                if run_id in seen:
                    raise TuneoffError(f"Study {spec.name!r}: two runs would both be called {run_id!r}; rename a variant.")
                seen.add(run_id)
                runs.append(PlannedRun(run_id, variant, point, seed, config))
    if not runs:
        raise TuneoffError(f"Study {spec.name!r} expands to no runs: add variants, grid values or seeds.")
    return runs


def study_dir(results: str | Path, name: str) -> Path:
    return Path(results) / safe_name(name)


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


def dry_run(spec: StudySpec) -> list[dict]:
    """Each run of the study with its recipe (validated, nothing loaded or downloaded)."""
    from tuneoff.data import hub_repo as data_repo
    from tuneoff.methods import get_method
    from tuneoff.models import hub_repo as model_repo

    rows = []
    for run in expand(spec):
        c, t = run.config, run.config.train
        params = ", ".join(f"{k}={v}" for k, v in c.method.model_dump(exclude_defaults=True).items() if k != "name")
        hub = [r for r in (model_repo(c.model.name), data_repo(c.data)) if r]
        rows.append({"run": run.run_id, "method": f"{c.method.name} ({params or 'defaults'})", "model": c.model.name, "data": c.data.name,
                     "epochs": t.max_steps and f"{t.max_steps} steps" or t.epochs,
                     "lr": t.lr or f"{get_method(c.method.name).default_lr:g} (method default)",
                     "batch": f"{t.batch_size} x {t.grad_accum}", "max_length": c.data.max_length,
                     "schedule": f"{t.optimizer} {t.scheduler}, warmup {t.warmup_steps if t.warmup_steps is not None else f'{t.warmup_ratio:.0%}'}",
                     "hub": ", ".join(hub) or "-"})
    return rows


def require_hub(name: str, runs: list[PlannedRun]) -> None:
    """Before anything runs: every hub model and dataset of the study can be had (hub reachable, or cached)."""
    from tuneoff import hub
    from tuneoff.data import hub_repo as data_repo
    from tuneoff.models import hub_repo as model_repo

    needed: dict[str, str] = {}
    for run in runs:
        if (repo := model_repo(run.config.model.name)) is not None:
            needed[repo] = "model"
        if (repo := data_repo(run.config.data)) is not None:
            needed[repo] = "dataset"
    if needed:
        hub.require(needed, f"Study {name!r}")


def _log_command(directory: Path) -> None:
    """Append the command that ran (or resumed) the study to ``commands.log``: a result file cites it."""
    import shlex
    import sys
    from datetime import datetime, timezone

    argv = ["tuneoff", *sys.argv[1:]] if Path(sys.argv[0]).name in ("tuneoff", "__main__.py") else sys.argv
    with open(directory / "commands.log", "a", encoding="utf-8") as log:
        log.write(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')}  {shlex.join(argv)}\n")


def execute(spec: StudySpec, results: str | Path, resume: bool = False, yes: bool = False, say=print,
            progress: bool = False, executor=None) -> Path:
    """Run every unfinished run of the study on ``executor`` (default: here, in order); a failed run is recorded and
    the study goes on. Only this process writes the results store."""
    from tuneoff.executors import Job, LocalExecutor, drive

    executor = executor or LocalExecutor(progress, say)
    try:
        store, runs, directory, lock = prepare(spec, results, resume, yes)
    except BaseException:
        executor.close()
        raise
    try:
        if spec.search is not None:
            from tuneoff.search import run_search

            bases = {r.variant: r.config for r in expand(spec) if r.seed == spec.seeds[0]}
            run_search(spec, bases, store, directory, Path(results), executor, say)
            return directory
        done = {r["run_id"] for r in store.runs(spec.name, "done")}
        todo = [r for r in runs if r.run_id not in done]
        say(f"study {spec.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run on {executor.name}")
        jobs = (Job(run.run_id, _in_study(run.config, spec.name, directory)) for run in todo)

        def start(job) -> None:
            store.mark_running(spec.name, job.run_id)
            if executor.name == "local":
                say(f"    start {job.run_id}")

        drive(executor, jobs, len(todo), lambda job, outcome: store.record(spec.name, outcome), say, start)
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
    import fcntl
    import os
    import socket
    from datetime import datetime, timezone

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
