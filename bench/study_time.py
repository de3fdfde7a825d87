"""A study's predicted time (``study.timing``: each condition probed here) against the time it then takes.

    python bench/study_time.py src/tuneoff/studies/default.yaml --results /work/bg/default-decide -- --until-decided
    python bench/study_time.py studies/offline/report4_rank_sweep.yaml --results /work/bg/r4 -- --until-decided

Predicts first (the probes, as ``tuneoff run --dry-run`` does), then runs ``tuneoff run <study> --results <dir> --yes``
with the arguments after ``--``, then reads each phase's wall time from the results store: the tuning trials, and the
final runs of the study's own seeds (decide mode's later rounds are reported apart; they are not in the prediction).
Writes ``bench/results/study-time-<study>-<date>.md`` and ``.json``. Run on a quiet machine: the load is recorded.

    python bench/study_time.py src/tuneoff/studies/default.yaml --results /work/bg/default --measured-from-store

predicts again (the probes of this commit) and reads the measured times from a store the study already ran into,
with the same ``--parallel`` / ``--threads``: how a change of the model fares against a run already timed. The file
then says so (``-again`` in its name).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

from tuneoff.core.provenance import versions
from tuneoff.study.packing import choose
from tuneoff.study.protocol import conditions
from tuneoff.study.spec import expand, load_spec
from tuneoff.study.timing import PLATEAU_SHARE, PROBE_EVERY, PROBE_STEPS, probe, study_time

HERE = Path(__file__).resolve().parent


def _cpu() -> str:
    """The CPU's model and whether it has native bf16 (a CPU without it trains in fp32, several times slower)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "CPU")
    return f"{name}, {'with' if 'avx512_bf16' in info or 'amx_bf16' in info else 'without'} native bf16"


def _span(rows) -> float | None:
    """Wall seconds from the first run's start to the last run's end."""
    if not rows:
        return None
    start = min(datetime.fromisoformat(r[0]) for r in rows)
    end = max(datetime.fromisoformat(r[1]) for r in rows)
    return (end - start).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("study")
    parser.add_argument("--results", required=True)
    parser.add_argument("--parallel", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--measured-from-store", action="store_true", help="do not run: read the measured times from --results"
    )
    args, extra = parser.parse_known_args()
    extra = [a for a in extra if a != "--"]
    spec = load_spec(args.study)
    conds = conditions(spec, expand(spec))
    load_before = os.getloadavg()[0]
    slots, per_run = choose(args.parallel, args.threads, sum(len(c.trials) + len(c.runs) for c in conds))
    t0 = time.perf_counter()
    probes = {c.key: probe(c.key, (c.trials or c.runs)[0].config, per_run) for c in conds}
    probe_seconds = time.perf_counter() - t0
    predicted = {p.phase: p for p in study_time(conds, probes, slots)}

    command = [
        sys.executable,
        "-m",
        "tuneoff",
        "run",
        args.study,
        "--results",
        args.results,
        "--yes",
        "--parallel",
        str(slots),
        "--threads",
        str(per_run),
        *extra,
    ]
    t0 = time.perf_counter()
    if not args.measured_from_store:
        done = subprocess.run(command, env={**os.environ, "COLUMNS": "120"}, capture_output=True, text=True)
        if done.returncode:
            sys.exit(done.stderr[-3000:])
    wall = time.perf_counter() - t0
    db = sqlite3.connect(Path(args.results) / "tuneoff.sqlite")
    rows = db.execute(
        "SELECT phase, seed, started, finished FROM runs WHERE study=? AND status IN ('done', 'pruned')", (spec.name,)
    ).fetchall()
    measured = {
        "tuning": _span([(s, f) for p, _, s, f in rows if p == "tune" and s and f]),
        "final": _span([(s, f) for p, seed, s, f in rows if p == "final" and seed in spec.seeds and s and f]),
    }
    later = [(s, f) for p, seed, s, f in rows if p == "final" and seed not in spec.seeds and s and f]

    stamp = datetime.now(timezone.utc)
    v = versions()
    table = [
        "| phase | runs | predicted (about) | predicted (at most) | measured | measured / predicted |",
        "|---|---|---|---|---|---|",
    ]
    for phase, p in predicted.items():
        m = measured.get(phase)
        table.append(
            f"| {phase} | {p.runs} | {p.minutes:.1f} min | {p.at_most:.1f} min | "
            f"{'-' if m is None else f'{m / 60:.1f} min'} | {'-' if m is None else f'{m / 60 / p.minutes:.2f}'} |"
        )
    per_condition = [
        "| condition | threads | s a step | s an evaluation | steps an epoch | load s | finish s |",
        "|---|---|---|---|---|---|---|",
    ]
    per_condition += [
        f"| {k} | {p.threads} | {p.step:.3f} | {p.evaluation:.2f} | {p.steps_per_epoch} | {p.load:.1f} | "
        f"{p.finish:.1f} |"
        for k, p in probes.items()
    ]
    lines = [
        f"# Predicted against measured study time: {spec.name} ({stamp:%Y-%m-%d})",
        "",
        f"`python bench/study_time.py {args.study} --results <dir> {' '.join(extra)}"
        f"{' --measured-from-store' if args.measured_from_store else ''}` on {_cpu()}, "
        f"{os.cpu_count()} cores (load {load_before:.1f} before it started); tuneoff "
        f"{v.get('tuneoff')}, torch {v['torch']}, transformers {v['transformers']}, peft {v['peft']}. "
        f"{slots} run(s) at once, {per_run} thread(s) each. Each condition probed for {PROBE_STEPS} steps "
        f"(evaluated every {PROBE_EVERY}), its pace read over the second half "
        f"({probe_seconds:.0f} s in all); a run predicted at {PLATEAU_SHARE:.0%} of its step cap (the committed "
        "studies' median), bounded by its cap.",
        "",
        *table,
        "",
        (
            f"Predicted again at this commit; measured: the runs already in the store, which started "
            f"{min(r[2] for r in rows if r[2])[:16].replace('T', ' ')} UTC"
            if args.measured_from_store
            else f"The whole command took {wall / 60:.1f} min"
        )
        + (f"; decide mode's later rounds ({len(later)} runs) {_span(later) / 60:.1f} min" if later else "")
        + ".",
        "",
        "Each condition's probe:",
        "",
        *per_condition,
    ]
    meta = {
        "command": " ".join(
            [
                "python bench/study_time.py",
                args.study,
                *extra,
                *(["--measured-from-store"] if args.measured_from_store else []),
            ]
        ),
        "measured_from_store": args.measured_from_store,
        "date": stamp.isoformat(timespec="seconds"),
        "device": _cpu(),
        "load_before": load_before,
        "slots": slots,
        "threads": per_run,
        "versions": v,
        "probe_seconds": probe_seconds,
        "probes": {k: vars(p) for k, p in probes.items()},
        "predicted": {k: vars(p) for k, p in predicted.items()},
        "measured_seconds": measured,
        "later_rounds": {"runs": len(later), "seconds": _span(later)},
        "wall_seconds": wall,
    }
    again = "-again" if args.measured_from_store else ""
    write_result(HERE / "results" / f"study-time-{spec.name}{again}-{stamp:%Y%m%d}", meta, lines)


if __name__ == "__main__":
    main()
