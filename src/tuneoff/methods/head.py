"""Linear probe: only the classification head trains; the encoder is a frozen feature extractor."""

from __future__ import annotations

from tuneoff.methods import Method, MethodParams, freeze_except, register


class HeadParams(MethodParams):
    name: str = "head"


@register
class Head(Method):
    name = "head"
    summary = "Head only (linear probe): the encoder stays frozen."
    Params = HeadParams
    default_lr = 1e-3
    lr_range = (1e-3, 2e-1)

    def prepare(self, model, params, arch):
        return freeze_except(model, arch.head_modules)
