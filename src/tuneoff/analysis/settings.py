"""Studies: a base run config, named method variants, a grid and seeds, expanded into runs and executed.

A study file looks like::

    name: lora_vs_partial
    base:   {model: {name: minilm}, data: {name: rotten_tomatoes}, train: {epochs: 1}}
    variants:
      partial_top2: {method: {name: partial, k: 2}}
      lora_r8_qv:   {method: {name: lora, r: 8}, grid: {train.lr: [5e-4, 1e-3]}}
    grid:  {data.name: [rotten_tomatoes, bbc_news]}     # applies to every variant
    seeds: [1, 2, 3]

Runs are numbered deterministically (``lora_r8_qv-lr0.001-rotten_tomatoes-s2``), so a resumed study finds its
finished runs by name and redoes none of them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field




class Decide(BaseModel):
    """Constraints a recommended method must meet (a study's ``decide:``, or flags of ``tuneoff report``)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    max_peak_memory_mb: float | None = Field(None, gt=0)
    max_train_seconds: float | None = Field(None, gt=0)
    max_trainable_params: int | None = Field(None, ge=1)


class AnalysisSettings(BaseModel):
    """A study's ``analysis:`` section: how verdicts are reached (changing it re-reads results, never re-runs)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    margin: float = Field(0.01, gt=0, lt=1, description="Non-inferiority margin in accuracy (0.01 = one point).")
    alpha: float = Field(0.05, gt=0, lt=0.5, description="Family-wise error rate (Holm) and 1 - CI level.")
    prefer: Literal["overall", "trained_mb", "peak_memory_mb", "train_seconds", "trainable_params"] = Field(
        "overall", description="Among methods as good as the best, the cheapest on: overall (geometric mean of the "
        "cost ratios against the reference), trained_mb, peak_memory_mb, train_seconds or trainable_params.")
    decide: Decide = Decide()  # also accepted at the study's top level (``decide:``)
