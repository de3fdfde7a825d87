"""Loading a tokenizer and a sequence-classification model with a fresh head, with errors that say what to do."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tuneoff.core.errors import TuneoffError
from tuneoff.models.architecture import (
    Architecture,
    describe,
    dropout_overrides,
    set_head_dropout,
)
from tuneoff.models.assets import BUILTIN_MODELS

if TYPE_CHECKING:  # torch is imported where a model is built: `tuneoff models` must not wait for it
    from torch import nn


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


def load_classifier(
    source: str,
    label_names: list[str],
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    num_hidden_layers: int | None = None,
    attn_implementation: str | None = None,
    dropout: dict[str, float | None] | None = None,
    extra: dict | None = None,
) -> tuple[nn.Module, Architecture]:
    """A sequence-classification model with a fresh head for ``label_names``, and its architecture facts."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    extra = {**(extra or {}), **({"num_hidden_layers": num_hidden_layers} if num_hidden_layers else {})}
    head_rate = None
    if dropout and any(v is not None for v in dropout.values()):
        try:
            config = AutoConfig.from_pretrained(source, revision=revision, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as exc:
            raise TuneoffError(_load_failure(source, "config", exc)) from exc
        overrides, head_rate = dropout_overrides(config, dropout)
        extra.update(overrides)
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
    arch = describe(model, info.get("missing_keys", []))
    if head_rate is not None:
        set_head_dropout(model, arch, head_rate)
    return model, arch


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Non-reentrant activation checkpointing: works when the layer inputs need no gradient (LoRA, frozen lower
    layers) and was not slower than reentrant (peft #1142)."""
    try:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    except ValueError as exc:
        raise TuneoffError(f"train.gradient_checkpointing=true: {exc} Turn it off for this model.") from exc
