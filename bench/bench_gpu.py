"""GPU benchmark at BERT-base size: throughput, memory and model FLOPs utilisation per method, and the planner's
predicted peak memory against the measured one.

    python bench/bench_gpu.py                       # needs a CUDA GPU; writes bench/results/gpu-<date>.json and .md
    python bench/bench_gpu.py --smoke --out /tmp/x  # the same code on the CPU with a tiny BERT (a test runs this)

A randomly initialised bert-base config (12 x 768, 110M; speed and memory do not depend on the weights), sequence
length 128 (no padding), bf16 autocast, fused AdamW, PyTorch SDPA attention. For full / partial top-2 / head / LoRA /
LoRA-FA / lean LoRA it measures training steps at batch 8 (the background report's setting) and at every larger
power of two until memory runs out, and reports the best. MFU = FLOPs per step (counted with
``torch.utils.flop_counter``) / step time / the bf16 matmul peak this script measures (8192^3 products). The
planner's prediction (``tuneoff plan`` with bf16) is compared with ``torch.cuda.max_memory_allocated`` at batch 8:
the check passes within 10%.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from record import write_result

HERE = Path(__file__).resolve().parent
METHODS = {
    "full": {"name": "full"},
    "partial_top2": {"name": "partial", "k": 2},
    "head": {"name": "head"},
    "lora": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.1},
    "lora_fa": {"name": "lora_fa", "r": 8, "alpha": 16},
    "lora_lean": {"name": "lora_lean", "r": 8, "alpha": 16, "top_layers": 2},
}


def matmul_peak_tflops() -> float:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 2 * 8192**3 * 10 / (start.elapsed_time(end) / 1e3) / 1e12


def build(model_dir: str, method_params: dict, device: str):
    from tuneoff.config import build_config
    from tuneoff.methods import get_method
    from tuneoff.models.loading import load_classifier

    cfg = build_config({"method": method_params}, [f"model.name={model_dir}"])
    model, arch = load_classifier(model_dir, ["0", "1"], attn_implementation="sdpa")
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch).to(device)
    optimizer = method.optimizer(model, cfg.method, 1e-4, 0.01, fused=device == "cuda")
    return cfg, model, optimizer


def measure(model, optimizer, batch: int, seq: int, steps: int, device: str) -> tuple[float, float | None, float]:
    """(seconds per step, max allocated MB (CUDA only), FLOPs per step)."""
    from torch.utils.flop_counter import FlopCounterMode

    vocab = model.config.vocab_size
    ids = torch.randint(min(1000, vocab - 1), vocab, (batch, seq), device=device)
    mask = torch.ones_like(ids)
    labels = torch.randint(0, 2, (batch,), device=device)
    cuda = device == "cuda"

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        torch.nn.functional.cross_entropy(logits.float(), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # optimizer state allocated, kernels chosen
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    memory = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    return (time.perf_counter() - t0) / steps, memory, counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-batch", type=int, default=1024)
    parser.add_argument(
        "--smoke", action="store_true", help="CPU, a 2-layer 64-wide BERT, batches 8 and 16: checks the script"
    )
    parser.add_argument("--out", default=None, help="results stem (default bench/results/gpu-<date>)")
    args = parser.parse_args()
    device = "cpu" if args.smoke else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu.py needs a CUDA GPU (or --smoke to check the script on the CPU).")
    from transformers import BertConfig, BertModel

    from tuneoff.config import build_config
    from tuneoff.core.provenance import versions
    from tuneoff.training.planner import plan_run

    peak = matmul_peak_tflops() if device == "cuda" else None
    model_dir = tempfile.mkdtemp(prefix="bert-base-random-")
    config = (
        BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
        if args.smoke
        else BertConfig()
    )
    BertModel(config).save_pretrained(model_dir)
    from transformers import BertTokenizer

    BertTokenizer(vocab={f"w{i}": i for i in range(config.vocab_size)}).save_pretrained(model_dir)
    max_batch = 16 if args.smoke else args.max_batch
    rows = []
    for name, params in METHODS.items():
        best = None
        batch = 8
        while batch <= max_batch:
            cfg, model, optimizer = build(model_dir, params, device)
            try:
                sec, mem, flops = measure(model, optimizer, batch, args.seq, args.steps, device)
            except torch.cuda.OutOfMemoryError:
                break
            finally:
                del model, optimizer
                if device == "cuda":
                    torch.cuda.empty_cache()
            tflops = flops / sec / 1e12
            row = {
                "method": name,
                "batch": batch,
                "samples_per_s": batch / sec,
                "max_allocated_mb": mem,
                "tflops": tflops,
                "mfu": tflops / peak if peak else None,
            }
            if batch == 8:
                plan = plan_run(
                    build_config({"method": params}, [f"model.name={model_dir}"]),
                    name,
                    8,
                    args.seq,
                    "bf16",
                    device=device,
                )
                row["planned_mb"] = plan.total_mb
                row["plan_error"] = plan.total_mb / mem - 1 if mem else None
                rows.append(row)
            if best is None or row["samples_per_s"] > best["samples_per_s"]:
                best = row
            batch *= 2
        if best and best["batch"] != 8:
            rows.append({**best, "best": True})
        print(json.dumps([r for r in rows if r["method"] == name]), flush=True)
    import sys

    errors = [r["plan_error"] for r in rows if r.get("plan_error") is not None]
    out = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu (smoke)",
        "command": "python bench/bench_gpu.py " + " ".join(sys.argv[1:]),
        "versions": versions(),
        "bf16_matmul_peak_tflops": peak,
        "seq": args.seq,
        "rows": rows,
        "plan_within_10pct": all(abs(e) <= 0.10 for e in errors) if errors else None,
    }
    stem = Path(args.out) if args.out else HERE / "results" / f"gpu-{datetime.now(timezone.utc):%Y%m%d}"

    def num(value, fmt):
        return format(value, fmt) if value is not None else "n/a"

    lines = [
        f"# GPU benchmark — {out['device']} ({out['date']})",
        "",
        f"`{out['command']}`; bf16 matmul peak "
        f"{num(peak, '.0f')} TFLOP/s; {'tiny BERT (smoke)' if args.smoke else 'BERT-base'}, sequence {args.seq}; "
        f"planner within 10% of max_memory_allocated: {out['plan_within_10pct']}.",
        "",
        f"versions: {json.dumps(out['versions'])}",
        "",
        "| method | batch | samples/s | max allocated MB | planned MB | TFLOP/s | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['batch']}{' (best)' if r.get('best') else ''} | {r['samples_per_s']:.0f} | "
            f"{num(r['max_allocated_mb'], '.0f')} | {num(r.get('planned_mb'), '.0f')} | {r['tflops']:.2f} | "
            f"{num(r['mfu'], '.1%')} |"
        )
    write_result(stem, out, lines)


if __name__ == "__main__":
    main()
