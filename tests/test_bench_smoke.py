"""The GPU benchmark's code, run on the CPU with a tiny BERT (--smoke): a GPU session should spend its time
measuring, not debugging the script. Speed claims live in bench/results/, never in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_gpu_benchmark_script_runs_in_smoke_mode(tmp_path):
    out = tmp_path / "gpu"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "bench_gpu.py"),
            "--smoke",
            "--seq",
            "16",
            "--steps",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.with_suffix(".json").read_text())
    methods = {r["method"] for r in result["rows"]}
    assert methods == {"full", "partial_top2", "head", "lora", "lora_fa", "lora_lean"}
    at8 = {r["method"]: r for r in result["rows"] if r["batch"] == 8}
    assert all(r["planned_mb"] > 0 and r["tflops"] > 0 for r in at8.values())
    assert at8["head"]["planned_mb"] < at8["lora"]["planned_mb"] < at8["full"]["planned_mb"]
    assert "| lora | 8 |" in out.with_suffix(".md").read_text()


def test_study_benchmark_trainer_script_runs_each_kind_of_run(tiny_bert, toy_csv):
    """bench_study.py's Trainer side, one run per kind (plain, with its own optimizer, with early stopping), on a tiny
    BERT: its first real use lost a 12-minute tuneoff side to a renamed TrainingArguments keyword."""
    for method, extra in (("lora", {}), ("lora_plus", {"loraplus_lr_ratio": 4}), ("full", {})):
        config = {
            "model": {"name": tiny_bert},
            "data": {"name": toy_csv, "max_length": 16},
            "method": {"name": method, **extra},
            "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "eval_every": 4, "patience": 2, "seed": 1},
        }
        proc = subprocess.run(
            [sys.executable, str(REPO / "bench" / "bench_study.py"), "--one", f"r-{method}", json.dumps(config)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        (line,) = [entry for entry in proc.stdout.splitlines() if entry.startswith("RESULT ")]
        assert 0.0 <= json.loads(line[7:])["test_accuracy"] <= 1.0


def test_early_stopping_replay_finds_a_run_stopped_while_its_loss_fell(tmp_path):
    """bench/replay_early_stopping.py on two hand-made runs: one stopped at the majority class while its validation
    loss fell (it would go on), one stopped at a real plateau (it would not)."""
    import yaml

    def run(name, accuracies, losses):
        d = tmp_path / "study" / "runs" / name
        d.mkdir(parents=True)
        (d / "metrics.json").write_text(json.dumps({"stopped_early": True, "test": {"accuracy": 0.5}}))
        (d / "config.yaml").write_text(yaml.safe_dump({"train": {"patience": 3}}))
        (d / "history.jsonl").write_text(
            "".join(
                json.dumps({"step": 25 * i, "epoch": i / 4, "val_accuracy": a, "val_loss": l}) + "\n"
                for i, (a, l) in enumerate(zip(accuracies, losses), 1)
            )
        )

    run("stuck", [0.538, 0.534, 0.534, 0.534], [1.95, 1.41, 1.19, 1.02])
    run("plateau", [0.7, 0.9, 0.89, 0.88, 0.9], [0.9, 0.5, 0.45, 0.4, 0.38])
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "replay_early_stopping.py"),
            str(tmp_path / "study"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = next((tmp_path / "out").glob("early-stopping-replay-*.md")).read_text()
    assert "## study: 1 of 2 early-stopped runs would have gone on" in text and "| stuck |" in text
    assert "| plateau |" not in text


@pytest.mark.slow
def test_isolate_benchmark_runs_a_given_study_on_both_sides(tiny_bert, toy_csv, tmp_path):
    """bench_isolate.py on a two-run tiny study: both sides finish, every run's peak is compared, the table is written
    where --out says (the real benchmark runs the default study for 11 minutes a side)."""
    from conftest import write_study

    study = write_study(tmp_path, tiny_bert, toy_csv, "isolate_smoke", seeds=(1,), train={"epochs": 1})
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bench_isolate.py"), str(study), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TUNEOFF_PARALLEL": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (result,) = (tmp_path / "out").glob("isolate-isolate_smoke-*.json")
    data = json.loads(result.read_text())
    assert data["runs_compared"] == 2 and set(data["peak_overstatement_mb"]) == {"partial_top1-s1", "lora-s1"}
    assert data["shared_workers"]["runs_in_a_reused_worker"] == 1  # one worker: the second run follows the first
    assert data["isolated_runs"]["runs_in_a_reused_worker"] == 0
    assert "study isolate_smoke" in result.with_suffix(".md").read_text()
