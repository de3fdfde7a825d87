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
    result = runner.invoke(
        app,
        [
            "train",
            "--no-progress",
            *tiny_overrides(
                tiny_bert,
                toy_csv,
                out,
                **{"train.epochs": 2, "train.eval_every": 5, "train.report_to": "[mlflow,tensorboard]"},
            ),
        ],
    )
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

    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "tracked",
        seeds=[1],
        train={"epochs": 1, "eval_every": None, "report_to": ["mlflow"]},
        variants={"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora", "r": 4}}},
    )
    results = tmp_path / "results"
    assert runner.invoke(app, ["run", str(path), "--results", str(results)]).exit_code == 0
    mlflow.set_tracking_uri(f"sqlite:///{(results / 'tracked' / 'runs').resolve() / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert set(runs["tags.mlflow.runName"]) == {"head-s1", "lora-s1", "tracked report"}


def wandb_records(path) -> list:
    """The records of a W&B run file (``run-<id>.wandb``): W&B's LevelDB-style log (a 7-byte file header, 32 KiB
    blocks, each record a 7-byte header: CRC, length, FULL/FIRST/MIDDLE/LAST) of ``Record`` protobufs. W&B's own
    reader now lives in its Go core, so the test reads the format itself."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, records, buf = 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: the record is whole
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def test_a_run_reported_to_wandb_offline(tiny_bert, toy_csv, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    import json

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    out = tmp_path / "runs"
    result = runner.invoke(
        app,
        [
            "train",
            "--no-progress",
            *tiny_overrides(
                tiny_bert, toy_csv, out, **{"train.epochs": 2, "train.eval_every": 5, "train.report_to": "[wandb]"}
            ),
        ],
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir() and p.name != "wandb"]
    (log,) = (out / "wandb").glob("offline-run-*/run-*.wandb")  # under the output directory, not the working one
    records = wandb_records(log)
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == run_dir.name and run.project == "tuneoff"
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    assert config["method"]["name"] == "lora" and config["train"]["epochs"] == 2
    history = [
        {item.nested_key[0] if item.nested_key else item.key: json.loads(item.value_json) for item in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    steps = [h["_step"] for h in history if "validation/accuracy" in h]
    assert steps[:2] == [5, 10] and len(steps) >= 3  # every evaluation, at its optimizer step
    summary = {
        item.key or "/".join(item.nested_key): json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for item in r.summary.update
    }
    assert 0 <= summary["test/accuracy"] <= 1 and summary["resources/trainable_params"] > 0


def test_wandb_online_without_a_key_fails_before_training(tiny_bert, toy_csv, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    for name in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_DISABLED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    out = tmp_path / "runs"
    result = runner.invoke(
        app, ["train", "--no-progress", *tiny_overrides(tiny_bert, toy_csv, out, **{"train.report_to": "[wandb]"})]
    )
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "wandb login" in text and "WANDB_MODE=offline" in text and "nothing was trained" in text
    assert not out.exists() or not any(p.is_dir() and p.name != "wandb" for p in out.iterdir())
