"""Reading a study's finished runs: ``settings`` (how a verdict is reached), ``groups`` (conditions and the groups
they can be compared in), ``significance`` (t intervals over seeds and test examples, McNemar, Holm,
non-inferiority, calibration), ``verdict`` (the recommendation; ``sentences`` words it), ``speed`` (steps to a
target accuracy, compared over seeds), ``tuning`` (the learning-rate trials) and ``mistakes`` (error analysis).

May import ``tuneoff.results`` and ``tuneoff.core``: no model, no dataset, no training, so a report can be rebuilt
anywhere.
"""
