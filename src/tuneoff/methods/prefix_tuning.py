"""Prefix tuning (Li & Liang, 2021, "Prefix-Tuning: Optimizing Continuous Prompts for Generation") through peft:
trainable key/value prefixes in every attention layer. peft feeds them to the model as past key values, which
transformers 5's encoder classifiers (BERT, RoBERTa, DistilBERT, DeBERTa, MPNet) no longer accept: for them the
method stops before training with peft's reason. It is here for models that take past key values."""

from __future__ import annotations

import inspect

from pydantic import Field

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import MethodParams, PeftLoadedMethod, peft_model, register


class PrefixTuningParams(MethodParams):
    name: str = "prefix_tuning"
    num_virtual_tokens: int = Field(20, ge=1, le=512, description="Prefix length per attention layer.")


@register
class PrefixTuning(PeftLoadedMethod):
    name = "prefix_tuning"
    summary = "Prefix tuning: trainable key/value prefixes per layer (peft; needs a model that takes past key values)."
    Params = PrefixTuningParams
    default_lr = 1e-2
    lr_range = (1e-3, 1e-1)

    def prepare(self, model, params, arch):
        from peft import PrefixTuningConfig, TaskType

        config = PrefixTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=params.num_virtual_tokens,
            modules_to_save=list(arch.head_modules),
        )
        model = peft_model(model, config, arch, "Prefix tuning")
        # peft checks this at the first forward; checked here, the run stops before anything is written.
        backbone = model.base_model.get_submodule(model.transformer_backbone_name)
        if not any("past_key_values" in inspect.signature(m.forward).parameters for m in (model.base_model, backbone)):
            raise TuneoffError(
                f"Prefix tuning could not be applied to this {arch.model_type} model: peft feeds the prefixes as past key "
                "values, and this model's forward takes none (transformers 5's encoder classifiers do not). Use "
                "method.name=prompt_tuning (virtual tokens at the input) or a LoRA-family method."
            )
        return model
