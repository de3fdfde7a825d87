"""tuneoff's log records and where they go.

Every module logs to its own ``logging.getLogger(__name__)`` (``tuneoff.training.loop``, ``tuneoff.study.execution``,
...), so one configuration of the ``tuneoff`` logger reaches them all. Two kinds of destination:

- **the run's log**: while a run trains, every record of any tuneoff logger goes to ``<run>/train.log`` (appended,
  one line per record, each process's records tagged with its rank), wherever the run trains: a Ray worker or each
  process of a multi-process run writes the run directory on shared storage, so the log is with the run;
- **the terminal**: the CLI decides how much reaches stderr (``-v`` debug, default info, ``-q`` warnings only).
  Records that repeat what a progress bar already shows (each evaluation's line) carry ``progress=True`` and reach
  the terminal only when bars are off (``--no-progress``) or with ``-v``.

A library user who configures nothing sees warnings only (Python's last-resort handler), and the run logs still fill.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

from tuneoff.core.outputs import terminal_text

ROOT = "tuneoff"
RUN_LOG = "train.log"
PROGRESS = {"progress": True}  # extra= of records a progress bar already shows


class _TerminalFilter(logging.Filter):
    def __init__(self, progress_lines: bool):
        super().__init__()
        self.progress_lines = progress_lines

    def filter(self, record: logging.LogRecord) -> bool:
        return self.progress_lines or not getattr(record, "progress", False)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record arrives (a test's or Typer's capture replaces it), each
    record's text through ``outputs.terminal_text`` (a study or variant name with escape sequences is shown, not run)."""

    def __init__(self):
        super().__init__()

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def terminal(verbosity: int = 0, progress_lines: bool = False) -> logging.Handler:
    """Send tuneoff's records to stderr: ``verbosity`` -1 warnings only, 0 info, 1 debug. Replaces an earlier
    terminal handler (one per process), so each command's choice holds."""
    root = logging.getLogger(ROOT)
    for old in [h for h in root.handlers if getattr(h, "tuneoff_terminal", False)]:
        root.removeHandler(old)
    handler = _Stderr()
    handler.tuneoff_terminal = True
    handler.setLevel({-1: logging.WARNING, 0: logging.INFO}.get(verbosity, logging.DEBUG))
    handler.addFilter(_TerminalFilter(progress_lines or verbosity > 0))
    handler.setFormatter(logging.Formatter("%(message)s"))
    root.addHandler(handler)
    _open_level(root, logging.DEBUG if verbosity > 0 else logging.INFO)
    return handler


def _open_level(logger: logging.Logger, level: int) -> int:
    """Let records of ``level`` through the logger itself (handlers still filter); returns the level it had."""
    before = logger.level
    if logger.level == logging.NOTSET or logger.level > level:
        logger.setLevel(level)
    return before


@contextlib.contextmanager
def run_log(run_path: Path, rank: int = 0):
    """Append every tuneoff record to ``<run_path>/train.log`` while the block runs. The file stays right when the
    run's working directory is renamed into place (the open file follows the directory)."""
    root = logging.getLogger(ROOT)
    try:
        handler = logging.FileHandler(Path(run_path) / RUN_LOG, mode="a", encoding="utf-8")
    except (
        OSError
    ):  # an unwritable or full run directory: the run's own writes will say so; the log is not worth a crash
        yield None
        return
    handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG)
    root.addHandler(handler)
    before = _open_level(root, logging.DEBUG)  # the run's log keeps debug records; the terminal handler filters its own
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        handler.close()
        root.setLevel(before)


@contextlib.contextmanager
def captured(level: int = logging.INFO):
    """The messages tuneoff logs while the block runs (for tests and the Python API's result objects)."""
    lines: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    root = logging.getLogger(ROOT)
    handler = _Collect(level)
    root.addHandler(handler)
    before = _open_level(root, level)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
