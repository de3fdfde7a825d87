"""Numerical guards of the training loop: when a run has diverged, and what to tell the user.

A NaN or inf loss or gradient norm stops a run at once, except under fp16's gradient scaler: there an overflow
is expected now and then (the scaler skips that optimizer step and lowers its scale, many times in the first
steps while it finds its scale), so divergence is ``max_skipped_steps`` skipped steps *in a row*.
"""

from __future__ import annotations

from tuneoff.core.errors import TuneoffError


def non_finite(what: str, step: int, lr: float) -> TuneoffError:
    return TuneoffError(
        f"The training {what} became non-finite (NaN/inf) by optimizer step {step}. Lower train.lr (now {lr:g}), "
        "use train.mixed_precision=bf16 or no instead of fp16, or set train.max_grad_norm (gradient clipping). "
        "The last good checkpoint is kept in the run's working directory."
    )


class SkipGuard:
    """Counts the optimizer steps fp16's gradient scaler skipped in a row; too many is divergence."""

    def __init__(self, limit: int):
        self.limit, self.in_a_row, self.total = limit, 0, 0

    def observe(self, skipped: bool, step: int, lr: float) -> None:
        self.in_a_row = self.in_a_row + 1 if skipped else 0
        self.total += bool(skipped)
        if self.in_a_row >= self.limit:
            raise TuneoffError(
                f"fp16: the gradient scaler skipped {self.in_a_row} optimizer steps in a row (every one overflowed; "
                f"train.max_skipped_steps={self.limit}), up to step {step}: the run diverged. Lower train.lr (now "
                f"{lr:g}), use train.mixed_precision=bf16 or no, or set train.max_grad_norm. The last good checkpoint "
                "is kept in the run's working directory."
            )


def fp16_scaled(accelerator) -> bool:
    """Whether this run's optimizer steps go through a gradient scaler (fp16 mixed precision)."""
    return accelerator.scaler is not None


def step_was_skipped(optimizer) -> bool:
    """Accelerate's optimizer wrapper knows whether the scaler skipped the last step (its scale went down)."""
    return bool(getattr(optimizer, "step_was_skipped", False))
