"""Evaluation: logits for a split, and the metrics of a classifier (scikit-learn, nothing hand-rolled)."""

from __future__ import annotations

import contextlib

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
)

from tuneoff.data.batches import Encoded, eval_loader


def predict_logits(
    model,
    encoded: Encoded,
    batch_size: int,
    collate,
    device,
    *,
    autocast=contextlib.nullcontext,
    rank: int = 0,
    world: int = 1,
    before_batch=None,
) -> np.ndarray:
    """Logits (float32, original example order) under ``inference_mode`` with length-sorted batches.

    With ``world`` processes each predicts its shard and every process gets all logits back (Accelerate's
    ``gather_object``), each example exactly once: metrics are computed identically everywhere, so decisions taken
    on them (best checkpoint, early stopping, pruning) agree across processes."""
    loader, indices = eval_loader(encoded, batch_size, collate, rank, world)
    was_training = model.training
    model.eval()
    chunks = []
    with torch.inference_mode():
        for n, batch in enumerate(loader):
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            if before_batch is not None:  # e.g. the frozen layers' cached output for these examples
                before_batch(indices[n * batch_size : (n + 1) * batch_size], batch)
            with autocast():
                chunks.append(model(**batch).logits.float().cpu())
    model.train(was_training)
    parts = [(indices, torch.cat(chunks).numpy())]
    if world > 1:
        from accelerate.utils import gather_object

        parts = gather_object(parts)
    logits = np.full((len(encoded), parts[0][1].shape[1]), np.nan, dtype=np.float32)
    filled = np.zeros(len(encoded), dtype=bool)
    for part_indices, part_logits in parts:
        for i, row in zip(part_indices, part_logits):
            if not filled[i]:  # a shard's padding repeats an example another row already holds
                logits[i], filled[i] = row, True
    if not filled.all():
        raise RuntimeError(
            f"evaluation lost {int((~filled).sum())} of {len(encoded)} examples across {world} processes"
        )
    return logits


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), dim=-1).numpy()


def compute_metrics(label_ids: list[int], logits: np.ndarray, label_names: list[str]) -> dict:
    y = np.asarray(label_ids)
    pred = logits.argmax(-1)
    all_ids = list(range(len(label_names)))
    loss = torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)).item()
    report = classification_report(y, pred, labels=all_ids, target_names=label_names, zero_division=0, output_dict=True)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=all_ids, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y, pred, labels=all_ids, average="weighted", zero_division=0)),
        "loss": float(loss),
        "n": int(len(y)),
        "per_class": {
            name: {k: float(report[name][k]) for k in ("precision", "recall", "f1-score", "support")}
            for name in label_names
        },
        "confusion_matrix": confusion_matrix(y, pred, labels=all_ids).tolist(),
    }


def predictions_frame(df: pd.DataFrame, logits: np.ndarray, label_names: list[str]) -> pd.DataFrame:
    """One row per example: id, text, true label (if known), predicted label, and each class's probability."""
    probs = softmax(logits)
    out = pd.DataFrame({"id": df["id"].values, "text": df["text"].values})
    if "text_pair" in df.columns:
        out["text_pair"] = df["text_pair"].values
    if "label" in df.columns:
        out["true_label"] = df["label"].values
    out["pred_label"] = [label_names[i] for i in probs.argmax(-1)]
    for i, name in enumerate(label_names):
        out[f"prob_{name}"] = probs[:, i]
    return out
