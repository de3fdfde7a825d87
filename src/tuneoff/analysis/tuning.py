"""What a study's tuning phase found: each condition's trials (learning rate, how far each got on validation, pruned
or not), the rate chosen, and the expected best validation accuracy after k trials (Dodge et al., 2019, "Show Your
Work"): whether a method wins only when tuned hard."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import yaml

from tuneoff.analysis.significance import expected_max
from tuneoff.config import validation_score
from tuneoff.results.store import loads

COLUMNS = [
    "condition",
    "variant",
    "cell",
    "trial",
    "lr",
    "status",
    "val_accuracy",
    "val_score",
    "test_accuracy",
    "steps",
    "chosen",
]
TRIAL_KEYS = ("train.lr", "trial")  # what a trial's params add to its grid cell's values


def tuning_trials(rows) -> pd.DataFrame:
    """One row per tuning trial of a study (store rows of phase ``tune``); ``chosen`` marks each condition's best
    finished trial on validation (by its ``val_score``: a study that stops on macro-F1 tunes on it too), the rate its
    seeds trained at."""
    out = []
    for row in rows:
        params = json.loads(row["params"])
        metrics = loads(row, "metrics", {}) or {}
        config = yaml.safe_load(row["config_yaml"]) or {}
        validation = metrics.get("validation") or {}
        metric = (config.get("train") or {}).get("metric_for_best") or "accuracy"
        # The grid cell (e.g. "data.name=bbc_news, data.max_train_samples=100"): the situation whose methods a
        # reader compares, so the report draws one tuning plot per cell; "" for a study without a grid.
        cell = ", ".join(f"{k}={v}" for k, v in params.items() if k not in TRIAL_KEYS)
        out.append(
            {
                "condition": row["run_id"].rsplit("-tune", 1)[0],
                "variant": row["variant"],
                "cell": cell,
                "trial": params.get("trial"),
                "lr": (config.get("train") or {}).get("lr"),
                "status": row["status"],
                "val_accuracy": validation.get("accuracy"),
                "val_score": validation_score(validation, metric),
                "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
                "steps": metrics.get("pruned_at_step") or metrics.get("best_step"),
                "chosen": False,
            }
        )
    frame = pd.DataFrame(out, columns=COLUMNS)
    done = frame[(frame.status == "done") & frame.val_score.notna()].astype({"val_score": float})
    if len(done):
        frame.loc[done.groupby("condition").val_score.idxmax(), "chosen"] = True
    return frame


def expected_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Per condition, the expected best validation accuracy of k trials drawn from its own (k = 1..N). A pruned
    trial counts with the accuracy it had reached (below the median when it stopped, so rarely the best)."""
    rows = []
    for condition, group in frame[frame.val_accuracy.notna()].groupby("condition", sort=False):
        values = group.val_accuracy.to_numpy(dtype=float)
        for k, value in zip(range(1, len(values) + 1), expected_max(values)):
            rows.append(
                {
                    "condition": condition,
                    "trials": k,
                    "expected_best_val_accuracy": value,
                    "spread": float(np.std(values)),
                }
            )
    return pd.DataFrame(rows, columns=["condition", "trials", "expected_best_val_accuracy", "spread"])
