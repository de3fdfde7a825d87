"""Evaluation: logits for a split, and the metrics of a classifier (scikit-learn, nothing hand-rolled)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from tuneoff.batches import Encoded, eval_loader


def predict_logits(model, encoded: Encoded, batch_size: int, collate, device, autocast=contextlib.nullcontext,
                   rank: int = 0, world: int = 1, before_batch=None) -> np.ndarray:
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
                before_batch(indices[n * batch_size:(n + 1) * batch_size], batch)
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
        raise RuntimeError(f"evaluation lost {int((~filled).sum())} of {len(encoded)} examples across {world} processes")
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


def _score(model, tokenizer, df: pd.DataFrame, max_length: int, batch_size: int, label_ids=None) -> np.ndarray:
    from tuneoff.batches import collator, encode

    device = next(model.parameters()).device
    encoded = encode(df, tokenizer, max_length, label_ids)
    return predict_logits(model, encoded, batch_size, collator(tokenizer, device.type == "cuda"), device)


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_run(run_dir, data: str | None, split: str, overrides: list[str]) -> tuple[dict, Path]:
    """Metrics of a saved run on a split of its own or another dataset with the same labels."""
    from tuneoff.config import build_config, read_yaml
    from tuneoff.data import SPLITS, load_corpus
    from tuneoff.errors import TuneoffError
    from tuneoff.rundir import load_saved_model, safe_name, write_json
    from tuneoff.tables import is_table_path

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise TuneoffError(f"--split {split!r}: choose one of {', '.join(SPLITS)}.")
    if not (run_dir / "config.yaml").is_file():
        raise TuneoffError(f"{run_dir} is not a tuneoff run directory (no config.yaml).")
    base = read_yaml(run_dir / "config.yaml")
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise TuneoffError(f"evaluate takes only data.* overrides, not {bad}.")
    cfg = build_config(base, overrides, f"{run_dir}/config.yaml + command line", names={"data": data})
    model, tokenizer = load_saved_model(run_dir, _device())
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    if data is not None and is_table_path(data):  # a file given to evaluate is the set to evaluate: all of it
        from tuneoff.data import labeled_file

        frame, name, split = labeled_file(data, cfg.data, label_names), Path(data).name, "all rows"
    else:
        corpus = load_corpus(cfg.data, label_names=label_names)
        frame, name = corpus.splits[split], corpus.name
    index = {label: i for i, label in enumerate(label_names)}
    logits = _score(model, tokenizer, frame, cfg.data.max_length, cfg.train.eval_batch_size)
    metrics = compute_metrics([index[v] for v in frame["label"]], logits, label_names)
    metrics.update(dataset=name, split=split, rows_scored=len(frame))
    out = run_dir / f"eval-{safe_name(name)}-{safe_name(split)}.json"
    write_json(out, metrics)
    return metrics, out


def predict_file(run_dir, file, out, text_column: str, pair_column: str | None, id_column: str | None,
                 fmt: str = "full") -> int:
    """Predictions for an unlabeled table, written atomically to ``out`` (CSV). ``fmt="submission"`` writes a
    competition's ``id,label`` with integer labels: the label itself when the labels are integers (as the data
    gave them), else the model's label index (``config.json`` id2label)."""
    from tuneoff.config import read_yaml
    from tuneoff.rundir import atomic_write_text, load_saved_model
    from tuneoff.tables import read_table, require_columns, text_column as clean_text

    run_dir, out = Path(run_dir), Path(out)
    table = read_table(file)
    require_columns(table, str(file), {"--text-column": text_column, "--text-pair-column": pair_column, "--id-column": id_column})
    df = pd.DataFrame({"id": table[id_column].astype(str) if id_column else [str(i + 1) for i in range(len(table))]})
    df["text"] = clean_text(table, text_column, str(file)).values
    if pair_column:
        df["text_pair"] = clean_text(table, pair_column, str(file)).values
    if not out.parent.is_dir():
        from tuneoff.errors import TuneoffError

        raise TuneoffError(f"--out {out}: directory {out.parent} does not exist.")
    model, tokenizer = load_saved_model(run_dir, _device())
    cfg = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    max_length = cfg.get("data", {}).get("max_length", 512)
    label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    logits = _score(model, tokenizer, df, max_length, 64)
    frame = predictions_frame(df, logits, label_names).drop(columns=["text", "text_pair"], errors="ignore")
    if fmt == "submission":
        numeric = all(name.lstrip("-").isdigit() for name in label_names)
        index = {name: int(name) if numeric else i for i, name in enumerate(label_names)}
        frame = pd.DataFrame({"id": frame["id"], "label": frame["pred_label"].map(index)})
    atomic_write_text(out, frame.to_csv(index=False))
    return len(frame)
