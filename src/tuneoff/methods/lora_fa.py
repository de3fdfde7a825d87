"""LoRA-FA (Zhang et al., 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation").

A stays frozen at its random projection and only B (and the head) trains, so backward need not keep the
layer input for dA; peft's ``LoraFAOptimizer`` corrects B's gradient as g_B (r/alpha)^2 (A A^T)^-1 to
approximate full-rank training. Note: its AdamW applies weight decay to every trainable tensor.
"""

from __future__ import annotations

from tuneoff.methods import register
from tuneoff.methods.lora import Lora, LoraParams


class LoraFAParams(LoraParams):
    name: str = "lora_fa"


@register
class LoraFA(Lora):
    name = "lora_fa"
    summary = "LoRA-FA: LoRA with A frozen, B trained with a corrected gradient."
    Params = LoraFAParams
    default_lr = 5e-4

    def prepare(self, model, params, arch):
        model = super().prepare(model, params, arch)
        for name, param in model.named_parameters():
            if "lora_A" in name:
                param.requires_grad_(False)
        return model

    def optimizer(self, model, params, lr, weight_decay, fused):
        from peft.optimizers import create_lorafa_optimizer

        return create_lorafa_optimizer(model=model, r=params.r, lora_alpha=params.alpha, lr=lr, weight_decay=weight_decay)
