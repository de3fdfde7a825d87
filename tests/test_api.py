"""The Python API as a user calls it: import tuneoff, train a run, predict, run a study from a dict, read its verdict and
tables, read it again under other settings; and the example notebook executed headless."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TWO_VARIANTS, toy_frame, write_study

REPO = Path(__file__).resolve().parents[1]


def test_importing_tuneoff_loads_nothing_heavy():
    code = (
        "import sys, tuneoff; print(sorted(m for m in ('torch', 'transformers', 'pandas', 'sklearn') if m in sys.modules)); "
        "print(tuneoff.__all__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "[]" and "train" in out[1] and "run_study" in out[1]


def test_train_predict_and_the_run_object(tiny_bert, toy_csv, tmp_path):
    import tuneoff

    run = tuneoff.train(
        model=tiny_bert,
        data=toy_csv,
        method="lora",
        method__r=4,
        train__epochs=6,
        train__lr=2e-2,
        data__max_length=16,
        output_dir=str(tmp_path / "runs"),
        results=tmp_path / "r",
        progress=False,
    )
    assert isinstance(run, tuneoff.Run) and run.test_accuracy == run.metrics["test"]["accuracy"] >= 0.75
    assert run.config["method"]["r"] == 4 and run.label_names == ["neg", "pos"]
    assert list(run.per_class()["class"]) == ["neg", "pos"]
    saved = pd.read_csv(run.path / "predictions.csv")
    got = run.predict(list(saved["text"][:8]))
    assert list(got.columns) == ["label", "prob_neg", "prob_pos"]
    assert list(got["label"]) == list(saved["pred_label"][:8]), "the saved model predicts what the run predicted"
    assert "test accuracy" in run._repr_html_()
    with pytest.raises(tuneoff.TuneoffError, match="a list of strings"):
        run.predict("one string")
    # what counts as text is decided where a data file's cells are checked: not None, not a number, not nothing
    for bad, message in (
        ([None], "'texts' is empty or missing in 1 row"),
        ([1, 2], "holds int values, not text"),
        ([], "predict got no texts"),
        (None, "a list of strings \\(got NoneType\\)"),
        (["a", "b"], "2 texts and 1 text_pairs"),
    ):
        with pytest.raises(tuneoff.TuneoffError, match=message):
            run.predict(bad, text_pairs=["x"] if bad == ["a", "b"] else None)
    again = tuneoff.load_run(run.path)
    assert again.metrics == run.metrics
    from tuneoff.results.store import Store

    store = Store(tmp_path / "r")
    assert [r["run_id"] for r in store.runs()] == [run.path.name], "indexed like `tuneoff train`'s runs"
    store.close()


def test_a_dataframe_is_data(tiny_bert, tmp_path, monkeypatch):
    """A notebook's DataFrame trains, evaluates and names its rows in errors like a file; the run config names the file
    it was stored as (content-addressed: the same frame is one file), so the run can be resumed and re-evaluated."""
    import tuneoff
    from tuneoff.api import study_spec
    from tuneoff.study.spec import expand

    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    frame = (
        toy_frame(240, seed=3).rename(columns={"text": "review", "label": "stars"}).set_index(pd.Index(range(100, 340)))
    )
    run = tuneoff.train(
        model=tiny_bert,
        data=frame,
        method="lora",
        method__r=4,
        train__epochs=6,
        train__lr=2e-2,
        data__max_length=16,
        data__text_column="review",
        data__label_column="stars",
        output_dir=str(tmp_path / "runs"),
        results=tmp_path / "r",
        progress=False,
    )
    stored = Path(run.config["data"]["name"])
    assert stored.parent == tmp_path / "cache" / "frames" and stored.suffix == ".jsonl"
    assert pd.read_json(stored, lines=True).equals(frame.reset_index(drop=True)), "every row, the index dropped"
    assert run.test_accuracy >= 0.75 and run.label_names == ["neg", "pos"]
    held_out = toy_frame(40, seed=4).rename(columns={"text": "review", "label": "stars"})
    assert run.evaluate(held_out)["accuracy"] >= 0.75
    assert len(list(stored.parent.iterdir())) == 2, "one file per distinct frame"
    spec = study_spec(
        {
            "name": "s",
            "base": {
                "model": {"name": tiny_bert},
                "data": {"name": frame, "text_column": "review", "label_column": "stars"},
            },
            "variants": {"h": {"method": {"name": "head"}}},
        }
    )
    assert expand(spec)[0].config.data.name == str(stored), "a study's DataFrame is the same file"
    broken = frame.copy()
    broken.iloc[4, 0] = None
    with pytest.raises(tuneoff.TuneoffError, match=r"column 'review' is empty or missing in 1 row\(s\): 5 "):
        tuneoff.train(
            model=tiny_bert,
            data=broken,
            method="head",
            data__text_column="review",
            data__label_column="stars",
            output_dir=str(tmp_path / "runs"),
            progress=False,
        )
    with pytest.raises(tuneoff.TuneoffError, match="data.test_file: the DataFrame has no rows"):
        tuneoff.train(
            model=tiny_bert,
            data=frame,
            data__test_file=frame.iloc[:0],
            method="head",
            output_dir=str(tmp_path / "runs"),
            progress=False,
        )


def test_a_study_from_a_dict_with_its_verdict_and_tables(tiny_bert, toy_csv, tmp_path):
    import tuneoff

    study = tuneoff.run_study(
        {
            "name": "api",
            "base": {
                "model": {"name": tiny_bert},
                "data": {"name": toy_csv, "max_length": 16},
                # 8 epochs: at 4, a CPU without native bf16 left both conditions short of beating
                # the majority class significantly on 24 test examples, so no best to test against
                "train": {"epochs": 8, "batch_size": 16, "eval_every": 5},
            },
            "variants": TWO_VARIANTS,
            "seeds": [1, 2],
        },
        results=tmp_path / "r",
    )
    assert isinstance(study, tuneoff.StudyResult) and study.report.is_file()
    summary = study.summary
    assert sorted(summary.condition) == ["lora", "majority class (neg)", "partial_top1"] or sorted(
        summary.condition
    ) == ["lora", "majority class (pos)", "partial_top1"]
    assert {"accuracy", "accuracy_ci_low", "accuracy_ci_high", "trainable_params"} <= set(summary.columns)
    assert set(study.decisions.against) == {"baseline", "pick"} and len(study.comparisons) == 1
    text = study.verdict_text()
    assert text.startswith("== toy.csv") and "Picked: " in text
    html = study._repr_html_()
    assert "<table" in html and "Picked: " in html
    tight = tuneoff.load_study(tmp_path / "r" / "api", max_trainable_params=1)  # read again under a constraint
    assert "No method fits the constraints (max_trainable_params ≤ 1)" in tight.verdict_text()
    with pytest.raises(tuneoff.TuneoffError, match="not a study results directory"):
        tuneoff.load_study(tmp_path)


def test_the_example_notebook_runs_headless(tiny_bert, toy_csv, tmp_path):
    """docs/examples/quickstart.ipynb, executed by nbclient on the tiny model and the toy data."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    notebook = nbformat.read(REPO / "docs" / "examples" / "quickstart.ipynb", as_version=4)
    env = {
        "TUNEOFF_EXAMPLE_MODEL": tiny_bert,
        "TUNEOFF_EXAMPLE_DATA": toy_csv,
        "TUNEOFF_EXAMPLE_RESULTS": str(tmp_path / "results"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        nbclient.NotebookClient(
            notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    rendered = " ".join(str(o.get("data", {}).get("text/html", "")) for o in outputs)
    assert "Picked: " in rendered or "No method could be shown above" in rendered


def test_a_gpu_study_packs_by_the_planned_peak_of_its_largest_run(tiny_bert, toy_csv, tmp_path, monkeypatch):
    """The GPU path of `run_study(parallel="auto")`, checked on a CPU: each variant planned for CUDA, the largest peak
    chosen, and the executor asked to pack by it."""
    import torch

    import tuneoff.api as api
    from tuneoff.study.spec import expand
    from tuneoff.training.planner import plan_as_trained

    spec = api.study_spec(
        write_study(
            tmp_path,
            tiny_bert,
            toy_csv,
            "gpu",
            variants={**TWO_VARIANTS, "full": {"method": {"name": "full"}, "train": {"lr": 1e-3}}},
        )
    )
    runs = expand(spec)
    assert api._gpu_peak(runs) is None, "no GPU here: nothing planned"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    peak = api._gpu_peak(runs)
    cuda = {
        r.variant: r.config.model_copy(update={"train": r.config.train.model_copy(update={"device": "cuda"})})
        for r in runs
    }
    each = {name: plan_as_trained(config, name).total_mb for name, config in cuda.items()}
    assert peak == max(each.values()) == each["full"] > each["lora"], each
    asked = {}
    monkeypatch.setattr(
        api, "make_executor", lambda *a, **k: asked.update(k) or (_ for _ in ()).throw(RuntimeError("stop"))
    )
    with pytest.raises(RuntimeError, match="stop"):
        api.run_study(spec, results=tmp_path / "r", parallel="auto")
    assert asked["gpu_peak_mb"] == peak and asked["parallel"] == "auto"


def test_the_api_refuses_arguments_that_would_start_work_nobody_asked_for(tmp_path):
    """Runaway work from the API: run_study(None) started the built-in default study, {"name": "x"} trained the
    default LoRA on a whole corpus, overrides=42 was ignored. Each is refused before anything loads, saying what to
    give; "default" names the built-in study."""
    import tuneoff

    for study, message in (
        (None, 'or "default" for the built-in default study'),
        (42, "got 42"),
        ({"name": "x"}, "the study names no method"),
    ):
        with pytest.raises(tuneoff.TuneoffError, match=message):
            tuneoff.run_study(study, results=tmp_path / "r")
    with pytest.raises(tuneoff.TuneoffError, match="overrides: give a dict"):
        tuneoff.run_study("default", results=tmp_path / "r", overrides=42)
    assert not (tmp_path / "r").exists()
    assert tuneoff.plan_study("default").iloc[0].conditions == 5


@pytest.mark.slow
def test_run_study_from_a_script_without_a_main_guard_is_refused_before_any_worker_starts(tiny_bert, toy_csv, tmp_path):
    """Runaway work: run_study called from a plain script as the docs once showed it (no `if __name__ ==
    "__main__":`), with runs packed in spawned workers, made every worker run the script, so the study, again. It is
    refused before anything runs, saying what to write; the same script with the guard runs its study once."""
    import subprocess
    import sys

    from conftest import write_study

    spec = write_study(tmp_path, tiny_bert, toy_csv, "guarded", seeds=[1], train={"epochs": 1})
    call = f"tuneoff.run_study({str(spec)!r}, results={str(tmp_path / 'r')!r}, parallel=2)"
    bare = tmp_path / "bare.py"
    bare.write_text(f"import tuneoff\n{call}\n")
    result = subprocess.run([sys.executable, str(bare)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and 'if __name__ == "__main__":' in result.stderr and not (tmp_path / "r").exists()
    guarded = tmp_path / "guarded.py"
    guarded.write_text(
        f'import tuneoff\n\nif __name__ == "__main__":\n    study = {call}\n    print(len(study.summary))\n'
    )
    result = subprocess.run([sys.executable, str(guarded)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import sqlite3

    assert sqlite3.connect(tmp_path / "r" / "tuneoff.sqlite").execute("SELECT count(*) FROM runs").fetchone()[0] == 2


def test_a_collapsed_run_is_not_reported_as_a_success(tmp_path, caplog):
    """A head run scored 54.6% against a 54.1% majority class, predicting one class for everything, and nothing was
    said; `print(run)` showed a 2,000-character dictionary. Its warnings say what it recorded, and its repr is a line."""
    from tuneoff.api import Run

    metrics = {
        "test": {
            "accuracy": 0.546,
            "macro_f1": 0.36,
            "per_class": {
                "neg": {"precision": 0.546, "recall": 1.0, "f1-score": 0.7, "support": 541},
                "pos": {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 450},
            },
        }
    }
    info = {
        "method": "head",
        "model": "minilm",
        "dataset": "mine",
        "label_counts": {"test": {"neg": 541, "pos": 450}},
        "convergence": {"converged": False, "status": "too few evaluations", "reason": "only 1 evaluation(s)"},
    }
    run = Run(tmp_path / "r1", metrics, {"trainable_params": 770}, info, {})
    assert run.warnings() == [
        "it predicts one class (neg) for every test example: it learned nothing a classifier needs",
        "it did not converge (too few evaluations: only 1 evaluation(s))",
    ]
    assert repr(run) == (
        f"Run({str(tmp_path / 'r1')!r}: head on minilm / mine, test accuracy 0.5460, macro-F1 0.3600, 770 trainable)"
    )
    metrics["test"]["per_class"]["pos"]["recall"] = 0.02
    info["convergence"] = {"converged": True}
    assert run.warnings() == [
        "its test accuracy 54.6% is no better than always answering the most common class (54.6%)"
    ]


def test_a_hugging_face_dataset_or_dataset_dict_is_data(tiny_bert, tmp_path, monkeypatch):
    """Data the way notebooks hold it: a datasets.Dataset trains like a DataFrame (its ClassLabel ints read as their
    names), and a DatasetDict gives its splits (validation and test as files of their own: 40 test rows, not a split
    held out of train)."""
    import datasets

    import tuneoff

    monkeypatch.setenv("TUNEOFF_CACHE", str(tmp_path / "cache"))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})

    def dataset(n, seed):
        frame = toy_frame(n, seed=seed)
        return datasets.Dataset.from_pandas(
            frame.assign(label=(frame.label == "pos").astype(int))[["text", "label"]],
            features=features,
            preserve_index=False,
        )

    common = dict(
        model=tiny_bert,
        method="lora",
        method__r=4,
        train__epochs=2,
        train__lr=2e-2,
        data__max_length=16,
        output_dir=str(tmp_path / "runs"),
        results=tmp_path / "r",
        progress=False,
    )
    run = tuneoff.train(data=dataset(240, 1), **common)
    assert run.label_names == ["neg", "pos"]
    splits = datasets.DatasetDict({"train": dataset(200, 2), "validation": dataset(40, 3), "test": dataset(40, 4)})
    run = tuneoff.train(data=splits, **common)
    assert (
        run.info["sizes"]["test"] == 40 and run.info["sizes"]["validation"] == 40 and run.info["sizes"]["train"] == 200
    )
    with pytest.raises(tuneoff.TuneoffError, match="has no train split"):
        tuneoff.train(data=datasets.DatasetDict({"test": dataset(40, 4)}), **common)
