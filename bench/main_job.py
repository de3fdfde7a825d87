"""The README's main job, recorded: `tuneoff train` with its defaults, its output as printed and its wall time.

    python bench/main_job.py        # writes bench/results/main-job-<date>.md and .json

Run on a quiet machine (the load is recorded): it is one process, LoRA r 8 on all-MiniLM-L6-v2 over Rotten
Tomatoes, one epoch.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

HERE = Path(__file__).resolve().parent


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="main-job-"))
    env = {
        **os.environ,
        "COLUMNS": "100",
        "TUNEOFF_CACHE": str(work / "cache"),
        "TUNEOFF_RESULTS": str(work / "results"),
    }
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tuneoff", "train", "--no-progress"], cwd=work, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    run_dir = next((work / "runs").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    resources = json.loads((run_dir / "resources.json").read_text())
    stamp = datetime.now(timezone.utc)
    printed = done.stdout.replace(str(work), "<work>").rstrip()
    meta = {
        "command": "tuneoff train",
        "recorded_by": "python bench/main_job.py",
        "date": stamp.isoformat(timespec="seconds"),
        "device": info["device"],
        "precision": info["mixed_precision"],
        "versions": info["versions"],
        "load_before": load_before,
        "wall_seconds": seconds,
        "sizes": info["sizes"],
        "seconds": resources.get("seconds"),
        "test": json.loads((run_dir / "metrics.json").read_text())["test"]["accuracy"],
        "stdout": printed,
    }
    stem = HERE / "results" / f"main-job-{stamp:%Y%m%d}"
    v = info["versions"]
    lines = [
        f"# The main job: `tuneoff train` ({stamp:%Y-%m-%d})",
        "",
        f"Recorded by `python bench/main_job.py` on {info['device']} ({platform.machine()}), {info['mixed_precision']} "
        f"precision; tuneoff {v['tuneoff']} ({v.get('tuneoff_commit') or 'no commit'}), torch {v['torch']}, transformers "
        f"{v['transformers']}, peft {v['peft']}; load {load_before:.1f} before it started.",
        "",
        f"Wall time of the whole process: **{seconds:.0f} s** ({info['sizes']['train']:,} training, "
        f"{info['sizes']['validation']:,} validation and {info['sizes']['test']:,} test examples). Seconds per phase "
        "(resources.json): " + ", ".join(f"{k} {val:.1f}" for k, val in (resources.get("seconds") or {}).items()) + ".",
        "",
        "What it printed (standard output):",
        "",
        "```",
        printed,
        "```",
    ]
    write_result(stem, meta, lines)


if __name__ == "__main__":
    main()
