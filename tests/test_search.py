"""Hyper-parameter search in a study: Optuna TPE over config fields, a cost constraint, pruning, resume, report."""

from __future__ import annotations

import json
import subprocess
import sys

import optuna
import pandas as pd
import pytest
import yaml
from conftest import crashing_env

from tuneoff.core.errors import TuneoffError
from tuneoff.results.store import Store
from tuneoff.study.execution import execute
from tuneoff.study.executors import Job, run_job
from tuneoff.study.search import JOURNAL, _storage
from tuneoff.study.spec import expand, load_spec


def search_study(tmp_path, model, data, name="s", **search):
    spec = {
        "name": name,
        "base": {
            "model": {"name": model},
            "data": {"name": data, "max_length": 16},
            "method": {"name": "lora", "r": 4},
            "train": {"epochs": 1, "batch_size": 16, "lr": 2e-2, "eval_every": 4},
        },
        "search": {"trials": 4, "space": {"method.r": {"choices": [2, 16]}}, "pruning": False, **search},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize(
    "search, message",
    [
        ({"metric": "test.accuracy"}, "leaks"),
        ({"metric": "accuracy"}, "validation.<metric>"),
        ({"space": {"train.lr": {"low": 1e-2, "high": 1e-4}}}, "low. < .high"),
        ({"space": {"train.lr": {"low": 0, "high": 1e-2, "log": True}}}, "low. > 0"),
        ({"constraints": {"peak_rss_mb": 10}}, "resources.<field>"),
        ({"space": {}}, "nothing to search"),
        ({"space": {"train.lr": {"choices": [1e-3], "low": 1e-4}}}, "either a non-empty"),
    ],
)
def test_bad_search_sections(tmp_path, search, message):
    with pytest.raises(TuneoffError, match=message):
        load_spec(search_study(tmp_path, "m", "d", **search))


def test_search_and_grid_do_not_mix(tmp_path):
    path = search_study(tmp_path, "m", "d")
    with pytest.raises(TuneoffError, match="either a grid or a search"):
        load_spec(path, ["grid={train.lr: [1e-3, 1e-2]}"])


def test_unknown_searched_field_fails_before_training(tiny_bert, toy_csv, tmp_path):
    path = search_study(tmp_path, tiny_bert, toy_csv, space={"method.rank": {"choices": [2, 4]}})
    with pytest.raises(TuneoffError, match=r"search.space.method.rank"):
        execute(load_spec(path), tmp_path / "res")
    assert not list((tmp_path / "res" / "s" / "runs").iterdir())


def test_search_respects_a_cost_constraint_and_reports_the_best(tiny_bert, toy_csv, tmp_path):
    """LoRA r=16 trains more parameters than the limit allows, r=2 fewer: whatever the accuracies, the best feasible
    trial must be an r=2 one."""
    from tuneoff.methods import get_method  # noqa: F401 - registry import for counts below
    from tuneoff.report.build import build

    path = search_study(tmp_path, tiny_bert, toy_csv, constraints={"resources.trainable_params": 700})
    execute(load_spec(path), tmp_path / "res")
    store = Store(tmp_path / "res")
    rows = store.runs("s")
    store.close()
    assert [r["run_id"] for r in rows] == [f"base-trial{i:03d}" for i in range(4)]
    counts = {json.loads(r["params"])["method.r"]: json.loads(r["resources"])["trainable_params"] for r in rows}
    assert counts.get(2, 0) <= 700 < counts.get(16, 10**9)
    study = optuna.load_study(study_name="s:base", storage=_storage(tmp_path / "res"))
    assert len(study.trials) == 4 and (tmp_path / "res" / JOURNAL).is_file()
    feasible = [t for t in study.trials if t.params["method.r"] == 2]
    assert all(t.user_attrs["constraint_excess"][0] <= 0 for t in feasible)
    assert all(t.user_attrs["constraint_excess"][0] > 0 for t in study.trials if t.params["method.r"] == 16)

    report = build("s", tmp_path / "res").read_text()
    assert "<h2>Search</h2>" in report and "trainable_params &le; 700" in report
    summary = (tmp_path / "res" / "s" / "report" / "summary.md").read_text()
    trials = pd.read_csv(tmp_path / "res" / "s" / "report" / "search_trials.csv")
    assert list(trials.trial) == [0, 1, 2, 3] and set(trials["method.r"]) <= {2, 16}
    assert list(trials.feasible) == [r == 2 for r in trials["method.r"]]
    assert "## Search" in summary
    if feasible:
        best = max(feasible, key=lambda t: t.value)
        assert f"base r=2 trial={best.number}" in summary, "the comparison uses the best feasible trial"
        assert "r=16" not in summary


@pytest.mark.parametrize("processes", [1, 2])
def test_a_trial_behind_the_median_is_pruned(tiny_bert, toy_csv, tmp_path, processes):
    """Three earlier trials reported a validation accuracy no run can reach at every step, so the median pruner stops
    the new trial at its first evaluation; the run is recorded as pruned and leaves no directory behind. On two
    processes (gloo), process 0 decides and both stop, instead of one waiting for the other forever."""
    storage = _storage(tmp_path)
    study = optuna.create_study(study_name="p:base", storage=storage, direction="maximize")
    for _ in range(3):
        trial = study.ask()
        for step in range(1, 50):
            trial.report(1.01, step)
        study.tell(trial, 1.01)
    trial = study.ask()
    spec = load_spec(search_study(tmp_path, tiny_bert, toy_csv, name="p"))
    config = expand(spec)[0].config.model_copy(update={"output_dir": str(tmp_path / "runs")})
    ref = {
        "results": str(tmp_path),
        "study": "p:base",
        "trial_id": trial._trial_id,
        "metric": "accuracy",
        "pruning": True,
        "warmup": 0,
    }
    from functools import partial

    from tuneoff.study.search import pruning_callback

    outcome = run_job(Job("p-trial003", config, partial(pruning_callback, ref)), processes=processes)
    assert outcome.status == "pruned" and "pruned at step 4" in outcome.error
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    assert list(study.trials[-1].intermediate_values) == [4], "reported at its first evaluation, then stopped"


def test_search_killed_mid_trial_resumes_that_trial(tiny_bert, toy_csv, tmp_path):
    path = search_study(
        tmp_path, tiny_bert, toy_csv, trials=2, space={"train.lr": {"low": 1e-3, "high": 5e-2, "log": True}}
    )
    spec = yaml.safe_load(path.read_text())
    spec["base"]["train"]["checkpoint_every"] = 3
    path.write_text(yaml.safe_dump(spec))
    killed = subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", str(path), "--results", str(tmp_path / "res")],
        env=crashing_env("step:5"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    first_lr = optuna.load_study(study_name="s:base", storage=_storage(tmp_path / "res")).trials[0].params["train.lr"]
    execute(load_spec(path), tmp_path / "res", resume=True)
    study = optuna.load_study(study_name="s:base", storage=_storage(tmp_path / "res"))
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]
    assert study.trials[0].params["train.lr"] == first_lr
    store = Store(tmp_path / "res")
    first = store.runs("s")[0]
    store.close()
    assert json.loads(first["resources"])["resumed_from_step"] == "step-0000003"


def test_variants_search_their_own_fields(tiny_bert, toy_csv, tmp_path):
    """LoRA searches its rank, partial its number of layers; the shared space (lr) applies to both."""
    path = tmp_path / "v.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "v",
                "base": {
                    "model": {"name": tiny_bert},
                    "data": {"name": toy_csv, "max_length": 16},
                    "train": {"epochs": 1, "batch_size": 32},
                },
                "variants": {
                    "lora": {"method": {"name": "lora"}, "space": {"method.r": {"choices": [2, 4]}}},
                    "partial": {"method": {"name": "partial"}, "space": {"method.k": {"low": 1, "high": 2}}},
                },
                "search": {
                    "trials": 2,
                    "pruning": False,
                    "space": {"train.lr": {"low": 1e-3, "high": 1e-2, "log": True}},
                },
            }
        )
    )
    execute(load_spec(path), tmp_path / "res")
    store = Store(tmp_path / "res")
    params = {r["run_id"]: json.loads(r["params"]) for r in store.runs("v", "done")}
    store.close()
    assert sorted(params) == ["lora-trial000", "lora-trial001", "partial-trial000", "partial-trial001"]
    assert all(
        set(p) == {"trial", "train.lr", "method.r"} and p["method.r"] in (2, 4)
        for k, p in params.items()
        if k.startswith("lora")
    )
    assert all(
        set(p) == {"trial", "train.lr", "method.k"} and p["method.k"] in (1, 2)
        for k, p in params.items()
        if k.startswith("partial")
    )


def test_a_variant_space_without_a_search_is_an_error(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        yaml.safe_dump(
            {"name": "x", "variants": {"lora": {"method": {"name": "lora"}, "space": {"method.r": {"choices": [2]}}}}}
        )
    )
    with pytest.raises(TuneoffError, match="needs a search: section"):
        load_spec(path)
