"""Replay tuneoff's early-stopping rule over the evaluation histories of finished studies: which runs that stopped
early would have gone on under the current rule (``tuneoff.training.convergence.observe``)?

Written when the first rule (patience counted every evaluation without a better validation accuracy) was found to
stop runs still at the majority class while their validation loss fell. The current rule also counts a falling loss
as progress until the metric first improves.

    python bench/replay_early_stopping.py /work/bgzoo/method_zoo_offline /work/bgev/report4_rank_sweep ...
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tuneoff.training.checkpoint import LoopState
from tuneoff.training.convergence import observe


def replay(run_dir: Path) -> dict | None:
    """For a run that stopped early: its history replayed under the current rule, and whether it would go on."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    if not metrics.get("stopped_early"):
        return None
    train = (yaml.safe_load((run_dir / "config.yaml").read_text()) or {}).get("train") or {}
    metric = train.get("metric_for_best") or "accuracy"
    key = {"accuracy": "val_accuracy", "macro_f1": "val_macro_f1", "loss": "val_loss"}[metric]
    state = LoopState()
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        entry = json.loads(line)
        if entry.get(key) is None:
            continue
        state.step = entry["step"]
        state.history.append(entry)
        observe(state, entry[key], entry["val_loss"], metric)
    last = state.history[-1]
    return {
        "run": run_dir.name,
        "stopped_at_epoch": last.get("epoch"),
        "stale": state.stale,
        "patience": train.get("patience"),
        "would_go_on": state.stale < (train.get("patience") or 0),
        "val_accuracy": [round(e["val_accuracy"], 3) for e in state.history],
        "val_loss": [round(e["val_loss"], 3) for e in state.history],
        "test_accuracy": (metrics.get("test") or {}).get("accuracy"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="+", type=Path, help="study directories (each with runs/)")
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    stamp = datetime.now(timezone.utc)
    lines = [
        f"# Early stopping replayed ({stamp:%Y-%m-%d})",
        "",
        f"`python {' '.join(sys.argv)}`: every run that stopped early, its evaluation history replayed under "
        "`tuneoff.training.convergence.observe` (a falling validation loss counts as progress until the metric "
        "first improves). A run listed would have gone on under it.",
        "",
    ]
    for study in args.studies:
        runs = [r for d in sorted((study / "runs").iterdir()) if (d / "metrics.json").is_file() and (r := replay(d))]
        go_on = [r for r in runs if r["would_go_on"]]
        lines += [f"## {study.name}: {len(go_on)} of {len(runs)} early-stopped runs would have gone on", ""]
        if go_on:
            lines += [
                "| run | stopped at epoch | test accuracy | validation accuracy | validation loss |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {r['run']} | {r['stopped_at_epoch']} | {r['test_accuracy']:.3f} | {r['val_accuracy']} | "
                f"{r['val_loss']} |"
                for r in go_on
            ]
            lines.append("")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"early-stopping-replay-{stamp:%Y%m%d}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
