"""A whole study against the same runs as separate Trainer scripts: what a user saves end to end.

    python bench/bench_study.py                      # the built-in default study, then its runs as Trainer scripts
    python bench/bench_study.py --study search16     # a 16-trial learning-rate search for head and partial top-2

tuneoff: `tuneoff run` (packed runs, `--parallel auto`), with an empty results directory and an empty frozen-feature
cache. Trainer: every run tuneoff trained (its tuning trials and its final seeds, with the learning rates, seeds,
epochs, evaluation cadence and early stopping it used; a pruned trial runs in full, as a script that does not share
its trials' progress would) as its own `python` process running a Trainer + peft script written the careful way:
dynamic padding, length grouping, bf16 autocast where the CPU has it natively, `EarlyStoppingCallback` with the best
checkpoint loaded at the end, the test split evaluated once. One after another, as a script loop runs them. Wall time
of each side, the machine's load recorded. Results: bench/results/study-<name>-<date>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml
from record import write_result

HERE = Path(__file__).resolve().parent
SEARCH16 = {
    "name": "search16",
    "description": "a 16-trial learning-rate search for head and partial top-2",
    "base": {
        "model": {"name": "minilm"},
        "data": {"name": "rotten_tomatoes", "max_train_samples": 2000, "max_eval_samples": 400},
        "train": {"epochs": 3, "batch_size": 16, "eval_every": 25, "patience": 3},
    },
    "tune": {"lr": True, "trials": 16, "pruning": True, "seed": 0},
    "variants": {"head": {"method": {"name": "head"}}, "partial_top2": {"method": {"name": "partial", "k": 2}}},
    "seeds": [1],
}


def trainer_run(run_id: str, config_json: str) -> None:
    """One run as a Trainer script would do it (executed in its own process)."""
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, EarlyStoppingCallback, Trainer, TrainingArguments

    from tuneoff.config import RunConfig
    from tuneoff.data.corpus import load_corpus
    from tuneoff.methods import get_method
    from tuneoff.models.assets import resolve_model
    from tuneoff.models.loading import load_classifier, load_tokenizer

    cfg = RunConfig.model_validate(json.loads(config_json))
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source)
    model, arch = load_classifier(source, corpus.label_names)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch)
    tc = cfg.train

    def dataset(split):
        enc = tokenizer(list(corpus.splits[split].text), truncation=True, max_length=cfg.data.max_length)
        return [{**{k: enc[k][i] for k in enc}, "labels": y} for i, y in enumerate(corpus.label_ids(split))]

    optimizers = (None, None)
    if cfg.method.name in ("lora_plus", "lora_fa"):  # their optimizers, passed to the Trainer as a script would
        optimizers = (method.optimizer(model, cfg.method, tc.lr, tc.weight_decay, False), None)
    out = tempfile.mkdtemp()
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=tc.batch_size,
        per_device_eval_batch_size=64,
        num_train_epochs=tc.epochs,
        learning_rate=tc.lr,
        weight_decay=tc.weight_decay,
        warmup_steps=tc.warmup_ratio
        if tc.warmup_steps is None
        else tc.warmup_steps,  # a float is a ratio in transformers 5
        lr_scheduler_type="linear",
        seed=tc.seed,
        eval_strategy="steps",
        eval_steps=tc.eval_every or 50,
        save_strategy="steps",
        save_steps=tc.eval_every or 50,
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        train_sampling_strategy="group_by_length",
        max_grad_norm=1.0,
        bf16=bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()),
    )
    accuracy = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}  # noqa: E731
    callbacks = [EarlyStoppingCallback(early_stopping_patience=tc.patience)] if tc.patience else []
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset("train"),
        eval_dataset=dataset("validation"),
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=accuracy,
        optimizers=optimizers,
        callbacks=callbacks,
    )
    trainer.train()
    test = trainer.evaluate(dataset("test"))
    print("RESULT " + json.dumps({"run": run_id, "test_accuracy": test["eval_accuracy"]}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        trainer_run(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", default="default", help="default (the built-in study) or search16")
    args = parser.parse_args()
    from tuneoff.results.store import Store

    spec_args = []
    if args.study == "search16":
        spec_file = Path(tempfile.mkdtemp()) / "search16.yaml"
        spec_file.write_text(yaml.safe_dump(SEARCH16))
        spec_args = [str(spec_file)]
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "TUNEOFF_CACHE": tempfile.mkdtemp(prefix="bench-cache-"),
        "TUNEOFF_PARALLEL": os.environ.get("TUNEOFF_PARALLEL", "auto"),
    }
    results = tempfile.mkdtemp(prefix="bench-study-")
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tuneoff", "run", *spec_args, "--results", results],
        env=env,
        capture_output=True,
        text=True,
    )
    tuneoff_seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    name = "default" if args.study == "default" else "search16"
    verdict = json.loads((Path(results) / name / "report" / "verdict.json").read_text())
    store = Store(results)
    rows = [r for r in store.runs(name) if r["status"] in ("done", "pruned")]
    store.close()
    t0 = time.perf_counter()
    accuracies = {}
    for row in rows:
        config = yaml.safe_load(row["config_yaml"])
        proc = subprocess.run(
            [sys.executable, __file__, "--one", row["run_id"], json.dumps(config)],
            env=env,
            capture_output=True,
            text=True,
        )
        line = [entry for entry in proc.stdout.splitlines() if entry.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{row['run_id']} failed:\n{proc.stderr[-3000:]}")
        accuracies[row["run_id"]] = json.loads(line[0][7:])["test_accuracy"]
    trainer_seconds = time.perf_counter() - t0
    import peft
    import torch
    import transformers

    stamp = datetime.now(timezone.utc)
    command = "python " + " ".join(["bench/bench_study.py", *sys.argv[1:]])
    device = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, bf16 native: "
        f"{torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()}"
    )
    packing = next((line for line in done.stderr.splitlines() if line.startswith("local:")), "local: one run at a time")
    out = {
        "command": command,
        "date": stamp.isoformat(timespec="seconds"),
        "device": device,
        "load_at_end": os.getloadavg()[0],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "tuneoff_packing": packing,
        "runs": len(rows),
        "tuneoff_seconds": tuneoff_seconds,
        "trainer_seconds": trainer_seconds,
        "speedup": trainer_seconds / tuneoff_seconds,
        "trainer_test_accuracy": accuracies,
        "tuneoff_verdict": verdict,
    }
    stem = HERE / "results" / f"study-{name}-{stamp:%Y%m%d}"
    lines = [
        f"# A study end to end against its runs as Trainer scripts: {name} ({stamp:%Y-%m-%d})",
        "",
        f"`{command}` on {device}; torch {torch.__version__}, transformers {transformers.__version__}, peft "
        f"{peft.__version__}; load {out['load_at_end']:.1f} at the end. tuneoff {packing.removeprefix('local: ')}.",
        "",
        "| contender | what ran | wall seconds |",
        "|---|---|---|",
        f"| tuneoff | `tuneoff run` ({len(rows)} runs: tuning trials, pruned ones included, and final seeds; report "
        f"included; empty feature cache) | {tuneoff_seconds:.0f} |",
        f"| Trainer scripts | the same {len(rows)} runs, one process each, one after another (dynamic padding, length "
        f"grouping, bf16 where native, early stopping, best checkpoint) | {trainer_seconds:.0f} |",
        "",
        f"tuneoff speed-up: **{out['speedup']:.2f}x**.",
        "",
        "Trainer test accuracy per run: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items()),
    ]
    write_result(stem, out, lines)


if __name__ == "__main__":
    main()
