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
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneoff.config import RunConfig, build_config, format_validation_error, parse_overrides, read_yaml, set_dotted
from tuneoff.errors import TuneoffError
from tuneoff.rundir import read_json, safe_name
from tuneoff.store import Store

DEFAULT_STUDY = Path(__file__).parent / "studies" / "default.yaml"


class StudySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict, description="A run config: model, data, method, train.")
    variants: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Named method variants.")
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="Dotted key -> values, for every variant.")
    seeds: list[int] = Field(default_factory=lambda: [42], min_length=1)
    max_runs: int = Field(64, ge=1, description="Refuse larger grids unless --yes.")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def digest(self) -> str:
        return hashlib.sha256(self.to_yaml().encode()).hexdigest()[:16]


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
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise TuneoffError(f"grid.{key}: must be a non-empty list of values, e.g. [4, 8, 16].")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


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


def prepare(spec: StudySpec, results: str | Path, resume: bool, yes: bool) -> tuple[Store, list[PlannedRun], Path]:
    """Check the study against the store, register its runs, and return what to run."""
    runs = expand(spec)
    if len(runs) > spec.max_runs and not yes:
        raise TuneoffError(
            f"Study {spec.name!r} would launch {len(runs)} runs, more than max_runs={spec.max_runs}. "
            "Pass --yes to run them all, or raise max_runs in the study file."
        )
    store = Store(results)
    directory = study_dir(results, spec.name)
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
    store.add_study(spec.name, spec.to_yaml(), spec.digest(), directory)
    for run in runs:
        store.plan_run(spec.name, run.run_id, run.variant, run.params, run.seed, run.config.to_yaml())
    return store, runs, directory


def execute(spec: StudySpec, results: str | Path, resume: bool = False, yes: bool = False, say=print,
            progress: bool = False) -> Path:
    """Run every unfinished run of the study in order; a failed run is recorded and the study goes on."""
    from tuneoff.train import train_with_oom_retry

    store, runs, directory = prepare(spec, results, resume, yes)
    done = {r["run_id"] for r in store.runs(spec.name, "done")}
    todo = [r for r in runs if r.run_id not in done]
    say(f"study {spec.name}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run")
    durations: list[float] = []
    for i, run in enumerate(todo, start=1):
        run_path = directory / "runs" / run.run_id
        if (run_path / "run.json").is_file():  # finished before a crash, not yet indexed: index it
            store.mark_done(spec.name, run.run_id, run_path, read_json(run_path / "metrics.json"),
                            read_json(run_path / "resources.json"), read_json(run_path / "run.json"))
            say(f"[{i}/{len(todo)}] {run.run_id}: found complete on disk, indexed")
            continue
        eta = f", ETA {sum(durations) / len(durations) * (len(todo) - i + 1) / 60:.1f} min" if durations else ""
        say(f"[{i}/{len(todo)}] {run.run_id} ({run.config.method.name}){eta}")
        store.mark_running(spec.name, run.run_id)
        t0 = time.perf_counter()
        config = run.config.model_copy(update={"output_dir": str(directory / "runs")})
        try:
            # resume=True: a run interrupted mid-way continues from its last checkpoint.
            result = train_with_oom_retry(config, progress=progress, run_id=run.run_id, resume=True, say=say)
        except TuneoffError as exc:
            store.mark_failed(spec.name, run.run_id, str(exc))
            say(f"    failed: {exc}")
            continue
        except Exception as exc:  # a bug or a library error: recorded with its traceback, the study goes on
            store.mark_failed(spec.name, run.run_id, "".join(traceback.format_exception(exc)))
            say(f"    failed: {type(exc).__name__}: {exc}")
            continue
        durations.append(time.perf_counter() - t0)
        store.mark_done(spec.name, run.run_id, result.run_dir, result.metrics, result.resources,
                        read_json(result.run_dir / "run.json"))
        say(f"    done in {durations[-1]:.0f}s: test accuracy {result.metrics['test']['accuracy']:.4f}")
    store.close()
    return directory
