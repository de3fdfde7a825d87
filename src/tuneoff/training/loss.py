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
            raise TuneoffError(
                f"train.class_weight names label(s) {unknown} that the training data does not have; its "
                f"labels are {label_names}. Name only those (an unlisted label weighs 1)."
            )
        return [float(setting.get(name, 1.0)) for name in label_names]
    y = np.asarray(train_ids)
    present = np.unique(y)  # a model's fixed label set may hold a class the training split lacks: weight 1, never used
    weights = dict(zip(present.tolist(), compute_class_weight("balanced", classes=present, y=y)))
    return [float(weights.get(i, 1.0)) for i in range(len(label_names))]


def prior_shift(weights) -> np.ndarray:
    """log w_k per class (label order): subtracted from a class-weighted model's logits, it divides the weights out of
    its probabilities.

    The weighted loss is minimised by q(k|x) proportional to w_k p(k|x): a weighted model's probabilities answer the
    weighted question (and its confidence on the common classes is lowered by design). Dividing the weights out,
    p(k|x) proportional to q(k|x) / w_k, recovers the posterior of the data as it is: the prior correction of Saerens,
    Latinne and Decaestecker ("Adjusting the outputs of a classifier to new a priori probabilities", 2002), and with
    it the unweighted decision rule."""
    return np.log(np.asarray(weights, dtype=np.float64))


def training_loss(
    logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None, label_smoothing: float
) -> torch.Tensor:
    """Mean cross-entropy in fp32; with weights, torch's weighted mean (divided by the batch's summed weights)."""
    return F.cross_entropy(logits.float(), labels, weight=weight, label_smoothing=label_smoothing)
