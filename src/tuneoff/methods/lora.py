"""LoRA (Hu et al., 2021, "LoRA: Low-Rank Adaptation of Large Language Models") through peft.

W' = W + (alpha / r) * B A with A (r x d_in) and B (d_out x r); B starts at zero so training starts from the
pretrained function. DoRA (``use_dora``) and rsLoRA (``use_rslora``: scale alpha / sqrt(r)) are options.
The classification head (and any freshly initialised head module) trains fully and is saved with the adapter.
"""

from __future__ import annotations

from pydantic import Field

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import MethodParams, PeftMethod, register


class LoraParams(MethodParams):
    name: str = "lora"
    r: int = Field(8, ge=1, description="Rank of the update B A.")
    alpha: float = Field(16, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    dropout: float = Field(0.1, ge=0, lt=1, description="Dropout on the LoRA branch input (0 saves memory).")
    target_modules: list[str] | None = Field(None, description="Module names to adapt; None = the architecture's q,v.")
    layers_to_transform: list[int] | None = Field(None, description="Adapt only these encoder layers (e.g. the top 2).")
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA.")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r.")


def lora_model(model, params: LoraParams, arch):
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=params.target_modules or arch.lora_targets,
        layers_to_transform=params.layers_to_transform,
        layers_pattern=arch.layers_path.rsplit(".", 1)[-1] if params.layers_to_transform else None,
        use_dora=params.use_dora,
        use_rslora=params.use_rslora,
        modules_to_save=list(arch.head_modules),
        bias="none",
    )
    try:
        return get_peft_model(model, config)
    except ValueError as exc:
        raise TuneoffError(
            f"LoRA could not be applied: {exc}. Check method.target_modules (defaults for this "
            f"{arch.model_type} model: {arch.lora_targets}) and method.layers_to_transform (0..{arch.num_layers - 1})."
        ) from exc


@register
class Lora(PeftMethod):
    name = "lora"
    summary = "LoRA adapters (peft) on attention projections + trainable head."
    Params = LoraParams
    default_lr = 5e-4
    lr_range = (1e-4, 5e-3)

    def prepare(self, model, params, arch):
        return lora_model(model, params, arch)
