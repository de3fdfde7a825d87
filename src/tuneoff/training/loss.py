"""The training loss: cross-entropy, with label smoothing and per-class weights where the config asks for them.

Class weights answer a corpus in which a class is rare (Reuters R8's grain: 10 of 2,189 test stories): under the
plain mean loss a model can ignore it at almost no cost (every LoRA run of report 2's analogue scored F1 0 on it). ``balanced`` is scikit-learn's rule, n / (classes x count): each class's examples weigh as
much in total as any other's. Only the training loss is weighted; validation loss, metrics and early stopping are not.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils.class_weight import compute_class_weight

from tuneoff.core.errors import TuneoffError


def class_weights(setting, label_names: list[str], train_ids: list[int]) -> list[float] | None:
    """Each class's weight in label order, or None for the plain loss. ``setting``: "none", "balanced" or {label: w}."""
    if setting == "none":
        return None
    if isinstance(setting, dict):
        unknown = sorted(set(setting) - set(label_names))
        if unknown:
            raise TuneoffError(f"train.class_weight names label(s) {unknown} that the training data does not have; its "
                               f"labels are {label_names}. Name only those (an unlisted label weighs 1).")
        return [float(setting.get(name, 1.0)) for name in label_names]
    y = np.asarray(train_ids)
    present = np.unique(y)  # a model's fixed label set may hold a class the training split lacks: weight 1, never used
    weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y)))
    return [float(weights.get(i, 1.0)) for i in range(len(label_names))]


def training_loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None,
                  label_smoothing: float) -> torch.Tensor:
    """Mean cross-entropy in fp32; with weights, torch's weighted mean (divided by the batch's summed weights)."""
    return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)
