"""BitFit (Ben Zaken et al., 2022, "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models"): only the bias terms train, with the classification head. Not an adapter (nothing is added):
a choice of which existing parameters train, so the saved run is a whole model like partial fine-tuning."""

from __future__ import annotations

from tuneoff.methods import Method, MethodParams, register


class BitFitParams(MethodParams):
    name: str = "bitfit"


@register
class BitFit(Method):
    name = "bitfit"
    summary = "BitFit: only the biases (and the head) train."
    Params = BitFitParams
    default_lr = 1e-3
    lr_range = (1e-4, 1e-2)

    def prepare(self, model, params, arch):
        heads = tuple(arch.head_modules)
        for name, param in model.named_parameters():
            param.requires_grad_(name.endswith(".bias") or name.split(".")[0] in heads)
        return model
