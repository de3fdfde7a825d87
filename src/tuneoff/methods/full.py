"""Full fine-tuning: every weight trains (the baseline every other method is measured against)."""

from __future__ import annotations

from tuneoff.methods import Method, MethodParams, register


class FullParams(MethodParams):
    name: str = "full"


@register
class Full(Method):
    name = "full"
    summary = "Full fine-tuning: all weights train."
    Params = FullParams
    default_lr = 3e-5
    lr_range = (1e-5, 3e-4)

    def prepare(self, model, params, arch):
        for param in model.parameters():
            param.requires_grad_(True)
        return model
