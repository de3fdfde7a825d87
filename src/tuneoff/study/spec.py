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
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from tuneoff.analysis.settings import AnalysisSettings, Decide
from tuneoff.config import (
    build_config,
    check_tree,
    format_validation_error,
    parse_overrides,
    read_yaml,
    set_dotted,
)
from tuneoff.core import hub
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import safe_name
from tuneoff.core.outputs import CONTROL
from tuneoff.data.builtins import hub_repo as data_repo
from tuneoff.methods import get_method
from tuneoff.models.assets import hub_repo as model_repo
from tuneoff.study.protocol import (
    PlannedRun,
    TuneSpec,
    UntilDecided,
    check_lr_range,
    conditions,
)
from tuneoff.study.search import Dimension, SearchSpec

DEFAULT_STUDY = Path(__file__).parent.parent / "studies" / "default.yaml"


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
    tune: TuneSpec | None = Field(
        None,
        description="The fair protocol: tune each condition's learning rate on "
        "validation, then train its seeds at the best (see protocol.py).",
    )
    until_decided: UntilDecided | None = Field(
        None,
        description="Decide mode: after its seeds, the study adds seeds "
        "where they can settle an open comparison, until its recommendation is "
        "decided, max_seeds or the budget (see rounds.py).",
    )
    analysis: AnalysisSettings = AnalysisSettings()
    decide: Decide = Decide()
    differences: dict[str, str] = Field(
        default_factory=dict,
        description="Where a study reproducing a published recipe "
        "departs from it: config key -> why (studies/recipes/reports.yaml; tests check it).",
    )

    @field_validator("name")
    @classmethod
    def _printable_name(cls, name: str) -> str:
        if CONTROL.search(name):
            raise ValueError(
                f"{name!r} holds control characters (escape sequences, carriage returns): a study's name "
                "is shown in terminals, tables and reports; remove them"
            )
        return name

    @field_validator("variants")
    @classmethod
    def _printable_variants(cls, variants: dict) -> dict:
        bad = [name for name in variants if CONTROL.search(name)]
        if bad:
            raise ValueError(
                f"variant name {bad[0]!r} holds control characters (escape sequences, carriage returns): "
                "it is shown in terminals, tables and reports; remove them"
            )
        return variants

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({s for s in seeds if seeds.count(s) > 1})
        if repeated:
            raise ValueError(
                f"{repeated} appear more than once; a repeated seed is the same run again, not another "
                "sample (give distinct seeds, e.g. [1, 2, 3])"
            )
        return seeds

    @model_validator(mode="after")
    def _search_or_grid(self) -> StudySpec:
        if self.tune is not None and self.tune.lr and self.tune.seed in self.seeds:
            # The trial that won on validation would be trained again as a final run: that condition's seeds would
            # include the one its rate was chosen on (+0.8 to +1.1 points with 3 or 6 trials, measured from outside),
            # and the verdict's pick, made on the tuning phase, would share that run's luck.
            raise ValueError(
                f"tune.seed ({self.tune.seed}) is also in seeds {self.seeds}: the trials must use a seed "
                "of their own, or the final runs repeat the trial their rate was chosen on. Give tune.seed a "
                f"value outside seeds (e.g. tune: {{seed: {min(set(range(len(self.seeds) + 1)) - set(self.seeds))}}}) "
                "or drop it from seeds"
            )
        if not self.variants and not self.grid and "method" not in (self.base or {}) and self.search is None:
            raise ValueError(
                "the study names no method: give variants (one per method, e.g. variants: {lora: {method: "
                "{name: lora}}}) or base.method; without them it would train the default LoRA on the whole "
                "default corpus"
            )
        if self.until_decided is not None and self.search is not None:
            raise ValueError(
                "until_decided: decide mode adds seeds to a grid's conditions; a search: study has trials, "
                "not conditions. Drop one of the two"
            )
        if self.until_decided is not None and self.until_decided.max_seeds < len(self.seeds):
            raise ValueError(
                f"until_decided.max_seeds ({self.until_decided.max_seeds}) is below the {len(self.seeds)} "
                "seeds the study starts with: raise it or give fewer seeds"
            )
        if self.search is not None and self.tune is not None and self.tune.lr:
            raise ValueError(
                "tune: and search: both choose hyper-parameters, so a study has one of them: drop tune: "
                "and put the learning rate in the search (search.space: {train.lr: {low: 1.0e-5, high: "
                "1.0e-3, log: true}}), or drop search: and let tune: {lr: true} tune the rate of each "
                "variant of a grid"
            )
        for name, body in self.variants.items():
            if "lr_range" in body:
                try:
                    check_lr_range(name, body["lr_range"])
                except TuneoffError as exc:
                    raise ValueError(str(exc)) from None
        if self.search is not None and (self.grid or any("grid" in v for v in self.variants.values())):
            raise ValueError(
                "search: a study has either a grid or a search; give the grid's values to the search as "
                "`choices` in search.space"
            )
        for name, body in (self.variants or {"base": {}}).items():
            if self.search is not None and not self.search.space and not body.get("space"):
                raise ValueError(
                    f"search.space is empty and variant {name!r} has no space of its own: nothing to search"
                )
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
        """What identifies the study's runs: how verdicts are read from them (analysis, decide) and whether it adds
        seeds until decided (until_decided) are left out, so a changed margin re-reads the results instead of refusing
        them as another study's, and a finished study can go on in decide mode."""
        # until_decided adds seeds to the same runs: a finished fixed study continues in decide mode with --resume
        runs = self.model_dump(
            mode="json", exclude={"analysis", "decide", "differences", "description", "until_decided"}
        )
        return hashlib.sha256(yaml.safe_dump(runs, sort_keys=False).encode()).hexdigest()[:16]


def load_spec(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> StudySpec:
    tree = read_yaml(path or DEFAULT_STUDY)
    spec = spec_from_dict(tree, overrides, str(path or "built-in default study"))
    if path is not None:
        check_relative_paths(tree, Path(path))
    return spec


# Keys whose values may be local paths: the data files and a local model directory.
PATH_KEYS = ("data.name", "data.validation_file", "data.test_file", "model.name")


def check_relative_paths(tree, study_file: Path, key: str = "") -> None:
    """Relative paths in a study are read from the working directory, as on the command line (``tuneoff train``), not
    from the study file's folder. A path that is missing there but present beside the study file is the one mistake
    this makes likely: say so before anything loads, with the two ways out."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            check_relative_paths(value, study_file, f"{key}.{name}" if key else str(name))
        return
    if isinstance(tree, list):
        for value in tree:
            check_relative_paths(value, study_file, key)
        return
    if not isinstance(tree, str) or not key.endswith(PATH_KEYS) or Path(tree).is_absolute() or Path(tree).exists():
        return
    beside = study_file.parent / tree
    if study_file.parent.resolve() != Path.cwd().resolve() and beside.exists():
        raise TuneoffError(
            f"{study_file}: {key}={tree!r} is not in the working directory ({Path.cwd()}) but is beside "
            f"the study file. Relative paths in a study are read from where tuneoff runs, as on the "
            f"command line: run from {study_file.parent.resolve()}, or write the path as "
            f"{beside.resolve()}."
        )


def spec_from_dict(
    tree: dict, overrides: list[str] | tuple[str, ...] = (), source: str = "the study mapping"
) -> StudySpec:
    """A study from a mapping (a YAML file's content, or a dict in a notebook) with ``key=value`` overrides."""
    tree = copy.deepcopy(tree)
    check_tree(tree, source)
    for key, value in parse_overrides(list(overrides)):
        set_dotted(tree, key, value)
    try:
        return StudySpec.model_validate(tree)
    except ValidationError as exc:
        raise TuneoffError(format_validation_error(exc, source, StudySpec)) from exc


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
        if (
            key == "method"
            and isinstance(value, dict)
            and value.get("name") not in (None, (out.get("method") or {}).get("name"))
        ):
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
                raise TuneoffError(
                    f"grid.{key}: each value must be a list of {len(fields)} values, one per field "
                    f"(e.g. [[4, 8], [8, 16]]); got {bad[0]!r}."
                )
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
        body.pop("lr_range", None)  # the variant's learning-rate prior for the tuning phase (protocol.py)
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
                    raise TuneoffError(
                        f"Study {spec.name!r}: two runs would both be called {run_id!r}; rename a variant."
                    )
                seen.add(run_id)
                runs.append(PlannedRun(run_id, variant, point, seed, config))
    if not runs:
        raise TuneoffError(f"Study {spec.name!r} expands to no runs: add variants, grid values or seeds.")
    return runs


def study_dir(results: str | Path, name: str) -> Path:
    return Path(results) / safe_name(name)


def metric_note(spec: StudySpec, runs: list[PlannedRun]) -> str | None:
    """A warning when training chooses on another measure than the verdict decides on: runs stop early and the
    tuning phase picks rates on ``train.metric_for_best``, the verdict ranks on ``analysis.metric``."""
    other = sorted({r.config.train.metric_for_best for r in runs} - {spec.analysis.metric})
    if not other:
        return None
    count = sum(r.config.train.metric_for_best != spec.analysis.metric for r in runs)
    tuned = " (and, tuned, their learning rate)" if spec.tune is not None and spec.tune.lr else ""
    return (
        f"study {spec.name!r}: analysis.metric is {spec.analysis.metric} but {count} of {len(runs)} runs choose "
        f"their best checkpoint{tuned} on train.metric_for_best {' / '.join(other)}: the verdict would rank on one "
        f"measure what training chose on another. Set base.train.metric_for_best: {spec.analysis.metric} unless "
        "that is what you mean."
    )


def dry_run(spec: StudySpec) -> list[dict]:
    """Each run of the study with its recipe and its protocol phase (validated, nothing loaded or downloaded): with
    ``tune:``, a condition's tuning trials at their learning rates, then its seeds at the best of them."""
    rows = []
    for cond in conditions(spec, expand(spec)):
        for run in cond.trials:
            rows.append(
                _recipe(run, "tune", f"{run.config.train.lr:g} (trial {run.params['trial']} of {len(cond.trials)})")
            )
        for run in cond.runs:
            lr = (
                f"tuned: the best of the {len(cond.trials)} trials on validation (prior {cond.lr_range[0]:g} to "
                f"{cond.lr_range[1]:g})"
                if cond.tuned
                else None
            )
            rows.append(_recipe(run, "final", lr))
    return rows


def _recipe(run: PlannedRun, phase: str, lr: str | None) -> dict:
    c, t = run.config, run.config.train
    params = ", ".join(f"{k}={v}" for k, v in c.method.model_dump(exclude_defaults=True).items() if k != "name")
    hub = [r for r in (model_repo(c.model.name), data_repo(c.data)) if r]
    stop = f", early stopping after {t.patience} evaluations without gain" if t.patience else ""
    loss = (f", label smoothing {t.label_smoothing:g}" if t.label_smoothing else "") + (
        f", class_weight {t.class_weight}" if t.class_weight != "none" else ""
    )
    return {
        "run": run.run_id,
        "phase": phase,
        "method": f"{c.method.name} ({params or 'defaults'})",
        "model": c.model.name,
        "data": c.data.name,
        "budget": t.max_steps and f"{t.max_steps} steps" or f"{t.epochs} epoch(s)",
        "stop": stop,
        "lr": lr or t.lr or f"{get_method(c.method.name).default_lr:g} (method default)",
        "batch": f"{t.batch_size} x {t.grad_accum}",
        "max_length": c.data.max_length,
        "schedule": f"{t.optimizer} {t.scheduler}, warmup {t.warmup_steps if t.warmup_steps is not None else f'{t.warmup_ratio:.0%}'}{loss}",
        "hub": ", ".join(hub) or "-",
    }


def require_hub(name: str, runs: list[PlannedRun]) -> None:
    """Before anything runs: every hub model and dataset of the study can be had (hub reachable, or cached)."""

    needed: dict[str, str] = {}
    for run in runs:
        if (repo := model_repo(run.config.model.name)) is not None:
            needed[repo] = "model"
        if (repo := data_repo(run.config.data)) is not None:
            needed[repo] = "dataset"
    if needed:
        hub.require(needed, f"Study {name!r}")
