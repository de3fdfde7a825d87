"""Does ``train.compile=on`` pay on this machine? Eager against compiled (dynamic shapes, batches padded to multiples
of 32), LoRA and full fine-tuning of MiniLM on Rotten Tomatoes, interleaved, median of ``--repeats``.

    python bench/bench_compile.py --examples 1000 --epochs 1 --repeats 2

The training loop's samples/s is what compilation can win; the whole run's seconds include the compilations. Results:
bench/results/compile-<date>.json and .md (command, device, versions, load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

HERE = Path(__file__).resolve().parent


def one(method: str, compile_mode: str, examples: int, epochs: int) -> dict:
    from tuneoff.config import build_config
    from tuneoff.training.loop import train

    out = tempfile.mkdtemp(prefix="bench-compile-")
    cfg = build_config(
        {},
        [
            f"output_dir={out}",
            "model.name=minilm",
            "data.name=rotten_tomatoes",
            f"data.max_train_samples={examples}",
            "data.max_eval_samples=200",
            f"train.epochs={epochs}",
            f"train.compile={compile_mode}",
            "train.feature_cache=off",
            "train.checkpoints=false",
        ],
        names={"method": method},
    )
    t0 = time.perf_counter()
    result = train(cfg, progress=False)
    return {
        "method": method,
        "compile": compile_mode,
        "wall_seconds": time.perf_counter() - t0,
        "loop_samples_per_s": result.resources["train_samples_per_s"],
        "test_accuracy": result.metrics["test"]["accuracy"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(args.one[0], args.one[1], int(args.one[2]), int(args.one[3]))))
        return
    import subprocess

    import peft
    import torch
    import transformers

    rows = []
    for _ in range(args.repeats):  # interleaved: eager and compiled alternate, each in a fresh process
        for method in args.methods.split(","):
            for mode in ("off", "on"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", method, mode, str(args.examples), str(args.epochs)],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
                )
                line = [entry for entry in proc.stdout.splitlines() if entry.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{method} compile={mode} failed:\n{proc.stderr[-3000:]}")
                rows.append(json.loads(line[0][7:]))
                print(rows[-1], flush=True)
    summary = []
    for method in args.methods.split(","):
        entry = {"method": method}
        for mode in ("off", "on"):
            sel = [r for r in rows if r["method"] == method and r["compile"] == mode]
            entry[f"{mode}_wall"] = statistics.median(r["wall_seconds"] for r in sel)
            entry[f"{mode}_loop"] = statistics.median(r["loop_samples_per_s"] for r in sel)
        entry["loop_ratio"] = entry["on_loop"] / entry["off_loop"]
        summary.append(entry)
    stamp = datetime.now(timezone.utc)
    command = "python " + " ".join(sys.argv)
    device = f"{platform.machine()} CPU, {torch.get_num_threads()} threads, bf16 native: {torch.cpu._is_avx512_bf16_supported()}"
    meta = {
        "command": command,
        "date": stamp.isoformat(timespec="seconds"),
        "device": device,
        "load": os.getloadavg(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
    }
    stem = HERE / "results" / f"compile-{stamp:%Y%m%d}"
    lines = [
        f"# train.compile on this machine ({stamp:%Y-%m-%d})",
        "",
        f"`{command}` on {device}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}; load {meta['load'][0]:.1f} at the end. "
        f"MiniLM, Rotten Tomatoes, {args.examples} examples x {args.epochs} epoch(s), batch 16, feature cache off; "
        f"eager and compiled interleaved, each in a fresh process, median of {args.repeats}.",
        "",
        "| method | eager s (whole run) | compiled s | eager loop samples/s | compiled loop samples/s | compiled / eager (loop) |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {e['method']} | {e['off_wall']:.1f} | {e['on_wall']:.1f} | {e['off_loop']:.1f} | {e['on_loop']:.1f} | "
        f"{e['loop_ratio']:.2f}x |"
        for e in summary
    ]
    write_result(stem, {"meta": meta, "runs": rows, "summary": summary}, lines)


if __name__ == "__main__":
    main()
