"""Prompt tuning (Lester et al., 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning") through peft:
``num_virtual_tokens`` trainable embeddings are prepended to every input; the encoder stays frozen, the head
trains. Nothing can be merged into the weights, so inference keeps the virtual tokens, and the saved run loads
with peft's ``AutoPeftModelForSequenceClassification`` (transformers' own loader takes weight adapters only)."""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import MethodParams, PeftLoadedMethod, peft_model, register


class PromptTuningParams(MethodParams):
    name: str = "prompt_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Trainable virtual tokens prepended to the input.")


@register
class PromptTuning(PeftLoadedMethod):
    name = "prompt_tuning"
    summary = "Prompt tuning: trainable virtual tokens before the input; encoder frozen (peft)."
    Params = PromptTuningParams
    default_lr = 3e-2
    lr_range = (1e-3, 1e-1)

    def prepare(self, model, params, arch):
        from peft import PromptTuningConfig, TaskType

        config = PromptTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=params.num_virtual_tokens,
            modules_to_save=list(arch.head_modules),
        )
        return peft_model(model, config, arch, "Prompt tuning")
