"""`tuneoff plan`: what each method will cost before anything trains — counted, not guessed.

For each run config it builds the real model and method, runs ONE forward + backward + optimizer step on the CPU
on a dummy batch (batch size x sequence length, no padding), and measures:

- weights: bytes of every parameter;
- gradients: bytes of the trainable parameters' gradients;
- optimizer state: bytes of every tensor the optimizer holds after its first step;
- activations: bytes of the distinct tensors autograd saved for backward (``saved_tensors_hooks``), parameters
  excluded (they are counted as weights), under the same autocast precision as training;
- FLOPs of forward + backward (``torch.utils.flop_counter.FlopCounterMode``: matrix products and attention).

The predicted peak is weights + optimizer state + the larger of activations and gradients (backward frees each
layer's activations as it creates that layer's gradients; with gradient accumulation the gradients of the earlier
micro-batches are held through the next forward, so then both count).

``device="cuda"`` plans for a GPU from the CPU: it counts what CUDA's kernels keep, not what the CPU's keep. Where
the model's attention goes through transformers' SDPA interface (BERT, RoBERTa, DistilBERT, ELECTRA, ...), the
fused (flash / memory-efficient) kernel keeps q, k, v, its output and one float per row, not the CPU fallback's
float32 attention matrices; dropout keeps a one-byte mask per element, not a float; and PyTorch allocates the
cuBLAS and cuBLASLt workspaces through its caching allocator, so ``max_memory_allocated`` includes them. Kernels'
transient buffers and the allocator's rounding are not in the plan; ``bench/bench_gpu.py`` measures the error.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from unittest import mock

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.training.model import adapt, load_base, make_optimizer

MB = 1024 * 1024
# cuBLAS and cuBLASLt workspaces, 32 MiB each on Hopper in PyTorch 2.x: the 66 MiB an H100 held beyond a frozen
# BERT-base's weights before its first step (bench/results/gpu-20261126.md, head at batch 8).
CUDA_WORKSPACE_MB = 64.0
FUSED_ATTENTION = "tuneoff_plan_fused_sdpa"


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
    workspace_mb: float = 0.0
    accumulates: bool = False  # train.grad_accum > 1: gradients are held while the next micro-batch's activations grow

    @property
    def total_mb(self) -> float:
        held = (
            self.activations_mb + self.gradients_mb if self.accumulates else max(self.activations_mb, self.gradients_mb)
        )
        return self.weights_mb + self.optimizer_mb + held + self.workspace_mb


def _attention(query, key, value, mask, scaling):
    # The math kernel: its matrix products are what FlopCounterMode counts (the CPU's flash kernel is not counted).
    with sdpa_kernel(SDPBackend.MATH):
        return torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)


class _FusedAttention(torch.autograd.Function):
    """Attention that keeps for backward what a fused CUDA kernel keeps (FlashAttention, Dao et al. 2022): q, k, v,
    the output and a float32 log-sum-exp per row; backward recomputes the rest (its FLOPs count that recompute, as
    the fused kernel's backward does it too)."""

    @staticmethod
    def forward(ctx, query, key, value, mask, scaling):
        with torch.no_grad():
            out = _attention(query, key, value, mask, scaling)
        ctx.save_for_backward(query, key, value, out, query.new_empty((*query.shape[:-1], 1), dtype=torch.float32))
        ctx.mask, ctx.scaling = mask, scaling
        return out

    @staticmethod
    def backward(ctx, grad):
        query, key, value, _, _ = ctx.saved_tensors
        with torch.enable_grad():
            q, k, v = (t.detach().requires_grad_() for t in (query, key, value))
            out = _attention(q, k, v, ctx.mask, ctx.scaling)
            return (*torch.autograd.grad(out, (q, k, v), grad), None, None)


def _fused_attention(module, query, key, value, attention_mask, *, dropout=0.0, scaling=None, **kwargs):
    mask = attention_mask[:, :, :, : key.shape[-2]] if attention_mask is not None else None
    return _FusedAttention.apply(query, key, value, mask, scaling).transpose(1, 2).contiguous(), None


class _ByteMaskDropout(torch.autograd.Function):
    """Dropout keeping a one-byte mask for backward, as CUDA's fused dropout does (the CPU's keeps a float)."""

    @staticmethod
    def forward(ctx, x, p):
        keep = torch.rand(x.shape, device=x.device) >= p
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return x * keep * ctx.scale

    @staticmethod
    def backward(ctx, grad):
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def _byte_mask_dropout(input, p=0.5, training=True, inplace=False):
    return _ByteMaskDropout.apply(input, p) if training and p > 0 else input


@contextlib.contextmanager
def _as_on_cuda(model):
    """Count activations as CUDA's kernels keep them (see the module's docstring), then restore the model."""

    from transformers import AttentionInterface

    attention = getattr(model.config, "_attn_implementation", None)
    swap = attention in ("sdpa", "flash_attention_2", "flash_attention_3")
    if swap:
        AttentionInterface.register(FUSED_ATTENTION, _fused_attention)
        model.set_attn_implementation(FUSED_ATTENTION)
    try:
        with mock.patch.object(torch.nn.functional, "dropout", _byte_mask_dropout):
            yield
    finally:
        if swap:
            model.set_attn_implementation(attention)


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


def plan_run(
    cfg: RunConfig,
    name: str,
    batch_size: int,
    seq_len: int,
    precision: str,
    *,
    num_labels: int = 2,
    device: str = "cpu",
) -> Plan:
    """One counted training step of ``cfg`` on the CPU, as it would run on ``device`` ("cpu" or "cuda")."""

    torch.manual_seed(0)
    _, method, model, arch = load_base(cfg, [str(i) for i in range(num_labels)])
    model = adapt(cfg, method, model, arch)
    _, optimizer = make_optimizer(cfg, method, model, "cpu")  # the run's optimizer kind: AdamW's two moments, SGD's one
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}

    vocab = model.config.vocab_size
    batch = {
        "input_ids": torch.randint(5, vocab, (batch_size, seq_len)),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
    }
    labels = torch.randint(0, num_labels, (batch_size,))
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in param_storages:
            saved[ptr] = max(saved.get(ptr, 0), _tensor_bytes(t))
        return t

    autocast = (
        torch.autocast("cpu", dtype=torch.bfloat16) if precision in ("bf16", "fp16") else contextlib.nullcontext()
    )
    counter = FlopCounterMode(display=False)
    with counter, _as_on_cuda(model) if device == "cuda" else contextlib.nullcontext():
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with autocast:
                logits = model(**batch).logits
            loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        loss.backward()
    gradients = sum(_tensor_bytes(p.grad) for p in trainable if p.grad is not None)
    optimizer.step()
    optimizer_bytes = sum(
        _tensor_bytes(v) for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v)
    )
    return Plan(
        name=name,
        method=cfg.method.name,
        trainable_params=sum(p.numel() for p in trainable),
        weights_mb=sum(_tensor_bytes(p) for p in model.parameters()) / MB,
        gradients_mb=gradients / MB,
        optimizer_mb=optimizer_bytes / MB,
        activations_mb=sum(saved.values()) / MB,
        gflops_per_step=counter.get_total_flops() / 1e9,
        workspace_mb=CUDA_WORKSPACE_MB if device == "cuda" else 0.0,
        accumulates=cfg.train.grad_accum > 1,
    )


def plan_device(device: str | None) -> str:
    """The device a plan is for: as asked, else this machine's (cuda when it has a GPU)."""

    if device not in (None, "cpu", "cuda"):
        raise TuneoffError(f"--device {device!r}: choose cpu or cuda (the device the runs will train on).")
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _length(cfg: RunConfig) -> int:
    return cfg.data.max_length if isinstance(cfg.data.max_length, int) else 128


def plan_as_trained(cfg: RunConfig, name: str, num_labels: int = 2) -> Plan:
    """The plan of a run as it trained: its batch size, max_length, precision and device (a finished run's saved
    config holds the resolved values), so the report compares it with what that run measured."""
    precision = cfg.train.mixed_precision if cfg.train.mixed_precision in ("bf16", "fp16") else "fp32"
    return plan_run(
        cfg,
        name,
        cfg.train.batch_size,
        _length(cfg),
        precision,
        num_labels=num_labels,
        device="cuda" if cfg.train.device == "cuda" else "cpu",
    )


def plan_configs(
    configs: list[tuple[str, RunConfig]],
    batch_size: int | None,
    seq_len: int | None,
    precision: str,
    device: str = "cpu",
) -> list[Plan]:
    plans = []
    for name, cfg in configs:
        plans.append(
            plan_run(cfg, name, batch_size or cfg.train.batch_size, seq_len or _length(cfg), precision, device=device)
        )
    return plans
