"""LoKr (Yeh et al., 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
Evaluation"; the LyCORIS Kronecker adapter) through peft: the update is a Kronecker product of a small matrix and
a low-rank one, very few parameters for its expressiveness. Same parameters and life cycle as LoHa."""

from __future__ import annotations

from tuneoff.methods import register
from tuneoff.methods.loha import LoHa, LycorisParams


class LoKrParams(LycorisParams):
    name: str = "lokr"


@register
class LoKr(LoHa):
    name = "lokr"
    summary = "LoKr: Kronecker-product update (peft, LyCORIS)."
    Params = LoKrParams
    default_lr = 5e-4
    lr_range = (1e-4, 1e-2)
    peft_config = "LoKrConfig"
