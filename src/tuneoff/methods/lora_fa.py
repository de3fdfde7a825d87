"""LoRA-FA (Zhang et al., 2023, "LoRA-FA: Memory-efficient Low-rank Adaptation").

A stays frozen at its random projection and only B (and the head) trains, so backward need not keep the
layer input for dA; peft's ``LoraFAOptimizer`` corrects B's gradient as g_B (r/alpha)^2 (A A^T)^-1 to
approximate full-rank training. peft gives every tensor one weight decay; tuneoff, as for every method, does not
decay biases and LayerNorm weights (BERT's recipe), so they move to a group of their own. peft's optimizer also
defaults to eps 1e-6; the paper does not ask for it, so it runs with the eps and betas every other method uses.
"""

from __future__ import annotations

from pydantic import model_validator

from tuneoff.methods import ADAMW_BETAS, ADAMW_EPS, register
from tuneoff.methods.lora import Lora, LoraParams


class LoraFAParams(LoraParams):
    name: str = "lora_fa"

    @model_validator(mode="after")
    def _no_dora(self):
        if self.use_dora:  # DoRA's magnitude vector is not in LoRA-FA's optimizer: it would fail at the first step
            raise ValueError(
                f"use_dora=true does not combine with {self.name} (its optimizer trains only B); use "
                "method.name=lora with use_dora=true"
            )
        return self


@register
class LoraFA(Lora):
    name = "lora_fa"
    summary = "LoRA-FA: LoRA with A frozen, B trained with a corrected gradient."
    Params = LoraFAParams
    default_lr = 5e-4
    lr_range = (1e-4, 1e-2)
    optimizer_kinds = ("adamw",)  # LoRA-FA's optimizer is AdamW with a corrected gradient for B

    def prepare(self, model, params, arch):
        model = super().prepare(model, params, arch)
        for name, param in model.named_parameters():
            if "lora_A" in name:
                param.requires_grad_(False)
        return model

    def optimizer(self, model, params, lr, weight_decay, fused, *, kind="adamw", momentum=0.9):
        from peft.optimizers import create_lorafa_optimizer
        from peft.optimizers.lorafa import LoraFAOptimizer

        [group] = create_lorafa_optimizer(
            model=model,
            r=params.r,
            lora_alpha=params.alpha,
            lr=lr,
            weight_decay=weight_decay,
            use_rslora=params.use_rslora,
        ).param_groups
        group.update(betas=ADAMW_BETAS, eps=ADAMW_EPS)
        # LoRA-FA's step pairs each lora_A with the lora_B after it, so LoRA tensors stay together, in order.
        no_decay = [p.ndim < 2 and "lora" not in n for n, p in zip(group["names"], group["params"])]
        per_tensor = ("params", "names", "scaling_factors")

        def part(undecayed: bool, decay: float) -> dict:
            return {
                **{k: v for k, v in group.items() if k not in per_tensor},
                "weight_decay": decay,
                **{k: [x for x, nd in zip(group[k], no_decay) if nd == undecayed] for k in per_tensor},
            }

        return LoraFAOptimizer([part(False, weight_decay), part(True, 0.0)])
