"""How a study's verdict is reached: the non-inferiority margin, the error rate, what "cheapest" means, and the
constraints a recommended method must meet. Changing them re-reads stored results; it never re-runs anything.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The largest seed-to-seed sd of accuracy any committed study measured (AdaLoRA on Rotten Tomatoes in the method zoo,
# bench/results/seed-prior-20261207.md): what one seed, which measures nothing, is assumed to have. Here, not in
# ``significance``, so that reading a study's settings imports no pandas (the CLI's listings stay light).
ASSUMED_SEED_SD = 0.083


class Decide(BaseModel):
    """Constraints a recommended method must meet (a study's ``decide:``, or flags of ``tuneoff report``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_peak_memory_mb: float | None = Field(None, gt=0)
    max_train_seconds: float | None = Field(None, gt=0)
    max_trainable_params: int | None = Field(None, ge=1)


class AnalysisSettings(BaseModel):
    """A study's ``analysis:`` section: how verdicts are reached (changing it re-reads results, never re-runs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    metric: Literal["accuracy", "macro_f1"] = Field(
        "accuracy",
        description="What the verdict ranks (on validation), compares and decides on: accuracy, or "
        "macro_f1 (each class weighs the same however rare: for imbalanced classes; pair it with "
        "train.metric_for_best: macro_f1 so that early stopping and the tuned rates follow it too). The margin and "
        "the intervals are in its points.",
    )
    margin: float = Field(0.01, gt=0, lt=1, description="Non-inferiority margin in the metric (0.01 = one point).")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Family-wise error rate (Holm) and 1 - CI level.")
    prefer: Literal["overall", "trained_mb", "peak_memory_mb", "train_seconds", "trainable_params"] = Field(
        "overall",
        description="Among methods as good as the best, the cheapest on: overall (geometric mean of the "
        "cost ratios against the reference), trained_mb, peak_memory_mb, train_seconds or trainable_params.",
    )
    cost_margin: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="A method counts as cheaper than another only when its "
        "cost (overall, or the one preferred) is lower by at least this fraction (0.1 = 10%): "
        "smaller gaps are within the run-to-run noise of time and memory.",
    )
    tolerance: float = Field(
        0.05,
        ge=0,
        lt=1,
        description="When the study cannot decide, the default is the "
        "cheapest condition that scored within the margin of the pick on test and may lose at "
        "most this much against the best (95%, simultaneous); 0 keeps the pick (0.05 = 5 points).",
    )
    assumed_seed_sd: float = Field(
        ASSUMED_SEED_SD,
        ge=0,
        lt=0.5,
        description="Seed-to-seed sd of the metric assumed "
        "for a condition with one seed, which cannot measure it (0.083 = 8.3 points: the "
        "largest any committed study measured, so one seed decides only what no seed could "
        "change).",
    )
    decide: Decide = Decide()  # also accepted at the study's top level (``decide:``)
