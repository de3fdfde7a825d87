"""The one error type a user sees: bad input, with what to do about it.

The CLI turns a ``TuneoffError`` into a one-paragraph message and exit code 2; anything else is a bug and
keeps its traceback.
"""


class TuneoffError(Exception):
    """Bad input or an impossible request, worded for the person who made it."""
