"""A ``Corpus``: train / validation / test splits with clean string labels, however the data came.

Every source becomes the same thing: split frames with columns ``id``, ``text``, optional ``text_pair`` and ``label``
(a string), plus the label names in id order. Labels are mapped to ids once, here, and that mapping travels with the
model (``config.json`` id2label). Sources without a split get a deterministic stratified one that keeps copies of a
text on one side.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.data.builtins import SPLIT_ALIASES, resolve_source
from tuneoff.data.files import clean_split

if TYPE_CHECKING:  # pandas is imported where data is read: `tuneoff datasets` must not wait for it
    import pandas as pd

SPLITS = ("train", "validation", "test")


@dataclass
class Corpus:
    name: str
    splits: dict[str, pd.DataFrame]
    label_names: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def has_pairs(self) -> bool:
        return "text_pair" in self.splits["train"].columns

    def label_ids(self, split: str) -> list[int]:
        index = {name: i for i, name in enumerate(self.label_names)}
        return [index[v] for v in self.splits[split]["label"]]


# --- offline built-ins ---------------------------------------------------------------------------------------


# --- online (hub) ---------------------------------------------------------------------------------------------


# --- local files -------------------------------------------------------------------------------------------------


MIN_ROWS = 3  # one split off: at least 2 rows left to train on and 1 held out (4 rows give train, validation, test)


def joined_text(df: pd.DataFrame) -> pd.Series:
    """Each example's text, with its pair (if any) after a separator."""
    return df["text"] + ((" [SEP] " + df["text_pair"]) if "text_pair" in df.columns else "")


def text_keys(df: pd.DataFrame) -> pd.Series:
    """What makes two examples the same: their text (and pair), lower-cased, whitespace collapsed."""
    return joined_text(df).str.lower().str.split().str.join(" ")


def _split_apart(df: pd.DataFrame, seed: int, size: float) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Split off ``size`` of ``df`` for evaluation, keeping copies of one text on the same side.

    Corpora scraped from the web repeat texts (BBC News has about a hundred duplicate articles); split row by row, a
    copy in training and one in test makes the test score partly a memory test. After the stratified split, rows of
    the evaluation side whose text also occurs in training move to training. Returns how many moved."""

    train, held = _split(df, seed, test_size=size)
    seen = held[text_keys(held).isin(set(text_keys(train)))]
    if seen.empty:
        return train, held, 0
    return (pd.concat([train, seen], ignore_index=True), held.drop(seen.index).reset_index(drop=True), len(seen))


def _split(df: pd.DataFrame, seed: int, **size) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Deterministic stratified split (falls back to unstratified when a class is too small to stratify)."""
    from sklearn.model_selection import train_test_split

    if len(df) < MIN_ROWS:
        raise TuneoffError(
            f"{df.attrs.get('source', 'The dataset')}: only {len(df)} usable row(s); splitting off validation/test "
            f"needs at least {MIN_ROWS}. Add rows, or give data.validation_file and data.test_file."
        )
    try:
        a, b = train_test_split(df, random_state=seed, stratify=df["label"], **size)
    except ValueError:  # a class too small to stratify: hold out rows, but never a class's last training row
        k = int(np.ceil(size["test_size"] * len(df)))
        left = df["label"].value_counts().to_dict()
        held = []
        for i in np.random.default_rng(seed).permutation(len(df)):
            label = df["label"].iloc[i]
            if len(held) < k and left[label] > 1:
                held.append(i)
                left[label] -= 1
        b = df.iloc[sorted(held)]
        a = df.drop(index=df.index[sorted(held)])
    return a.reset_index(drop=True), b.reset_index(drop=True)


def _cap(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """The first ``n`` rows of a seeded, stratified order of ``df``: every cap is a prefix of the same order, so a
    smaller training set is inside every larger one (a data-efficiency curve compares nested sets, not different
    draws), and each prefix keeps the classes' shares (each class's rows spread evenly along the order)."""

    if n is None or len(df) <= n:
        return df
    rng = np.random.default_rng(seed)
    key = np.empty(len(df))
    for _, rows in df.groupby("label", sort=True).indices.items():
        # Row j of a class of size m (in a seeded random order) sits at (j + u) / m, u uniform in [0, 1).
        key[rng.permutation(rows)] = (np.arange(len(rows)) + rng.random(len(rows))) / len(rows)
    return df.iloc[np.argsort(key, kind="stable")[:n]].reset_index(drop=True)


def _label_order(labels: set[str]) -> list[str]:
    try:
        return sorted(labels, key=lambda s: (float(s), s))
    except ValueError:
        return sorted(labels)


MIN_SPLIT_ROWS = {"train": 2, "validation": 1, "test": 1}


def _check_sizes(name: str, parts: dict[str, pd.DataFrame], notes: list[str]) -> None:
    """Stop before training when a split ended empty or too small to score: a file whose texts repeat loses its
    evaluation rows to train (copies stay on one side), and max_*_samples can cut a split down."""
    for split, least in MIN_SPLIT_ROWS.items():
        rows = len(parts[split])
        if rows < least:
            why = "; ".join(notes) or "as given"
            raise TuneoffError(
                f"Dataset {name!r}: the {split} split has {rows} row(s) ({why}); at least {least} are needed. Give more "
                "distinct rows, a file of its own (data.validation_file / data.test_file), or change "
                "data.validation_fraction / data.test_fraction / data.max_eval_samples."
            )


def load_corpus(cfg: DataConfig, label_names: list[str] | None = None) -> Corpus:
    """Load, validate and split. ``label_names`` (a trained model's) fixes the label set instead of train's."""
    name, loader = resolve_source(cfg)
    raw = loader(cfg)
    parts = {SPLIT_ALIASES.get(k, k): v for k, v in raw.items() if SPLIT_ALIASES.get(k, k) in SPLITS or k == "all"}
    parts = {k: clean_split(v, f"{name}:{k}") for k, v in parts.items()}
    notes = []
    stripped = {k: v.attrs.get("stripped_labels", 0) for k, v in parts.items() if v.attrs.get("stripped_labels")}
    if stripped:
        notes.append(
            "surrounding whitespace removed from "
            + ", ".join(f"{n} {k} label(s)" for k, n in stripped.items())
            + " ('pos ' and 'pos' are one class)"
        )
    if "all" in parts:
        parts["train"] = parts.pop("all")
    if "train" not in parts:
        raise TuneoffError(f"Dataset {name!r} has no training split (splits found: {', '.join(raw)}).")
    classes = set(parts["train"]["label"])
    if label_names is None and len(classes) < 2:  # before any split: say the real problem, not "too few rows"
        raise TuneoffError(
            f"Dataset {name!r}: the training split has only one class ({next(iter(classes), 'none')!r}); "
            "a classifier needs at least two. Check data.label_column."
        )
    if "test" not in parts:  # a held-out test split, never the validation split the verdict chooses on
        parts["train"], parts["test"], moved = _split_apart(parts["train"], cfg.split_seed, cfg.test_fraction)
        notes.append(
            f"no test split given: test = {cfg.test_fraction:.0%} of the data, stratified, held out "
            f"(split_seed={cfg.split_seed})"
            + (f"; {moved} test row(s) whose text is also in train moved to train" if moved else "")
        )
    if "validation" not in parts:
        parts["train"], parts["validation"], moved = _split_apart(
            parts["train"], cfg.split_seed, cfg.validation_fraction
        )
        notes.append(
            f"validation = {cfg.validation_fraction:.0%} of train, stratified (split_seed={cfg.split_seed})"
            + (f"; {moved} validation row(s) whose text is also in train moved to train" if moved else "")
        )
    parts["train"] = _cap(parts["train"], cfg.max_train_samples, cfg.split_seed)
    caps = {"validation": cfg.max_validation_samples, "test": cfg.max_test_samples}
    for split, cap in caps.items():
        parts[split] = _cap(parts[split], cap or cfg.max_eval_samples, cfg.split_seed)
    _check_sizes(name, parts, notes)

    known = set(label_names) if label_names else set(parts["train"]["label"])
    if label_names is None and len(known) < 2:
        raise TuneoffError(
            f"Dataset {name!r}: the training split has only one class ({next(iter(known), 'none')!r}); "
            "a classifier needs at least two. Check data.label_column."
        )
    for split in ("validation", "test") if label_names is None else SPLITS:
        unseen = sorted(set(parts[split]["label"]) - known)
        if unseen and label_names:
            raise TuneoffError(
                f"Dataset {name!r}: its {split} split has label(s) {unseen[:10]} that the model does not have (the "
                f"model's labels: {label_names[:20]}). Evaluate on data with the model's labels."
            )
        if unseen:
            raise TuneoffError(
                f"Dataset {name!r}: the {split} split has label(s) {unseen[:10]} that never occur in the training "
                f"split ({_label_order(known)[:20]}). Remove those rows or add training examples for them."
            )
    return Corpus(name, parts, label_names or _label_order(known), notes)
