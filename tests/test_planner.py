"""The planner's counts for a tiny model match a hand count."""

from __future__ import annotations

import pytest

from tuneoff.config import build_config
from tuneoff.planner import plan_run

H, L, I, C, B, S = 32, 2, 64, 2, 4, 16
TOTAL = 21314  # parameters of the tiny BERT (see test_methods)
# Forward matmul FLOPs: per layer q,k,v,o (4 H^2) and the FFN (2 H I) per token, attention scores and weighted sum
# (2 x S^2 H per sequence), then pooler (H^2) and classifier (H C) on the [CLS] token; 2 FLOPs per multiply-add.
FORWARD = 2 * B * S * (4 * H * H + 2 * H * I) * L + 2 * 2 * B * S * S * H * L + 2 * B * H * H + 2 * B * H * C


def plan(model, method, **params):
    cfg = build_config({}, [f"model.name={model}", *[f"method.{k}={v}" for k, v in params.items()]], names={"method": method})
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


def test_head_only_trains_and_keeps_almost_nothing(tiny_bert):
    p = plan(tiny_bert, "head")
    assert p.gradients_mb * 2**20 == CLASSIFIER_BYTES
    # Only the classifier's weight gradient is computed in backward: 2 B H C FLOPs.
    assert p.gflops_per_step * 1e9 == pytest.approx(FORWARD + 2 * B * H * C)
    assert p.activations_mb * 2**20 <= B * H * 4 + B * H + 64  # the pooled input of the classifier and its dropout mask


CLASSIFIER_BYTES = (H * C + C) * 4


def test_lean_lora_keeps_less_than_lora_and_no_more_than_partial(tiny_bert):
    lora, lean, partial = plan(tiny_bert, "lora"), plan(tiny_bert, "lora_lean", top_layers=1), plan(tiny_bert, "partial", k=1)
    assert lean.activations_mb < lora.activations_mb
    assert lean.total_mb <= partial.total_mb
    assert lean.trainable_params == 1 * 2 * (H * 8) + H * C + C  # B only, one layer, q and v
