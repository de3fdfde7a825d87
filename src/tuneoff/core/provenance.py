"""Where a result came from: tuneoff's own version and commit (from the package metadata, or from tuneoff's checkout
when it runs from one, never from the user's working directory), and the versions of the libraries that ran it.

The version is bumped whenever what a result means changes (0.2: studies tune each method's learning rate and train
to a plateau; statistics are calibrated t/Satterthwaite intervals), so a stored result says which rules made it.
"""

from __future__ import annotations

import functools
import importlib.metadata as metadata
import json
import platform
import subprocess
from pathlib import Path

VERSION = "0.3.0"  # the package's version (pyproject reads it); bumped when what results mean changes
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/tuneoff


def tuneoff_version() -> str:
    return VERSION


@functools.lru_cache(maxsize=1)
def tuneoff_commit() -> str | None:
    """The commit of the tuneoff code that is running: its checkout's HEAD (with ``-dirty`` when tracked files under
    ``src/tuneoff`` differ from it) when tuneoff runs from a git checkout, else the commit pip recorded for a VCS
    install (``direct_url.json``), else None."""
    checkout = _git(["rev-parse", "--show-toplevel"])
    if checkout and (Path(checkout) / "src" / "tuneoff").resolve() == PACKAGE_DIR:
        head = _git(["rev-parse", "HEAD"])
        if head:
            dirty = _git(["status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR)])
            return head + ("-dirty" if dirty else "")
    try:
        direct = metadata.distribution("tuneoff").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    return ((json.loads(direct) if direct else {}).get("vcs_info") or {}).get("commit_id")


def _git(args: list[str]) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(PACKAGE_DIR), *args], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def versions() -> dict:
    import accelerate  # heavy: imported when a run records its versions, not when the store is opened
    import peft
    import torch
    import transformers

    return {
        "tuneoff": VERSION,
        "tuneoff_commit": tuneoff_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "accelerate": accelerate.__version__,
        "python": platform.python_version(),
    }
