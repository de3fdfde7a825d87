"""The one training loop, for every method, on Hugging Face Accelerate.

Reads top to bottom: data -> model -> method -> optimizer and schedule -> steps with periodic evaluation and
best-checkpoint tracking -> restore best -> test metrics, predictions, resources -> saved run. Nothing in here
knows which method it is training; methods decide only which parameters train and how the optimizer treats them.
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tuneoff import __version__
from tuneoff.batches import collator, encode, train_loader, train_order
from tuneoff.config import RunConfig
from tuneoff.data import load_corpus
from tuneoff.errors import TuneoffError
from tuneoff.evaluate import compute_metrics, predict_logits, predictions_frame
from tuneoff.methods import get_method
from tuneoff.models import load_classifier, load_tokenizer, resolve_model
from tuneoff.resources import MemoryMeter, Throughput, dir_size, param_counts
from tuneoff.rundir import MODEL_DIR, RunDirectory, atomic_write_text, new_run_id, save_model, write_json


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    resources: dict


def mixed_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it, else fp16 on GPU; fp32 ("no") on CPU, where autocast rarely pays."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "no"


def versions() -> dict:
    import accelerate
    import peft
    import transformers

    return {"tuneoff": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def check_budget(counts: dict, budget: int | None, method: str) -> None:
    if budget is not None and counts["trainable_params"] > budget:
        raise TuneoffError(
            f"Method {method} would train {counts['trainable_params']:,} parameters, over the budget "
            f"method.max_trainable_params={budget:,}. Lower method.r, adapt fewer modules "
            "(method.target_modules / method.layers_to_transform), or raise the budget."
        )


def is_better(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value < best if metric == "loss" else value > best


def train(cfg: RunConfig, progress: bool = True, run_id: str | None = None) -> RunResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    tc = cfg.train
    set_seed(tc.seed)
    cpu = tc.device == "cpu" or (tc.device == "auto" and not torch.cuda.is_available())
    if tc.device == "cuda" and not torch.cuda.is_available():
        raise TuneoffError("train.device=cuda but no CUDA GPU is visible. Use train.device=auto or cpu.")
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision(tc.mixed_precision, torch.device("cpu" if cpu else "cuda")))
    device = accelerator.device

    # Data, model and method: everything that can fail on bad input fails here, before any output exists.
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.revision, cfg.model.trust_remote_code)
    model, arch = load_classifier(
        source, corpus.label_names, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code,
        num_hidden_layers=cfg.model.num_hidden_layers, attn_implementation=cfg.model.attn_implementation,
    )
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch)
    counts = param_counts(model)
    check_budget(counts, cfg.method.max_trainable_params, method.name)
    lr = tc.lr or method.default_lr
    optimizer = method.optimizer(model, cfg.method, lr, tc.weight_decay, fused=device.type == "cuda")
    counts = param_counts(model)  # LoRA-FA's optimizer freezes A: count what really trains

    if cfg.data.max_length == "auto":  # cover the training set's p99 in tokens; the saved config gets the number
        from tuneoff.inspection import model_max_length, recommend_max_length, token_lengths

        auto = recommend_max_length(token_lengths(corpus.splits["train"], tokenizer), model_max_length(model.config, tokenizer))
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": auto})})
    encoded = {s: encode(corpus.splits[s], tokenizer, cfg.data.max_length, corpus.label_ids(s)) for s in corpus.splits}
    collate = collator(tokenizer, on_gpu=device.type == "cuda")
    augment = cfg.data.augment
    if augment.synonym_fraction and augment.copies:
        from tuneoff.augment import wordnet

        wordnet()  # a missing WordNet is a clear error now, not after the first epoch
    micro_batches = math.ceil(len(encoded["train"]) * (1 + augment.copies) / tc.batch_size)
    steps_per_epoch = math.ceil(micro_batches / tc.grad_accum)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = tc.warmup_steps if tc.warmup_steps is not None else math.ceil(tc.warmup_ratio * total_steps)
    scheduler = get_scheduler(tc.scheduler if tc.scheduler != "constant" else "constant_with_warmup", optimizer,
                              num_warmup_steps=warmup, num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]

    run = RunDirectory(cfg.output_dir, run_id or new_run_id(cfg.name, cfg.model.name, corpus.name, method.name))
    try:
        def evaluate(split: str):
            logits = predict_logits(model, encoded[split], tc.eval_batch_size, collate, device, accelerator.autocast)
            return logits, compute_metrics(corpus.label_ids(split), logits, corpus.label_names)

        history, best, best_state, best_step, stale = [], None, None, 0, 0
        meter = MemoryMeter(device).start()
        speed = Throughput(device)
        eval_seconds = 0.0
        step, stop, running_loss, running_n = 0, False, 0.0, 0
        bar = tqdm(total=total_steps, desc=f"{method.name}", unit="step", disable=not progress, dynamic_ncols=True)
        model.train()
        augmentation = []
        for epoch in range(epochs):
            train_set = encoded["train"]
            if augment.copies:  # fresh copies every epoch; the originals stay, evaluation data is never touched
                from tuneoff.augment import augmented_copies

                copies, stats = augmented_copies(corpus.splits["train"], augment, epoch)
                train_set = train_set + encode(copies, tokenizer, cfg.data.max_length, corpus.label_ids("train") * augment.copies)
                augmentation.append(stats)
            order = train_order(train_set, tc.batch_size, tc.group_by_length, tc.seed, epoch)
            loader = train_loader(train_set, order, tc.batch_size, collate)
            speed.resume()
            for i, batch in enumerate(loader):
                # Gradient accumulation: the loss of each micro-batch is divided by the size of its group (the
                # last group of an epoch may be short), so every optimizer step sees a mean gradient.
                group_start = i - i % tc.grad_accum
                group_size = min(tc.grad_accum, micro_batches - group_start)
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch.pop("labels")
                with accelerator.autocast():
                    logits = model(**batch).logits
                loss = F.cross_entropy(logits.float(), labels, label_smoothing=tc.label_smoothing)
                accelerator.backward(loss / group_size)
                running_loss += loss.detach()
                running_n += 1
                speed.add(batch)
                if i + 1 < group_start + group_size:
                    continue
                if tc.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, tc.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                bar.update(1)
                should_eval = i + 1 == micro_batches or step == total_steps or bool(tc.eval_every and step % tc.eval_every == 0)
                if step % 10 == 0 or should_eval:
                    speed.pause()
                    mean_loss = float(running_loss) / max(running_n, 1)
                    if not math.isfinite(mean_loss):
                        raise TuneoffError(
                            f"The training loss became {mean_loss} by step {step}. Lower train.lr (now {lr:g}), "
                            "use train.mixed_precision=bf16 or no instead of fp16, or keep train.max_grad_norm set."
                        )
                    bar.set_postfix(loss=f"{mean_loss:.4f}", samples_s=f"{speed.read()['train_samples_per_s']:.1f}")
                    speed.resume()
                if should_eval:
                    speed.pause()
                    t0 = time.perf_counter()
                    _, val = evaluate("validation")
                    eval_seconds += time.perf_counter() - t0
                    history.append({"step": step, "epoch": round(step / steps_per_epoch, 4),
                                    "train_loss": float(running_loss) / max(running_n, 1),
                                    "lr": scheduler.get_last_lr()[0], "val_loss": val["loss"],
                                    "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]})
                    running_loss, running_n = 0.0, 0
                    if is_better(val[tc.metric_for_best], best, tc.metric_for_best):
                        best, best_step, stale = val[tc.metric_for_best], step, 0
                        best_state = [p.detach().to("cpu", copy=True) for p in trainable]
                    else:
                        stale += 1
                        stop = tc.patience is not None and stale >= tc.patience
                    model.train()
                    speed.resume()
                if stop or step >= total_steps:
                    break
            speed.pause()
            if stop or step >= total_steps:
                break
        bar.close()
        resources = {**counts, **speed.read(), **meter.read(), "optimizer_steps": step, "eval_seconds": eval_seconds,
                     "effective_batch_size": tc.batch_size * tc.grad_accum}

        # The best checkpoint: frozen weights never change, so restoring the trainable ones restores the model.
        with torch.no_grad():
            for param, saved in zip(trainable, best_state):
                param.copy_(saved.to(param.device))
        _, val_metrics = evaluate("validation")
        t0 = time.perf_counter()
        test_logits, test_metrics = evaluate("test")
        resources["test_eval_seconds"] = time.perf_counter() - t0
        resources["test_samples_per_s"] = len(encoded["test"]) / max(resources["test_eval_seconds"], 1e-9)

        model_dir = run.path / MODEL_DIR
        save_model(accelerator.unwrap_model(model), tokenizer, model_dir, source, cfg.model.revision)
        resources["checkpoint_bytes"] = dir_size(model_dir)
        metrics = {"best_step": best_step, "metric_for_best": tc.metric_for_best, "stopped_early": stop,
                   "validation": val_metrics, "test": test_metrics}
        atomic_write_text(run.path / "config.yaml", cfg.to_yaml())
        atomic_write_text(run.path / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        predictions_frame(corpus.splits["test"], test_logits, corpus.label_names).to_csv(run.path / "predictions.csv", index=False)
        write_json(run.path / "metrics.json", metrics)
        write_json(run.path / "resources.json", resources)
        write_json(run.path / "run.json", {
            "run_id": run.run_id, "status": "done", "method": method.name, "model": cfg.model.name,
            "model_source": source, "dataset": corpus.name, "label_names": corpus.label_names,
            "data_notes": corpus.notes, "lr": lr, "total_steps": total_steps, "device": device_name(device),
            "mixed_precision": accelerator.mixed_precision, "versions": versions(),
            "sizes": {s: len(df) for s, df in corpus.splits.items()}, "augmentation": augmentation,
        })
        final = run.publish()
    except BaseException:
        run.discard()
        raise
    return RunResult(final, metrics, resources)
