"""The recipe keys the background reports need (dropout, SGD, step decay, linked grid values, nested subsets),
the reports' studies, and the offline pair task: exact values asserted where they reach the model or optimizer."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.config import DataConfig, build_config
from tuneoff.core.errors import TuneoffError

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.mark.parametrize(
    "encoder, keys",
    [
        ("tiny_bert", {"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.2, "classifier_dropout": 0.5}),
        ("tiny_distilbert", {"dropout": 0.3, "attention_dropout": 0.2, "seq_classif_dropout": 0.5}),
    ],
)
def test_dropout_keys_reach_each_architecture(encoder, keys, request):
    from tuneoff.models.loading import load_classifier

    model, _ = load_classifier(
        request.getfixturevalue(encoder), ["neg", "pos"], dropout={"hidden": 0.3, "attention": 0.2, "classifier": 0.5}
    )
    for key, value in keys.items():
        assert getattr(model.config, key) == value, key
    head_dropout = model.dropout if hasattr(model, "dropout") else None
    assert head_dropout is not None and head_dropout.p == 0.5  # the classifier's own dropout module


def test_a_classifier_dropout_without_a_config_key_is_set_on_the_head_alone(tmp_path):
    """MPNet's config has no classifier-dropout key (its head reuses hidden_dropout_prob): the rate goes to the
    head's own dropout layer, the encoder's stay as they were (report 1's MPNet runs asked for 0.5 before the head)."""
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from tuneoff.models.loading import load_classifier

    config = MPNetConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
    )
    MPNetForSequenceClassification(config).save_pretrained(tmp_path / "mpnet")
    model, _ = load_classifier(str(tmp_path / "mpnet"), ["neg", "pos"], dropout={"classifier": 0.5})
    assert model.classifier.dropout.p == 0.5
    encoder = [m.p for m in model.mpnet.modules() if isinstance(m, torch.nn.Dropout)]
    assert encoder and set(encoder) == {0.1} and model.config.hidden_dropout_prob == 0.1


def test_a_dropout_an_architecture_lacks_is_a_clear_error(tiny_bert):
    from transformers import PretrainedConfig

    from tuneoff.models.architecture import dropout_overrides, set_head_dropout
    from tuneoff.models.loading import load_classifier

    with pytest.raises(TuneoffError, match="model.hidden_dropout: a .* model has no hidden dropout setting"):
        dropout_overrides(PretrainedConfig(), {"hidden": 0.5})
    model, arch = load_classifier(tiny_bert, ["neg", "pos"])  # BERT's head is a Linear: its dropout sits outside it
    with pytest.raises(TuneoffError, match="no classifier dropout setting .* or a dropout layer in the head"):
        set_head_dropout(model, arch, 0.5)


def test_sgd_and_step_decay_reach_the_optimizer(tiny_bert):
    from test_methods import prepared

    from tuneoff.training.schedule import make_scheduler

    cfg = build_config(
        {},
        ["train.optimizer=sgd", "train.momentum=0.8", "train.scheduler=step", "train.step_size=4", "train.gamma=0.5"],
        names={"method": "lora"},
    )
    model, method, params, _ = prepared(tiny_bert, "lora")
    opt = method.optimizer(model, params, 0.1, 0.01, False, kind=cfg.train.optimizer, momentum=cfg.train.momentum)
    assert type(opt) is torch.optim.SGD and all(g["momentum"] == 0.8 for g in opt.param_groups)
    sched = make_scheduler(cfg.train, opt, warmup=2, total_steps=20, steps_per_epoch=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # warmup ramp over 2 steps (0.05, 0.1), then 0.1 x 0.5 ** (step // 4): steps 2-3 at 0.1, 4-7 at 0.05, 8-9 at 0.025.
    assert lrs == pytest.approx([0.05, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025])
    plus = build_config({}, ["train.optimizer=sgd"], names={"method": "lora_plus"})
    model, method, params, _ = prepared(tiny_bert, "lora_plus")
    assert type(method.optimizer(model, params, 0.1, 0.0, False, kind="sgd")) is torch.optim.SGD
    assert plus.train.optimizer == "sgd"
    with pytest.raises(TuneoffError, match="train.optimizer=sgd does not combine with method lora_fa"):
        build_config({}, ["train.optimizer=sgd"], names={"method": "lora_fa"})


def test_linked_grid_values_keep_alpha_over_r_fixed():
    from tuneoff.study.spec import expand, load_spec

    runs = expand(load_spec(REPO / "studies/lora_rank_sweep.yaml"))
    lora = [r for r in runs if r.variant == "lora"]
    assert {(r.config.method.r, r.config.method.alpha) for r in lora} == {(2, 4), (4, 8), (8, 16), (16, 32), (32, 64)}
    assert all(r.config.method.alpha / r.config.method.r == 2 for r in lora)
    assert {r.variant for r in runs} == {"full", "lora", "lora_plus_ratio2"}  # the sweep has its full baseline
    with pytest.raises(TuneoffError, match="each value must be a list of 2 values"):
        from tuneoff.study.spec import _grid_points

        _grid_points({"method.r,method.alpha": [[4, 8], 16]})


def test_training_subsets_are_nested_and_stratified():
    from tuneoff.data.corpus import load_corpus

    sets = {
        n: set(load_corpus(DataConfig(name="bbc_news", max_train_samples=n)).splits["train"]["id"])
        for n in (100, 300, 1000)
    }
    assert sets[100] < sets[300] < sets[1000]
    full = load_corpus(DataConfig(name="bbc_news")).splits["train"]
    small = load_corpus(DataConfig(name="bbc_news", max_train_samples=100)).splits["train"]
    shares = full["label"].value_counts(normalize=True)
    assert (small["label"].value_counts(normalize=True) - shares).abs().max() < 0.03
    other_seed = set(
        load_corpus(DataConfig(name="bbc_news", max_train_samples=100, split_seed=1)).splits["train"]["id"]
    )
    assert other_seed != sets[100]


def test_report5_budget_counts_999172_on_a_roberta_base_shaped_model():
    """LoRA r=11 alpha=7 on q,v of RoBERTa-base with AG News's 4-class head: 12 x 2 x (11 x 768 x 2) = 405,504 adapter
    + (768 x 768 + 768) + (768 x 4 + 4) = 593,668 head = 999,172 trainable, 0.7952% of 125,644,804."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from tuneoff.methods import get_method
    from tuneoff.models.architecture import describe
    from tuneoff.training.resources import param_counts

    with torch.device("meta"):  # shapes only: no 500 MB of random weights
        model = RobertaForSequenceClassification(RobertaConfig(num_labels=4))
    cfg = build_config(
        {}, ["method.r=11", "method.alpha=7", "method.max_trainable_params=999999"], names={"method": "lora"}
    )
    model = get_method("lora").prepare(model, cfg.method, describe(model))
    counts = param_counts(model)
    assert counts["trainable_params"] == 999_172
    assert round(counts["trainable_pct"], 4) == 0.7952


def test_bbc_pairs_is_split_by_article_and_balanced():
    from tuneoff.data.corpus import load_corpus

    corpus = load_corpus(DataConfig(name="bbc_pairs"))
    articles = {s: {i.rsplit("-", 1)[0] for i in df["id"]} for s, df in corpus.splits.items()}
    assert not (articles["train"] & articles["test"]) and not (articles["train"] & articles["validation"])
    train = corpus.splits["train"]
    assert corpus.has_pairs and set(train["label"]) == {"same_article", "other_article"}
    assert abs((train["label"] == "same_article").mean() - 0.5) < 0.01
    assert len(train) > 3000 and not corpus.notes  # official splits: nothing carved, nothing moved
    again = load_corpus(DataConfig(name="bbc_pairs")).splits["test"]
    pd.testing.assert_frame_equal(again, corpus.splits["test"])  # fixed construction
    test = corpus.splits["test"]  # the pairs the committed results were trained on, unchanged by any refactoring
    digest = hashlib.sha256("\n".join(test.id + "\t" + test.text + "\t" + test.text_pair + "\t" + test.label).encode())
    assert digest.hexdigest()[:16] == "9dacd084a111de5a"


def test_reuters_pairs_keep_the_official_test_stories_apart_and_are_large_enough_to_decide():
    from tuneoff.data.corpus import load_corpus

    corpus = load_corpus(DataConfig(name="reuters_pairs"))
    sizes = {s: len(df) for s, df in corpus.splits.items()}
    assert sizes["test"] > 5000 and sizes["train"] > 13000 and sizes["validation"] > 1000 and not corpus.notes
    stories = {s: {i.split("-same")[0].split("-other")[0] for i in df["id"]} for s, df in corpus.splits.items()}
    assert all(story.startswith("r52-test-") for story in stories["test"])
    assert not (stories["train"] & stories["validation"]) and not (
        (stories["train"] | stories["validation"]) & stories["test"]
    )
    for df in corpus.splits.values():
        assert abs((df["label"] == "same_story").mean() - 0.5) < 0.01
        assert (df["text"].str.split().str.len() == 24).all() and (df["text_pair"].str.split().str.len() == 24).all()
        assert (df["text"] != df["text_pair"]).all()
    texts = {s: set(df["text"]) | set(df["text_pair"]) for s, df in corpus.splits.items()}
    assert len(texts["test"] & texts["train"]) < 0.01 * len(texts["test"])  # only passages repeated across stories


@pytest.mark.parametrize(
    "study",
    sorted((REPO / "studies").glob("*.yaml")) + sorted((REPO / "studies/offline").glob("*.yaml")),
    ids=lambda p: p.name,
)
def test_every_study_dry_runs_offline(study):
    result = runner.invoke(app, ["run", str(study), "--dry-run", "--no-time"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "(dry run: nothing downloaded; nothing trained)" in result.output


def test_submission_format_has_integer_labels(tiny_bert, toy_csv, tmp_path):
    from conftest import tiny_overrides

    out = tmp_path / "runs"
    assert (
        runner.invoke(
            app, ["train", "--no-progress", *tiny_overrides(tiny_bert, toy_csv, out, **{"train.epochs": 1})]
        ).exit_code
        == 0
    )
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    texts = tmp_path / "texts.csv"
    pd.DataFrame({"id": [17, 18, 19], "text": ["good film", "awful plot", "nice"]}).to_csv(texts, index=False)
    done = runner.invoke(
        app,
        [
            "predict",
            str(run_dir),
            str(texts),
            "--id-column",
            "id",
            "--format",
            "submission",
            "--out",
            str(tmp_path / "sub.csv"),
        ],
    )
    assert done.exit_code == 0, done.output
    sub = pd.read_csv(tmp_path / "sub.csv")
    assert list(sub.columns) == ["id", "label"] and list(sub["id"]) == [17, 18, 19]
    assert set(sub["label"]) <= {0, 1}  # neg = 0, pos = 1: the model's label index (config.json id2label)


REPORTS = yaml.safe_load((REPO / "studies" / "recipes" / "reports.yaml").read_text())


def _value(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        node = (node or {}).get(part) if isinstance(node, dict) else None
    return node


@pytest.mark.parametrize("report", sorted(REPORTS))
def test_each_hub_study_names_every_difference_from_its_reports_recipe(report):
    """Every field of the report's recipe that the study sets otherwise, and every field the study sets that the
    recipe is not known for, is named in the study's `differences:` (with a reason)."""
    from tuneoff.study.spec import expand, load_spec

    entry = REPORTS[report]
    spec = load_spec(REPO / entry["study"])
    runs = expand(spec)
    unnamed = set()
    for line in entry["recipe"]:
        for run in runs:
            if "variants" in line and run.variant not in line["variants"]:
                continue
            config = run.config.model_dump(mode="json")
            for key, want in line["keys"].items():
                got = _value(config, key)
                if got != want and not (isinstance(want, float) and isinstance(got, float) and abs(got - want) < 1e-12):
                    unnamed.add(f"{key} ({run.variant}: {got!r}, the report {want!r})")
    named = {d.split(" ")[0] for d in unnamed if d.split(" ")[0] in spec.differences}
    assert sorted(d for d in unnamed if d.split(" ")[0] not in named) == []
    assert sorted(k for k in entry.get("unknown", []) if k not in spec.differences) == [], (
        "fields the report's recipe is not known for are the study's choice: say so"
    )
    assert all(reason.strip() for reason in spec.differences.values())
