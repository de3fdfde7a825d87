"""tuneoff: which fine-tuning method should I use for my text classifier, and what will it cost?

The Python API (``tuneoff.api``, re-exported here): ``train`` one run, ``run_study`` to compare methods,
``load_study`` / ``load_run`` to read stored results, ``plan_study`` to see what a study can decide before it runs,
``inspect`` a dataset. Importing ``tuneoff`` loads nothing
heavy; torch and transformers are imported when a function that needs them is first called.
"""

from tuneoff.core.provenance import VERSION

__version__ = VERSION

__all__ = [
    "Run",
    "Stopped",
    "StudyResult",
    "TuneoffError",
    "inspect",
    "load_run",
    "load_study",
    "plan_study",
    "run_study",
    "train",
]


def __getattr__(name: str):
    if name in ("TuneoffError", "Stopped"):
        from tuneoff.core import errors

        return getattr(errors, name)
    if name in __all__:
        from tuneoff import api

        return getattr(api, name)
    raise AttributeError(f"module 'tuneoff' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API beside the module's own names: tab completion in a notebook shows what ``__getattr__`` provides."""
    return sorted({*globals(), *__all__})
