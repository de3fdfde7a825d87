"""A pandas DataFrame, a ``datasets.Dataset`` or a ``DatasetDict`` given as data in the Python API
(``tuneoff.train(data=frame)``), kept as a file a run config can name (a DatasetDict as one per split).

A run's ``config.yaml`` must say what it trained on, so that ``--resume``, ``tuneoff evaluate`` and a reader of the
results find the same rows again: a DataFrame held in a notebook's memory cannot be named. It is written once, as
JSON Lines (pandas' own writer: it keeps mixed label types and texts with newlines, which CSV and Parquet do not
both keep), under the cache directory by a hash of its content, so the same frame is one file however often it is
passed, and the file is read by the same loader, with the same checks and row numbers, as a user's own file.
"""

from __future__ import annotations

import hashlib

import pandas as pd

from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text
from tuneoff.models.assets import cache_dir


def frame_file(frame: pd.DataFrame, role: str = "data") -> str:
    """The path of a JSON Lines file holding ``frame``'s rows (its index is dropped; row k of an error message is
    the frame's k-th row, 1-based). ``role`` names the argument in errors (``data``, ``data.test_file``)."""
    if frame.empty:
        raise TuneoffError(f"{role}: the DataFrame has no rows; give a frame with a text column and a label column.")
    frame = frame.reset_index(drop=True)
    frame.columns = [str(c) for c in frame.columns]
    repeated = sorted({c for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise TuneoffError(
            f"{role}: the DataFrame repeats the column name(s) {repeated}; each column needs its own name."
        )
    text = frame.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    path = cache_dir() / "frames" / f"dataframe-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return str(path)


def _is_dataset(value) -> bool:
    """A ``datasets.Dataset`` (checked by its type's module: importing ``datasets`` to ask would slow every call)."""
    return type(value).__module__.startswith("datasets") and hasattr(value, "to_pandas") and hasattr(value, "features")


def is_dataset_dict(value) -> bool:
    """A ``datasets.DatasetDict``: splits by name, each a Dataset."""
    return (
        type(value).__module__.startswith("datasets")
        and isinstance(value, dict)
        and all(_is_dataset(v) for v in value.values())
    )


def dataset_frame(dataset) -> pd.DataFrame:
    """A Dataset's rows as a frame, its ClassLabel columns as their names (``neg``, not 0): the labels a report shows."""
    frame = dataset.to_pandas()
    for column, feature in dataset.features.items():
        if type(feature).__name__ == "ClassLabel" and column in frame:
            frame[column] = [feature.int2str(int(v)) if v is not None and int(v) >= 0 else None for v in frame[column]]
    return frame


SPLIT_NAMES = {"train": ("train",), "validation_file": ("validation", "valid", "dev", "val"), "test_file": ("test",)}


def dataset_dict_files(splits, role: str = "data") -> dict:
    """A DatasetDict's splits as the data section a config names: ``name`` (train), ``validation_file``,
    ``test_file`` (those it has; without a test split tuneoff holds one out of train, never validation)."""
    out = {}
    for key, names in SPLIT_NAMES.items():
        found = next((n for n in names if n in splits), None)
        if found is not None:
            out["name" if key == "train" else key] = frame_file(dataset_frame(splits[found]), f"{role}[{found!r}]")
    if "name" not in out:
        raise TuneoffError(
            f"{role}: the DatasetDict has no train split (splits: {', '.join(splits) or 'none'}); name "
            "the training split 'train'."
        )
    unknown = sorted(set(splits) - {n for names in SPLIT_NAMES.values() for n in names})
    if unknown:
        raise TuneoffError(
            f"{role}: the DatasetDict's split(s) {unknown} are not train, validation or test; rename them "
            "or pass the splits you mean."
        )
    return out


def stored_frames(value, role: str = "data"):
    """``value`` with every DataFrame or ``datasets.Dataset`` in it (at any depth of a config mapping or list)
    replaced by its file's path, and a data section whose ``name`` is a ``DatasetDict`` given its splits' files;
    ``role`` is where ``value`` sits, for errors (a mapping's keys extend it: ``data.test_file``)."""
    if isinstance(value, pd.DataFrame):
        return frame_file(value, role)
    if _is_dataset(value):
        return frame_file(dataset_frame(value), role)
    if isinstance(value, dict) and is_dataset_dict(value.get("name")):
        value = {**value, **dataset_dict_files(value["name"], f"{role}.name")}
    if isinstance(value, dict) and not is_dataset_dict(value):
        return {k: stored_frames(v, f"{role}.{k}" if role else str(k)) for k, v in value.items()}
    if is_dataset_dict(value):
        raise TuneoffError(
            f"{role}: a DatasetDict stands for a whole data section; give it as data (tuneoff.train("
            "data=splits)) or as a study's base.data.name."
        )
    if isinstance(value, (list, tuple)):
        return type(value)(stored_frames(v, role) for v in value)
    return value
