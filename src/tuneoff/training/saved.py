"""A finished run put to use: load its model (with the loader its method needs), evaluate it on a dataset or a
labeled file, predict an unlabeled file.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tuneoff.config import build_config, read_yaml
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_open, read_json, safe_name, write_json
from tuneoff.core.outputs import spreadsheet_safe
from tuneoff.data.batches import collator, encode
from tuneoff.data.corpus import SPLITS, load_corpus
from tuneoff.data.files import is_table_path, iter_table, labeled_file, require_columns
from tuneoff.data.files import text_column as clean_text
from tuneoff.methods import get_method
from tuneoff.results.rundir import MODEL_DIR
from tuneoff.training.evaluate import compute_metrics, predict_logits, predictions_frame
from tuneoff.training.loss import prior_shift


def method_of(run_dir: Path):
    """The method that trained a run (its saved config), which knows how its saved model loads."""

    config = Path(run_dir) / "config.yaml"
    name = ((read_yaml(config).get("method") or {}).get("name") if config.is_file() else None) or "full"
    try:
        return get_method(str(name))
    except ValueError as exc:
        raise TuneoffError(f"{config}: {exc}; this run was written by another version of tuneoff.") from None


def load_saved_model(run_dir: Path, device: str = "cpu"):
    """Model and tokenizer of a finished run (adapter or full), in eval mode."""
    from safetensors import SafetensorError
    from transformers import AutoTokenizer

    model_dir = Path(run_dir) / MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise TuneoffError(f"{run_dir} is not a finished tuneoff run: {model_dir}/config.json is missing.")
    broken = [p.name for p in model_dir.iterdir() if p.is_symlink() and not p.exists()]
    if broken:
        raise TuneoffError(
            f"{model_dir}: the link(s) {broken} to the base model's weights are broken (the base model moved or was "
            "uninstalled). Reinstall the base model or recreate the links."
        )
    try:
        model = method_of(run_dir).load(model_dir)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, SafetensorError) as exc:  # a missing or unreadable file; safetensors' own error type
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TuneoffError(
            f"Cannot load the model in {model_dir}: {first}. If a file there was truncated or changed, "
            "re-run the training (the run's other files are intact)."
        ) from exc
    return model.to(device).eval(), tokenizer


def model_labels(model) -> list[str]:
    """A saved model's class names in the order of its logits (``config.json``'s id2label)."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def class_weight_shift(run_dir, label_names: list[str]) -> np.ndarray:
    """log w_k per class (label order) of a run trained with ``train.class_weight``, to subtract from its logits: the
    data's own posterior, calibrated, for the rare-class recall the weights bought (``loss.prior_shift``)."""
    run_json = Path(run_dir) / "run.json"
    weights = (read_json(run_json) if run_json.is_file() else {}).get("class_weights")
    if not weights:
        raise TuneoffError(
            f"{run_dir} trained without class weights (train.class_weight: none): there is nothing to "
            "undo; leave out --undo-class-weights (undo_class_weights)."
        )
    missing = [name for name in label_names if name not in weights]
    if missing:
        raise TuneoffError(f"{run_json}: class_weights has no weight for {missing}; its labels are {sorted(weights)}.")
    return prior_shift([weights[name] for name in label_names])


def _score(
    model,
    tokenizer,
    df: pd.DataFrame,
    max_length: int,
    batch_size: int,
    *,
    label_ids=None,
    shift: np.ndarray | None = None,
) -> np.ndarray:
    device = next(model.parameters()).device
    encoded = encode(df, tokenizer, max_length, label_ids)
    logits = predict_logits(model, encoded, batch_size, collator(tokenizer, device.type == "cuda"), device)
    return logits if shift is None else logits - shift


def score_frame(
    model,
    tokenizer,
    df: pd.DataFrame,
    max_length: int,
    *,
    batch_size: int = 64,
    shift: np.ndarray | None = None,
    keep_text: bool = False,
) -> pd.DataFrame:
    """Predictions for a frame of texts (``id``, ``text``, optional ``text_pair``): id, predicted label and each
    class's probability (``shift``, subtracted from the logits: ``class_weight_shift``); with ``keep_text`` the
    text beside them, so a file of predictions reads without joining it back to its input."""
    label_names = model_labels(model)
    logits = _score(model, tokenizer, df, max_length, batch_size, shift=shift)
    frame = predictions_frame(df, logits, label_names)
    return frame if keep_text else frame.drop(columns=["text", "text_pair"], errors="ignore")


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def evaluate_run(
    run_dir, data: str | None, split: str, overrides: list[str], undo_class_weights: bool = False
) -> tuple[dict, Path]:
    """Metrics of a saved run on a split of its own or another dataset with the same labels (with
    ``undo_class_weights``, of its probabilities with the training loss's class weights divided out)."""

    run_dir = Path(run_dir)
    if split not in SPLITS:
        raise TuneoffError(f"--split {split!r}: choose one of {', '.join(SPLITS)}.")
    if not (run_dir / "config.yaml").is_file():
        raise TuneoffError(f"{run_dir} is not a tuneoff run directory (no config.yaml).")
    base = read_yaml(run_dir / "config.yaml")
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise TuneoffError(f"evaluate takes only data.* overrides, not {bad}.")
    note = None
    if data is not None and _same_file(data, (base.get("data") or {}).get("name")):
        # Scored whole, the file the run trained on would count its training rows as evaluation: its own split is meant.
        note = (
            f"{data} is the file this run trained on: scored its {split} split as the run carved it, not every row "
            "(those include the training rows)"
        )
        data = None
    cfg = build_config(base, overrides, f"{run_dir}/config.yaml + command line", names={"data": data})
    model, tokenizer = load_saved_model(run_dir, _device())
    label_names = model_labels(model)
    shift = class_weight_shift(run_dir, label_names) if undo_class_weights else None
    if data is not None and is_table_path(data):  # a file given to evaluate is the set to evaluate: all of it
        frame, name, split = labeled_file(data, cfg.data, label_names), Path(data).name, "all rows"
    else:
        corpus = load_corpus(cfg.data, label_names=label_names)
        frame, name = corpus.splits[split], corpus.name
    index = {label: i for i, label in enumerate(label_names)}
    logits = _score(model, tokenizer, frame, cfg.data.max_length, cfg.train.eval_batch_size, shift=shift)
    metrics = compute_metrics([index[v] for v in frame["label"]], logits, label_names)
    metrics.update(
        dataset=name,
        split=split,
        rows_scored=len(frame),
        **({"note": note} if note else {}),
        **({"class_weights_undone": True} if undo_class_weights else {}),
    )
    if split == "all rows":  # a file: its absolute path is recorded, and two files of one name never share a result
        metrics["data_path"] = str(Path(data).resolve())
        name = f"{Path(data).stem}-{hashlib.sha256(metrics['data_path'].encode()).hexdigest()[:8]}"
    undone = "-weights-undone" if undo_class_weights else ""
    out = _unclaimed(run_dir / f"eval-{safe_name(name)}-{safe_name(split)}{undone}.json")
    write_json(out, metrics)
    return metrics, out


def _same_file(a: str, b) -> bool:
    """Whether two data names are one file on disk (however each was written: relative, absolute, via a link)."""
    try:
        return isinstance(b, str) and is_table_path(a) and os.path.samefile(a, b)
    except OSError:  # either is not a file here (a built-in or hub name, or moved since)
        return False


def _unclaimed(path: Path) -> Path:
    """``path``, or ``name-2.json``, ``name-3.json``...: a finished evaluation is never overwritten."""
    n = 1
    candidate = path
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def predict_file(
    run_dir,
    file,
    out,
    text_column: str | None,
    pair_column: str | None,
    id_column: str | None,
    *,
    fmt: str = "full",
    raw: bool = False,
    chunk_rows: int = 10_000,
    progress: bool = True,
    undo_class_weights: bool = False,
) -> int:
    """Predictions for an unlabeled table, streamed in chunks of ``chunk_rows`` (memory stays bounded however large
    the file) into a temporary file renamed to ``out`` when complete. ``fmt="submission"`` writes a competition's
    ``id,label`` with integer labels: the label itself when the labels are integers (as the data gave them), else the
    model's label index (``config.json`` id2label). Cells that a spreadsheet would run as formulas are escaped unless
    ``raw``."""
    from tqdm.auto import tqdm

    run_dir, out = Path(run_dir), Path(out)
    if not out.parent.is_dir():
        raise TuneoffError(f"--out {out}: directory {out.parent} does not exist.")
    cfg = read_yaml(run_dir / "config.yaml") if (run_dir / "config.yaml").is_file() else {}
    data = cfg.get("data", {})
    # Unnamed, the columns are the ones the run trained on: a file like the training file needs no options.
    text_column = text_column or data.get("text_column") or "text"
    pair_column = pair_column or data.get("text_pair_column")
    columns = {"--text-column": text_column, "--text-pair-column": pair_column, "--id-column": id_column}
    chunks = iter_table(file, chunk_rows)
    first = next(chunks)  # reading fails here, before the model loads, on a bad file
    require_columns(first, str(file), columns)
    model, tokenizer = load_saved_model(run_dir, _device())
    max_length = data.get("max_length", 512)
    label_names = model_labels(model)
    shift = class_weight_shift(run_dir, label_names) if undo_class_weights else None
    numeric = all(name.lstrip("-").isdigit() for name in label_names)
    index = {name: int(name) if numeric else i for i, name in enumerate(label_names)}
    written = 0
    with (
        atomic_open(out, newline="") as fh,
        tqdm(desc="predict", unit=" rows", disable=not progress, dynamic_ncols=True) as bar,
    ):
        for table in itertools.chain([first], chunks):
            require_columns(table, str(file), columns)
            start = table.attrs.get("first_row", written)
            df = pd.DataFrame(
                {
                    "id": table[id_column].astype(str).values
                    if id_column
                    else [str(start + i + 1) for i in range(len(table))]
                }
            )
            df["text"] = clean_text(table, text_column, str(file)).values
            if pair_column:
                df["text_pair"] = clean_text(table, pair_column, str(file)).values
            frame = score_frame(model, tokenizer, df, max_length, batch_size=64, shift=shift, keep_text=fmt == "full")
            if fmt == "submission":
                frame = pd.DataFrame({"id": frame["id"], "label": frame["pred_label"].map(index)})
            (frame if raw else spreadsheet_safe(frame)).to_csv(fh, index=False, header=written == 0)
            written += len(frame)
            bar.update(len(frame))
    return written
