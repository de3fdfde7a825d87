"""The base layer: what every other layer may use and nothing else.

``errors`` (the one error type a user sees), ``files`` (atomic writes, safe path names), ``hub`` (reaching the
Hugging Face hub, or failing at once), ``provenance`` (tuneoff's own version and commit, library versions) and
``logs`` (the ``tuneoff`` loggers and per-run log files). Imports nothing from tuneoff outside this package.
"""
