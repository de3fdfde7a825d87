"""What a run costs: parameters, time, throughput, peak memory and size on disk.

Memory meters measure from a clean baseline and return None where a reading does not exist (no CUDA on a CPU
machine, no /proc outside Linux) instead of raising. CUDA peaks come from ``max_memory_allocated`` /
``max_memory_reserved`` after ``reset_peak_memory_stats``; the CPU peak is the process's high-water RSS
(``VmHWM``), reset through ``/proc/self/clear_refs`` so an earlier step of the same process does not count. Before
the reset, memory that earlier runs of the process freed is handed back to the OS (glibc's ``malloc_trim``: it keeps
freed small blocks otherwise), so a study's later runs do not carry an earlier, larger model's memory in their peak.
"""

from __future__ import annotations

import platform

import torch
import subprocess



def versions() -> dict:
    import accelerate
    import peft
    import transformers

    from tuneoff import __version__

    return {"tuneoff": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
