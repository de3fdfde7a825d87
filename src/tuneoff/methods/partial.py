"""Partial fine-tuning: unfreeze the top ``k`` encoder layers and the head.

Frozen lower layers need no activations kept for backward and no gradients, which is why top-k saves far more
memory and time than LoRA does (LoRA back-propagates through every layer).
"""

from __future__ import annotations

from pydantic import Field

from tuneoff.errors import TuneoffError
from tuneoff.methods import Method, MethodParams, freeze_except, register


class PartialParams(MethodParams):
    name: str = "partial"
    k: int = Field(2, ge=1, description="Number of top encoder layers to unfreeze (with the head).")


@register
class Partial(Method):
    name = "partial"
    summary = "Unfreeze the top k encoder layers + classification head."
    Params = PartialParams
    default_lr = 5e-5

    def prepare(self, model, params, arch):
        if params.k > arch.num_layers:
            raise TuneoffError(f"method.k={params.k} but the model has only {arch.num_layers} encoder layers.")
        top = [f"{arch.layers_path}.{i}" for i in range(arch.num_layers - params.k, arch.num_layers)]
        return freeze_except(model, top + arch.head_modules)
