"""LoRA+ (Hayou et al., 2024, "LoRA+: Efficient Low Rank Adaptation of Large Models").

Same adapters as LoRA; B learns ``loraplus_lr_ratio`` times faster than A (eta_B = lambda * eta_A). peft's
``create_loraplus_optimizer`` also puts every other 1-D parameter (all biases, the classifier's bias too) at
the raised rate while the classifier's weight stays at the base rate. We keep the paper's intent: only the
lora_B matrices get the ratio; the head trains at the base rate like in LoRA.
"""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import optimizer_class, register
from tuneoff.methods.lora import Lora, LoraParams


class LoraPlusParams(LoraParams):
    name: str = "lora_plus"
    loraplus_lr_ratio: float = Field(16.0, ge=1, description="lr(B) / lr(A); the paper suggests 2^4 for encoders.")


@register
class LoraPlus(Lora):
    name = "lora_plus"
    summary = "LoRA+ : LoRA with lr(B) = loraplus_lr_ratio x lr(A)."
    Params = LoraPlusParams
    default_lr = 2e-4
    lr_range = (5e-5, 3e-3)

    def optimizer(self, model, params, lr, weight_decay, fused, *, kind="adamw", momentum=0.9):
        from peft.optimizers import create_loraplus_optimizer

        cls, extra = optimizer_class(kind, fused, momentum)
        optimizer = create_loraplus_optimizer(
            model=model,
            optimizer_cls=cls,
            lr=lr,
            loraplus_lr_ratio=params.loraplus_lr_ratio,
            loraplus_weight_decay=weight_decay,
            **extra,
        )
        # Move every non-lora_B parameter that peft raised (biases, incl. the classifier's) back to the base lr.
        raised = lr * params.loraplus_lr_ratio
        lora_b = {id(p) for n, p in model.named_parameters() if "lora_B" in n}
        moved: list[dict] = []
        for group in optimizer.param_groups:
            if group["lr"] == raised and raised != lr:
                others = [p for p in group["params"] if id(p) not in lora_b]
                group["params"] = [p for p in group["params"] if id(p) in lora_b]
                if others:
                    moved.append({"params": others, "lr": lr, "weight_decay": group["weight_decay"]})
        for group in moved:
            optimizer.add_param_group(group)
        optimizer.param_groups[:] = [g for g in optimizer.param_groups if g["params"]]
        return optimizer
