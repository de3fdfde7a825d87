"""Did a run converge? Measured from what it recorded, so a comparison never reads an under-trained run as a worse
method.

A run *converged* when its validation metric reached a plateau: early stopping ended it (``train.patience``
evaluations without improvement), or it ran out of budget (``train.epochs`` / ``train.max_steps``) after its best
evaluation stopped improving. It did **not** converge when:

- it was **still improving** at the end of its budget: its best evaluation is among the last ``window`` and beats
  everything before them by more than ``MIN_DELTA`` (half a point), and for accuracy and macro-F1 by more than two
  validation examples' worth (then more epochs would likely change the comparison);
- it had **too few evaluations** to tell (fewer than ``window`` + 1: evaluate more often with ``train.eval_every``);
- it **collapsed**: it predicts one class for every validation example;
- it is **grossly under-confident**: its mean top-class probability on validation is more than
  ``UNDER_CONFIDENCE`` below its validation accuracy (a model stopped early in its descent: the logits never grew).
  A run trained with class weights is judged on its probabilities with the weights divided out: weighting class c by
  w_c trains a model for a prior proportional to w_c times c's share, which lowers its confidence on the common
  classes by design, and dividing by w_c and renormalising is the prior correction of Saerens, Latinne and
  Decaestecker (2002; ``loss.prior_shift``). Without it, every
  run of studies/offline/rare_classes.yaml with balanced weights was first called under-confident.
"""

from __future__ import annotations

import numpy as np
from scipy.special import softmax

from tuneoff.training.loss import prior_shift

MIN_DELTA = 0.005  # an improvement of the validation metric smaller than this is a plateau, not progress
UNDER_CONFIDENCE = 0.25  # accuracy minus mean confidence above this: grossly under-confident
LOSS_PROGRESS = 0.005  # before the metric first improves, a validation loss 0.5% under its best is progress


def observe(state, value: float, loss: float, metric: str) -> bool:
    """Record one evaluation in the loop's ``state`` (best, best_step, best_loss, stale; ``state.history`` already
    holds it); True when it is the best by ``metric`` (its weights are the ones kept).

    While the metric has not improved on the run's first evaluation, a falling validation loss (0.5% under its best)
    is progress too and the evaluation is not stale: runs sit at the majority class for their first evaluations while
    the loss drops (report 2's analogue lost full fine-tuning and LoRA tuning trials that way, stopped at the end of
    epoch 1 with the validation loss down a third). Once the metric has moved, only the metric counts (a noisy
    validation loss would otherwise keep every run going to its cap)."""
    loss_falls = state.best_loss is None or loss < state.best_loss * (1 - LOSS_PROGRESS)
    state.best_loss = loss if state.best_loss is None else min(state.best_loss, loss)
    not_started = bool(state.history) and state.best_step == state.history[0]["step"]
    if state.best is None or (value < state.best if metric == "loss" else value > state.best):
        state.best, state.best_step, state.stale = value, state.step, 0
        return True
    state.stale = 0 if loss_falls and not_started else state.stale + 1
    return False


def assess(
    history: list[dict],
    metric: str,
    patience: int | None,
    stopped_early: bool,
    logits: np.ndarray,
    labels: list[int],
    *,
    class_weights: list[float] | None = None,
) -> dict:
    """{"converged": bool, "status": ..., "reason": ...} for a finished run (``logits`` and ``labels`` of its
    validation split, the model it ended with; ``class_weights``: the training loss's, in label order)."""
    key = {"accuracy": "val_accuracy", "macro_f1": "val_macro_f1", "loss": "val_loss"}[metric]
    values = [h[key] for h in history if h.get(key) is not None]
    window = max(2, patience or 2)
    predicted = logits.argmax(-1)
    out = {"evaluations": len(values), "window": window, "stopped_early": stopped_early}
    if len(set(predicted.tolist())) <= 1 < len(set(labels)):
        return {
            **out,
            "converged": False,
            "status": "collapsed",
            "reason": "predicts one class for every validation example",
        }
    # a weighted run's own shift of confidence divided out (the module's note)
    probs = softmax(logits if class_weights is None else logits - prior_shift(class_weights), axis=-1)
    confidence = float(probs.max(-1).mean())
    accuracy = float((predicted == np.asarray(labels)).mean())
    if accuracy - confidence > UNDER_CONFIDENCE:
        weighted = " with the class weights divided out" if class_weights is not None else ""
        return {
            **out,
            "converged": False,
            "status": "under-confident",
            "reason": f"grossly under-confident: mean confidence {confidence:.2f}{weighted} against validation "
            f"accuracy {accuracy:.2f} (training stopped early in its descent)",
        }
    if stopped_early:
        return {
            **out,
            "converged": True,
            "status": "plateau",
            "reason": f"early stopping: {patience} evaluations without improvement",
        }
    if len(values) <= window:
        return {
            **out,
            "converged": False,
            "status": "too few evaluations",
            "reason": f"only {len(values)} evaluation(s): too few to see a plateau (evaluate more often with "
            "train.eval_every, or train longer)",
        }
    sign = -1.0 if metric == "loss" else 1.0
    scores = sign * np.asarray(values, dtype=float)
    gain = float(scores[-window:].max() - scores[:-window].max())
    min_delta = MIN_DELTA if metric == "loss" else max(MIN_DELTA, 2 / max(len(labels), 1))  # one flip is 1/n
    if gain > min_delta:
        return {
            **out,
            "converged": False,
            "status": "still improving",
            "reason": f"still improving when its budget ended: its last {window} evaluations beat the earlier "
            f"best by {gain:.3f} {metric}",
        }
    return {
        **out,
        "converged": True,
        "status": "plateau",
        "reason": f"no gain over {min_delta:.3g} {metric} in its last {window} evaluations",
    }
