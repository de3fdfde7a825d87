"""The learning-rate schedule: warmup, then linear or cosine decay, constant, or step decay.

Linear, cosine and constant-with-warmup are transformers' ``get_scheduler``. Step decay (multiply the rate by
``gamma`` every ``step_size`` optimizer steps, after the warmup's ramp), the schedule report 2 compared against
linear decay for SGD, is a ``LambdaLR``: its state (the step count) is what a checkpoint saves, so a resumed run
continues the same schedule.
"""

from __future__ import annotations


def step_decay(warmup: int, step_size: int, gamma: float):
    """lr factor at optimizer step ``s``: a linear ramp over ``warmup`` steps, then gamma ** (s // step_size)."""

    def factor(s: int) -> float:
        ramp = min(1.0, (s + 1) / warmup) if warmup else 1.0
        return ramp * gamma ** (s // step_size)

    return factor


def make_scheduler(tc, optimizer, warmup: int, total_steps: int, steps_per_epoch: int):
    from transformers import get_scheduler

    if tc.scheduler == "step":
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(optimizer, step_decay(warmup, tc.step_size or steps_per_epoch, tc.gamma))
    name = "constant_with_warmup" if tc.scheduler == "constant" else tc.scheduler
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
