"""Fine-tuning methods: a registry. Adding a method is adding one module to this package.

A method owns two decisions and nothing else: which parameters train (``prepare``) and how the optimizer
treats them (``optimizer``). The training loop is the same for every method. LoRA+ and LoRA-FA therefore
differ from LoRA only in ``optimizer``.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneoff.core.errors import TuneoffError
from tuneoff.models import saving

if TYPE_CHECKING:  # torch is imported where a model is touched: listing methods must not wait for it
    import torch
    from torch import nn

    from tuneoff.models.architecture import Architecture


# One AdamW for every method (BERT's and PyTorch's defaults), so that a comparison of methods is not a comparison of
# optimizer settings; a method departs from it only where its paper says so.
ADAMW_BETAS = (0.9, 0.999)
ADAMW_EPS = 1e-8


class MethodParams(BaseModel):
    """Parameters of one method; subclasses add theirs. Unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)
    name: str
    max_trainable_params: int | None = Field(
        None, ge=1, description="Budget: fail before training if the method would train more parameters than this."
    )


class Method:
    """A fine-tuning method's whole life cycle; every decision has a default that methods share.

    ``prepare`` which parameters train, ``optimizer`` how they are optimized, ``begin`` / ``after_step`` /
    ``regularizer`` what the method needs of the loop (AdaLoRA's rank budget), ``for_inference`` the model to predict
    with, ``save`` the saved run. The loop and the run directory only call these."""

    name: ClassVar[str]
    summary: ClassVar[str]
    Params: ClassVar[type[MethodParams]]
    default_lr: ClassVar[float]
    # The learning rates a study's tuning phase searches (log-uniform), the method's prior: where runs of this method
    # usually learn (LoRA's family trains far fewer, freshly initialised weights than full fine-tuning, so it wants
    # rates 10-100x higher; a head alone higher still). A variant's `lr_range:` replaces it.
    lr_range: ClassVar[tuple[float, float]]
    optimizer_kinds: ClassVar[tuple[str, ...]] = ("adamw", "sgd")  # train.optimizer values this method can run with

    def prepare(self, model: nn.Module, params: MethodParams, arch: Architecture) -> nn.Module:
        """Return the model to train, with exactly the parameters this method trains left trainable."""
        raise NotImplementedError

    def optimizer(
        self,
        model: nn.Module,
        params: MethodParams,
        lr: float,
        weight_decay: float,
        fused: bool,
        *,
        kind: str = "adamw",
        momentum: float = 0.9,
    ) -> torch.optim.Optimizer:
        """AdamW with decoupled weight decay (or SGD with momentum), none on biases and LayerNorm weights (BERT's recipe)."""
        cls, extra = optimizer_class(kind, fused, momentum)
        return cls(decay_groups(model, lr, weight_decay), lr=lr, **extra)

    def model_kwargs(self, params: MethodParams) -> dict:
        """Extra ``from_pretrained`` arguments the method needs when the model is loaded (QLoRA: 4-bit weights)."""
        return {}

    def begin(self, model: nn.Module, params: MethodParams, total_steps: int) -> None:
        """Called once before training, when the number of optimizer steps is known."""

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step, before the gradients are cleared."""

    def regularizer(self, model: nn.Module):
        """A term added to the training loss (a tensor), or None."""
        return None

    def for_inference(self, model: nn.Module) -> nn.Module:
        """The model to predict with after training."""
        return model

    def load(self, model_dir) -> nn.Module:
        """The model ``save`` wrote, loaded back: transformers' loader, which also reads weight adapters (it finds
        ``adapter_config.json`` and loads the base through the linked weights)."""
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)

    def save(
        self,
        model: nn.Module,
        tokenizer,
        out,
        base_source: str,
        revision: str | None,
        *,
        state_dict=None,
        trained_only: bool = False,
    ) -> None:
        """A directory ``AutoModelForSequenceClassification.from_pretrained`` and ``pipeline()`` load: the whole model,
        or (``train.save: trained_only``) the trained tensors over links to the base model's weights."""

        if trained_only and state_dict is None:
            saving.save_trained_only(model, tokenizer, out, base_source, revision)
        else:
            saving.save_full(model, tokenizer, out, state_dict)


class PeftMethod(Method):
    """A method through peft: saved as an adapter (with the head, config.json and the tokenizer), merged into the
    weights for inference where the adapter can be merged (prompt learning cannot: it is kept as is)."""

    def for_inference(self, model):
        from peft import PeftModel

        if isinstance(model, PeftModel) and not model.peft_config[model.active_adapter].is_prompt_learning:
            return model.merge_and_unload()  # merged and unmerged logits differ by float rounding only (peft #1904)
        return model

    def save(self, model, tokenizer, out, base_source, revision, *, state_dict=None, trained_only=False):
        saving.save_adapter(model, tokenizer, out, base_source, revision, state_dict)


class PeftLoadedMethod(PeftMethod):
    """An adapter transformers' PEFT integration cannot load (prompt learning; VeRA's shared matrices; AdaLoRA's
    per-module ranks after pruning): peft's own ``AutoPeftModelForSequenceClassification`` loads it."""

    def load(self, model_dir):
        from peft import AutoPeftModelForSequenceClassification

        return AutoPeftModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)


def peft_model(model, config, arch, what: str):
    """``get_peft_model`` with a clear error naming the method's parameters and this architecture's defaults."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise TuneoffError(
            f"{what} could not be applied to this {arch.model_type} model: {str(exc).splitlines()[0]} "
            f"Check method.target_modules (this architecture's layers: {arch.layers_path})."
        ) from exc


def optimizer_class(kind: str, fused: bool, momentum: float = 0.9) -> tuple[type, dict]:
    """The torch optimizer for ``train.optimizer`` and its settings, the same for every method that uses it."""
    import torch

    if kind == "sgd":
        return torch.optim.SGD, {"momentum": momentum}
    return torch.optim.AdamW, {"betas": ADAMW_BETAS, "eps": ADAMW_EPS, "fused": fused or None}


def decay_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Split trainable parameters into decayed and not decayed (1-D: biases, LayerNorm) groups."""
    decay, no_decay = [], []
    for _, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "lr": lr}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "lr": lr})
    return groups


def freeze_except(model: nn.Module, prefixes: list[str]) -> nn.Module:
    """Train only parameters under the given module paths (``classifier``, ``bert.encoder.layer.5``)."""
    for name, param in model.named_parameters():
        param.requires_grad_(any(name == p or name.startswith(p + ".") for p in prefixes))
    return model


def check_budget(trainable_params: int, budget: int | None, method: str) -> None:
    """Fail before training when a configuration trains more parameters than ``max_trainable_params``."""

    if budget is not None and trainable_params > budget:
        raise TuneoffError(
            f"Method {method} would train {trainable_params:,} parameters, over the budget "
            f"method.max_trainable_params={budget:,}. Lower method.r, adapt fewer modules "
            "(method.target_modules / method.layers_to_transform), or raise the budget."
        )


_REGISTRY: dict[str, Method] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available by its ``name``."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls()
    return cls


def _load_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")


def all_methods() -> dict[str, Method]:
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> Method:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}") from None


def method_params_from_dict(value: dict) -> MethodParams:
    """Validate a ``method:`` mapping against the parameters of the method it names."""
    name = value.get("name")
    if not name:
        raise ValueError(f"method needs a `name`; choose one of: {', '.join(sorted(_REGISTRY))}")
    params_cls = get_method(str(name)).Params
    try:
        return params_cls.model_validate(value)
    except ValidationError as exc:
        # Re-raise as a plain ValueError listing the fields, so the outer model reports them under `method`.
        details = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: "
            + ("unknown parameter for this method" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors()
        )
        allowed = ", ".join(f for f in params_cls.model_fields if f != "name")
        raise ValueError(f"{details} (parameters of {name}: {allowed or 'none'})") from None


_load_all()
