"""The planner's counts for a tiny model match a hand count."""

from __future__ import annotations

import pytest

from tuneoff.config import build_config
from tuneoff.training.planner import plan_run

H, L, I, C, B, S = 32, 2, 64, 2, 4, 16
TOTAL = 21314  # parameters of the tiny BERT (see test_methods)
# Forward matmul FLOPs: per layer q,k,v,o (4 H^2) and the FFN (2 H I) per token, attention scores and weighted sum
# (2 x S^2 H per sequence), then pooler (H^2) and classifier (H C) on the [CLS] token; 2 FLOPs per multiply-add.
FORWARD = 2 * B * S * (4 * H * H + 2 * H * I) * L + 2 * 2 * B * S * S * H * L + 2 * B * H * H + 2 * B * H * C


def plan(model, method, **params):
    cfg = build_config(
        {}, [f"model.name={model}", *[f"method.{k}={v}" for k, v in params.items()]], names={"method": method}
    )
    return plan_run(cfg, method, batch_size=B, seq_len=S, precision="fp32")


def test_full_fine_tuning_hand_count(tiny_bert):
    p = plan(tiny_bert, "full")
    assert p.trainable_params == TOTAL
    assert p.weights_mb * 2**20 == TOTAL * 4
    assert p.gradients_mb * 2**20 == TOTAL * 4
    # AdamW keeps exp_avg and exp_avg_sq (2 x 4 bytes per parameter) and a 4-byte step counter per tensor (41 tensors).
    assert p.optimizer_mb * 2**20 == TOTAL * 8 + 41 * 4
    # Backward of a matmul costs twice its forward (gradient of the input and of the weight).
    assert p.gflops_per_step * 1e9 == pytest.approx(3 * FORWARD)
    assert p.activations_mb > 0


def test_sgd_is_planned_with_sgd_state(tiny_bert):
    """The planner builds the run's own optimizer: SGD with momentum keeps one buffer per parameter, AdamW two (and a
    step counter per tensor)."""
    sgd = plan_on(tiny_bert, "full", "cpu", optimizer="sgd")
    adamw = plan_on(tiny_bert, "full", "cpu")
    assert sgd.optimizer_mb * 2**20 == TOTAL * 4
    assert adamw.optimizer_mb * 2**20 == TOTAL * 8 + 41 * 4


def test_planning_qlora_without_its_kernels_says_what_is_missing(tiny_bert):
    """QLoRA is planned on its 4-bit base, loaded as training loads it: where that cannot be (no bitsandbytes, no
    GPU), the plan stops with the same clear error as training would."""
    from tuneoff.core.errors import TuneoffError

    with pytest.raises(TuneoffError, match="qlora"):
        plan(tiny_bert, "qlora")


def test_head_only_trains_and_keeps_almost_nothing(tiny_bert):
    p = plan(tiny_bert, "head")
    assert p.gradients_mb * 2**20 == CLASSIFIER_BYTES
    # Only the classifier's weight gradient is computed in backward: 2 B H C FLOPs.
    assert p.gflops_per_step * 1e9 == pytest.approx(FORWARD + 2 * B * H * C)
    assert p.activations_mb * 2**20 <= B * H * 4 + B * H + 64  # the pooled input of the classifier and its dropout mask


CLASSIFIER_BYTES = (H * C + C) * 4


def test_lean_lora_keeps_less_than_lora_and_no_more_than_partial(tiny_bert):
    lora, lean, partial = (
        plan(tiny_bert, "lora"),
        plan(tiny_bert, "lora_lean", top_layers=1),
        plan(tiny_bert, "partial", k=1),
    )
    assert lean.activations_mb < lora.activations_mb
    assert lean.total_mb <= partial.total_mb
    assert lean.trainable_params == 1 * 2 * (H * 8) + H * C + C  # B only, one layer, q and v


def plan_on(model, method, device, **train):
    overrides = [f"model.name={model}", *[f"train.{k}={v}" for k, v in train.items()]]
    return plan_run(
        build_config({}, overrides, names={"method": method}),
        method,
        batch_size=B,
        seq_len=S,
        precision="fp32",
        device=device,
    )


def test_the_peak_overlaps_activations_and_gradients_unless_gradients_accumulate(tiny_bert):
    p = plan_on(tiny_bert, "full", "cpu")
    assert p.workspace_mb == 0
    assert p.total_mb == p.weights_mb + p.optimizer_mb + max(p.activations_mb, p.gradients_mb)
    held = plan_on(tiny_bert, "full", "cpu", grad_accum=2)
    assert held.total_mb == held.weights_mb + held.optimizer_mb + held.activations_mb + held.gradients_mb


def test_planning_for_cuda_counts_what_cuda_kernels_keep(tiny_bert):
    """The CPU's attention keeps float32 (B, heads, S, S) matrices and its dropout a float mask; CUDA's fused kernel
    keeps q, k, v, the output and a float per row, and its dropout a byte per element (bench/results/gpu-*.md)."""
    import torch.nn.functional as F

    dropout = F.dropout
    cpu, cuda = plan_on(tiny_bert, "lora", "cpu"), plan_on(tiny_bert, "lora", "cuda")
    heads = 2
    attention_matrix = B * heads * S * S * 4
    assert cpu.activations_mb * 2**20 - cuda.activations_mb * 2**20 >= L * attention_matrix
    assert cuda.workspace_mb == 64 and cuda.total_mb == cuda.weights_mb + cuda.optimizer_mb + cuda.activations_mb + 64
    assert (cuda.weights_mb, cuda.gradients_mb, cuda.optimizer_mb) == (
        cpu.weights_mb,
        cpu.gradients_mb,
        cpu.optimizer_mb,
    )
    assert F.dropout is dropout, "the planner puts torch's dropout back"


def test_the_fused_attention_stand_in_has_sdpa_gradients():
    import torch

    from tuneoff.training.planner import _FusedAttention

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3))
    mask = torch.zeros(2, 1, 5, 5, dtype=torch.float64)
    mask[..., -1] = float("-inf")
    g = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    expected = torch.autograd.grad(
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask), (q, k, v), g
    )
    got = torch.autograd.grad(_FusedAttention.apply(q, k, v, mask, None), (q, k, v), g)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b)


def test_plan_command_writes_the_table_for_the_device_asked(tiny_bert, tmp_path):
    from typer.testing import CliRunner

    from tuneoff.cli.app import app

    (tmp_path / "run.yaml").write_text(f"model: {{name: {tiny_bert}}}\nmethod: {{name: lora}}\n")
    out = tmp_path / "plan.md"
    done = CliRunner().invoke(
        app,
        [
            "plan",
            str(tmp_path / "run.yaml"),
            "--seq-len",
            "16",
            "--batch-size",
            "4",
            "--precision",
            "bf16",
            "--device",
            "cuda",
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    text = out.read_text()
    assert "bf16, on cuda" in text and "the larger of activations and gradients" in text
    row = next(line for line in text.splitlines() if line.startswith("| lora |"))
    assert row.split(" | ")[6] == "64.0", row  # the workspace column
    bad = CliRunner().invoke(app, ["plan", str(tmp_path / "run.yaml"), "--device", "tpu"])
    assert bad.exit_code == 2 and "choose cpu or cuda" in bad.output


def test_a_run_is_planned_as_it_trained(tiny_bert):
    """The report sets each condition's plan beside what its runs measured: a GPU bf16 run is planned as one."""
    from tuneoff.training.planner import plan_as_trained

    overrides = [
        f"model.name={tiny_bert}",
        f"train.batch_size={B}",
        f"data.max_length={S}",
        "train.device=cuda",
        "train.mixed_precision=bf16",
    ]
    gpu = plan_as_trained(build_config({}, overrides, names={"method": "lora"}), "lora")
    same = plan_run(build_config({}, overrides, names={"method": "lora"}), "lora", B, S, "bf16", device="cuda")
    assert gpu == same and gpu.workspace_mb == 64
    cpu = plan_as_trained(
        build_config({}, overrides[:3] + ["train.device=cpu", "train.mixed_precision=no"], names={"method": "lora"}),
        "lora",
    )
    assert cpu == plan_run(build_config({}, overrides[:3], names={"method": "lora"}), "lora", B, S, "fp32")
