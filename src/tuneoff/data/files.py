"""User tables (CSV, JSONL/JSON, Parquet): read them, and say exactly what is wrong when they are bad.

Errors name the file, the column or the row (1-based, header not counted) and what to do. Nothing here
writes anything, so a bad file can never leave half-written output behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def is_table_path(name: str) -> bool:
    return Path(name).suffix.lower() in FORMATS


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table with every column as string (so ``NA`` stays text and ids keep their leading zeros)."""
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TuneoffError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}.")
    if not path.is_file():
        raise TuneoffError(f"{path}: file not found.")
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, sep="," if fmt == "csv" else "\t", dtype=str, keep_default_na=False,
                             encoding="utf-8", engine="c")
        elif fmt == "jsonl":
            df = _read_jsonl(path)
        elif fmt == "json":
            df = pd.DataFrame(json.loads(path.read_text(encoding="utf-8")))
        else:
            df = pd.read_parquet(path)
    except UnicodeDecodeError as exc:
        raise TuneoffError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}). "
            "Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from exc
    except TuneoffError:
        raise
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError, OSError) as exc:
        raise TuneoffError(f"{path}: cannot be read as {fmt.upper()}: {str(exc).strip().splitlines()[0]}") from exc
    except Exception as exc:  # pyarrow raises its own error types for corrupt Parquet
        raise TuneoffError(f"{path}: cannot be read as {fmt.upper()}: {exc}") from exc
    df.columns = [str(c) for c in df.columns]
    return df


def _read_jsonl(path: Path) -> pd.DataFrame:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TuneoffError(f"{path}: line {number} is not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise TuneoffError(f"{path}: line {number} is not a JSON object ({{\"text\": ..., \"label\": ...}}).")
            rows.append(row)
    if not rows:
        raise TuneoffError(f"{path}: the file has no rows.")
    return pd.DataFrame(rows)


def require_columns(df: pd.DataFrame, where: str, columns: dict[str, str | None]) -> None:
    """``columns`` maps config field (``data.text_column``) to the column it names."""
    for setting, column in columns.items():
        if column is not None and column not in df.columns:
            raise TuneoffError(
                f"{where}: no column {column!r} ({setting}). Columns in the file: {', '.join(map(repr, df.columns))}. "
                f"Set {setting}=<one of them>."
            )


def text_column(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    """The column as clean strings; empty or missing cells are an error that lists the rows."""
    def as_text(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return None
        v = v if isinstance(v, str) else str(v)
        return v if v.strip() else None

    values = [as_text(v) for v in df[column].tolist()]  # a list: pandas would turn None back into NaN
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        raise TuneoffError(
            f"{where}: column {column!r} is empty or missing in {len(bad)} row(s): {_rows(bad)} "
            "(1-based, header not counted). Fill or remove those rows."
        )
    return pd.Series(values, index=df.index, dtype=object)


def label_column(df: pd.DataFrame, column: str, where: str) -> pd.Series:
    """Labels as strings (``1`` and ``1.0`` from a JSON file both become ``1``); missing ones are an error."""

    def as_label(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return None
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        s = str(v).strip()
        return s or None

    labels = [as_label(v) for v in df[column].tolist()]
    bad = [i for i, v in enumerate(labels) if v is None]
    if bad:
        raise TuneoffError(
            f"{where}: label column {column!r} is missing in {len(bad)} row(s): {_rows(bad)}. "
            "Every training/evaluation row needs a label; remove the rows or fill them in."
        )
    return pd.Series(labels, index=df.index, dtype=object)


def _rows(indices: list[int]) -> str:
    shown = ", ".join(str(i + 1) for i in indices[:10])
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


def labeled_file(path: str, cfg: DataConfig, label_names: list[str]) -> pd.DataFrame:
    """Every row of one labeled file, cleaned, with labels checked against a trained model's: the set that
    ``tuneoff evaluate --data file`` scores (all of it, never a split carved from it)."""
    frame = clean_split(read_local(cfg.model_copy(update={"name": path, "validation_file": None, "test_file": None}))["train"], path)
    unknown = sorted(set(frame["label"]) - set(label_names))
    if unknown:
        raise TuneoffError(
            f"{path}: label(s) {unknown[:10]} are not among the model's labels {label_names[:20]}; the model cannot "
            "predict them. Evaluate on rows with the model's labels (map or drop the others), or check "
            "data.label_column.")
    return frame


def read_local(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    files = {"train": cfg.name, "validation": cfg.validation_file, "test": cfg.test_file}
    out = {}
    for split, path in files.items():
        if path is None:
            continue
        df = read_table(path)
        if df.empty:
            raise TuneoffError(f"{path}: the file has a header but no rows.")
        require_columns(df, str(path), {"data.text_column": cfg.text_column, "data.label_column": cfg.label_column,
                                        "data.text_pair_column": cfg.text_pair_column})
        frame = pd.DataFrame({"id": [f"{Path(path).stem}-{i + 1}" for i in range(len(df))]})
        frame.attrs["source"] = str(path)
        for target, column in (("text", cfg.text_column), ("text_pair", cfg.text_pair_column), ("label", cfg.label_column)):
            if column is not None:
                frame[target] = df[column].values
        out[split] = frame
    return out


def clean_split(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate one split: texts present, labels present; every value becomes a string."""

    where = df.attrs.get("source", where)
    out = pd.DataFrame({"id": df["id"].astype(str).values})
    out.attrs["source"] = where
    out["text"] = text_column(df, "text", where).values
    if "text_pair" in df.columns:
        out["text_pair"] = text_column(df, "text_pair", where).values
    out["label"] = label_column(df, "label", where).values
    return out
