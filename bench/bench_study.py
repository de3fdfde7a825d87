"""A whole study against the same runs as separate Trainer scripts: what a user saves end to end.

    python bench/bench_study.py            # the built-in default study (10 runs), then its 10 runs as Trainer scripts

tuneoff: `tuneoff run` on the default study (head / partial top-2 / LoRA / LoRA+ / full x 2 seeds, MiniLM, Rotten
Tomatoes, 2,000 training examples, evaluation every 50 steps), with an empty results directory and an empty
frozen-feature cache. Trainer: each of the same runs (same examples, model, method, lr, batch, epochs, seed,
evaluation cadence) as its own `python` process running a Trainer + peft script written the careful way (dynamic
padding, length grouping), evaluating every 50 steps and on the test split at the end. Wall time of each side;
the machine should be quiet (the load is recorded). Results: bench/results/study-<date>.json and .md.
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

HERE = Path(__file__).resolve().parent


def trainer_run(run_id: str, config_json: str) -> None:
    """One run as a Trainer script would do it (executed in its own process)."""
    import numpy as np
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from tuneoff.config import RunConfig
    from tuneoff.data.corpus import load_corpus
    from tuneoff.methods import get_method
    from tuneoff.models.loading import load_classifier, load_tokenizer
    from tuneoff.models.assets import resolve_model

    cfg = RunConfig.model_validate(json.loads(config_json))
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source)
    model, arch = load_classifier(source, corpus.label_names)
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch)
    lr = cfg.train.lr or method.default_lr

    def dataset(split):
        enc = tokenizer(list(corpus.splits[split].text), truncation=True, max_length=cfg.data.max_length)
        return [{**{k: enc[k][i] for k in enc}, "labels": y} for i, y in enumerate(corpus.label_ids(split))]

    optimizers = (None, None)
    if cfg.method.name == "lora_plus":  # LoRA+ in a Trainer script: peft's optimizer passed in
        optimizers = (method.optimizer(model, cfg.method, lr, cfg.train.weight_decay, False), None)
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=cfg.train.batch_size, per_device_eval_batch_size=64,
        num_train_epochs=cfg.train.epochs, learning_rate=lr, warmup_steps=cfg.train.warmup_ratio, weight_decay=cfg.train.weight_decay,
        lr_scheduler_type="linear", seed=cfg.train.seed, eval_strategy="steps", eval_steps=cfg.train.eval_every,
        logging_strategy="no", save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True,
        train_sampling_strategy="group_by_length", max_grad_norm=1.0)
    accuracy = lambda p: {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}  # noqa: E731
    trainer = Trainer(model=model, args=args, train_dataset=dataset("train"), eval_dataset=dataset("validation"),
                      data_collator=DataCollatorWithPadding(tokenizer), compute_metrics=accuracy, optimizers=optimizers)
    trainer.train()
    test = trainer.evaluate(dataset("test"))
    print("RESULT " + json.dumps({"run": run_id, "test_accuracy": test["eval_accuracy"]}))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--one":
        trainer_run(sys.argv[2], sys.argv[3])
        return
    from tuneoff.study.spec import expand, load_spec

    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TUNEOFF_FEATURE_CACHE": tempfile.mkdtemp(prefix="bench-fc-")}
    results = tempfile.mkdtemp(prefix="bench-study-")
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "tuneoff", "run", "--results", results], env=env, capture_output=True, text=True)
    tuneoff_seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(done.stderr[-3000:])
    summary = json.loads((Path(results) / "default" / "report" / "verdict.json").read_text())
    runs = expand(load_spec(None))
    t0 = time.perf_counter()
    accuracies = {}
    for run in runs:
        proc = subprocess.run([sys.executable, __file__, "--one", run.run_id, run.config.model_dump_json()],
                              env=env, capture_output=True, text=True)
        line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
        if proc.returncode or not line:
            sys.exit(f"{run.run_id} failed:\n{proc.stderr[-3000:]}")
        accuracies[run.run_id] = json.loads(line[0][7:])["test_accuracy"]
    trainer_seconds = time.perf_counter() - t0
    import peft
    import torch
    import transformers

    out = {"command": "python bench/bench_study.py", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "device": f"cpu {platform.machine()}, {torch.get_num_threads()} threads", "load_at_end": os.getloadavg()[0],
           "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
           "tuneoff_seconds": tuneoff_seconds, "trainer_seconds": trainer_seconds, "speedup": trainer_seconds / tuneoff_seconds,
           "trainer_test_accuracy": accuracies, "tuneoff_verdict": summary}
    stem = HERE / "results" / f"study-{datetime.now(timezone.utc):%Y%m%d}"
    stem.parent.mkdir(exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(out, indent=2))
    lines = [f"# The default study end to end ({out['date']})", "",
             f"`{out['command']}` on {out['device']}, torch {torch.__version__}, transformers {transformers.__version__}, "
             f"peft {peft.__version__}; load {out['load_at_end']:.1f} at the end.", "",
             "| contender | what ran | wall seconds |", "|---|---|---|",
             f"| tuneoff | `tuneoff run` (10 runs, report included; empty feature cache) | {tuneoff_seconds:.0f} |",
             f"| Trainer scripts | the same 10 runs, one process each (dynamic padding, length grouping) | {trainer_seconds:.0f} |",
             "", f"tuneoff speed-up: **{out['speedup']:.2f}x**.", "",
             "Trainer test accuracy per run: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracies.items())]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
