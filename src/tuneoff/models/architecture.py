"""What each architecture's parts are: the encoder's layer list, the head modules that must train and be saved with
any method, the default LoRA targets, and where its config keeps each dropout rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tuneoff.core.errors import TuneoffError

if TYPE_CHECKING:  # torch is imported where a model is built: `tuneoff models` must not wait for it
    from torch import nn


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
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_TARGETS,
    )

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


# Where each architecture keeps its dropout rates (the first of these its config has). Recipes name them by what
# they do (model.hidden_dropout, ...); transformers' configs name them per family.
DROPOUT_KEYS = {
    "hidden": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
    "attention": ("attention_probs_dropout_prob", "attention_dropout"),
    "classifier": ("classifier_dropout", "seq_classif_dropout", "cls_dropout"),
}


def dropout_overrides(config, dropout: dict[str, float | None]) -> tuple[dict[str, float], float | None]:
    """Config attributes for the requested dropout rates of this architecture, and a classifier rate its config has
    no key for (MPNet's head reuses ``hidden_dropout_prob``): that one is set on the head's own dropout layers after
    loading (``set_head_dropout``). Any other rate the architecture has no place for is an error."""
    out, head_rate = {}, None
    for what, rate in (dropout or {}).items():
        if rate is None:
            continue
        key = next((k for k in DROPOUT_KEYS[what] if hasattr(config, k)), None)
        if key is None and what == "classifier":
            head_rate = rate
        elif key is None:
            raise TuneoffError(_no_dropout(config.model_type, what))
        else:
            out[key] = rate
    return out, head_rate


def set_head_dropout(model, arch: Architecture, rate: float) -> None:
    """Dropout ``rate`` on every dropout layer inside the classification head's modules (not the encoder's)."""
    import torch.nn as nn

    layers = [m for name in arch.head_modules for m in model.get_submodule(name).modules() if isinstance(m, nn.Dropout)]
    if not layers:
        raise TuneoffError(_no_dropout(arch.model_type, "classifier"))
    for layer in layers:
        layer.p = rate


def _no_dropout(model_type: str, what: str) -> str:
    where = ", ".join(DROPOUT_KEYS[what]) + (" or a dropout layer in the head" if what == "classifier" else "")
    return (
        f"model.{what}_dropout: a {model_type} model has no {what} dropout setting (looked for {where}). Leave "
        "it unset for this model."
    )
