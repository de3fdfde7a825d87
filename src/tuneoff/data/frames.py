"""A pandas DataFrame given as data in the Python API (``tuneoff.train(data=frame)``), kept as a file a run config
can name.

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
        raise TuneoffError(f"{role}: the DataFrame repeats the column name(s) {repeated}; each column needs its own name.")
    text = frame.to_json(orient="records", lines=True, force_ascii=False, date_format="iso")
    path = cache_dir() / "frames" / f"dataframe-{hashlib.sha256(text.encode()).hexdigest()[:16]}.jsonl"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    return str(path)


def stored_frames(value, role: str = "data"):
    """``value`` with every DataFrame in it (at any depth of a config mapping or list) replaced by its file's path;
    ``role`` is where ``value`` sits, for errors (a mapping's keys extend it: ``data.test_file``)."""
    if isinstance(value, pd.DataFrame):
        return frame_file(value, role)
    if isinstance(value, dict):
        return {k: stored_frames(v, f"{role}.{k}" if role else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(stored_frames(v, role) for v in value)
    return value
