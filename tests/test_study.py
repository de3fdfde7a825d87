"""Studies: expansion, the results store, resume after SIGKILL, bad study input, and the report."""

from __future__ import annotations

import html as _html
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import write_study
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.core.errors import TuneoffError
from tuneoff.study.execution import execute
from tuneoff.study.spec import expand, load_spec

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    "path",
    sorted((REPO / "studies").glob("*.yaml")) + [REPO / "src/tuneoff/studies/default.yaml"],
    ids=lambda p: p.name,
)
def test_every_example_study_validates(path):
    runs = expand(load_spec(path))
    assert runs and len({r.run_id for r in runs}) == len(runs)


def test_expansion_variants_grid_seeds():
    spec = load_spec(REPO / "studies/lora_rank_sweep.yaml")
    runs = expand(spec)
    assert len(runs) == (1 + 5 + 1) * 2 * 3  # full, five ranks, LoRA+; two datasets; three seeds
    r16 = [r for r in runs if r.run_id == "lora-imdb-r16-alpha32-s2"][0]
    assert (
        r16.config.method.name,
        r16.config.method.r,
        r16.config.method.alpha,
        r16.config.train.seed,
        r16.config.train.lr,
        r16.config.data.name,
    ) == ("lora", 16, 32, 2, 5e-4, "imdb")
    plus = [r for r in runs if r.variant == "lora_plus_ratio2"][0]
    assert plus.config.method.loraplus_lr_ratio == 2
    snli = expand(load_spec(REPO / "studies/lora_vs_partial_snli.yaml"))
    assert {(r.variant, r.config.model.name, r.config.train.lr) for r in snli} == {
        ("lora_r8_qv_bert", "bert-base", 1e-4),
        ("partial_top2_bert", "bert-base", 3e-5),
        ("lora_r8_qv_distilbert", "distilbert", 1e-4),
        ("partial_top2_distilbert", "distilbert", 5e-5),
    }
    assert all(r.config.model.classifier_dropout == 0.5 and r.config.train.epochs == 3 for r in snli)
    assert all(
        r.config.method.name == "partial" and not hasattr(r.config.method, "r") for r in snli if "partial" in r.variant
    )
    default = expand(load_spec(None, ["seeds=[7]"]))
    assert {r.config.method.name for r in default} == {"head", "partial", "lora", "lora_plus", "full"}
    assert {r.seed for r in default} == {7}


def test_a_variant_merges_into_the_base_key_by_key_mappings_included():
    """What docs/studies.md says of a variant's settings: a class_weight mapping adds to the base's, a string
    replaces it."""
    from tuneoff.study.spec import spec_from_dict

    base = {"model": {"name": "minilm"}, "data": {"name": "bbc_news"}, "train": {"class_weight": {"sport": 2}}}
    spec = spec_from_dict(
        {
            "name": "m",
            "base": base,
            "seeds": [1],
            "variants": {
                "more": {"method": {"name": "lora"}, "train": {"class_weight": {"tech": 3}}},
                "balanced": {"method": {"name": "lora"}, "train": {"class_weight": "balanced"}},
            },
        },
        (),
        "test",
    )
    weights = {r.variant: r.config.train.class_weight for r in expand(spec)}
    assert weights == {"more": {"sport": 2.0, "tech": 3.0}, "balanced": "balanced"}


@pytest.mark.parametrize(
    "body, message",
    [
        ({"name": "x", "grids": {}}, "grids: unknown key; did you mean 'grid'"),
        (
            {"name": "x", "tune": {"lr_range": [1e-5, 1e-3]}},
            r"tune.lr_range: unknown key; this section takes lr, .*trials",
        ),
        ({"name": "x", "grid": {"method.r": []}}, "grid.method.r: must be a non-empty list"),
        ({"name": "x", "variants": {"a": {"method": {"name": "lora", "rank": 4}}}}, "variant 'a'"),
        ({"name": "x", "seeds": []}, "seeds"),
        ({"name": "x", "seeds": [1, 2, 1]}, r"seeds: \[1\] appear more than once"),
        # a documented guarantee (docs/guarantees.md: inf and NaN refused everywhere): no rate is infinite, true is no number
        (
            {"name": "x", "variants": {"a": {"method": {"name": "lora"}, "lr_range": [1e-4, float("inf")]}}},
            r"variants.a.lr_range: give \[low, high\], two finite numbers",
        ),
        (
            {"name": "x", "variants": {"a": {"method": {"name": "lora"}, "lr_range": [True, 2]}}},
            r"variants.a.lr_range: give \[low, high\], two finite numbers .*got \[True, 2\]",
        ),
        # the trial that won would be replayed as a final run (its condition's seeds then include the one it was chosen on)
        ({"name": "x", "seeds": [0, 1], "tune": {"lr": True, "seed": 0}}, r"tune.seed \(0\) is also in seeds \[0, 1\]"),
    ],
)
def test_bad_study_files(tmp_path, body, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(TuneoffError, match=message):
        expand(load_spec(path))


def test_tiny_study_end_to_end_then_report_and_queries(tiny_bert, toy_csv, tmp_path):
    # 8 epochs: at write_study's 4, a CPU without native bf16 left neither condition significantly above the
    # majority class on 24 test examples (no best, so no verdict line to check)
    spec_path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        description="A toy:\n  sized for a test, not evidence.",
        differences={"train.epochs": "8, where the recipe ran 3"},
        train={"epochs": 8},
    )
    results = tmp_path / "results"
    result = runner.invoke(app, ["run", str(spec_path), "--results", str(results)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(results / "tuneoff.sqlite")
    rows = db.execute("SELECT run_id, status, versions, device, run_dir FROM runs ORDER BY run_id").fetchall()
    assert [r[:2] for r in rows] == [(f"{v}-s{s}", "done") for v in ("lora", "partial_top1") for s in (1, 2)]
    assert all('"peft"' in r[2] and r[3].startswith("cpu") and Path(r[4]).is_dir() for r in rows)
    report = results / "tiny" / "report"
    assert {"report.html", "summary.md", "summary.csv", "comparisons.csv", "per_class.csv"} <= {
        p.name for p in report.iterdir()
    }
    html = (report / "report.html").read_text()
    # quality, curves, cost, Pareto, confusion, reliability, errors, error gaps, data x2; nothing fetched from the web
    assert html.count("data:image/png;base64,") == 10
    # base64 payloads are stripped first: a plot's bytes spell "http" by chance (CI failed once on a PNG that did)
    page = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", html.split("<body>")[1].split("Study spec")[0])
    assert "http" not in page
    assert "Picked: " in html and "majority class" in html and "Most confidently wrong" in html
    pairs = pd.read_csv(report / "comparisons.csv")
    assert pairs["significant"].isin([True, False]).all() and "Holm" in (report / "summary.md").read_text()
    summary = pd.read_csv(report / "summary.csv")
    runs_only = summary[summary.method != "baseline"]
    assert set(runs_only.condition) == {"lora", "partial_top1"} and (runs_only.seeds == 2).all()
    assert summary[summary.method == "baseline"].condition.str.startswith("majority class").all()

    # The verdict card, the same in each front end: the terminal at the end of the run, the top of report.html and of
    # summary.md, the exported Markdown (below) and the notebook display.
    card = json.loads((report / "verdict.json").read_text())["groups"][0]["card_lines"]
    plain = [line.replace("**", "") for line in card]
    terminal = " ".join(result.output.split())
    assert all(" ".join(line.split()) in terminal for line in plain), (plain, result.output)
    assert html.index("The answer") < html.index("How to read this report")
    assert all(_html.escape(line.split(": ", 1)[-1]) in html for line in plain[1:])
    summary_md = (report / "summary.md").read_text()
    assert all(f"- {line}" in summary_md for line in card) and summary_md.index("## The answer") < summary_md.index(
        "How to read"
    )
    from tuneoff.api import load_study

    shown = load_study(results / "tiny")._repr_html_()
    assert all(_html.escape(line.split(": ", 1)[-1]) in shown for line in plain[1:])
    # ... and in the model card of each run of the recommended condition, beside the alternatives (the Hub reads it)
    from huggingface_hub import ModelCard

    recommended = json.loads((report / "verdict.json").read_text())["groups"][0]["recommended"]
    for run_dir in (results / "tiny" / "runs").glob(f"{recommended}-s*"):
        card_text = (run_dir / "model" / "README.md").read_text()
        assert card_text.count("## Chosen by a tuneoff study") == 1 and f"- {card[0]}" in card_text
        assert ModelCard.load(run_dir / "model" / "README.md").data.pipeline_tag == "text-classification"

    # Rebuilding the report trains nothing and gives the same tables.
    before = (report / "summary.csv").read_text()
    assert runner.invoke(app, ["report", str(results / "tiny")]).exit_code == 0
    assert (report / "summary.csv").read_text() == before
    # Exported as evidence: headed with what the study says about itself (its size and why), what ran it, and the
    # recipe differences it names; the tables travel with it.
    exported = runner.invoke(app, ["report", str(results / "tiny"), "--export", str(tmp_path / "cite")])
    assert exported.exit_code == 0, exported.output
    header = (tmp_path / "cite" / "tiny.md").read_text().split("\n---\n")[0]
    assert "- study: A toy: sized for a test, not evidence." in header
    assert "\n  - `train.epochs`: 8, where the recipe ran 3" in header and f"--export {tmp_path / 'cite'}`" in header
    from tuneoff.training.session import cpu_has_native_bf16  # auto: bf16 where the CPU has it natively, else fp32

    assert f"; mixed precision: {'bf16' if cpu_has_native_bf16() else 'no'}\n" in header
    assert "- runs: 4 compared" in header and "Picked: " in (tmp_path / "cite" / "tiny.md").read_text()
    assert all(f"- {line}" in (tmp_path / "cite" / "tiny.md").read_text() for line in card)
    from tuneoff.core.provenance import (  # the code that analysed it: re-exported later, it may read differently
        tuneoff_commit,
        tuneoff_version,
    )

    assert (
        f" by tuneoff {tuneoff_version()}, commit {(tuneoff_commit() or 'unknown')[:19]}."
        in (tmp_path / "cite" / "tiny.md").read_text()
    )
    assert (tmp_path / "cite" / "tiny.csv").read_text() == before
    out = runner.invoke(app, ["runs", "list", "--results", str(results)], env={"COLUMNS": "200"}).output
    assert "lora-s1" in out and "done" in out
    out = runner.invoke(app, ["runs", "show", "partial_top1-s2", "--results", str(results), "--json"]).output
    assert '"seed": 2' in out and '"trainable_params"' in out
    readable = runner.invoke(
        app, ["runs", "show", "partial_top1-s2", "--results", str(results)], env={"COLUMNS": "80"}
    ).output
    assert "partial_top1-s2" in readable and "trainable" in readable and max(map(len, readable.splitlines())) <= 80

    # Running it again without --resume refuses and loses nothing; a changed spec under the same name refuses too.
    again = runner.invoke(app, ["run", str(spec_path), "--results", str(results)])
    assert again.exit_code == 2 and "--resume" in again.output
    changed = runner.invoke(app, ["run", str(spec_path), "seeds=[3]", "--results", str(results), "--resume"])
    assert changed.exit_code == 2 and "different study" in changed.output
    assert len(db.execute("SELECT * FROM runs WHERE status='done'").fetchall()) == 4


def test_a_disturbed_run_is_trained_again_and_its_directory_kept(tiny_bert, toy_csv, tmp_path):
    """`tuneoff runs rerun <study>/<run>`: the run's directory moves aside, the next --resume trains it again (and only
    it) at the same config; tuning trials, unknown runs and a running study are refused."""
    from tuneoff.study.execution import hold_study

    spec_path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        variants={"h": {"method": {"name": "head"}}},
        seeds=[1, 2],
        tune={"lr": True, "trials": 2, "pruning": False},
    )
    results = tmp_path / "results"
    assert runner.invoke(app, ["run", str(spec_path), "--results", str(results)]).exit_code == 0
    runs = results / "tiny" / "runs"
    before = json.loads((runs / "h-s2" / "metrics.json").read_text())
    config = (runs / "h-s2" / "config.yaml").read_text()
    done = runner.invoke(app, ["runs", "rerun", "tiny/h-s2", "--results", str(results)], env={"COLUMNS": "200"})
    assert done.exit_code == 0 and "--resume" in done.output, done.output
    (kept,) = (results / "tiny" / "replaced").iterdir()
    assert kept.name.startswith("h-s2-") and json.loads((kept / "metrics.json").read_text()) == before
    assert not (runs / "h-s2").exists()
    db = sqlite3.connect(results / "tuneoff.sqlite")
    assert db.execute("SELECT status, metrics FROM runs WHERE run_id='h-s2'").fetchone() == ("pending", None)
    # Read before it is trained again, the study says it is not finished, in the report and in an exported result.
    partial = runner.invoke(app, ["report", str(results / "tiny"), "--export", str(tmp_path / "cite")])
    assert partial.exit_code == 0, partial.output
    assert (
        "**Not finished**: 1 planned run(s) of this study have not finished (0 running or interrupted, 1 still to "
        "run). The verdict reads only the finished runs"
    ) in (results / "tiny" / "report" / "summary.md").read_text()
    assert "<h2>Not finished</h2>" in (results / "tiny" / "report" / "report.html").read_text()
    assert "; **incomplete**: 1 planned run(s) not finished\n" in (tmp_path / "cite" / "tiny.md").read_text()
    started = {r: (runs / r / "run.json").stat().st_mtime for r in ("h-s1", "h-tune0", "h-tune1")}
    again = runner.invoke(app, ["run", str(spec_path), "--results", str(results), "--resume"])
    assert again.exit_code == 0, again.output
    assert runner.invoke(app, ["report", str(results / "tiny")]).exit_code == 0
    assert "Not finished" not in (results / "tiny" / "report" / "summary.md").read_text()
    assert db.execute("SELECT status FROM runs WHERE run_id='h-s2'").fetchone() == ("done",)
    assert (runs / "h-s2" / "config.yaml").read_text() == config, "the same config, its tuned learning rate included"
    assert json.loads((runs / "h-s2" / "metrics.json").read_text())["test"]["accuracy"] == before["test"]["accuracy"]
    assert {r: (runs / r / "run.json").stat().st_mtime for r in started} == started, "nothing else trained again"
    for ref, message in (
        ("tiny/h-tune0", "is a tuning trial"),
        ("tiny/h-s9", "has no run 'h-s9'"),
        ("other/h-s1", "No study 'other'"),
        ("h-s1", "name the run as <study>/<run id>"),
    ):
        result = runner.invoke(app, ["runs", "rerun", ref, "--results", str(results)])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (ref, result.output)
    lock = hold_study(results / "tiny", "tiny")
    try:
        result = runner.invoke(app, ["runs", "rerun", "tiny/h-s1", "--results", str(results)])
        assert result.exit_code == 2 and "is being run by another process" in " ".join(result.output.split())
    finally:
        lock.close()
    assert (runs / "h-s1").is_dir()


def test_max_runs_needs_yes(tiny_bert, toy_csv, tmp_path):
    spec_path = write_study(tmp_path, tiny_bert, toy_csv, max_runs=3)
    result = runner.invoke(app, ["run", str(spec_path), "--results", str(tmp_path / "r")])
    assert result.exit_code == 2 and "would launch 4 runs (tuning trials included), more than max_runs=3" in " ".join(
        result.output.split()
    )
    assert not (tmp_path / "r").exists()


def test_report_without_finished_runs(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a study results directory" in result.output


def test_failed_run_is_recorded_and_study_goes_on(tiny_bert, toy_csv, tmp_path):
    spec_path = write_study(tmp_path, tiny_bert, toy_csv)
    spec = load_spec(spec_path, ["variants.partial_top1.method.k=5"])  # the model has 2 layers: this run fails
    execute(spec, tmp_path / "r")
    db = sqlite3.connect(tmp_path / "r" / "tuneoff.sqlite")
    status = dict(db.execute("SELECT run_id, status FROM runs").fetchall())
    assert status == {"partial_top1-s1": "failed", "partial_top1-s2": "failed", "lora-s1": "done", "lora-s2": "done"}
    assert "only 2 encoder layers" in db.execute("SELECT error FROM runs WHERE status='failed'").fetchone()[0]


@pytest.mark.slow
def test_killed_study_resumes_without_redoing_finished_runs(tiny_bert, toy_csv, tmp_path):
    spec_path = write_study(tmp_path, tiny_bert, toy_csv, train={"epochs": 25})
    # The reference: the same study, uninterrupted, run the way the killed one is (its runs in fresh worker
    # processes): in this process the runs would train at whatever thread count earlier tests left behind, and over
    # 25 epochs another thread count's float sums flip predictions (3 of 24 after test_packing's threads=1).
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", str(spec_path), "--results", str(tmp_path / "ref")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )

    results = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuneoff", "run", str(spec_path), "--results", str(results)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    db_path = results / "tuneoff.sqlite"
    deadline = time.time() + 120
    done = []
    while time.time() < deadline and proc.poll() is None:
        if db_path.exists():
            try:
                done = (
                    sqlite3.connect(db_path).execute("SELECT run_id, finished FROM runs WHERE status='done'").fetchall()
                )
            except sqlite3.OperationalError:
                done = []
            if done:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 1 <= len(done) < 4, "killed mid-study"

    result = runner.invoke(app, ["run", str(spec_path), "--results", str(results), "--resume"])
    assert result.exit_code == 0, result.output
    db = sqlite3.connect(db_path)
    finished = dict(db.execute("SELECT run_id, finished FROM runs").fetchall())
    assert all(finished[run_id] == ts for run_id, ts in done), "finished runs were not redone"
    assert set(db.execute("SELECT status FROM runs").fetchall()) == {("done",)}
    for run_id in finished:
        got = pd.read_csv(results / "tiny" / "runs" / run_id / "predictions.csv")
        want = pd.read_csv(tmp_path / "ref" / "tiny" / "runs" / run_id / "predictions.csv")
        pd.testing.assert_frame_equal(got, want)
    assert not [p for p in (results / "tiny" / "runs").iterdir() if p.name.startswith(".")], "no torn run left"


def test_two_datasets_get_a_section_each_and_the_report_needs_no_model(tiny_bert, toy_csv, tmp_path):
    """A grid over datasets with different label sets: one verdict per dataset, never a pair across them; and
    `tuneoff report` rebuilds with the run models and the base model gone (numbers that needed them are kept)."""
    import shutil

    model = tmp_path / "model"
    shutil.copytree(tiny_bert, model)
    three = tmp_path / "three.csv"
    frame = pd.read_csv(toy_csv)
    frame["label"] = [("pos", "neg", "mixed")[i % 3] for i in range(len(frame))]
    frame.to_csv(three, index=False)
    spec = {
        "name": "two",
        "base": {"model": {"name": str(model)}, "data": {"max_length": 16}, "train": {"epochs": 2, "batch_size": 16}},
        "variants": {
            "full": {"method": {"name": "full"}, "train": {"lr": 5e-3}},
            "lora": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}},
        },
        "grid": {"data.name": [toy_csv, str(three)]},
        "seeds": [1],
    }
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(spec))
    results = tmp_path / "results"
    result = runner.invoke(app, ["run", str(path), "--results", str(results)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "== toy.csv" in result.output and "== three.csv" in result.output
    report = results / "two" / "report"
    verdicts = json.loads((report / "verdict.json").read_text())["groups"]
    assert sorted(v["dataset"] for v in verdicts) == ["three.csv", "toy.csv"]
    pairs = pd.read_csv(report / "comparisons.csv")
    assert len(pairs) == 2 and set(pairs.dataset) == {"toy.csv", "three.csv"}  # full vs lora within each dataset
    html = (report / "report.html").read_text()
    before = (report / "summary.csv").read_text()

    for run_dir in (results / "two" / "runs").iterdir():
        shutil.rmtree(run_dir / "model")
    shutil.rmtree(model)
    again = runner.invoke(app, ["report", str(results / "two")], env={"HF_HUB_OFFLINE": "1", "COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert (report / "summary.csv").read_text() == before
    rebuilt = (report / "report.html").read_text()
    assert rebuilt.count("data:image/png") == html.count("data:image/png")  # plan and data came from report/derived

    shutil.rmtree(report / "derived")
    bare = runner.invoke(app, ["report", str(results / "two")], env={"HF_HUB_OFFLINE": "1"})
    assert bare.exit_code == 0, bare.output
    assert "not inspected" in (report / "report.html").read_text()


def test_a_study_over_training_sizes_gets_a_verdict_per_size_and_their_curves(tiny_bert, toy_csv, tmp_path):
    """How many labelled examples a user has is their situation, not a method choice: a grid over
    data.max_train_samples gets one verdict per size (never "use full with the most data"), smallest first, and the
    report lines them up (a matrix per test set and a plot of accuracy against training examples)."""
    variants = {
        "full": {"method": {"name": "full"}, "train": {"lr": 5e-3}},
        "lora": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}},
    }
    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        name="sizes",
        variants=variants,
        seeds=(1, 2),
        train={"epochs": 2},
        grid={"data.max_train_samples": [96, 48]},
    )
    result = runner.invoke(app, ["run", str(path), "--results", str(tmp_path / "r")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "(48 training examples, " in result.output and "(96 training examples, " in result.output
    report = tmp_path / "r" / "sizes" / "report"
    verdicts = json.loads((report / "verdict.json").read_text())["groups"]
    assert [v["train_examples"] for v in verdicts] == [48, 96]
    pairs = pd.read_csv(report / "comparisons.csv")
    assert len(pairs) == 2  # full vs lora at each size, never across sizes
    for v, size in zip(verdicts, (48, 96)):
        for name in (v["best_on_validation"], v["recommended"]):
            assert name is None or f"max_train_samples={size}" in name
    md = (report / "summary.md").read_text()
    start = md.index("## Accuracy by training-set size")
    overview = md[md.index("\n\n", md.index("**", start)) : md.index("\n## ", start)]  # the matrices, after the note
    assert "| 48 examples" in overview and "| 96 examples" in overview
    assert overview.count("**") == 2 * sum(v["recommended"] is not None for v in verdicts)
    # one section per size, and the answer at the top names each size once
    assert sum(line.startswith("## ") and " training examples · " in line for line in md.splitlines()) == 2
    answer = md[md.index("## The answer") : md.index("\n## ", md.index("## The answer") + 1)]
    assert answer.count(" training examples · ") == 2
    html = (report / "report.html").read_text()
    section = html[html.index("Accuracy by training-set size") : html.index("Verdict</h3>")]
    assert "data:image/png" in section and "**" not in section  # the plot; bold rendered, not shown as asterisks
    assert "<h3>Sweeps</h3>" not in html  # within a size nothing varies: no one-point sweep plot
    # The same runs read on macro-F1: every section says so, and the matrix holds each condition's test macro-F1.
    reread = runner.invoke(app, ["report", str(tmp_path / "r" / "sizes"), "--metric", "macro_f1"])
    assert reread.exit_code == 0, reread.output
    md = (report / "summary.md").read_text()
    assert "## Macro-F1 by training-set size" in md and "the best on **validation** macro-F1" in md
    assert "Accuracy by training-set size" not in md
    reread_verdicts = json.loads((report / "verdict.json").read_text())["groups"]
    assert {v["metric"] for v in reread_verdicts} == {"macro_f1"}
    # the pick's sentence names its metric (on 24 test examples no condition may clear the baseline: then no pick)
    assert ("validation macro-F1" in md) == any(v["best_on_validation"] for v in reread_verdicts)
    summary = pd.read_csv(report / "summary.csv")
    run = summary[summary.method != "baseline"].iloc[0]
    assert f"{100 * run.macro_f1:.1f} ({100 * run.macro_f1_ci_low:.1f}–" in md
    bad = runner.invoke(app, ["report", str(tmp_path / "r" / "sizes"), "--metric", "f1"])
    assert bad.exit_code != 0 and "metric" in bad.output


def test_cli_prints_a_recommendation_with_ratios_against_full(tiny_bert, toy_csv, tmp_path):
    spec_path = write_study(tmp_path, tiny_bert, toy_csv, name="ratios")
    spec = yaml.safe_load(spec_path.read_text())
    spec["variants"]["full"] = {"method": {"name": "full"}, "train": {"lr": 5e-3}}
    spec["analysis"] = {"margin": 0.5}  # 24 test examples: only a wide margin can call anything as good as full
    spec_path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(spec_path), "--results", str(tmp_path / "r")], env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    verdict = json.loads((tmp_path / "r" / "ratios" / "report" / "verdict.json").read_text())["groups"][0]
    assert verdict["reference"] == "full" and "train_examples" not in verdict  # one size: titles as before
    # The run ends on the verdict's card: its lines, as the report writes them, on the terminal.
    assert verdict["card"]["recommended"] == verdict["recommended"]
    for line in verdict["card_lines"]:
        assert line.replace("**", "") in result.output
    assert f"Use {verdict['recommended']}" in result.output
    if verdict["recommended"] != "full":
        use = next(line for line in verdict["lines"] if line.startswith("**Use"))
        assert "the peak memory" in use and "the training time of full" in use
    # Another margin re-reads the stored results; it is not another study.
    assert runner.invoke(app, ["report", str(tmp_path / "r" / "ratios"), "--margin", "0.001"]).exit_code == 0
    # Nothing here is 99% cheaper than the best overall: with that cost margin the best on validation is the pick.
    assert runner.invoke(app, ["report", str(tmp_path / "r" / "ratios"), "--cost-margin", "0.99"]).exit_code == 0
    strict = json.loads((tmp_path / "r" / "ratios" / "report" / "verdict.json").read_text())["groups"][0]
    assert strict["recommended"] == strict["best_on_validation"]
    assert "at least 99% lower" in (tmp_path / "r" / "ratios" / "report" / "report.html").read_text()  # the margin used
    resumed = runner.invoke(
        app, ["run", str(spec_path), "analysis.margin=0.2", "--results", str(tmp_path / "r"), "--resume"]
    )
    assert resumed.exit_code == 0, resumed.output


def test_a_trials_progress_line_shows_validation_only():
    """Tuning trials are chosen on validation: their line as they finish shows nothing else (a test accuracy beside it
    invited a reader to choose on test); a comparison run's shows both."""
    from tuneoff.study.executors import Outcome, describe

    outcome = Outcome("x", "done", metrics={"validation": {"accuracy": 0.81}, "test": {"accuracy": 0.79}}, seconds=12)
    assert describe(outcome, trial=True) == "12s, validation accuracy 0.8100"
    assert describe(outcome) == "12s, validation accuracy 0.8100, test accuracy 0.7900"


def test_a_link_planted_in_a_study_directory_is_never_written_through(tmp_path):
    """Writes outside the output directory: <results>/<study>/.lock (and commands.log) as a symbolic link to another
    file. The study refuses, names the link and what to do; the file it points at is untouched."""
    from tuneoff.study.execution import hold_study

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    study = tmp_path / "results" / "s"
    study.mkdir(parents=True)
    (study / ".lock").symlink_to(victim)
    with pytest.raises(TuneoffError, match=r"\.lock is a symbolic link; tuneoff does not write through links"):
        hold_study(study, "s")
    assert victim.read_text() == "keep me"
    from tuneoff.core.files import open_own

    (study / "commands.log").symlink_to(victim)
    with pytest.raises(TuneoffError, match="commands.log is a symbolic link"):
        open_own(study / "commands.log", "a")
    assert victim.read_text() == "keep me"


def test_names_and_labels_cannot_inject_into_terminals_markdown_or_spreadsheets(tiny_bert, tmp_path):
    """Injection, by output kind (core.outputs): escape sequences in a study's or variant's name or a label are refused
    where they come in; one in a data file's column name reaches the terminal only as an escape (never as ESC); Markdown
    link syntax in names stays text in summary.md and the exported result; spreadsheet formulas in names and labels
    are text in every CSV."""
    import csv

    from conftest import toy_frame

    esc = "\x1b]0;pwned\x07"
    frame = toy_frame(240, seed=1)
    frame["label"] = frame["label"].map({"pos": "=1+1", "neg": "[a](javascript:alert(1))"})
    data = tmp_path / "toy.csv"
    frame.to_csv(data, index=False)
    variants = {
        '=HYPERLINK("http://x")': {"method": {"name": "partial", "k": 1}, "train": {"lr": 5e-3}},
        "[x](javascript:alert(1))": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}},
    }
    for name, body in ((f"a{esc}", {}), ("b", {"variants": {f"v{esc}": {"method": {"name": "head"}}}})):
        spec = write_study(tmp_path, tiny_bert, str(data), name, **body)
        out = runner.invoke(app, ["run", str(spec), "--dry-run"])
        assert out.exit_code == 2 and "control characters" in out.output and "\x1b" not in out.output, out.output
    bad = tmp_path / "bad.csv"
    frame.assign(label=frame.label.where(frame.index != 3, f"pos{esc}")).to_csv(bad, index=False)
    spec = write_study(tmp_path, tiny_bert, str(bad), "c", variants=variants, train={"epochs": 1})
    out = runner.invoke(app, ["run", str(spec), "--results", str(tmp_path / "x")])
    assert out.exit_code == 2 and "control characters" in out.output and "row(s): 4" in out.output
    assert "\x1b" not in out.output and "\\x1b" in out.output, out.output
    spec = write_study(tmp_path, tiny_bert, str(data), "inject", variants=variants, seeds=[1], train={"epochs": 2})
    results = tmp_path / "results"
    out = runner.invoke(app, ["run", str(spec), "--results", str(results)], env={"COLUMNS": "200"})
    assert out.exit_code == 0, out.output
    report = results / "inject" / "report"
    runner.invoke(app, ["report", str(results / "inject"), "--export", str(tmp_path / "cite")])
    for md in (report / "summary.md", tmp_path / "cite" / "inject.md"):
        text = md.read_text()
        assert "](javascript:" not in text.replace("\\](javascript:", ""), md
    for path in [*report.glob("*.csv"), tmp_path / "cite" / "inject.csv"]:
        with open(path, newline="") as fh:
            for row in csv.reader(fh):
                assert not any(cell.startswith(("=", "+", "@")) for cell in row), (path, row)
