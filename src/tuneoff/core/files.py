"""Files written so that a reader never sees half of one: atomic writes (temporary file in the same directory, fsync,
rename), files of tuneoff's own that never follow a planted link, JSON, recognising a full disk however the writing
library reports it, and names safe as one path component. What each kind of output must neutralise in user-given text
(terminal, Markdown, spreadsheet) is ``core.outputs``.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tuneoff.core.errors import TuneoffError

# Reading the umask means setting it: put it back at once. Left at 0 until another module restored it, every file
# and directory the process wrote meanwhile was world-writable (NLTK 3.10 refuses such a WordNet copy as unsafe).
UMASK = os.umask(0)
os.umask(UMASK)


@contextmanager
def atomic_open(path: Path, newline: str | None = None) -> Iterator[IO[str]]:
    """A text file handle whose content appears at ``path`` only when the block ends without error: written to a
    temporary file in the same directory, fsynced, then renamed over ``path`` (readers see old or new, never half);
    on an error the temporary file is removed and ``path`` is untouched."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "w", encoding="utf-8", newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_own(path: Path, mode: str = "a+") -> IO[str]:
    """A file tuneoff keeps in its own directories (a lock, a log it appends to), opened so that it never follows a
    symbolic link planted there: ``O_NOFOLLOW``, the link refused with what to do instead of truncating or appending
    to the file it points at. (Files written whole go through ``atomic_open``, whose rename replaces a link, never
    writes through it.)"""
    path = Path(path)
    flags = os.O_CREAT | os.O_NOFOLLOW | {"a+": os.O_RDWR | os.O_APPEND, "a": os.O_WRONLY | os.O_APPEND}[mode]
    try:
        fd = os.open(path, flags, 0o666 & ~UMASK)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TuneoffError(
                f"{path} is a symbolic link; tuneoff does not write through links in its own "
                f"directories. Remove it (rm {path}) and run the command again."
            ) from None
        raise
    return os.fdopen(fd, mode, encoding="utf-8")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` so that readers see the old file or the new one, never half (``atomic_open``)."""
    with atomic_open(path) as fh:
        fh.write(text)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """Out of space or quota, however the library that was writing said it: an OSError, safetensors' own error type
    with the OS message in it, or torch.save's zip writer, which only says "unexpected pos" (then the file system
    of ``where`` is checked: less than 1 MiB free is a full disk)."""

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text:
        return True
    if where is not None and isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(where).free < 1024 * 1024
        except OSError:
            return False
    return False


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def safe_name(name: str) -> str:
    """A name usable as one path component: no separators, no ``..``, no leading dot."""
    cleaned = re.sub(r"[^\w.+-]+", "-", name).strip(".-")  # \w: letters and digits of any script, and _
    if not cleaned:
        raise TuneoffError(f"Name {name!r} has no usable characters; use letters, digits, '.', '_', '-'.")
    return cleaned[:120]
