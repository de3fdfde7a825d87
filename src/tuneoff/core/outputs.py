"""User-given text (study, variant, condition and label names, texts, error messages) on its way out: one writer per
kind of output, each neutralising what that kind interprets, used by every output of that kind.

- **terminal**: control characters (ESC sequences rewrite the window title or clear the screen; a carriage return
  overwrites a line) are shown as escapes (``terminal_text``), in every line ``say`` prints, every error, every table;
- **plots**: control characters dropped (matplotlib warns about glyphs it lacks, with source paths): ``plot_text``;
- **Markdown** (``summary.md``, the exported result): HTML-escaped (a label ``<script>`` is shown, not run), table pipes
  escaped, and link and image syntax broken (``[x](javascript:...)`` stays text): ``markdown_text``;
- **spreadsheets** (every CSV tuneoff writes): a cell that a spreadsheet would run as a formula is written as text
  (``spreadsheet_safe``, ``write_csv``), and tuneoff's own readers undo it (``from_spreadsheet``).
HTML goes through ``html.escape`` where the page is built (``report.sections``).
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from tuneoff.core.files import atomic_open

# C0 controls but tab and newline, DEL, and the C1 controls (0x80-0x9f: single-byte CSI and OSC on some terminals)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_text(text) -> str:
    """``text`` safe to print: each control character shown as its escape (``\\x1b``), never sent to the terminal."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


def plot_text(text) -> str:
    """``text`` for a plot's labels: control characters dropped."""
    return CONTROL.sub("", str(text))


def markdown_text(text) -> str:
    """User-given names (labels, studies, conditions) as Markdown text: HTML-escaped (a label `<script>` is shown, not
    run, wherever the Markdown is rendered), pipes escaped (they would split a table cell), brackets escaped (a name
    ``[x](javascript:alert(1))`` must not become a live link or image), control characters shown as escapes."""
    return html.escape(terminal_text(text), quote=False).replace("|", "\\|").replace("[", "\\[").replace("]", "\\]")


# Spreadsheet formula injection (OWASP "CSV Injection"): a cell that starts with = + - @ or a tab / carriage return is
# run as a formula by Excel, LibreOffice and Sheets. Such a cell is written with a leading apostrophe, which those
# programs display as text; numbers (-5, +3.2) are left alone. Readers of tuneoff's own files take the apostrophe off.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def escape_cell(value):
    if isinstance(value, str) and value.startswith(_FORMULA_START) and not _is_number(value):
        return "'" + value
    return value


def unescape_cell(value):
    if isinstance(value, str) and value.startswith("'") and value[1:].startswith(_FORMULA_START):
        return value[1:]
    return value


def spreadsheet_safe(frame):
    """A copy of ``frame`` whose text cells cannot run as spreadsheet formulas (column names included)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind == "O":  # object or pandas' string dtype: where text is
            out[column] = out[column].map(escape_cell)
    out.columns = [escape_cell(str(c)) for c in out.columns]
    return out


def from_spreadsheet(frame):
    """``spreadsheet_safe`` undone: the values as they were (for tuneoff's own readers)."""
    out = frame.copy()
    for column in out.columns:
        if out[column].dtype.kind == "O":
            out[column] = out[column].map(unescape_cell)
    out.columns = [unescape_cell(str(c)) for c in out.columns]
    return out


def write_csv(frame, path: Path) -> None:
    """A CSV tuneoff writes for people to open: spreadsheet-safe cells, written atomically."""
    with atomic_open(Path(path), newline="") as fh:
        spreadsheet_safe(frame).to_csv(fh, index=False)
