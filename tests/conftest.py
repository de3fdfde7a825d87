"""Shared fixtures: a tiny random BERT (and DistilBERT) built from a config with a vocab made here, and a
separable toy dataset. Everything is offline and runs in seconds on a CPU."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# `tuneoff train` indexes its runs in the results store (default ./results): keep the tests' out of the checkout.
os.environ.setdefault("TUNEOFF_RESULTS", __import__("tempfile").mkdtemp(prefix="tuneoff-results-"))
# Studies run one run at a time in the tests (packing several into worker processes is tested on its own, in
# tests/test_packing.py): spawning workers for every tiny study would only slow the suite.
os.environ.setdefault("TUNEOFF_PARALLEL", "1")

POSITIVE = ["good", "great", "fine", "nice", "superb", "lovely"]
NEGATIVE = ["bad", "awful", "poor", "sad", "boring", "dull"]
FILLER = ["the", "a", "movie", "was", "is", "film", "and", "plot", "it", "very", "this", "story"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + FILLER

# Tiny BERT: hidden H=32, L=2 layers, intermediate I=64, vocab V=len(VOCAB)=29, positions P=64, 2 labels.
# A wide initialiser makes the random encoder's features depend visibly on the words, as a pretrained one's do,
# so that even a linear probe can learn the toy task.
TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    max_position_embeddings=64,
    initializer_range=0.1,
)


def make_tokenizer(tmp_path=None):
    from transformers import BertTokenizer

    return BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True)


def save_tiny_bert(path, **config):
    """A saved tiny BertModel (no head: the classifier starts fresh, as with a real pretrained encoder) and its
    tokenizer; ``config`` overrides the tiny configuration (e.g. dropout)."""
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), **{**TINY, **config})).save_pretrained(path)
    make_tokenizer(path).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_distilbert(tmp_path_factory):
    import torch
    from transformers import DistilBertConfig, DistilBertModel

    path = tmp_path_factory.mktemp("tiny-distilbert")
    torch.manual_seed(0)
    cfg = DistilBertConfig(
        vocab_size=len(VOCAB), dim=32, n_layers=2, n_heads=2, hidden_dim=64, max_position_embeddings=64
    )
    DistilBertModel(cfg).save_pretrained(path)
    make_tokenizer(path).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def no_dropout_bert(tmp_path_factory):
    """Tiny BERT without dropout, for comparisons that dropout masks would blur (several processes draw their own
    masks; compiled kernels draw from another RNG stream)."""
    return save_tiny_bert(
        tmp_path_factory.mktemp("tiny-bert-nodrop"), hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )


def toy_frame(n: int, seed: int) -> pd.DataFrame:
    """Separable sentiment: each text holds 1-2 words of its class among filler words."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "pos" if i % 2 == 0 else "neg"
        words = rng.sample(FILLER, rng.randint(3, 7)) + rng.sample(
            POSITIVE if label == "pos" else NEGATIVE, rng.randint(1, 2)
        )
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def toy_csv(tmp_path_factory):
    path = tmp_path_factory.mktemp("toy") / "toy.csv"
    toy_frame(240, seed=1).to_csv(path, index=False)
    return str(path)


def crashing_env(crash_at: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment for a child that dies (SIGKILL) at ``crash_at``; without it, one that never does.
    TUNEOFF_CRASH_ONCE is always dropped: inherited from a Ray test's driver, it would disarm the crash."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TUNEOFF_CRASH_AT", "TUNEOFF_CRASH_ONCE", "TUNEOFF_CRASH_SIGNAL")
    }
    return {**env, **({"TUNEOFF_CRASH_AT": crash_at} if crash_at else {}), **extra}


def tiny_overrides(model_dir: str, data: str, out, **extra) -> list[str]:
    """Overrides for a fast run of the tiny model on the toy data."""
    base = {
        "model.name": model_dir,
        "data.name": data,
        "data.max_length": 16,
        "output_dir": str(out),
        "train.epochs": 6,
        "train.batch_size": 16,
        "train.seed": 0,
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


TWO_VARIANTS = {
    "partial_top1": {"method": {"name": "partial", "k": 1}, "train": {"lr": 5e-3}},
    "lora": {"method": {"name": "lora", "r": 4}, "train": {"lr": 2e-2}},
}


def write_study(
    tmp_path,
    model_dir: str,
    data: str,
    name: str = "tiny",
    *,
    variants: dict | None = None,
    seeds=(1, 2),
    train: dict | None = None,
    data_config: dict | None = None,
    **extra,
) -> Path:
    """A study file over the tiny model and the toy data: the one factory every study test uses. ``train`` and
    ``data_config`` are merged into the base's sections, ``extra`` into the study's top level."""
    import yaml

    spec = {
        "name": name,
        "base": {
            "model": {"name": model_dir},
            "data": {"name": data, "max_length": 16, **(data_config or {})},
            "train": {"epochs": 4, "batch_size": 16, "eval_every": 5, **(train or {})},
        },
        "variants": TWO_VARIANTS if variants is None else variants,
        "seeds": list(seeds),
        **extra,
    }
    path = tmp_path / f"{name.replace('/', '_')}-{abs(hash(name)) % 10_000}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="session")
def tiny_bert_pretrained(tmp_path_factory):
    """The tiny BERT after a short supervised warm-up in plain PyTorch, saved without its head.

    A linear probe can only learn what the encoder's features already separate; a random tiny encoder's do
    not, a pretrained encoder's do. This stands in for the pretrained encoder in the head-only test.
    """
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("tiny-bert-pretrained")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=len(VOCAB), num_labels=2, **TINY))
    tok = make_tokenizer()
    df = toy_frame(256, seed=99)
    enc = tok(list(df.text), padding=True, return_tensors="pt")
    labels = torch.tensor((df.label == "pos").astype(int).values)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        for i in range(0, len(df), 32):
            out = model(**{k: v[i : i + 32] for k, v in enc.items()}, labels=labels[i : i + 32])
            out.loss.backward()
            opt.step()
            opt.zero_grad()
    model.bert.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)
