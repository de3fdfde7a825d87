"""The one error type a user sees: bad input, with what to do about it.

The CLI turns a ``TuneoffError`` into a one-paragraph message and exit code 2 (``Stopped``: 128 + the signal's
number); anything else is a bug and keeps its traceback.
"""


class TuneoffError(Exception):
    """Bad input or an impossible request, worded for the person who made it."""


class Stopped(TuneoffError):
    """Work stopped on request (a signal: SIGTERM, Ctrl-C) with what it had done saved; ``--resume`` continues it.
    The CLI exits with 128 + the signal's number, as a shell does for a process the signal ended."""

    def __init__(self, message: str, signal_name: str | None = None):
        super().__init__(message)
        self.signal_name = signal_name
