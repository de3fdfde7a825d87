"""Experiment tracking where teams already look: a real local MLflow store and a real TensorBoard event file,
read back with their own readers, offline."""

from __future__ import annotations

import pytest
from conftest import tiny_overrides, write_study
from typer.testing import CliRunner

from tuneoff.cli.app import app

runner = CliRunner()


def test_a_run_reported_to_mlflow_and_tensorboard(tiny_bert, toy_csv, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "runs"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # MLflow's artifacts must not land in the user's working directory
    result = runner.invoke(app, ["train", "--no-progress", *tiny_overrides(tiny_bert, toy_csv, out, **{
        "train.epochs": 2, "train.eval_every": 5, "train.report_to": "[mlflow,tensorboard]"})])
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name not in ("tensorboard", "mlartifacts")]

    mlflow.set_tracking_uri(f"sqlite:///{out.resolve() / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tuneoff"])
    assert len(runs) == 1 and runs.iloc[0]["tags.mlflow.runName"] == run_dir.name
    row = runs.iloc[0]
    assert row["params.method.name"] == "lora" and row["params.train.epochs"] == "2"
    assert 0 <= row["metrics.test.accuracy"] <= 1 and row["metrics.resources.trainable_params"] > 0
    history = mlflow.MlflowClient().get_metric_history(row["run_id"], "validation.accuracy")
    steps = sorted(m.step for m in history)
    assert steps[:2] == [5, 10] and len(steps) >= 3  # every evaluation, at its optimizer step
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(row["run_id"], "model")}
    assert "model/adapter_model.safetensors" in artifacts
    assert (out / "mlartifacts").is_dir() and not (tmp_path / "elsewhere" / "mlruns").exists()  # beside the store

    events = EventAccumulator(str(out / "tensorboard" / run_dir.name))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert "validation/accuracy" in scalars and "test/accuracy" in scalars
    assert [e.step for e in events.Scalars("validation/accuracy")][:2] == [5, 10]


def test_a_study_is_one_experiment(tiny_bert, toy_csv, tmp_path):
    mlflow = pytest.importorskip("mlflow")

    path = write_study(tmp_path, tiny_bert, toy_csv, "tracked", seeds=[1],
                       train={"epochs": 1, "eval_every": None, "report_to": ["mlflow"]},
                       variants={"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora", "r": 4}}})
    results = tmp_path / "results"
    assert runner.invoke(app, ["run", str(path), "--results", str(results)]).exit_code == 0
    mlflow.set_tracking_uri(f"sqlite:///{(results / 'tracked' / 'runs').resolve() / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert set(runs["tags.mlflow.runName"]) == {"head-s1", "lora-s1", "tracked report"}
