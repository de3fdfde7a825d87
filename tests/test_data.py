"""Datasets: the offline built-ins read the packaged files; local files and hub data validated row by row."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.data.batches import (
    Encoded,
    collator,
    encode,
    eval_loader,
    micro_batches,
    train_loader,
    train_order,
)
from tuneoff.data.corpus import load_corpus


def test_rotten_tomatoes_offline_drops_plot_rows_and_splits_deterministically():
    corpus = load_corpus(DataConfig(name="rotten_tomatoes"))
    sizes = {s: len(df) for s, df in corpus.splits.items()}
    assert sum(sizes.values()) == 7403 + 5405  # fresh + rotten; the 1,097 plot rows are gone
    assert corpus.label_names == ["fresh", "rotten"]
    assert abs(sizes["test"] - 0.1 * sum(sizes.values())) <= 10  # less the test rows whose text is also in train
    again = load_corpus(DataConfig(name="rotten_tomatoes"))
    assert list(again.splits["test"]["id"]) == list(corpus.splits["test"]["id"])
    assert not set(corpus.splits["train"]["id"]) & set(corpus.splits["test"]["id"])


@pytest.mark.parametrize("name", ["rotten_tomatoes", "bbc_news"])
def test_splits_tuneoff_makes_share_no_text(name):
    """Both corpora repeat some texts; a split made here keeps the copies of a text on one side."""
    from tuneoff.data.corpus import text_keys

    corpus = load_corpus(DataConfig(name=name))
    keys = {split: set(text_keys(df)) for split, df in corpus.splits.items()}
    assert (
        not keys["train"] & keys["test"]
        and not keys["train"] & keys["validation"]
        and not keys["validation"] & keys["test"]
    )
    assert any("whose text is also in train moved to train" in note for note in corpus.notes), corpus.notes


def test_split_keeps_copies_together_and_every_row(tmp_path):
    rows = [{"text": f"review number {i}", "label": "pos" if i % 2 else "neg"} for i in range(200)]
    rows += [{"text": f"REVIEW  number {i}", "label": "pos" if i % 2 else "neg"} for i in range(0, 200, 5)]  # 40 copies
    pd.DataFrame(rows).to_csv(tmp_path / "all.csv", index=False)
    corpus = load_corpus(DataConfig(name=str(tmp_path / "all.csv")))
    from tuneoff.data.corpus import text_keys

    train, validation, test = (corpus.splits[s] for s in ("train", "validation", "test"))
    assert len(train) + len(validation) + len(test) == 240, "no row dropped"
    keys = {name: set(text_keys(df)) for name, df in corpus.splits.items()}
    assert not keys["train"] & keys["validation"] and not keys["train"] & keys["test"]
    assert not set(test["id"]) & set(validation["id"]), "a held-out test split, never the validation split again"
    assert any("test row(s) whose text is also in train moved" in n for n in corpus.notes), corpus.notes
    assert any(n.startswith("no test split given: test = 10% of the data, stratified, held out") for n in corpus.notes)
    # Without copies the split is the plain stratified one: 10% test, then 10% of the rest for validation.
    pd.DataFrame(rows[:200]).to_csv(tmp_path / "unique.csv", index=False)
    plain = load_corpus(DataConfig(name=str(tmp_path / "unique.csv")))
    assert (len(plain.splits["test"]), len(plain.splits["validation"])) == (20, 18) and not any(
        "moved" in n for n in plain.notes
    )


@pytest.mark.parametrize(
    "name, train, test, classes", [("reuters_r8", 5485, 2189, 8), ("20newsgroups", 11293, 7528, 20)]
)
def test_orange_datasets_keep_their_official_test_split(name, train, test, classes):
    corpus = load_corpus(DataConfig(name=name))
    assert len(corpus.splits["test"]) == test
    assert len(corpus.splits["train"]) + len(corpus.splits["validation"]) == train
    assert len(corpus.label_names) == classes


def test_bbc_news_has_five_topics():
    corpus = load_corpus(DataConfig(name="bbc_news"))
    assert sum(len(df) for df in corpus.splits.values()) == 2225
    assert len(corpus.label_names) == 5 and "business" in corpus.label_names


def test_max_samples_are_stratified_caps():
    corpus = load_corpus(DataConfig(name="rotten_tomatoes", max_train_samples=100, max_eval_samples=50))
    assert len(corpus.splits["train"]) == 100 and len(corpus.splits["test"]) == 50
    assert set(corpus.splits["train"]["label"]) == {"fresh", "rotten"}


def test_validation_and_test_caps_override_the_shared_one():
    corpus = load_corpus(
        DataConfig(
            name="rotten_tomatoes",
            max_train_samples=100,
            max_eval_samples=50,
            max_validation_samples=30,
            max_test_samples=1000,
        )
    )
    sizes = {split: len(df) for split, df in corpus.splits.items()}
    assert sizes["validation"] == 30 and sizes["test"] == 1000
    same = load_corpus(DataConfig(name="rotten_tomatoes", max_train_samples=100, max_validation_samples=30))
    assert same.splits["validation"]["text"].tolist() == corpus.splits["validation"]["text"].tolist()
    assert len(same.splits["test"]) == 1277  # uncapped: the corpus's whole test split


def write(tmp_path, name, text, mode="w"):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


BAD = [
    ("missing.csv", "review,label\ngood,1\nbad,0\n", {}, r"no column 'text' \(data.text_column\).*'review', 'label'"),
    ("empty.csv", "text,label\ngood,1\n,0\n  ,1\nfine,0\n", {}, r"empty or missing in 2 row\(s\): 2, 3"),
    ("nolabel.csv", "text,label\ngood,1\nbad,\n", {}, r"label column 'label' is missing in 1 row\(s\): 2"),
    ("one.csv", "text,label\ngood,1\nbad,1\nok,1\nfine,1\n", {}, r"only one class \('1'\)"),
    ("latin1.csv", "text,label\ncaf\xe9,1\nbad,0\n".encode("latin-1"), {}, r"not UTF-8 text"),
    ("ragged.csv", 'text,label\n"good,1\nbad,0,extra,more\n', {}, r"cannot be read as CSV|no column"),
    ("broken.jsonl", '{"text": "good", "label": 1}\n{"text": bad}\n', {}, r"line 2 is not valid JSON"),
    ("notobj.jsonl", '{"text": "good", "label": 1}\n[1, 2]\n', {}, r"line 2 is not a JSON object"),
    ("headonly.csv", "text,label\n", {}, r"header but no rows"),
    # a row error names the file's own columns, not the names tuneoff gives them inside
    (
        "renamed.csv",
        "Review Text,Sentiment\ngood,pos\n,neg\n",
        {"text_column": "Review Text", "label_column": "Sentiment"},
        r"column 'Review Text' is empty or missing in 1 row\(s\): 2",
    ),
    (
        "renamed_label.csv",
        "Review Text,Sentiment\ngood,pos\nbad,\n",
        {"text_column": "Review Text", "label_column": "Sentiment"},
        r"label column 'Sentiment' is missing in 1 row\(s\): 2",
    ),
    (
        "renamed_pair.jsonl",
        '{"q": "a", "p": "b", "y": 1}\n{"q": "a", "p": 3, "y": 0}\n',
        {"text_column": "q", "text_pair_column": "p", "label_column": "y"},
        r"column 'p' holds int values, not text, in 1 row",
    ),
]


@pytest.mark.parametrize("name, content, extra, message", BAD, ids=[b[0] for b in BAD])
def test_bad_local_files_name_the_problem(tmp_path, name, content, extra, message):
    path = write(tmp_path, name, content)
    with pytest.raises(TuneoffError, match=message) as info:
        load_corpus(DataConfig(name=path, **extra))
    assert path in str(info.value) or "only one class" in str(info.value)


def test_label_in_test_never_seen_in_training(tmp_path):
    train = write(tmp_path, "train.csv", "text,label\n" + "".join(f"t{i},{'a' if i % 2 else 'b'}\n" for i in range(20)))
    test = write(tmp_path, "test.csv", "text,label\nx,a\ny,c\n")
    with pytest.raises(TuneoffError, match=r"test split has label\(s\) \['c'\] that never occur in the training split"):
        load_corpus(DataConfig(name=train, test_file=test))


def test_unknown_dataset_lists_builtins():
    with pytest.raises(TuneoffError, match="Unknown dataset 'rotten'.*rotten_tomatoes.*bbc_news"):
        load_corpus(DataConfig(name="rotten"))


def test_local_files_with_pairs_and_mixed_label_types(tmp_path):
    rows = [{"premise": f"p{i}", "hypothesis": f"h{i}", "y": (i % 3) * 1.0 if i % 2 else str(i % 3)} for i in range(30)]
    path = tmp_path / "nli.jsonl"
    pd.DataFrame(rows).to_json(path, orient="records", lines=True)
    corpus = load_corpus(
        DataConfig(name=str(path), text_column="premise", text_pair_column="hypothesis", label_column="y")
    )
    assert corpus.label_names == ["0", "1", "2"]  # 1.0 and "1" are the same label
    assert corpus.has_pairs and set(corpus.splits["test"].columns) == {"id", "text", "text_pair", "label"}


def test_hub_loader_maps_classlabels_and_drops_snli_minus_one(monkeypatch):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "premise": datasets.Value("string"),
            "hypothesis": datasets.Value("string"),
            "label": datasets.ClassLabel(names=["entailment", "neutral", "contradiction"]),
        }
    )

    def split(n, unlabeled=0):
        # SNLI marks examples without annotator agreement with -1; they must be dropped.
        labels = [-1] * unlabeled + [i % 3 for i in range(n - unlabeled)]
        return datasets.Dataset.from_dict(
            {"premise": [f"p{i}" for i in range(n)], "hypothesis": [f"h{i}" for i in range(n)], "label": labels},
            features=features,
        )

    dsd = datasets.DatasetDict(train=split(30), validation=split(9), test=split(9, unlabeled=1))
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda hub_id, config=None: calls.append(hub_id) or dsd)
    from tuneoff.core import hub

    monkeypatch.setattr(hub, "cached", lambda repo, kind="model": True)  # as if downloaded once before
    corpus = load_corpus(DataConfig(name="snli"))
    assert calls == ["stanfordnlp/snli"]
    assert corpus.label_names == ["contradiction", "entailment", "neutral"]
    assert len(corpus.splits["test"]) == 8 and len(corpus.splits["validation"]) == 9
    assert corpus.has_pairs


def test_length_grouped_order_is_a_permutation_and_deterministic(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    df = pd.DataFrame({"id": range(100), "text": [" ".join(["good"] * (1 + i % 13)) for i in range(100)]})
    enc = encode(df, tok, max_length=16, label_ids=[0] * 100)
    order = train_order(enc, 8, True, seed=3, epoch=0)
    assert sorted(order) == list(range(100))
    assert order == train_order(enc, 8, True, seed=3, epoch=0)
    assert order != train_order(enc, 8, True, seed=3, epoch=1)
    batches = list(train_loader(enc, micro_batches(order, 8), collator(tok, on_gpu=False)))
    padded = sum(b["input_ids"].numel() for b in batches)
    random_order = train_order(enc, 8, False, seed=3, epoch=0)
    padded_random = sum(
        b["input_ids"].numel() for b in train_loader(enc, micro_batches(random_order, 8), collator(tok, on_gpu=False))
    )
    assert padded < padded_random, "grouping by length pads less"
    real = sum(enc.lengths)
    assert all(b["input_ids"].shape[1] == int(b["attention_mask"].sum(1).max()) for b in batches), "dynamic padding"
    assert padded >= real
    loader, eval_order = eval_loader(enc, 16, collator(tok, on_gpu=False))
    assert sorted(eval_order) == list(range(100))


@pytest.mark.parametrize("n, world", [(100, 1), (100, 2), (101, 2), (7, 3), (97, 4)])
def test_sharding_covers_every_example(n, world):
    """Training micro-batches: every example in some process's batch, processes step equally often; evaluation
    shards: equal length, together every example, the only repeats being the padding of short shards."""
    order = list(torch.randperm(n, generator=torch.Generator().manual_seed(n)))
    per_rank = [micro_batches(order, 8, r, world) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    seen = [i for batches in per_rank for b in batches for i in b]
    assert set(seen) == set(order) and len(seen) - n < 8 * world
    if n % (8 * world) == 0:
        assert sorted(seen) == sorted(order), "no wrap-around when the rounds divide evenly"
    enc = Encoded([{"input_ids": [1] * (1 + i % 5)} for i in range(n)], [1 + i % 5 for i in range(n)])
    shards = [eval_loader(enc, 4, None, r, world)[1] for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    firsts = [i for s in shards for i in dict.fromkeys(s)]
    assert sorted(firsts) == list(range(n))
