"""User tables (CSV, JSONL/JSON, Parquet): read them, and say exactly what is wrong when they are bad.

Errors name the file, the column or the row (1-based, header not counted) and what to do. Nothing here
writes anything, so a bad file can never leave half-written output behind.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pandas as pd

from tuneoff.config import DataConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.core.outputs import CONTROL

FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def is_table_path(name: str) -> bool:
    return Path(name).suffix.lower() in FORMATS


def _checked(path: str | Path) -> tuple[Path, str]:
    path = Path(path)
    if path.is_dir():
        raise TuneoffError(
            f"{path} is a directory; give a file ({', '.join(sorted(FORMATS))}), e.g. {path / 'train.csv'}."
        )
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise TuneoffError(f"{path}: unknown file type {path.suffix!r}; use one of {', '.join(sorted(FORMATS))}.")
    if not path.is_file():
        where = "" if path.is_absolute() else f" (a relative path is read from the working directory, {Path.cwd()})"
        raise TuneoffError(f"{path}: file not found{where}.")
    return path, fmt


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table with every column as string (so ``NA`` stays text and ids keep their leading zeros)."""
    frames = list(iter_table(path, chunk_rows=None))
    return frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)


def iter_table(path: str | Path, chunk_rows: int | None = 10_000):
    """The table in frames of at most ``chunk_rows`` rows (None: one frame), read as it goes: a 200 MB file never
    sits in memory whole. Each frame's ``attrs["first_row"]`` is the 0-based row number of its first row. A header
    without rows, a repeated column name, bad UTF-8 and malformed lines are errors naming the file and the place."""
    path, fmt = _checked(path)
    try:
        if fmt in ("csv", "tsv"):
            _unique_header(path, "," if fmt == "csv" else "\t")
            reader = pd.read_csv(
                path,
                sep="," if fmt == "csv" else "\t",
                dtype=str,
                keep_default_na=False,
                encoding="utf-8",
                engine="c",
                chunksize=chunk_rows or 1 << 62,
            )
            chunks = iter(reader)
        elif fmt == "jsonl":
            chunks = _jsonl_chunks(path, chunk_rows)
        elif fmt == "json":
            chunks = iter(
                [pd.DataFrame(json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicates(path)))]
            )
        else:
            import pyarrow.parquet as pq

            parquet = pq.ParquetFile(path)
            chunks = (batch.to_pandas() for batch in parquet.iter_batches(batch_size=chunk_rows or 1 << 30))
        first, seen = 0, False
        for frame in chunks:
            if frame.empty:
                continue
            frame.columns = [str(c) for c in frame.columns]
            frame.attrs["first_row"] = first
            first += len(frame)
            seen = True
            yield frame
        if not seen:
            raise TuneoffError(f"{path}: the file has a header but no rows.")
    except UnicodeDecodeError as exc:
        raise TuneoffError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start : exc.start + 1]!r} at offset {exc.start}). "
            "Re-save the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from exc
    except TuneoffError:
        raise
    except pd.errors.EmptyDataError as exc:
        raise TuneoffError(f"{path}: the file is empty (no header, no rows).") from exc
    except (pd.errors.ParserError, ValueError, OSError) as exc:
        raise TuneoffError(f"{path}: cannot be read as {fmt.upper()}: {str(exc).strip().splitlines()[0]}") from exc
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own error types for corrupt Parquet
        raise TuneoffError(f"{path}: cannot be read as {fmt.upper()}: {exc}") from exc


def _unique_header(path: Path, sep: str) -> None:
    """pandas renames a repeated column to ``name.1``: a file whose header repeats a name is refused instead."""
    with open(path, encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh, delimiter=sep), [])
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise TuneoffError(f"{path}: the header repeats the column name(s) {repeated}; each column needs its own name.")


def _no_duplicates(path: Path, line: int | None = None):
    def hook(pairs):
        keys = [k for k, _ in pairs]
        repeated = sorted({k for k in keys if keys.count(k) > 1})
        if repeated:
            where = f"line {line}" if line else "an object"
            raise TuneoffError(
                f"{path}: {where} repeats the key(s) {repeated}; the JSON parser would keep only the last."
            )
        return dict(pairs)

    return hook


def _jsonl_chunks(path: Path, chunk_rows: int | None):
    rows = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_no_duplicates(path, number))
            except json.JSONDecodeError as exc:
                raise TuneoffError(f"{path}: line {number} is not valid JSON ({exc.msg}).") from exc
            if not isinstance(row, dict):
                raise TuneoffError(f'{path}: line {number} is not a JSON object ({{"text": ..., "label": ...}}).')
            rows.append(row)
            if chunk_rows and len(rows) >= chunk_rows:
                yield pd.DataFrame(rows)
                rows = []
    if rows:
        yield pd.DataFrame(rows)


def require_columns(df: pd.DataFrame, where: str, columns: dict[str, str | None]) -> None:
    """``columns`` maps config field (``data.text_column``) to the column it names. Every missing one is reported in
    one message (a file with columns `tweet` and `author` was refused for text, then, after the model had loaded, for
    the label), with the columns that look like the text and the label where the file makes that clear."""
    missing = {
        setting: column for setting, column in columns.items() if column is not None and column not in df.columns
    }
    if not missing:
        return
    said = "; ".join(f"no column {column!r} ({setting})" for setting, column in missing.items())
    guess = _guess_columns(df, list(missing))
    overrides = " ".join(f"{k}={v}" for k, v in guess.items())
    section = ", ".join(f"{k.split('.')[1]}: {v}" for k, v in guess.items())
    hint = (
        f" It looks like {overrides}: pass them (or data: {{{section}}} in a config)."
        if guess
        else f" Set {' and '.join(f'{k}=<one of them>' for k in missing)}."
    )
    raise TuneoffError(f"{where}: {said}. Columns in the file: {', '.join(map(repr, df.columns))}.{hint}")


def _guess_columns(df: pd.DataFrame, settings: list[str]) -> dict[str, str]:
    """The text column (the one whose values are longest on average, at least 20 characters) and the label column
    (among the rest, the one with the fewest distinct values, 2 to 50 and under a tenth of the rows' count), for the
    settings asked; nothing where the file does not make it clear."""
    sample = df.head(2000)
    lengths = {
        c: sample[c].astype(str).str.len().mean()
        for c in sample.columns
        if not pd.api.types.is_numeric_dtype(sample[c])
    }
    text = max(lengths, key=lengths.get, default=None)
    text = text if text is not None and lengths[text] >= 20 else None
    counts = {c: sample[c].nunique() for c in sample.columns if c != text}
    labels = [
        c for c, k in sorted(counts.items(), key=lambda kv: kv[1]) if 2 <= k <= 50 and k <= max(2, len(sample) // 10)
    ]
    guess = {"data.text_column": text, "data.label_column": labels[0] if labels else None}
    return {k: v for k, v in guess.items() if k in settings and v is not None}


def check_local_columns(cfg: DataConfig) -> None:
    """The columns a config names, checked in the first rows of each local file before anything heavy loads."""
    for path in (cfg.name, cfg.validation_file, cfg.test_file):
        if path is None or not is_table_path(str(path)) or not Path(path).is_file():
            continue
        first = next(iter_table(path, 2000), None)
        if first is not None and not first.empty:
            require_columns(
                first,
                str(path),
                {
                    "data.text_column": cfg.text_column,
                    "data.label_column": cfg.label_column,
                    "data.text_pair_column": cfg.text_pair_column,
                },
            )


def text_column(df: pd.DataFrame, column: str, where: str, shown: str | None = None) -> pd.Series:
    """The column as clean strings. Empty or missing cells, and cells that are not text (a number or a list in a
    JSON field), are errors that list the rows (1-based, counted from the file's first data row) and name the column
    as ``shown`` (the file's own name for it, where the frame renamed it)."""
    shown = shown or column
    first = df.attrs.get("first_row", 0)
    raw = df[column].tolist()  # a list: pandas would turn None back into NaN
    not_text = [
        i
        for i, v in enumerate(raw)
        if v is not None and not isinstance(v, str) and not (isinstance(v, float) and pd.isna(v))
    ]
    if not_text:
        example = raw[not_text[0]]
        raise TuneoffError(
            f"{where}: column {shown!r} holds {type(example).__name__} values, not text, in {len(not_text)} row(s): "
            f"{_rows(not_text, first)} (e.g. {str(example)[:40]!r}). Give each text as a string."
        )
    values = [v if isinstance(v, str) and v.strip() else None for v in raw]
    bad = [i for i, v in enumerate(values) if v is None]
    if bad:
        raise TuneoffError(
            f"{where}: column {shown!r} is empty or missing in {len(bad)} row(s): {_rows(bad, first)} "
            "(1-based, header not counted). Fill or remove those rows."
        )
    return pd.Series(values, index=df.index, dtype=object)


def has_control(text: str) -> bool:
    """Whether a name or label holds a control character (``core.outputs``'s set): refused where names come in."""
    return bool(CONTROL.search(text))


def label_column(df: pd.DataFrame, column: str, where: str, shown: str | None = None) -> pd.Series:
    """Labels as strings (``1`` and ``1.0`` from a JSON file both become ``1``); missing ones are an error. Surrounding
    whitespace is not part of a label (``pos`` and ``pos `` are one class): the returned series' ``attrs["stripped"]``
    counts the labels it was removed from, which the data notes report."""

    def as_label(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return None
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, float) and v.is_integer():
            return str(int(v))
        s = str(v).strip()
        return s or None

    raw = df[column].tolist()
    labels = [as_label(v) for v in raw]
    control = [i for i, v in enumerate(labels) if v is not None and has_control(v)]
    if control:
        raise TuneoffError(
            f"{where}: label column {(shown or column)!r} holds control characters (escape sequences, carriage returns) "
            f"in {len(control)} row(s): {_rows(control, df.attrs.get('first_row', 0))} (e.g. "
            f"{labels[control[0]][:40]!r}). A label is shown in terminals, tables and reports: remove them."
        )
    bad = [i for i, v in enumerate(labels) if v is None]
    if bad:
        raise TuneoffError(
            f"{where}: label column {(shown or column)!r} is missing in {len(bad)} row(s): {_rows(bad, df.attrs.get('first_row', 0))}. "
            "Every training/evaluation row needs a label; remove the rows or fill them in."
        )
    series = pd.Series(labels, index=df.index, dtype=object)
    series.attrs["stripped"] = sum(isinstance(v, str) and v != v.strip() for v in raw)
    return series


def _rows(indices: list[int], first: int = 0) -> str:
    shown = ", ".join(str(first + i + 1) for i in indices[:10])
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


def labeled_file(path: str, cfg: DataConfig, label_names: list[str]) -> pd.DataFrame:
    """Every row of one labeled file, cleaned, with labels checked against a trained model's: the set that
    ``tuneoff evaluate --data file`` scores (all of it, never a split carved from it)."""
    frame = clean_split(
        read_local(cfg.model_copy(update={"name": path, "validation_file": None, "test_file": None}))["train"], path
    )
    unknown = sorted(set(frame["label"]) - set(label_names))
    if unknown:
        raise TuneoffError(
            f"{path}: label(s) {unknown[:10]} are not among the model's labels {label_names[:20]}; the model cannot "
            "predict them. Evaluate on rows with the model's labels (map or drop the others), or check "
            "data.label_column."
        )
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
        require_columns(
            df,
            str(path),
            {
                "data.text_column": cfg.text_column,
                "data.label_column": cfg.label_column,
                "data.text_pair_column": cfg.text_pair_column,
            },
        )
        frame = pd.DataFrame({"id": [f"{Path(path).stem}-{i + 1}" for i in range(len(df))]})
        frame.attrs["source"] = str(path)
        # The file's own column names, for errors about a row (the frame calls them text / text_pair / label).
        frame.attrs["columns"] = {"text": cfg.text_column, "text_pair": cfg.text_pair_column, "label": cfg.label_column}
        for target, column in (
            ("text", cfg.text_column),
            ("text_pair", cfg.text_pair_column),
            ("label", cfg.label_column),
        ):
            if column is not None:
                frame[target] = df[column].values
        out[split] = frame
    return out


def clean_split(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate one split: texts present, labels present; every value becomes a string."""

    where = df.attrs.get("source", where)
    named = df.attrs.get("columns", {})
    out = pd.DataFrame({"id": df["id"].astype(str).values})
    out.attrs["source"] = where
    out["text"] = text_column(df, "text", where, named.get("text")).values
    if "text_pair" in df.columns:
        out["text_pair"] = text_column(df, "text_pair", where, named.get("text_pair")).values
    labels = label_column(df, "label", where, named.get("label"))
    out["label"] = labels.values
    out.attrs["stripped_labels"] = labels.attrs["stripped"]
    return out
