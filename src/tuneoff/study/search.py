"""Hyper-parameter search in a study (Optuna): TPE over any config field, a budget of trials per variant, an
optional cost constraint, and median pruning of trials whose intermediate validation scores fall behind.

A study with a ``search:`` section runs, for each variant, ``trials`` trials (on the study's first seed)::

    search:
      metric: validation.accuracy            # validation.<metric> or resources.<field>; never test (that would leak)
      trials: 12
      space:
        train.lr: {low: 1.0e-5, high: 1.0e-2, log: true}
        method.r: {choices: [4, 8, 16]}
      constraints: {resources.peak_rss_mb: 4000}   # trials over a limit are infeasible (TPE's constraints_func)

Trials go through the study's executor (locally or on Ray) like any run. Optuna's state is a journal file next to
the results database (``<results>/optuna.journal``, safe on shared storage, written by the driver and by workers
reporting intermediate values); a resumed study continues each variant's search, re-running trials that were cut
off (same parameters, same run directory, so they resume from their checkpoints).
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tuneoff.config import build_config
from tuneoff.core.errors import TuneoffError
from tuneoff.study.executors import Job, drive

log = logging.getLogger(__name__)

JOURNAL = "optuna.journal"


class Dimension(BaseModel):
    """One searched field: a range (``low``/``high``, ``log``, ``step``; integers when both ends are) or ``choices``."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty `choices` list or `low` and `high`, not both")
        elif self.low is None or self.high is None or not self.low < self.high:
            raise ValueError("a range needs `low` < `high` (or use `choices`)")
        elif self.log and self.low <= 0:
            raise ValueError("`log: true` needs `low` > 0")
        return self

    def suggest(self, trial, name: str):
        if self.choices is not None:
            return trial.suggest_categorical(name, self.choices)
        if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float):
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def example(self):
        return self.choices[0] if self.choices is not None else self.low


class SearchSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    metric: str = Field("validation.accuracy", description="validation.<metric> or resources.<field> to optimise.")
    direction: Literal["maximize", "minimize"] | None = Field(
        None, description="Default: minimize losses, times and memory."
    )
    trials: int = Field(..., ge=1, description="Trials per variant.")
    space: dict[str, Dimension] = Field(default_factory=dict, description="Dimensions for every variant.")
    constraints: dict[str, float] = Field(default_factory=dict, description="resources.<field>: upper limit.")
    pruning: bool = True
    prune_after_steps: int = Field(0, ge=0, description="No pruning before this optimizer step.")
    parallel: int | None = Field(None, ge=1, description="Trials at once (default: as many as the executor can place).")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> SearchSpec:
        section = self.metric.split(".", 1)[0]
        if section == "test":
            raise ValueError(
                f"metric {self.metric!r}: choosing hyper-parameters on the test split leaks it into the "
                "result; use validation.<metric>"
            )
        if section not in ("validation", "resources") or "." not in self.metric:
            raise ValueError(
                f"metric {self.metric!r}: use validation.<metric> (accuracy, macro_f1, loss, ...) or "
                "resources.<field> (train_seconds, peak_rss_mb, ...)"
            )
        for key in self.constraints:
            if not key.startswith("resources."):
                raise ValueError(
                    f"constraints.{key}: constraints are limits on resources.<field>, e.g. resources.peak_rss_mb"
                )
        return self

    @property
    def maximize(self) -> bool:
        if self.direction is not None:
            return self.direction == "maximize"
        leaf = self.metric.rsplit(".", 1)[-1]
        return not (leaf == "loss" or leaf.endswith(("_seconds", "_mb", "_bytes", "params")))


def lookup(path: str, metrics: dict, resources: dict) -> float | None:
    section, key = path.split(".", 1)
    value = (metrics.get("validation", {}) if section == "validation" else resources).get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _storage(results: Path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(results) / JOURNAL)))


def pruning_callback(trial_ref: dict):
    """The train loop's ``on_evaluate`` for a trial: report the validation metric, stop if the pruner says so.
    Runs wherever the trial runs (this process or a Ray worker), talking to the journal on shared storage."""
    import optuna

    study = optuna.load_study(
        study_name=trial_ref["study"],
        storage=_storage(trial_ref["results"]),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=trial_ref["warmup"]),
    )
    trial = optuna.trial.Trial(study, trial_ref["trial_id"])
    # A trial resumed from its checkpoint evaluates again at steps it already reported before it was cut off.
    reported = set(
        next(t for t in study.get_trials(deepcopy=False) if t._trial_id == trial_ref["trial_id"]).intermediate_values
    )

    def on_evaluate(step: int, validation: dict) -> None:
        value = validation.get(trial_ref["metric"])
        if value is None:
            return
        if step not in reported:
            trial.report(float(value), step)
        if trial_ref["pruning"] and trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at step {step}: validation {trial_ref['metric']} {value:.4f} below the "
                "median of earlier trials at that step"
            )

    return on_evaluate


def check_space(spaces: dict, base_configs: dict) -> None:
    """Every searched field must exist in the run config and accept its range: checked before any trial runs."""

    for variant, cfg in base_configs.items():
        for key, dim in spaces[variant].items():
            try:
                build_config(
                    cfg.model_dump(mode="json"),
                    [f"{key}={dim.example()}"],
                    source=f"search.space.{key} (variant {variant!r})",
                )
            except TuneoffError as exc:
                raise TuneoffError(
                    f"{exc}\n  (search.space.{key} must name a run config field, e.g. train.lr or method.r)"
                ) from None


def run_search(spec, bases: dict, store, directory: Path, results: Path, executor) -> None:
    """Each variant's search, trials asked lazily (TPE learns from the finished ones) and run on ``executor``.
    ``bases`` is each variant's run config (the study's expansion, first seed): the search drives runs, the study
    defines them."""
    try:
        import optuna
    except ImportError:
        raise TuneoffError(
            f"Study {spec.name!r} has a search: section, which needs Optuna: pip install 'tuneoff[search]'."
        ) from None

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    search = spec.search
    # search.space applies to every variant; a variant's own `space:` adds (or overrides) dimensions for it alone
    spaces = {
        v: {
            **search.space,
            **{k: Dimension.model_validate(d) for k, d in (spec.variants.get(v, {}).get("space") or {}).items()},
        }
        for v in bases
    }
    check_space(spaces, bases)
    storage = _storage(results)
    leaf = search.metric.split(".", 1)[1]

    def constraints(frozen) -> list[float]:
        return frozen.user_attrs.get("constraint_excess", [0.0] * len(search.constraints))

    studies = {}
    for index, variant in enumerate(bases):  # a seed per variant: the same seed would draw the same first trials
        sampler = optuna.samplers.TPESampler(
            seed=search.seed * 1000 + index,
            n_startup_trials=min(10, max(2, search.trials // 3)),
            constraints_func=constraints if search.constraints else None,
        )
        studies[variant] = optuna.create_study(
            study_name=f"{spec.name}:{variant}",
            storage=storage,
            sampler=sampler,
            direction="maximize" if search.maximize else "minimize",
            load_if_exists=True,
        )

    def trial_job(variant: str, trial) -> Job:
        params = {key: dim.suggest(trial, key) for key, dim in spaces[variant].items()}
        run_id = f"{variant}-trial{trial.number:03d}"
        config = build_config(
            bases[variant].model_dump(mode="json"),
            [f"{k}={v}" for k, v in params.items()],
            source=f"search trial {run_id}",
        )
        config = config.model_copy(update={"output_dir": str(directory / "runs")})
        store.plan_run(
            spec.name, run_id, variant, {"trial": trial.number, **params}, config.train.seed, config.to_yaml()
        )
        ref = {
            "results": str(results),
            "study": studies[variant].study_name,
            "trial_id": trial._trial_id,
            "metric": leaf if search.metric.startswith("validation.") else None,
            "pruning": search.pruning,
            "warmup": search.prune_after_steps,
        }
        return Job(run_id, config, partial(pruning_callback, ref) if ref["metric"] else None, trial=True)

    def jobs():
        running = optuna.trial.TrialState.RUNNING
        for variant, study in studies.items():  # trials cut off by a dead driver: same parameters, same run directory
            for frozen in study.get_trials(deepcopy=False, states=(running,)):
                yield variant, optuna.trial.Trial(study, frozen._trial_id)
        while True:
            open_ = [(v, s) for v, s in studies.items() if len(s.get_trials(deepcopy=False)) < search.trials]
            if not open_:
                return
            for variant, study in open_:  # round-robin, so every variant's search advances together
                yield variant, study.ask()

    asked: dict[str, tuple[str, Any]] = {}

    def submit(job: Job) -> None:
        store.mark_running(spec.name, job.run_id)

    def job_stream():
        for variant, trial in jobs():
            job = trial_job(variant, trial)
            asked[job.run_id] = (variant, trial)
            yield job

    def on_outcome(job: Job, outcome) -> None:
        store.record(spec.name, outcome)
        variant, trial = asked.pop(job.run_id)
        if outcome.status == "stopped":  # left running: --resume asks it again, same parameters, from its checkpoint
            return
        study = studies[variant]
        if outcome.status == "done":
            value = lookup(search.metric, outcome.metrics, outcome.resources)
            excess = [
                (lookup(k, outcome.metrics, outcome.resources) or 0.0) - limit
                for k, limit in search.constraints.items()
            ]
            trial.set_user_attr("constraint_excess", excess)
            if value is None:
                log.warning(f"    {job.run_id}: {search.metric} missing from its results; trial marked failed")
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial.number, value)
        else:
            study.tell(
                trial.number,
                state=optuna.trial.TrialState.PRUNED if outcome.status == "pruned" else optuna.trial.TrialState.FAIL,
            )

    done_before = sum(
        len(
            s.get_trials(
                deepcopy=False,
                states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL),
            )
        )
        for s in studies.values()
    )
    total = len(studies) * search.trials - done_before
    log.info(
        f"search {spec.name}: {len(studies)} variant(s) x {search.trials} trials on {search.metric} "
        f"({'maximize' if search.maximize else 'minimize'}), {done_before} already finished"
    )

    class Limited:  # the executor, with at most `parallel` trials in flight
        def __init__(self, inner):
            self.inner, self.name = inner, inner.name
            self.slots = min(inner.slots, search.parallel or inner.slots)

        def __getattr__(self, attr):
            return getattr(self.inner, attr)

    drive(Limited(executor), job_stream(), total, on_outcome, before_submit=submit)
    for variant, study in studies.items():
        best = best_trial(study, search)
        if best is not None:
            log.info(f"best {variant}: trial {best.number}, {search.metric} {best.value:.4f}, {best.params}")


def best_trial(study, search):
    """The best complete trial that meets every constraint, or None."""
    import optuna

    feasible = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if t.value is not None and all(e <= 0 for e in t.user_attrs.get("constraint_excess", []))
    ]
    if not feasible:
        return None
    return (max if search.maximize else min)(feasible, key=lambda t: t.value)


def trials_frame(rows, search: SearchSpec):
    """All trials of a search study from the store: variant, trial, parameters, status, objective, feasibility."""

    import pandas as pd

    out = []
    for row in rows:
        params = json.loads(row["params"])
        metrics = json.loads(row["metrics"]) if row["metrics"] else {}
        resources = json.loads(row["resources"]) if row["resources"] else {}
        entry = {
            "variant": row["variant"],
            "trial": params.pop("trial", None),
            "run_id": row["run_id"],
            "status": row["status"],
            **params,
            search.metric: lookup(search.metric, metrics, resources) if metrics else None,
        }
        for key, limit in search.constraints.items():  # feasibility is unknown (None) for runs that did not finish
            value = lookup(key, metrics, resources) if metrics else None
            entry[key] = value
            entry["feasible"] = (
                None if not metrics else entry.get("feasible", True) and value is not None and value <= limit
            )
        out.append(entry)
    return pd.DataFrame(out)


def best_run_ids(frame, search: SearchSpec) -> set[str]:
    """Per variant, the run of the best feasible finished trial."""
    done = frame[(frame.status == "done") & frame[search.metric].notna()]
    if "feasible" in done:
        done = done[done.feasible.fillna(False).astype(bool)]
    if done.empty:
        return set()
    pick = (
        done.groupby("variant")[search.metric].idxmax()
        if search.maximize
        else done.groupby("variant")[search.metric].idxmin()
    )
    return set(done.loc[pick.values, "run_id"])
