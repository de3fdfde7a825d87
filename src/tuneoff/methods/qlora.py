"""QLoRA (Dettmers et al., 2023, "QLoRA: Efficient Finetuning of Quantized LLMs"): the base model's linear weights
held in 4-bit NormalFloat (NF4, double quantization of the scales, bf16 compute) through bitsandbytes, LoRA on top
(peft, after ``prepare_model_for_kbit_training``). Needs the ``bitsandbytes`` package and a device its 4-bit
kernels run on (a CUDA GPU; its CPU backend where installed); without them it stops before loading anything,
saying which is missing."""

from __future__ import annotations

import importlib.util

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import register
from tuneoff.methods.lora import Lora, LoraParams, lora_model


class QLoraParams(LoraParams):
    name: str = "qlora"


@register
class QLora(Lora):
    name = "qlora"
    summary = "QLoRA: LoRA on a 4-bit NF4 base (bitsandbytes + peft)."
    Params = QLoraParams
    default_lr = 2e-4
    lr_range = (1e-4, 5e-3)
    optimizer_kinds = ("adamw",)

    def model_kwargs(self, params):
        import torch

        if importlib.util.find_spec("bitsandbytes") is None:
            raise TuneoffError(
                "method qlora needs the bitsandbytes package for its 4-bit base weights: "
                "pip install bitsandbytes (with a CUDA GPU), or use method.name=lora."
            )
        if not torch.cuda.is_available():
            raise TuneoffError(
                "method qlora: bitsandbytes' 4-bit kernels need a CUDA GPU here (none is visible). "
                "Use method.name=lora on the CPU."
            )
        from transformers import BitsAndBytesConfig

        return {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        }

    def prepare(self, model, params, arch):
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        return lora_model(model, params, arch)
