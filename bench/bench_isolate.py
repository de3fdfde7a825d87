"""What `--isolate-runs` costs and what it corrects: one study run twice, with workers that live as long as the study
(the default) and with a new worker process per run.

    python bench/bench_isolate.py                    # the built-in default study (30 runs)
    python bench/bench_isolate.py study.yaml --out /tmp/isolate   # another study; results elsewhere

Each side starts from an empty results directory and an empty frozen-feature cache, packed as `--parallel auto` packs
it. Measured: wall seconds of each `tuneoff run` (report included), and each run's peak memory on both sides, as
recorded in the results store: in a reused worker a CPU peak counts what the worker's earlier runs left resident, so
the difference per run is how much those peaks overstate (the verdict calls them upper bounds). Never run beside
another study or benchmark. Results: bench/results/isolate-<study>-<date>.json and .md (``--out``: another folder).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

HERE = Path(__file__).resolve().parent


def side(isolate: bool, study: str | None, name: str) -> dict:
    """One `tuneoff run` of the study (None: the built-in default) from nothing: wall seconds, its packing line, each
    run's peak (MB)."""
    from tuneoff.results.store import Store

    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEOFF_CACHE": tempfile.mkdtemp(prefix="bench-cache-"),
        "TUNEOFF_PARALLEL": os.environ.get("TUNEOFF_PARALLEL", "auto"),
    }
    results = tempfile.mkdtemp(prefix="bench-isolate-")
    command = [
        sys.executable,
        "-m",
        "tuneoff",
        "run",
        *([study] if study else []),
        "--results",
        results,
        "--yes",
        *(["--isolate-runs"] if isolate else []),
    ]
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    store = Store(results)
    resources = {
        r["run_id"]: json.loads(r["resources"]) for r in store.runs(name) if r["status"] == "done" and r["resources"]
    }
    peaks = {k: v["peak_rss_mb"] for k, v in resources.items()}
    reused = sum(bool(v.get("runs_before_in_process")) for v in resources.values())
    store.close()
    packing = next((line for line in done.stderr.splitlines() if line.startswith("local:")), "")
    return {
        "seconds": seconds,
        "packing": packing,
        "peaks": peaks,
        "runs_in_a_reused_worker": reused,
        "load_at_end": os.getloadavg()[0],
    }


def main() -> None:
    import peft
    import torch
    import transformers

    from tuneoff.study.spec import load_spec

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", help="a study file (default: the built-in default study)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder of the results files")
    args = parser.parse_args()
    name = load_spec(Path(args.study)).name if args.study else "default"
    shared, isolated = side(False, args.study, name), side(True, args.study, name)
    both = sorted(set(shared["peaks"]) & set(isolated["peaks"]))
    over = [shared["peaks"][k] - isolated["peaks"][k] for k in both] or [float("nan")]  # none finished on both: nan
    stamp = datetime.now(timezone.utc)
    command = "python bench/bench_isolate.py" + (f" {args.study}" if args.study else "")
    device = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, bf16 native: "
        f"{torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}"
    )
    out = {
        "command": command,
        "date": stamp.isoformat(timespec="seconds"),
        "device": device,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "shared_workers": shared,
        "isolated_runs": isolated,
        "runs_compared": len(both),
        "peak_overstatement_mb": dict(zip(both, over)),
    }
    worst = max(zip(over, both)) if both else (float("nan"), "")
    lines = [
        f"# `--isolate-runs`: its cost in wall time and the peak memory it corrects ({stamp:%Y-%m-%d})",
        "",
        f"`{command}` on {device}; torch {torch.__version__}, transformers {transformers.__version__}, peft "
        f"{peft.__version__}; {'study ' + name if args.study else 'the built-in default study'} from an empty results directory and feature cache on each "
        f"side ({shared['packing'].removeprefix('local: ')}); load {shared['load_at_end']:.1f} / "
        f"{isolated['load_at_end']:.1f} at the end of each side.",
        "",
        "| workers | wall seconds | ratio |",
        "|---|---|---|",
        f"| one per packed slot, living as long as the study (default) | {shared['seconds']:.0f} | 1.00 |",
        f"| a new process per run (`--isolate-runs`) | {isolated['seconds']:.0f} | "
        f"{isolated['seconds'] / shared['seconds']:.2f} |",
        "",
        f"Peak memory per run, reused worker minus own process, over the {len(both)} runs both sides finished: "
        f"median {statistics.median(over):+.0f} MB, largest {worst[0]:+.0f} MB ({worst[1]}), smallest "
        f"{min(over):+.0f} MB. A positive difference is what a reused worker's earlier runs left resident, counted "
        f"in the later run's peak ({shared['runs_in_a_reused_worker']} of the shared side's runs ran in a worker "
        "that had trained others before).",
        "",
    ]
    write_result(args.out / f"isolate-{name.replace('/', '_')}-{stamp:%Y%m%d}", out, lines)


if __name__ == "__main__":
    main()
