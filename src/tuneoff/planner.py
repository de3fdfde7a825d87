"""`tuneoff plan`: what each method will cost before anything trains — counted, not guessed.

For each run config it builds the real model and method, runs ONE forward + backward + optimizer step on the CPU
on a dummy batch (batch size x sequence length, no padding), and measures:

- weights: bytes of every parameter;
- gradients: bytes of the trainable parameters' gradients;
- optimizer state: bytes of every tensor the optimizer holds after its first step;
- activations: bytes of the distinct tensors autograd saved for backward (``saved_tensors_hooks``), parameters
  excluded (they are counted as weights), under the same autocast precision as training;
- FLOPs of forward + backward (``torch.utils.flop_counter.FlopCounterMode``: matrix products and attention).

The predicted peak is their sum; the CUDA caching allocator's fragmentation and the framework's workspace are not
in it, which is why the GPU benchmark compares this with ``max_memory_allocated``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from tuneoff.config import RunConfig

MB = 1024 * 1024


@dataclass
class Plan:
    name: str
    method: str
    trainable_params: int
    weights_mb: float
    gradients_mb: float
    optimizer_mb: float
    activations_mb: float
    gflops_per_step: float

    @property
    def total_mb(self) -> float:
        return self.weights_mb + self.gradients_mb + self.optimizer_mb + self.activations_mb


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def plan_run(cfg: RunConfig, name: str, batch_size: int, seq_len: int, precision: str, num_labels: int = 2) -> Plan:
    from torch.utils.flop_counter import FlopCounterMode

    from tuneoff.methods import get_method
    from tuneoff.models import enable_gradient_checkpointing, load_classifier, resolve_model

    torch.manual_seed(0)
    source = resolve_model(cfg.model.name)
    model, arch = load_classifier(source, [str(i) for i in range(num_labels)], revision=cfg.model.revision,
                                  num_hidden_layers=cfg.model.num_hidden_layers, attn_implementation=cfg.model.attn_implementation)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch)
    if cfg.train.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = method.optimizer(model, cfg.method, cfg.train.lr or method.default_lr, cfg.train.weight_decay, fused=False)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}

    vocab = model.config.vocab_size
    batch = {"input_ids": torch.randint(5, vocab, (batch_size, seq_len)), "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    labels = torch.randint(0, num_labels, (batch_size,))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_storages:
            saved[ptr] = max(saved.get(ptr, 0), _tensor_bytes(t))
        return t

    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision in ("bf16", "fp16") else contextlib.nullcontext())
    counter = FlopCounterMode(display=False)
    with counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast:
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
    gradients = sum(_tensor_bytes(p.grad) for p in trainable if p.grad is not None)
    optimizer.step()
    optimizer_bytes = sum(_tensor_bytes(v) for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))
    return Plan(
        name=name, method=cfg.method.name, trainable_params=sum(p.numel() for p in trainable),
        weights_mb=sum(_tensor_bytes(p) for p in model.parameters()) / MB, gradients_mb=gradients / MB,
        optimizer_mb=optimizer_bytes / MB, activations_mb=sum(saved.values()) / MB,
        gflops_per_step=counter.get_total_flops() / 1e9,
    )


def plan_configs(configs: list[tuple[str, RunConfig]], batch_size: int | None, seq_len: int | None, precision: str) -> list[Plan]:
    plans = []
    for name, cfg in configs:
        length = seq_len or (cfg.data.max_length if isinstance(cfg.data.max_length, int) else 128)
        plans.append(plan_run(cfg, name, batch_size or cfg.train.batch_size, length, precision))
    return plans
