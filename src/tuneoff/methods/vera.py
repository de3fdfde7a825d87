"""VeRA (Kopiczko et al., 2024, "VeRA: Vector-based Random Matrix Adaptation") through peft: one pair of frozen
random low-rank matrices shared by all layers, and per-layer scaling vectors d and b that train; far fewer
parameters than LoRA at a higher rank. The adapted modules must share one shape (q and v do)."""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import MethodParams, PeftLoadedMethod, peft_model, register


class VeraParams(MethodParams):
    name: str = "vera"
    r: int = Field(256, ge=1, description="Rank of the shared random matrices.")
    target_modules: list[str] | None = Field(None, description="Module names to adapt; None = the architecture's q,v.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the VeRA branch input.")
    d_initial: float = Field(0.1, gt=0, description="Initial value of the d scaling vectors.")


@register
class Vera(PeftLoadedMethod):
    name = "vera"
    summary = "VeRA: shared frozen random matrices, trained scaling vectors (peft)."
    Params = VeraParams
    default_lr = 4e-3
    lr_range = (1e-3, 5e-2)

    def prepare(self, model, params, arch):
        from peft import TaskType, VeraConfig

        config = VeraConfig(
            task_type=TaskType.SEQ_CLS,
            r=params.r,
            target_modules=params.target_modules or arch.lora_targets,
            vera_dropout=params.dropout,
            d_initial=params.d_initial,
            modules_to_save=list(arch.head_modules),
        )
        return peft_model(model, config, arch, "VeRA")
