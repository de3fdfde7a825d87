"""What a reused process carries into a run's CPU peak memory: a packed study's worker trains run after run, and the
CPU peak (VmHWM, reset at each run's start after glibc's malloc_trim) still counts what earlier runs left resident.

    python bench/memory_reuse.py        # writes bench/results/memory-reuse-<date>.md and .json

Three fresh processes, one thread each: (1) LoRA alone; (2) full fine-tuning, then the same LoRA run; (3) full
fine-tuning, then the memory map of the process (anonymous and file-backed resident memory after gc + malloc_trim)
against one that only imported the libraries. MiniLM on 400 Reuters R8 stories, 64 tokens, one epoch: small on
purpose; the residue grows with the earlier run's size. Run on a quiet machine (the load is recorded).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

HERE = Path(__file__).resolve().parent

CHILD = r"""
import ctypes, gc, json, sys
from pathlib import Path
import tuneoff

def rollup():
    keep = ("Rss", "Anonymous", "Shared_Clean", "Private_Clean")
    rows = (line.split(":") for line in Path("/proc/self/smaps_rollup").read_text().splitlines())
    return {k: int(v.split()[0]) / 1024 for k, v in rows if k in keep}

out = {"after_imports": None, "runs": []}
import torch, transformers, peft, accelerate  # noqa: E401 - what every run imports anyway
gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
out["after_imports"] = rollup()
for method in sys.argv[2:]:
    run = tuneoff.train(model="minilm", data="reuters_r8", method=method, data__max_train_samples=400,
                        data__max_validation_samples=100, data__max_test_samples=100, data__max_length=64,
                        train__epochs=1, output_dir=sys.argv[1] + "/runs", results=sys.argv[1] + "/r", progress=False)
    record = {"method": method, "peak_rss_mb": run.resources["peak_rss_mb"], "versions": run.info["versions"],
              "device": run.info["device"]}
    del run
    gc.collect(); ctypes.CDLL("libc.so.6").malloc_trim(0)
    out["runs"].append({**record, "after": rollup()})
print("RESULT " + json.dumps(out))
"""


def child(work: Path, *methods: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TUNEOFF_CACHE": os.environ.get("TUNEOFF_CACHE", str(work / "cache"))}
    done = subprocess.run([sys.executable, "-c", CHILD, str(work), *methods], env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    return json.loads(next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="memory-reuse-"))
    load_before = os.getloadavg()[0]
    fresh = child(work, "lora")
    reused = child(work, "full", "lora")
    stamp = datetime.now(timezone.utc)
    lora_fresh, full, lora_after = fresh["runs"][0], reused["runs"][0], reused["runs"][1]
    base, left = reused["after_imports"], full["after"]
    meta = {
        "recorded_by": "python bench/memory_reuse.py",
        "date": stamp.isoformat(timespec="seconds"),
        "device": lora_fresh["device"],
        "versions": lora_fresh["versions"],
        "load_before": load_before,
        "fresh": fresh,
        "reused": reused,
    }
    stem = HERE / "results" / f"memory-reuse-{stamp:%Y%m%d}"
    v = lora_fresh["versions"]
    anon = left["Anonymous"] - base["Anonymous"]
    files = (left["Shared_Clean"] + left["Private_Clean"]) - (base["Shared_Clean"] + base["Private_Clean"])
    extra = lora_after["peak_rss_mb"] - lora_fresh["peak_rss_mb"]
    lines = [
        f"# What a reused process carries into a run's CPU peak ({stamp:%Y-%m-%d})",
        "",
        f"Recorded by `python bench/memory_reuse.py` on {lora_fresh['device']} ({platform.machine()}); tuneoff "
        f"{v['tuneoff']} ({v.get('tuneoff_commit') or 'no commit'}), torch {v['torch']}, transformers "
        f"{v['transformers']}, peft {v['peft']}; load {load_before:.1f} before it started. MiniLM, 400 Reuters R8 "
        "stories, 64 tokens, one epoch, one thread.",
        "",
        "| | MB |",
        "|---|---|",
        f"| LoRA's peak, in a fresh process | {lora_fresh['peak_rss_mb']:,.0f} |",
        f"| full fine-tuning's peak, in a fresh process | {full['peak_rss_mb']:,.0f} |",
        f"| the same LoRA run's peak, after full fine-tuning in the same process | {lora_after['peak_rss_mb']:,.0f} |",
        f"| resident after full fine-tuning (gc + malloc_trim), anonymous, above a process that only imported the "
        f"libraries | {anon:,.0f} |",
        f"| the same, file-backed (library pages) | {files:,.0f} |",
        "",
        f"The reused process's LoRA peak is {extra:+,.0f} MB ({100 * extra / lora_fresh['peak_rss_mb']:+.1f}%) from "
        "the fresh one: a packed study's CPU peaks are upper bounds that depend on what the worker ran before; "
        "compare conditions seed by seed, or plan them (`tuneoff plan`).",
    ]
    write_result(stem, meta, lines)


if __name__ == "__main__":
    main()
