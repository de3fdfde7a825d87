"""`tuneoff inspect`: numbers on a small fixed fixture match a hand count; max_length=auto uses the recommendation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import make_tokenizer, tiny_overrides
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.config import DataConfig, build_config
from tuneoff.data.corpus import load_corpus
from tuneoff.data.inspection import inspect_corpus, recommend_max_length
from tuneoff.training.loop import train


@pytest.fixture()
def fixture_files(tmp_path):
    # train: 6 rows, "good" x4 / "bad" x2 (imbalanced 2:1 -> not flagged at 3x), one duplicate, one near-empty;
    # test: 2 rows, one of them also in train (leakage).
    train = pd.DataFrame(
        {
            "text": ["good film", "good film", "the plot was very good", "it", "bad", "bad dull plot"],
            "label": ["good", "good", "good", "good", "bad", "bad"],
        }
    )
    val = pd.DataFrame({"text": ["nice", "awful"], "label": ["good", "bad"]})
    test = pd.DataFrame({"text": ["Good  film", "sad story"], "label": ["good", "bad"]})
    paths = {}
    for name, df in (("train", train), ("val", val), ("test", test)):
        paths[name] = tmp_path / f"{name}.csv"
        df.to_csv(paths[name], index=False)
    return paths


def test_inspection_matches_a_hand_count(fixture_files):
    corpus = load_corpus(
        DataConfig(
            name=str(fixture_files["train"]),
            validation_file=str(fixture_files["val"]),
            test_file=str(fixture_files["test"]),
        )
    )
    report = inspect_corpus(corpus, make_tokenizer(), model_max=64)
    train = report["splits"]["train"]
    assert train["rows"] == 6
    assert train["labels"] == {"good": {"count": 4, "share": 0.6667}, "bad": {"count": 2, "share": 0.3333}}
    assert train["imbalanced"] is False
    assert train["duplicates"] == 1 and train["near_empty"] == 1  # "good film" twice; "it" has 2 characters
    # Tokens with [CLS] and [SEP]: good film=4, good film=4, the plot was very good=7, it=3, bad=3, bad dull plot=5
    assert train["tokens"] == {
        "min": 3,
        "median": 4.0,
        "p95": pytest.approx(6.5),
        "p99": pytest.approx(6.9),
        "max": 7,
        "mean": pytest.approx(26 / 6),
    }
    assert train["chars"]["max"] == len("the plot was very good")
    assert train["truncated_share"][32] == 0.0
    assert report["leakage"] == {
        "train&validation": 0,
        "train&test": 1,
        "validation&test": 0,
    }  # "Good  film" ~ "good film"
    assert report["recommended_max_length"] == 8 and report["recommended_truncates"] == 0.0


def test_recommendation_truncates_at_most_one_percent():
    rng = np.random.default_rng(0)
    lengths = rng.lognormal(4, 0.8, size=5000).astype(int) + 3
    rec = recommend_max_length(lengths, model_max=4096)
    assert (lengths > rec).mean() <= 0.01 and rec % 8 == 0
    assert recommend_max_length(lengths, model_max=128) == 128  # never beyond what the model takes


def test_inspect_command_writes_json_and_plots(fixture_files, tiny_bert, tmp_path):
    out = tmp_path / "inspect"
    result = CliRunner().invoke(
        app,
        [
            "inspect",
            str(fixture_files["train"]),
            f"data.test_file={fixture_files['test']}",
            "--model",
            tiny_bert,
            "--out",
            str(out),
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    assert "recommended max_length" in result.output and "leakage" in result.output
    # how the splits were made is printed, not only in the JSON (here: validation held out of train)
    assert "data: validation = 10% of train, stratified" in " ".join(result.output.split())
    data = json.loads((out / "inspect.json").read_text())
    assert data["splits"]["test"]["rows"] == 2
    assert (out / "histogram.png").read_bytes()[:4] == b"\x89PNG" and (out / "boxplot.png").stat().st_size > 1000


def test_max_length_auto_is_resolved_and_saved(tiny_bert, toy_csv, tmp_path):
    cfg = build_config(
        {}, tiny_overrides(tiny_bert, toy_csv, tmp_path, **{"data.max_length": "auto", "train.epochs": 1})
    )
    result = train(cfg, progress=False)
    saved = (result.run_dir / "config.yaml").read_text()
    # toy texts are 4-9 words + [CLS]/[SEP]: p99 is 11 tokens -> 16
    assert "max_length: 16" in saved


def test_inspect_points_an_imbalanced_training_split_at_class_weight(tiny_bert, tmp_path):
    path = tmp_path / "skewed.csv"
    pd.DataFrame(
        {
            "text": [f"good film {i}" for i in range(40)] + [f"bad film {i}" for i in range(10)],
            "label": ["good"] * 40 + ["bad"] * 10,
        }
    ).to_csv(path, index=False)
    result = CliRunner().invoke(
        app, ["inspect", str(path), "--model", tiny_bert, "--out", str(tmp_path / "i")], env={"COLUMNS": "300"}
    )
    assert result.exit_code == 0, result.output
    assert "train is imbalanced" in result.output and "train.class_weight=balanced" in " ".join(result.output.split())
