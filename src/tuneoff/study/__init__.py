"""Studies: ``spec`` (the study file, its validation and expansion into runs), ``execution`` (registering, locking
and running a study), ``executors`` (local and Ray, the loop that keeps them busy), ``search`` (Optuna) and
``worker`` (one run's processes).

May import ``tuneoff.analysis`` (its settings are part of a study file), ``tuneoff.training`` and every layer below.
"""
