"""Where a result came from: tuneoff's own version and commit (from the package metadata, or from tuneoff's checkout
when it runs from one, never from the user's working directory), and the versions of the libraries that ran it.
"""

from __future__ import annotations

import platform
import subprocess

import torch

from tuneoff import __version__


def versions() -> dict:
    import accelerate
    import peft
    import transformers


    return {"tuneoff": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
