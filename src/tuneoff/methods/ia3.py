"""(IA)^3 (Liu et al., 2022, "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context
Learning") through peft: learned vectors rescale the keys, values and the feed-forward activations; a few
thousand parameters per model, merged into the weights for inference."""

from __future__ import annotations

from pydantic import Field

from tuneoff.methods import MethodParams, PeftMethod, peft_model, register

# peft's own defaults where it has them; DistilBERT's and MPNet's, by the same rule (keys, values, FFN output).
IA3_TARGETS = {
    "distilbert": (["k_lin", "v_lin", "lin2"], ["lin2"]),
    "mpnet": (["k", "v", "output.dense"], ["output.dense"]),
}


class IA3Params(MethodParams):
    name: str = "ia3"
    target_modules: list[str] | None = Field(None, description="Modules rescaled; None = keys, values and FFN output.")
    feedforward_modules: list[str] | None = Field(None, description="Which of them are feed-forward (scaled on input).")


@register
class IA3(PeftMethod):
    name = "ia3"
    summary = "(IA)^3: learned rescaling of keys, values and feed-forward activations (peft)."
    Params = IA3Params
    default_lr = 3e-3
    lr_range = (3e-4, 5e-2)

    def prepare(self, model, params, arch):
        from peft import IA3Config, TaskType
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FF,
        )
        from peft.utils.constants import (
            TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
        )

        targets, feedforward = IA3_TARGETS.get(arch.model_type, (TARGETS.get(arch.model_type), FF.get(arch.model_type)))
        config = IA3Config(
            task_type=TaskType.SEQ_CLS,
            target_modules=params.target_modules or targets,
            feedforward_modules=params.feedforward_modules or feedforward,
            modules_to_save=list(arch.head_modules),
        )
        return peft_model(model, config, arch, "(IA)^3")
