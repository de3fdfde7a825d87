"""LoKr (Yeh et al., 2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model
Evaluation"; the LyCORIS Kronecker adapter) through peft: the update is a Kronecker product of a small matrix and
a low-rank one, very few parameters for its expressiveness."""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import MethodParams, PeftMethod, peft_model, register


class LoKrParams(MethodParams):
    name: str = "lokr"
    r: int = Field(8, ge=1, description="Rank of the low-rank Kronecker factor.")
    alpha: float = Field(16, gt=0, description="Scale numerator: the update is multiplied by alpha / r.")
    target_modules: list[str] | None = Field(None, description="Module names to adapt; None = the architecture's q,v.")
    rank_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the update's rank dimension.")
    module_dropout: float = Field(0.0, ge=0, lt=1, description="Probability of skipping the adapter for a step.")


@register
class LoKr(PeftMethod):
    name = "lokr"
    summary = "LoKr: Kronecker-product update (peft, LyCORIS)."
    Params = LoKrParams
    default_lr = 5e-4

    def prepare(self, model, params, arch):
        from peft import LoKrConfig, TaskType

        config = LoKrConfig(task_type=TaskType.SEQ_CLS, r=params.r, alpha=params.alpha,
                            target_modules=params.target_modules or arch.lora_targets, rank_dropout=params.rank_dropout,
                            module_dropout=params.module_dropout, modules_to_save=list(arch.head_modules))
        return peft_model(model, config, arch, "LoKr")
