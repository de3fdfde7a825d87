"""The fair protocol: compare methods, not recipes.

A study that gives every method one learning rate and one step budget compares those recipes: at 126 steps and one
rate, methods with few trainable parameters stay at the majority class, and a short run makes full fine-tuning look
worse than it is. With ``tune: {lr: true}`` (the built-in studies' default) each *condition* (a variant at a grid
point) goes through two phases:

1. **tune**: ``trials`` runs at learning rates drawn log-uniformly from the method's prior range (``Method.lr_range``,
   or the variant's ``lr_range: [low, high]``), one training seed (``tune.seed``), each trained like a final run (to
   its validation plateau: early stopping with ``train.patience``, ``train.epochs`` as the cap). The draws are
   *stratified* (Latin hypercube sampling in one dimension, McKay, Beckman & Conover, 1979): the log range is cut
   into ``trials`` equal parts and one rate is drawn in each, in a random order, so three trials always span the
   range; independent draws could put all three in one corner (report 2's analogue drew 4.0e-4 to 6.3e-4 from
   1e-4..5e-3 for one LoRA condition while its sibling's best rate was 3.1e-3). Each draw is still log-uniform, so
   the expected best validation accuracy after k trials (Dodge et al., 2019, "Show Your Work") is read off them as
   before. The draws are a pure function of the prior, ``trials`` and ``tune.seed``: a resumed study asks for the
   same rates, and conditions with one prior (LoRA with and without label smoothing) try the *same* rates, so an
   ablation's difference is not a difference of draws (common random numbers).
   With ``pruning``, the median stopping rule (Golovin et al., 2017, "Google Vizier", sec. 3.2) stops a trial whose
   best validation accuracy so far is below the median of the finished trials' at the same step: the search costs
   little more than a few runs.
2. **final**: the condition's ``seeds`` trained at the rate of its best trial on validation. These runs are the
   comparison; the trials stay in the store (phase ``tune``) for the report's tuning plots.

A condition whose ``train.lr`` is given (in the base, the variant or the grid) is pinned: it runs as written. Trials
use a seed of their own so that the final seeds' test results are not the ones the rate was chosen on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from tuneoff.config import RunConfig, validation_score
from tuneoff.core.errors import TuneoffError
from tuneoff.methods import get_method

PHASE_TUNE, PHASE_FINAL = "tune", "final"


@dataclass
class PlannedRun:
    """One run a study will train: its id, variant, grid point, seed, resolved config and protocol phase."""

    run_id: str
    variant: str
    params: dict
    seed: int
    config: RunConfig
    phase: str = PHASE_FINAL


class TuneSpec(BaseModel):
    """A study's ``tune:`` section."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    lr: bool = Field(True, description="Tune each condition's learning rate on validation before its seeds run.")
    trials: int = Field(
        6,
        ge=1,
        le=100,
        description="Learning rates tried per condition (log-uniform over the prior, "
        "one in each of `trials` equal parts of its log range).",
    )
    pruning: bool = Field(True, description="Median stopping rule: stop a trial below the median of finished trials.")
    seed: int = Field(0, description="Training seed of the trials (the final runs use the study's seeds).")
    min_trials_to_prune: int = Field(2, ge=1, description="Finished trials needed before the median rule applies.")
    prune_after_epochs: float = Field(
        1.0,
        ge=0,
        description="The median rule judges a trial only from this epoch on "
        "(slow starters are not stopped at their first evaluations).",
    )


class UntilDecided(BaseModel):
    """A study's ``until_decided:`` section: decide mode (``rounds``: after its seeds, the study adds seeds where they
    can settle an open comparison, until its recommendation is decided)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_seeds: int = Field(10, ge=2, le=64, description="The most seeds any condition gets.")
    budget: str | None = Field(
        None,
        description="Wall-clock budget of the rounds from the command's start: e.g. 2h, "
        "90m, 3600s; none: until decided or max_seeds.",
    )

    @field_validator("budget")
    @classmethod
    def _duration(cls, value):
        if value is not None:
            seconds(value)
        return value


def seconds(text: str) -> float:
    """``2h``, ``90m``, ``3600s`` or ``3600`` as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([hms]?)\s*", str(text))
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"budget {text!r}: give a positive duration such as 2h, 90m or 3600s")
    return float(match.group(1)) * {"h": 3600, "m": 60, "s": 1, "": 1}[match.group(2)]


class TrialPruned(Exception):
    """Raised from a trial's evaluation when the median rule stops it; carries the validation it reached."""

    def __init__(self, message: str, metrics: dict):
        super().__init__(message)
        self.metrics = metrics


@dataclass
class Condition:
    """A variant at one grid point: its final runs (one per seed) and how its learning rate is set."""

    key: str  # the run ids' common prefix (no seed)
    variant: str
    params: dict
    runs: list  # PlannedRun, one per seed
    lr_range: tuple[float, float] | None  # None: pinned (train.lr given)
    trials: list = field(default_factory=list)  # PlannedRun of the tuning phase

    @property
    def tuned(self) -> bool:
        return self.lr_range is not None


def seedless_id(run_id: str, seed: int) -> str:
    suffix = f"-s{seed}"
    return run_id[: -len(suffix)] if run_id.endswith(suffix) else run_id


def conditions(spec, runs: list) -> list[Condition]:
    """The study's conditions, in order; with ``tune.lr`` each unpinned one gets its trials."""
    tune = spec.tune if spec.tune is not None and spec.tune.lr else None
    found: dict[str, Condition] = {}
    for run in runs:
        key = seedless_id(run.run_id, run.seed)
        if key not in found:
            pinned = run.config.train.lr is not None or tune is None
            found[key] = Condition(key, run.variant, run.params, [], None if pinned else _prior(spec, run))
        found[key].runs.append(run)
    for cond in found.values():
        if cond.tuned:
            cond.trials = trial_runs(cond, tune)
    return list(found.values())


def _prior(spec, run) -> tuple[float, float]:
    given = (spec.variants.get(run.variant) or {}).get("lr_range")
    low, high = given if given else get_method(run.config.method.name).lr_range
    return float(low), float(high)


def trial_lrs(low: float, high: float, trials: int, seed: int) -> list[float]:
    """``trials`` log-uniform draws over [low, high], one in each of ``trials`` equal parts of the log range, in a
    random order (see the module's docstring); a pure function of its arguments, rounded to three significant digits
    (readable in run records, identical on every machine)."""
    rng = np.random.default_rng(
        int(hashlib.sha256(f"{seed}:{low:.6g}:{high:.6g}:{trials}".encode()).hexdigest()[:12], 16)
    )
    fractions = (rng.permutation(trials) + rng.uniform(0.0, 1.0, trials)) / trials
    draws = np.exp(math.log(low) + fractions * (math.log(high) - math.log(low)))
    return [float(f"{x:.3g}") for x in draws]


def trial_runs(cond: Condition, tune: TuneSpec) -> list:
    base = cond.runs[0].config
    out = []
    for k, lr in enumerate(trial_lrs(*cond.lr_range, tune.trials, tune.seed)):
        train = base.train.model_copy(update={"lr": lr, "seed": tune.seed})
        out.append(
            PlannedRun(
                f"{cond.key}-tune{k}",
                cond.variant,
                {**cond.params, "trial": k, "train.lr": lr},
                tune.seed,
                base.model_copy(update={"train": train}),
                phase=PHASE_TUNE,
            )
        )
    return out


def best_trial(rows) -> dict | None:
    """The finished trial with the best validation metric (its config's ``train.metric_for_best``), or None."""
    best = None
    for row in rows:
        if row["status"] != "done" or not row["metrics"]:
            continue
        config = RunConfig.model_validate(yaml.safe_load(row["config_yaml"]))
        value = validation_score(json.loads(row["metrics"]).get("validation"), config.train.metric_for_best)
        if value is not None and (best is None or value > best["value"]):
            best = {"value": value, "lr": config.train.lr, "run_id": row["run_id"]}
    return best


def final_runs(cond: Condition, lr: float) -> list:
    """The condition's seeds at the chosen learning rate."""
    out = []
    for run in cond.runs:
        train = run.config.train.model_copy(update={"lr": lr})
        out.append(
            PlannedRun(run.run_id, run.variant, run.params, run.seed, run.config.model_copy(update={"train": train}))
        )
    return out


class MedianStop:
    """The median stopping rule as a training loop's ``on_evaluate`` (picklable: it runs where the trial runs).

    At each evaluation from epoch ``after_epochs`` on, the trial's best validation ``metric`` so far is compared with the
    best so far, at the same step, of its finished sibling trials (their ``history.jsonl`` in the study's run directory); below
    the median of at least ``minimum`` of them, the trial stops."""

    def __init__(self, runs_dir: str, siblings: list[str], metric: str, minimum: int, after_epochs: float = 1.0):
        self.runs_dir, self.siblings, self.metric, self.minimum = runs_dir, siblings, metric, minimum
        self.after_epochs = after_epochs
        self.best: float | None = None

    def _sibling_best(self, step: int) -> list[float]:
        key = f"val_{self.metric}"
        values = []
        for run_id in self.siblings:
            path = Path(self.runs_dir) / run_id / "history.jsonl"
            if not path.is_file():
                continue
            history = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            reached = [h[key] for h in history if h["step"] <= step and h.get(key) is not None]
            if reached:
                values.append(min(reached) if self.metric == "loss" else max(reached))
        return values

    def __call__(self, step: int, validation: dict) -> None:
        value = validation.get(self.metric)
        if value is None:
            return
        lower = self.metric == "loss"
        self.best = value if self.best is None else (min(self.best, value) if lower else max(self.best, value))
        if validation.get("epoch", float("inf")) < self.after_epochs:
            return
        others = self._sibling_best(step)
        if len(others) < self.minimum:
            return
        median = float(np.median(others))
        if (self.best > median) if lower else (self.best < median):
            raise TrialPruned(
                f"pruned at step {step}: best validation {self.metric} {self.best:.4f} is below the median "
                f"{median:.4f} of {len(others)} finished trials at that step",
                {"validation": {self.metric: self.best}, "pruned_at_step": step},
            )


def check_lr_range(name: str, value) -> None:
    """[low, high], two finite numbers (a YAML ``true`` is not 1, ``.inf`` is no rate) with 0 < low < high."""
    numbers = (
        isinstance(value, (list, tuple))
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    )
    if not (numbers and 0 < value[0] < value[1]):
        raise TuneoffError(
            f"variants.{name}.lr_range: give [low, high], two finite numbers with 0 < low < high, e.g. "
            f"[1.0e-4, 5.0e-3] (got {value!r})."
        )
