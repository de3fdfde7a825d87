"""`tuneoff export RUN --format onnx`: a run as an ONNX model (adapters merged first), loaded back with ONNX Runtime and
checked against the run's own predictions.csv on every test example before it is kept."""

from __future__ import annotations

import json

import pytest
from conftest import tiny_overrides
from typer.testing import CliRunner

from tuneoff.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    "method, extra", [("lora", ["method.r=4"]), ("full", []), ("head", []), ("partial", ["method.k=1"])]
)
def test_a_run_exports_to_onnx_and_agrees_with_its_own_predictions(method, extra, tiny_bert, toy_csv, tmp_path):
    trained = runner.invoke(
        app,
        [
            "train",
            *tiny_overrides(tiny_bert, toy_csv, tmp_path / "runs"),
            "train.epochs=2",
            f"method.name={method}",
            *extra,
            "--no-progress",
        ],
    )
    assert trained.exit_code == 0, trained.output
    run_dir = next((tmp_path / "runs").iterdir())
    result = runner.invoke(app, ["export", str(run_dir), "--format", "onnx", "--int8"])
    assert result.exit_code == 0, result.output
    record = json.loads((run_dir / "onnx" / "export.json").read_text())
    fp32, int8 = record["files"]["fp32"], record["files"]["int8"]
    assert fp32["label_agreement"] == 1.0 and fp32["max_probability_difference"] < 1e-3
    assert int8["label_agreement"] >= 0.9 and int8["bytes"] > 0 and fp32["latency_ms_p50"] > 0
    assert {"model.onnx", "model.int8.onnx", "config.json", "export.json"} <= {
        p.name for p in (run_dir / "onnx").iterdir()
    }
    assert "labels agree with the run on 100.00%" in " ".join(result.output.split())


def test_only_onnx_is_an_export_format(tmp_path):
    result = runner.invoke(app, ["export", str(tmp_path), "--format", "tflite"])
    assert result.exit_code == 2 and "onnx is the format tuneoff exports" in " ".join(result.output.split())
