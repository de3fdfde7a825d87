"""LoHa (Hyeon-Woo et al., 2022, "FedPara: Low-Rank Hadamard Product for Communication-Efficient Federated
Learning"; the LyCORIS adapter) through peft: the update is the Hadamard product of two low-rank products, so
rank r reaches an effective rank up to r^2 at about twice LoRA's parameters."""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import MethodParams, PeftMethod, peft_model, register


class LycorisParams(MethodParams):
    """The parameters LoHa and LoKr share (peft names)."""

    name: str = "loha"
    r: int = Field(8, ge=1, description="Rank of each of the two low-rank products.")
    alpha: float = Field(16, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    target_modules: list[str] | None = Field(None, description="Module names to adapt; None = the architecture's q,v.")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the update's rank dimension.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of skipping the adapter for a step.")


class LoHaParams(LycorisParams):
    name: str = "loha"


@register
class LoHa(PeftMethod):
    name = "loha"
    summary = "LoHa: Hadamard product of two low-rank updates (peft, LyCORIS)."
    Params = LoHaParams
    default_lr = 5e-4
    lr_range = (1e-4, 1e-2)
    peft_config = "LoHaConfig"

    def prepare(self, model, params, arch):
        import peft

        config = getattr(peft, self.peft_config)(
            task_type=peft.TaskType.SEQ_CLS,
            r=params.r,
            alpha=params.alpha,
            target_modules=params.target_modules or arch.lora_targets,
            rank_dropout=params.rank_dropout,
            module_dropout=params.module_dropout,
            modules_to_save=list(arch.head_modules),
        )
        return peft_model(model, config, arch, self.summary.split(":")[0])
