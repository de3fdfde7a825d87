"""CPU benchmark: tuneoff's training against HF Trainer + peft written the way the background reports did, and a
tuned Trainer. One command, interleaved runs (A B C A B C ...), median of the repeats.

    python bench/bench_cpu.py                      # MiniLM, Rotten Tomatoes, LoRA and partial top-2, 3 repeats
    python bench/bench_cpu.py --steps 40 --repeats 1   # a quick look

Contenders (same model, data, method, batch, number of optimizer steps, seed, learning rate and schedule):
  tuneoff        `tuneoff.train.train` (dynamic padding, length-grouped batches, the one loop)
  trainer_report Trainer + peft, tokenized with padding="max_length" (128), fp32 on CPU: the reports' recipe
  trainer_tuned  Trainer + peft with dynamic padding (DataCollatorWithPadding) and length-grouped sampling
  trainer_tuned_bf16  the tuned Trainer with bf16=True: not a target, shown so that the gain tuneoff gets from
                 choosing bf16 autocast on CPUs with native bf16 (its `mixed_precision=auto`) is not mistaken
                 for anything else

Each measurement runs in its own process (clean peak RSS). Reported: training samples/s and real (non-padding)
tokens/s over the training loop only, peak RSS, and validation accuracy of the trained model (same evaluation
code for all three). Results: bench/results/cpu-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from record import write_result

HERE = Path(__file__).resolve().parent
CONTENDERS = ("tuneoff", "trainer_report", "trainer_tuned", "trainer_tuned_bf16")
METHODS = {
    "lora": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.1},
    "partial": {"name": "partial", "k": 2},
    "head": {"name": "head"},
}
LR = {"lora": 1e-3, "partial": 1e-4, "head": 3e-2}


def data_and_model(args):
    from tuneoff.config import DataConfig
    from tuneoff.data.corpus import load_corpus
    from tuneoff.models.assets import resolve_model
    from tuneoff.models.loading import load_classifier, load_tokenizer

    corpus = load_corpus(
        DataConfig(
            name="rotten_tomatoes",
            max_train_samples=args.examples or args.steps * args.batch_size,
            max_eval_samples=args.eval_samples,
        )
    )
    source = resolve_model(args.model)
    return corpus, source, load_tokenizer(source), lambda: load_classifier(source, corpus.label_names)


def one(contender: str, method: str, args) -> dict:
    """Train once in this process; return timings and accuracy."""
    import torch

    from tuneoff.data.batches import collator, encode
    from tuneoff.training.evaluate import compute_metrics, predict_logits

    torch.set_num_threads(args.threads)
    job_start = time.perf_counter()  # the whole job: loading, (tuneoff) the frozen-feature cache, training, evaluation
    corpus, source, tokenizer, load = data_and_model(args)
    train_df, val_df = corpus.splits["train"], corpus.splits["validation"]
    real_tokens = sum(len(x) for x in tokenizer(list(train_df.text), truncation=True, max_length=128)["input_ids"])
    if contender == "tuneoff":
        from tuneoff.config import build_config
        from tuneoff.training.loop import train

        length = [f"train.epochs={args.epochs}"] if args.examples else [f"train.max_steps={args.steps}"]
        cfg = build_config(
            {"method": METHODS[method]},
            [
                f"model.name={args.model}",
                "data.name=rotten_tomatoes",
                f"data.max_train_samples={args.examples or args.steps * args.batch_size}",
                f"data.max_eval_samples={args.eval_samples}",
                "data.max_length=128",
                f"train.batch_size={args.batch_size}",
                *length,
                f"train.lr={LR[method]}",
                f"train.seed={args.seed}",
                "train.checkpoints=false",
                f"train.feature_cache={args.feature_cache}",
                f"output_dir={args.workdir}/runs",
            ],
        )
        result = train(cfg, progress=False)
        seconds = result.resources["train_seconds"]
        accuracy = result.metrics["validation"]["accuracy"]
        precision = json.loads((result.run_dir / "run.json").read_text())["mixed_precision"]
    else:
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator

        from tuneoff.config import build_config
        from tuneoff.methods import get_method

        model, arch = load()
        m = get_method(method)
        params = build_config({"method": METHODS[method]}).method
        model = m.prepare(model, params, arch)
        label_ids = corpus.label_ids("train")
        if contender == "trainer_report":
            enc = tokenizer(list(train_df.text), truncation=True, max_length=128, padding="max_length")
            collate = default_data_collator
        else:
            enc = tokenizer(list(train_df.text), truncation=True, max_length=128)
            collate = DataCollatorWithPadding(tokenizer)
        features = [{**{k: enc[k][i] for k in enc}, "labels": label_ids[i]} for i in range(len(train_df))]
        length = {"num_train_epochs": args.epochs} if args.examples else {"max_steps": args.steps}
        targs = TrainingArguments(
            output_dir=f"{args.workdir}/trainer",
            per_device_train_batch_size=args.batch_size,
            **length,
            learning_rate=LR[method],
            warmup_steps=0.06,  # a float is a ratio in transformers 5
            weight_decay=0.01,
            lr_scheduler_type="linear",
            seed=args.seed,
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            use_cpu=True,
            dataloader_num_workers=0,
            disable_tqdm=True,
            **({"train_sampling_strategy": "group_by_length"} if contender.startswith("trainer_tuned") else {}),
            bf16=contender == "trainer_tuned_bf16",
        )
        precision = "bf16" if targs.bf16 else "no"
        trainer = Trainer(model=model, args=targs, train_dataset=features, data_collator=collate)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        model.eval()
        val = encode(val_df, tokenizer, 128, corpus.label_ids("validation"))
        logits = predict_logits(model, val, 64, collator(tokenizer, False), torch.device("cpu"))
        accuracy = compute_metrics(corpus.label_ids("validation"), logits, corpus.label_names)["accuracy"]
    samples = len(train_df) * args.epochs if args.examples else args.steps * args.batch_size
    return {
        "contender": contender,
        "method": method,
        "precision": precision,
        "seconds": seconds,
        "samples_per_s": samples / seconds,
        "job_seconds": time.perf_counter() - job_start,
        "tokens_per_s": real_tokens / seconds * samples / len(train_df),
        "accuracy": accuracy,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def ratio(medians: dict, other: str, key: str = "job_seconds") -> float | None:
    """tuneoff's speed-up over ``other``: whole-job time (loading, the feature cache, training, evaluation)."""
    if "tuneoff" not in medians or other not in medians:
        return None
    return medians[other][key] / medians["tuneoff"][key]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=160)
    parser.add_argument(
        "--examples",
        type=int,
        default=0,
        help="train on this many examples for --epochs epochs "
        "(instead of --steps): the setting where tuneoff's frozen-feature cache pays off",
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="minilm", help="minilm or mpnet")
    parser.add_argument("--feature-cache", default="auto", help="tuneoff's train.feature_cache (auto or off)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--methods", default="lora,partial")
    parser.add_argument("--workdir", default="/tmp/tuneoff-bench")
    parser.add_argument("--seed", type=int, default=0, help="training seed of every contender")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--tag", default="", help="suffix of the results files")
    parser.add_argument("--one", nargs=2, metavar=("CONTENDER", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(one(*args.one, args)))
        return

    command = "python bench/bench_cpu.py " + " ".join(sys.argv[1:])
    contenders = args.contenders.split(",")
    rows = []
    for method in args.methods.split(","):
        for repeat in range(args.repeats):
            for contender in contenders:  # interleaved: A B C A B C ...
                # A fresh feature cache per job: each tuneoff job pays for computing its frozen features (a study's later
                # runs would find them computed).
                cache = tempfile.mkdtemp(prefix="tuneoff-bench-features-")
                proc = subprocess.run(
                    [sys.executable, __file__, *sys.argv[1:], "--one", contender, method],
                    capture_output=True,
                    text=True,
                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false", "TUNEOFF_FEATURE_CACHE": cache},
                )
                shutil.rmtree(cache, ignore_errors=True)
                line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
                if proc.returncode or not line:
                    sys.exit(f"{contender}/{method} failed:\n{proc.stderr[-3000:]}")
                row = {**json.loads(line[0][7:]), "repeat": repeat}
                rows.append(row)
                print(
                    f"{method:8s} {contender:15s} repeat {repeat}: {row['job_seconds']:.1f} s job, {row['samples_per_s']:.1f} samples/s, "
                    f"acc {row['accuracy']:.3f}, peak {row['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    summary = []
    for method in args.methods.split(","):
        med = {
            c: {
                k: statistics.median(r[k] for r in rows if r["method"] == method and r["contender"] == c)
                for k in ("samples_per_s", "tokens_per_s", "accuracy", "peak_rss_mb", "job_seconds")
            }
            for c in contenders
        }
        for c in contenders:
            precision = next(r["precision"] for r in rows if r["method"] == method and r["contender"] == c)
            summary.append(
                {
                    "method": method,
                    "contender": c,
                    "precision": precision,
                    **med[c],
                    # against every other contender that ran (trainer_tuned_bf16 included)
                    "speedup_vs": {o: ratio(med, o) for o in contenders if o != "tuneoff"} if c == "tuneoff" else {},
                }
            )
    import peft
    import torch
    import transformers

    out = {
        "command": command,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": f"cpu {platform.machine()}, {args.threads} threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "settings": vars(args),
        "summary": summary,
        "runs": rows,
    }
    stem = HERE / "results" / f"cpu-{datetime.now(timezone.utc):%Y%m%d}{'-' + args.tag if args.tag else ''}"
    lines = [
        f"# CPU benchmark ({out['date']})",
        "",
        f"`{command}` — {out['device']}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}; median of {args.repeats}, interleaved; "
        f"{args.model}, Rotten Tomatoes, "
        + (f"{args.examples} examples x {args.epochs} epochs" if args.examples else f"{args.steps} steps")
        + f" x batch {args.batch_size}, seed {args.seed}, load {os.getloadavg()[0]:.1f} at the end. "
        "Job = the whole process (model loading, tuneoff's frozen-feature cache, training, evaluation); samples/s = the "
        "training loop alone.",
        "",
        "| method | contender | precision | job s | samples/s | tokens/s | val accuracy | peak RSS MB | tuneoff speed-up (job) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        speed = ", ".join(f"{value:.2f}x vs {name}" for name, value in s["speedup_vs"].items() if value)
        lines.append(
            f"| {s['method']} | {s['contender']} | {s['precision']} | {s['job_seconds']:.1f} | {s['samples_per_s']:.1f} | "
            f"{s['tokens_per_s']:.0f} | {s['accuracy']:.3f} | {s['peak_rss_mb']:.0f} | {speed} |"
        )
    write_result(stem, out, lines)


if __name__ == "__main__":
    main()
