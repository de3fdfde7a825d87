"""Know your data: per-split counts, label balance, text lengths in characters and in the model's tokens,
duplicates and train/validation/test leakage, near-empty texts, and the ``max_length`` that follows.

The recommended ``max_length`` covers the 99th percentile of training-set token lengths (rounded up to a
multiple of 8), unless that exceeds what the model can take; ``data.max_length: auto`` uses it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tuneoff.data.corpus import SPLITS, Corpus, joined_text, text_keys

CANDIDATES = (32, 64, 128, 256, 384, 512)
IMBALANCE_RATIO = 3.0  # flag when the largest class is this many times the smallest
NEAR_EMPTY_CHARS = 3


def token_lengths(df: pd.DataFrame, tokenizer) -> np.ndarray:
    """Token count of each example as the model sees it (pairs joined with their special tokens), untruncated."""
    pairs = list(df["text_pair"]) if "text_pair" in df.columns else None
    enc = tokenizer(list(df["text"]), pairs, truncation=False, verbose=False)
    return np.array([len(ids) for ids in enc["input_ids"]])


def _stats(values: np.ndarray) -> dict:
    return {
        "min": int(values.min()),
        "median": float(np.median(values)),
        "p95": float(np.percentile(values, 95)),
        "p99": float(np.percentile(values, 99)),
        "max": int(values.max()),
        "mean": float(values.mean()),
    }


def recommend_max_length(lengths: np.ndarray, model_max: int) -> int:
    p99 = float(np.percentile(lengths, 99))
    return int(min(model_max, max(8, math.ceil(p99 / 8) * 8)))


def relative_time(lengths: np.ndarray, candidates, reference: int, hidden: int) -> dict[int, float]:
    """Training compute at each max_length relative to ``reference``, for length-grouped dynamic padding: an example
    of n tokens costs about n (24 H^2 + 4 n H) FLOPs per layer (projections and feed-forward, plus attention's
    n^2 term), so truncating long documents saves more than their share of tokens."""

    def cost(limit: int) -> float:
        n = np.minimum(lengths, limit).astype(float)
        return float(np.sum(n * (24 * hidden * hidden + 4 * n * hidden)))

    base = cost(reference) or 1.0
    return {int(c): cost(c) / base for c in candidates}


def inspect_corpus(corpus: Corpus, tokenizer, model_max: int = 512, hidden: int = 768) -> dict:
    report: dict = {"dataset": corpus.name, "label_names": corpus.label_names, "notes": corpus.notes, "splits": {}}
    lengths: dict[str, np.ndarray] = {}
    keys = {}
    for split in SPLITS:
        df = corpus.splits[split]
        text, split_keys = joined_text(df), text_keys(df)
        keys[split] = set(split_keys)
        tok = token_lengths(df, tokenizer)
        lengths[split] = tok
        counts = df["label"].value_counts()
        shares = (counts / len(df)).round(4)
        dup = int(split_keys.duplicated().sum())
        report["splits"][split] = {
            "rows": len(df),
            "labels": {k: {"count": int(counts[k]), "share": float(shares[k])} for k in counts.index},
            "imbalanced": bool(counts.max() / max(counts.min(), 1) >= IMBALANCE_RATIO),
            "chars": _stats(text.str.len().values),
            "tokens": _stats(tok),
            "duplicates": dup,
            "near_empty": int((df["text"].str.strip().str.len() < NEAR_EMPTY_CHARS).sum()),
            "truncated_share": {n: float((tok > n).mean()) for n in CANDIDATES},
        }
    report["leakage"] = {
        f"{a}&{b}": len(keys[a] & keys[b])
        for a, b in (("train", "validation"), ("train", "test"), ("validation", "test"))
    }
    if corpus.splits["test"] is corpus.splits["validation"]:
        report["leakage"]["validation&test"] = 0  # the same split reused, not leakage
    rec = recommend_max_length(lengths["train"], model_max)
    report["recommended_max_length"] = rec
    report["recommended_truncates"] = float((lengths["train"] > rec).mean())
    report["relative_time"] = relative_time(lengths["train"], [c for c in CANDIDATES if c <= model_max], rec, hidden)
    report["_lengths"] = lengths
    return report


def model_max_length(model_config, tokenizer) -> int:
    """Longest input the model takes: position embeddings (RoBERTa/MPNet reserve two) and the tokenizer's limit."""
    positions = getattr(model_config, "max_position_embeddings", 512) or 512
    if getattr(model_config, "model_type", "") in ("roberta", "xlm-roberta", "mpnet", "camembert"):
        positions -= 2
    limit = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else positions
    return int(min(positions, limit))


def summary_rows(report: dict) -> pd.DataFrame:
    rows = []
    for split, s in report["splits"].items():
        rows.append(
            {
                "split": split,
                "rows": s["rows"],
                "classes": len(s["labels"]),
                "imbalanced": s["imbalanced"],
                "tokens min": s["tokens"]["min"],
                "tokens median": s["tokens"]["median"],
                "tokens p95": s["tokens"]["p95"],
                "tokens p99": s["tokens"]["p99"],
                "tokens max": s["tokens"]["max"],
                "characters median": s["chars"]["median"],
                "duplicates": s["duplicates"],
                "near-empty": s["near_empty"],
            }
        )
    return pd.DataFrame(rows)
