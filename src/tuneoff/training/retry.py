"""Out of GPU memory: the run is retried at half the per-device batch and twice the accumulation (the same effective
batch), resuming from its last checkpoint, until ``train.min_batch_size``.
"""

from __future__ import annotations

import gc
import logging
from typing import Callable

import torch

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.training.launcher import launched
from tuneoff.training.loop import RunResult, train

log = logging.getLogger(__name__)


def train_with_oom_retry(
    cfg: RunConfig,
    progress: bool = True,
    run_id: str | None = None,
    resume: bool = False,
    on_evaluate: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """On CUDA out-of-memory, retry with half the per-device batch and twice the accumulation (the effective batch is
    unchanged, so the retry resumes the same run from its last checkpoint), down to ``train.min_batch_size``.

    The failed attempt's memory is released before the retry: the exception is not kept (its traceback holds the
    frames that hold the model), and garbage collection breaks the model <-> forward cycle Accelerate's prepare
    makes, then the CUDA cache is emptied (what Accelerate's ``release_memory`` does)."""
    while True:
        try:
            return train(cfg, progress, run_id, resume, on_evaluate)
        except torch.cuda.OutOfMemoryError as exc:
            failed_run = getattr(exc, "tuneoff_run_id", None)
        release_memory()
        tc = cfg.train

        if launched():  # the other processes are inside a collective: a lone retry would deadlock them
            raise TuneoffError(
                f"Out of GPU memory at per-device batch {tc.batch_size} in a multi-process run. Start it again with "
                f"train.batch_size={tc.batch_size // 2} train.grad_accum={tc.grad_accum * 2} (same effective batch) "
                "and --resume, or shard the model with FSDP (--accelerate-config)."
            )
        if tc.batch_size // 2 < tc.min_batch_size:
            raise TuneoffError(
                f"Out of GPU memory even at batch size {tc.batch_size}. Use a smaller model or method (see "
                "`tuneoff plan`), a shorter data.max_length, or lower train.min_batch_size."
            )
        smaller = tc.model_copy(update={"batch_size": tc.batch_size // 2, "grad_accum": tc.grad_accum * 2})
        log.warning(
            f"CUDA out of memory at batch {tc.batch_size}: retrying with batch {smaller.batch_size} x "
            f"{smaller.grad_accum} accumulation steps (effective batch unchanged)"
        )
        cfg = cfg.model_copy(update={"train": smaller})
        if failed_run is not None:
            run_id, resume = failed_run, True


def release_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
