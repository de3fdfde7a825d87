"""Lean LoRA: the memory-cutting preset. LoRA-FA (A frozen: no input kept for dA), dropout 0 (no dropout mask and
input copy per adapted layer), and adapters on the top ``top_layers`` layers only, so backward stops there and
the layers below keep no activations, like partial fine-tuning. Add ``train.gradient_checkpointing=true`` to cut
the remaining activations further. ``tuneoff plan`` shows what each part saves.
"""

from __future__ import annotations

from pydantic import Field

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import register
from tuneoff.methods.lora_fa import LoraFA, LoraFAParams


class LoraLeanParams(LoraFAParams):
    name: str = "lora_lean"
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch (0: no mask, no input copy).")
    top_layers: int = Field(
        2, ge=1, description="Adapt only the top N encoder layers (ignored if layers_to_transform is set)."
    )


@register
class LoraLean(LoraFA):
    name = "lora_lean"
    summary = "Lean LoRA preset: LoRA-FA, dropout 0, top layers only (least memory)."
    Params = LoraLeanParams
    default_lr = 1e-3
    lr_range = (3e-4, 3e-2)

    def prepare(self, model, params, arch):
        if params.layers_to_transform is None:
            if params.top_layers > arch.num_layers:
                raise TuneoffError(
                    f"method.top_layers={params.top_layers} but the model has only {arch.num_layers} layers."
                )
            params = params.model_copy(
                update={"layers_to_transform": list(range(arch.num_layers - params.top_layers, arch.num_layers))}
            )
        return super().prepare(model, params, arch)
