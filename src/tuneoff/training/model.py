"""A run's model, built one way for training and for planning: the base with a fresh head for the run's labels
(and whatever the method needs at load time, e.g. QLoRA's 4-bit weights), the method applied, the trainable-parameter
budget checked, gradient checkpointing, and the optimizer the method and ``train.optimizer`` choose. ``tuneoff plan``
counts exactly the model, gradients and optimizer state that ``tuneoff train`` will hold."""

from __future__ import annotations

import logging

from tuneoff.config import RunConfig
from tuneoff.methods import Method, check_budget, get_method
from tuneoff.models.assets import resolve_model
from tuneoff.models.loading import enable_gradient_checkpointing, load_classifier
from tuneoff.training.resources import param_counts

log = logging.getLogger(__name__)


def load_base(cfg: RunConfig, label_names: list[str]):
    """(source, method, model, arch): the pretrained encoder with a fresh head, before the method touches it."""
    source = resolve_model(cfg.model.name)
    method = get_method(cfg.method.name)
    model, arch = load_classifier(
        source,
        label_names,
        revision=cfg.model.revision,
        trust_remote_code=cfg.model.trust_remote_code,
        num_hidden_layers=cfg.model.num_hidden_layers,
        attn_implementation=cfg.model.attn_implementation,
        dropout={
            "hidden": cfg.model.hidden_dropout,
            "attention": cfg.model.attention_dropout,
            "classifier": cfg.model.classifier_dropout,
        },
        extra=method.model_kwargs(cfg.method),
    )
    return source, method, model, arch


def adapt(cfg: RunConfig, method: Method, model, arch):
    """The method applied (exactly its parameters left trainable), its budget checked, checkpointing switched on."""
    model = method.prepare(model, cfg.method, arch)
    check_budget(param_counts(model)["trainable_params"], cfg.method.max_trainable_params, method.name)
    _warn_oversized_adapters(model, method.name)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def make_optimizer(cfg: RunConfig, method: Method, model, device_type: str):
    """(lr, optimizer): ``train.lr`` or the method's default, the method's optimizer of kind ``train.optimizer``."""
    tc = cfg.train
    lr = tc.lr or method.default_lr
    optimizer = method.optimizer(
        model, cfg.method, lr, tc.weight_decay, fused=device_type == "cuda", kind=tc.optimizer, momentum=tc.momentum
    )
    return lr, optimizer


def _warn_oversized_adapters(model, method: str) -> None:
    """An adapter larger than the layer it adapts (``method.r=100000`` on a 384-wide layer) defeats its purpose: it
    trains, but say so."""
    for name, module in model.named_modules():
        base = getattr(module, "base_layer", None)
        if base is None or not hasattr(base, "weight"):
            continue
        own = sum(
            p.numel() for n, p in module.named_parameters() if not n.startswith("base_layer.") and p.requires_grad
        )
        adapted = sum(p.numel() for p in base.parameters())
        if own > adapted:
            log.warning(
                "method %s: the adapter on %s trains %s parameters, more than the %s of the layer it adapts "
                "(is method.r too large?); a full fine-tune of that layer would train fewer",
                method,
                name,
                f"{own:,}",
                f"{adapted:,}",
            )
            return
