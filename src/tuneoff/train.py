"""The one training loop, for every method, on Hugging Face Accelerate.

Reads top to bottom: data -> model -> method -> optimizer and schedule -> steps with periodic evaluation,
best-checkpoint tracking and resumable checkpoints -> restore best -> test metrics, predictions, resources ->
saved run. Nothing in here knows which method it is training; methods decide only which parameters train and
how the optimizer treats them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tuneoff import checkpoint
from tuneoff.batches import collator, encode, train_loader, train_order
from tuneoff.batches import micro_batches as micro_batches_of
from tuneoff.config import RunConfig
from tuneoff.data import load_corpus
from tuneoff.errors import TuneoffError
from tuneoff import guards
from tuneoff.evaluate import compute_metrics, predict_logits, predictions_frame
from tuneoff.launcher import check_sharding
from tuneoff.methods import check_budget, get_method
from tuneoff.models import enable_gradient_checkpointing, load_classifier, load_tokenizer, resolve_model
from tuneoff.resources import MemoryMeter, Throughput, combine_processes, device_name, dir_size, param_counts, versions
from tuneoff.schedule import make_scheduler
from tuneoff.rundir import MODEL_DIR, RunDirectory, atomic_write_text, disk_full, new_run_id, save_model, write_json


log = logging.getLogger("tuneoff.train")  # one line per evaluation; `tuneoff train --no-progress` shows them


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    resources: dict


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (oneDNN) instead of being emulated, which would be slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without the probes: stay in fp32
        return False


def mixed_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it, else fp16 on GPU; on CPU bf16 autocast where the CPU computes bf16 natively
    (measured 1.3-1.4x the fp32 training speed on MiniLM, bench/results/), else fp32 ("no").
    Weights, gradients and optimizer state stay fp32 either way: autocast only lowers the matmuls."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def merged_for_inference(model):
    """A PEFT model with its adapters merged into the base weights (``merge_and_unload``); others unchanged.

    Merged and unmerged logits differ only by float rounding (peft #1904); inference then costs what the full
    model costs, with no extra LoRA matmuls."""
    from peft import PeftModel

    return model.merge_and_unload() if isinstance(model, PeftModel) else model


def train(cfg: RunConfig, progress: bool = True, run_id: str | None = None, resume: bool = False,
          on_evaluate: Callable[[int, dict], None] | None = None) -> RunResult:
    """Train one run. ``on_evaluate(step, validation_metrics)`` is called after each evaluation (a search's pruner
    uses it; an exception it raises stops the run, keeping its last checkpoint)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    tc = cfg.train
    set_seed(tc.seed, deterministic=tc.deterministic)
    cpu = tc.device == "cpu" or (tc.device == "auto" and not torch.cuda.is_available())
    if tc.device == "cuda" and not torch.cuda.is_available():
        raise TuneoffError("train.device=cuda but no CUDA GPU is visible. Use train.device=auto or cpu.")
    check_sharding(on_cpu=cpu)
    # Accelerate keeps one process-wide state and refuses a second precision; a study trains many runs, each with its
    # own settings, in one process. The process-group part (PartialState) is kept: it is the launch, not the run.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    accelerator = Accelerator(cpu=cpu, mixed_precision=mixed_precision(tc.mixed_precision, torch.device("cpu" if cpu else "cuda")))
    device = accelerator.device
    # Several processes (``accelerate launch``): data-parallel, each takes its share of every round of micro-batches
    # and of every evaluation, results are gathered to all, and only process 0 writes.
    rank, world, main = accelerator.process_index, accelerator.num_processes, accelerator.is_main_process

    # Data, model and method: everything that can fail on bad input fails here, before any output exists.
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.revision, cfg.model.trust_remote_code)
    model, arch = load_classifier(
        source, corpus.label_names, revision=cfg.model.revision, trust_remote_code=cfg.model.trust_remote_code,
        num_hidden_layers=cfg.model.num_hidden_layers, attn_implementation=cfg.model.attn_implementation,
        dropout={"hidden": cfg.model.hidden_dropout, "attention": cfg.model.attention_dropout,
                 "classifier": cfg.model.classifier_dropout},
    )
    if cfg.data.max_length == "auto":  # cover the training set's p99 in tokens; the saved config gets the number
        from tuneoff.inspection import model_max_length, recommend_max_length, token_lengths

        limit = min(model_max_length(model.config, tokenizer), cfg.data.max_length_cap or 1 << 30)
        auto = recommend_max_length(token_lengths(corpus.splits["train"], tokenizer), limit)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": auto})})
    method = get_method(cfg.method.name)
    model = method.prepare(model, cfg.method, arch)
    check_budget(param_counts(model)["trainable_params"], cfg.method.max_trainable_params, method.name)
    if tc.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    lr = tc.lr or method.default_lr
    optimizer = method.optimizer(model, cfg.method, lr, tc.weight_decay, fused=device.type == "cuda", kind=tc.optimizer,
                                 momentum=tc.momentum)
    counts = param_counts(model)  # after the optimizer: LoRA-FA's freezes A

    encoded = {s: encode(corpus.splits[s], tokenizer, cfg.data.max_length, corpus.label_ids(s)) for s in corpus.splits}
    collate = collator(tokenizer, on_gpu=device.type == "cuda")
    augment = cfg.data.augment
    if augment.synonym_fraction and augment.copies:
        from tuneoff.augment import wordnet

        wordnet()  # a missing WordNet is a clear error now, not after the first epoch
    micro_batches = math.ceil(math.ceil(len(encoded["train"]) * (1 + augment.copies) / tc.batch_size) / world)  # per process
    steps_per_epoch = math.ceil(micro_batches / tc.grad_accum)
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    epochs = math.ceil(total_steps / steps_per_epoch)
    warmup = tc.warmup_steps if tc.warmup_steps is not None else math.ceil(tc.warmup_ratio * total_steps)
    scheduler = make_scheduler(tc, optimizer, warmup, total_steps, steps_per_epoch)
    model, optimizer = accelerator.prepare(model, optimizer)
    # Names from the unwrapped model, so checkpoints read the same with one process or several (no "module.").
    named = {n: p for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}
    forward = torch.compile(model) if tc.compile else model  # compiled forward, same parameters
    trainable = list(named.values())
    # DDP replicas evaluate unwrapped (no collectives in their forward); FSDP shards must run the wrapped forward.
    fsdp = accelerator.distributed_type.name == "FSDP"
    eval_model = model if fsdp else accelerator.unwrap_model(model)

    run = open_run_directory(cfg, run_id or new_run_id(cfg.name, cfg.model.name, corpus.name, method.name),
                             resume, run_id is None, accelerator)
    state, best_state = checkpoint.LoopState(), None
    geometry = {"batch_size": tc.batch_size, "grad_accum": tc.grad_accum, "processes": world}
    try:
        restored = checkpoint.load(run.path, named, optimizer, scheduler, accelerator.scaler, rank, geometry) if resume else None
    except TuneoffError as exc:
        run.fail(str(exc))
        raise
    if restored is not None:
        state, best_state = restored.state, restored.best
        for note in restored.skipped if main else []:
            tqdm.write(f"checkpoint {note} does not read back: resuming from {restored.path.name}")
    scaled, skips = guards.fp16_scaled(accelerator), guards.SkipGuard(tc.max_skipped_steps)

    def evaluate(split: str, net=None, autocast=accelerator.autocast):
        logits = predict_logits(net or eval_model, encoded[split], tc.eval_batch_size, collate, device, autocast, rank, world)
        return logits, compute_metrics(corpus.label_ids(split), logits, corpus.label_names)

    try:
        meter = MemoryMeter(device).start()
        speed = Throughput(device, state.samples, state.tokens, state.train_seconds)
        bar = tqdm(total=total_steps, initial=state.step, desc=method.name, unit="step", disable=not (progress and main),
                   dynamic_ncols=True)
        running_loss = torch.full((), state.running_loss, device=device)
        grad_ok = torch.ones((), dtype=torch.bool, device=device)
        model.train()
        while state.epoch < epochs and state.step < total_steps and not state.stopped_early:
            train_set = encoded["train"]
            if augment.copies:  # fresh copies every epoch; the originals stay, evaluation data is never touched
                from tuneoff.augment import augmented_copies

                copies, stats = augmented_copies(corpus.splits["train"], augment, state.epoch)
                train_set = train_set + encode(copies, tokenizer, cfg.data.max_length, corpus.label_ids("train") * augment.copies)
                if len(state.augmentation) <= state.epoch:
                    state.augmentation.append(stats)
            # The order is a pure function of (seed, epoch): a resumed run skips what it consumed and sees the rest.
            # Grouped by the global batch: N processes at batch b see the examples one process at batch N*b sees.
            # Grouped by the effective batch, so the order is the same however it is split into micro-batches and
            # processes: an out-of-memory retry (half the batch, twice the accumulation) resumes exactly.
            order = train_order(train_set, tc.batch_size * tc.grad_accum * world, tc.group_by_length, tc.seed, state.epoch)
            rounds = [micro_batches_of(order, tc.batch_size, r, world) for r in range(world)]
            loader = train_loader(train_set, rounds[rank][state.batch:], collate)
            speed.resume()
            for i, batch in enumerate(loader, start=state.batch):
                # Gradient accumulation: each micro-batch's loss is divided by the size of its group (an epoch's
                # last group may be short), so every optimizer step sees a mean gradient.
                group_start = i - i % tc.grad_accum
                group_size = min(tc.grad_accum, micro_batches - group_start)
                indices = [x for r in range(world) for x in rounds[r][i]]  # this round, all processes
                state.order_digest = hashlib.sha256(f"{state.order_digest}:{indices}".encode()).hexdigest()[:16]
                batch = {k: v.to(device) for k, v in batch.items()}
                labels = batch.pop("labels")
                # Between optimizer steps DDP need not all-reduce gradients: only the group's last backward syncs.
                with accelerator.no_sync(model) if i + 1 < group_start + group_size else contextlib.nullcontext():
                    with accelerator.autocast():
                        logits = forward(**batch).logits
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=tc.label_smoothing)
                    accelerator.backward(loss / group_size)
                running_loss += loss.detach()
                state.running_n += 1
                speed.add(batch)
                state.batch = i + 1
                if state.batch < group_start + group_size:
                    continue
                checkpoint.crash_point("step", state.step + 1)
                if tc.max_grad_norm:
                    grad_ok &= torch.isfinite(accelerator.clip_grad_norm_(trainable, tc.max_grad_norm))
                optimizer.step()
                if scaled:  # fp16: a skipped step (overflow) is normal; many in a row is divergence
                    skips.observe(guards.step_was_skipped(optimizer), state.step + 1, lr)
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.step += 1
                bar.update(1)
                epoch_end = state.batch == micro_batches
                should_eval = epoch_end or state.step == total_steps or bool(tc.eval_every and state.step % tc.eval_every == 0)
                should_save = tc.checkpoints and (epoch_end or bool(tc.checkpoint_every and state.step % tc.checkpoint_every == 0))
                if state.step % 10 == 0 or should_eval or should_save:  # a host sync, so not every step
                    # Averaged over processes, so every process takes the same decision and none waits forever.
                    state.running_loss = float(accelerator.reduce(running_loss.clone(), "mean")) if world > 1 else float(running_loss)
                    if world > 1:
                        grad_ok = accelerator.reduce(grad_ok.to(torch.int32), "sum") == world
                    if not scaled and not math.isfinite(state.running_loss):
                        raise guards.non_finite("loss", state.step, lr)
                    if not scaled and not bool(grad_ok):
                        raise guards.non_finite("gradient norm", state.step, lr)
                    bar.set_postfix(loss=f"{state.running_loss / max(state.running_n, 1):.4f}",
                                    samples_s=f"{speed.read()['train_samples_per_s']:.1f}")
                if should_eval:
                    speed.pause()
                    t0 = time.perf_counter()
                    _, val = evaluate("validation")
                    checkpoint.crash_point("eval", state.step)
                    if not math.isfinite(val["loss"]):
                        raise guards.non_finite("validation loss", state.step, lr)
                    state.eval_seconds += time.perf_counter() - t0
                    state.history.append({"step": state.step, "epoch": round(state.step / steps_per_epoch, 4),
                                          "train_loss": state.running_loss / max(state.running_n, 1),
                                          "lr": scheduler.get_last_lr()[0], "seconds": round(speed.seconds, 3),
                                          "val_loss": val["loss"],
                                          "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]})
                    if main:
                        h = state.history[-1]
                        log.info("%s step %d/%d (epoch %.2f): train loss %.4f, validation loss %.4f accuracy %.4f "
                                 "macro-F1 %.4f, %.1f samples/s", run.run_id, state.step, total_steps, h["epoch"],
                                 h["train_loss"], h["val_loss"], h["val_accuracy"], h["val_macro_f1"],
                                 speed.read()["train_samples_per_s"])
                    running_loss.zero_()
                    state.running_loss, state.running_n = 0.0, 0
                    if on_evaluate is not None:  # process 0 reports (once, to a search); every process stops with it
                        on_main_process(accelerator, on_evaluate, state.step, val)
                    value = val[tc.metric_for_best]
                    if state.best is None or (value < state.best if tc.metric_for_best == "loss" else value > state.best):
                        state.best, state.best_step, state.stale = value, state.step, 0
                        best_state = [p.detach().to("cpu", copy=True) for p in trainable]
                    else:
                        state.stale += 1
                        state.stopped_early = tc.patience is not None and state.stale >= tc.patience
                    model.train()
                    speed.resume()
                if epoch_end:
                    state.epoch, state.batch = state.epoch + 1, 0
                if should_save:
                    speed.pause()
                    state.samples, state.tokens, state.train_seconds = speed.samples, speed.tokens, speed.seconds
                    checkpoint.save(run.path, named, best_state, optimizer, scheduler, accelerator.scaler, state,
                                    tc.keep_checkpoints, rank, accelerator.wait_for_everyone, geometry)
                    speed.resume()
                if state.stopped_early or state.step >= total_steps:
                    break
            speed.pause()
        bar.close()
        own = {**speed.read(), **meter.read()}
        if world > 1:
            from accelerate.utils import gather_object

            own = combine_processes(gather_object([own]))
        resources = {**counts, **own, "optimizer_steps": state.step,
                     "eval_seconds": state.eval_seconds, "processes": world, "per_device_batch_size": tc.batch_size,
                     "effective_batch_size": tc.batch_size * tc.grad_accum * world,
                     "resumed_from_step": restored.path.name if restored else None,
                     "fp16_skipped_steps": skips.total if scaled else None}

        # The best checkpoint: frozen weights never change, so restoring the trainable ones restores the model.
        with torch.no_grad():
            for param, saved in zip(trainable, best_state):
                param.copy_(saved.to(param.device))
        model_dir = run.path / MODEL_DIR
        state_dict = accelerator.get_state_dict(model) if fsdp else None  # a collective: every process takes part
        if main:
            save_model(accelerator.unwrap_model(model), tokenizer, model_dir, source, cfg.model.revision, state_dict)
            resources["checkpoint_bytes"] = dir_size(model_dir)
        # Saved as an adapter; predicted with LoRA merged into the weights, as fast as the full model. The final
        # evaluations run in fp32 (no autocast), as a reloaded model predicts: predictions.csv is what
        # `tuneoff predict`, from_pretrained and pipeline() give, not a bf16 approximation of it.
        # keep_fp32_wrapper=False removes the autocast Accelerate wrapped around forward in prepare().
        final_model = model if fsdp else merged_for_inference(accelerator.unwrap_model(model, keep_fp32_wrapper=False))
        checkpoint.crash_point("final", state.step)
        _, val_metrics = evaluate("validation", final_model, contextlib.nullcontext)
        t0 = time.perf_counter()
        test_logits, test_metrics = evaluate("test", final_model, contextlib.nullcontext)
        resources["test_eval_seconds"] = time.perf_counter() - t0
        resources["test_samples_per_s"] = len(encoded["test"]) / max(resources["test_eval_seconds"], 1e-9)
        metrics = {"best_step": state.best_step, "metric_for_best": tc.metric_for_best, "stopped_early": state.stopped_early,
                   "validation": val_metrics, "test": test_metrics}
        if not main:  # process 0 writes the run; the others wait until it is published
            accelerator.wait_for_everyone()
            return RunResult(run.final, metrics, resources)
        # The resolved config: every value the run used, including what "auto" and the method's defaults chose.
        used = tc.model_copy(update={"lr": lr, "warmup_steps": warmup, "mixed_precision": accelerator.mixed_precision,
                                     "device": device.type})
        atomic_write_text(run.path / "config.yaml", cfg.model_copy(update={"train": used}).to_yaml())
        atomic_write_text(run.path / "history.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
        predictions_frame(corpus.splits["test"], test_logits, corpus.label_names).to_csv(run.path / "predictions.csv", index=False)
        write_json(run.path / "metrics.json", metrics)
        write_json(run.path / "resources.json", resources)
        write_json(run.path / "run.json", {
            "run_id": run.run_id, "status": "done", "method": method.name, "model": cfg.model.name,
            "model_source": source, "dataset": corpus.name, "label_names": corpus.label_names,
            "data_notes": corpus.notes, "lr": lr, "total_steps": total_steps, "device": device_name(device),
            "mixed_precision": accelerator.mixed_precision, "versions": versions(),
            "distributed": {"type": accelerator.distributed_type.name, "processes": world},
            "sizes": {s: len(df) for s, df in corpus.splits.items()}, "augmentation": state.augmentation,
            "label_counts": {s: {str(k): int(v) for k, v in df["label"].value_counts().items()} for s, df in corpus.splits.items()},
            "batch_order_digest": state.order_digest, "host": socket.gethostname(),
        })
        final = run.publish()
        accelerator.wait_for_everyone()
    except TuneoffError as exc:
        if main:
            run.fail(str(exc))
        raise
    except BaseException as exc:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            exc.tuneoff_run_id = run.run_id  # the retry resumes this run, from its checkpoint if it wrote one
        if main and disk_full(exc, run.path):  # OSError, or safetensors' own error type carrying the OS message
            message = (f"No space left on the device while writing the run in {run.path}: {str(exc).splitlines()[0]}. "
                       "Free some space and run again with --resume; the run was not published and its last complete "
                       "checkpoint is kept.")
            run.fail(message)
            raise TuneoffError(message) from exc
        if main:
            run.abandon()
        raise
    return RunResult(final, metrics, resources)


def on_main_process(accelerator, fn: Callable, *args) -> None:
    """Call ``fn`` on process 0 only, and raise what it raised on every process, so that all stop together."""
    from accelerate.utils import broadcast_object_list

    message = [None]
    if accelerator.is_main_process:
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - handed to every process, raised there
            message = [exc]
    if accelerator.num_processes > 1:
        broadcast_object_list(message)
    if message[0] is not None:
        raise message[0]


def open_run_directory(cfg: RunConfig, run_id: str, resume: bool, find: bool, accelerator) -> RunDirectory:
    """Process 0 opens (or, resuming, finds) the run directory and tells the others its name, or its error."""
    from accelerate.utils import broadcast_object_list

    message = [None, None]
    if accelerator.is_main_process:
        try:
            run = RunDirectory.open(cfg.output_dir, run_id, cfg.to_yaml(), resume, find)
            message = [run.run_id, None]
        except TuneoffError as exc:
            message = [None, str(exc)]
    if accelerator.num_processes > 1:
        broadcast_object_list(message)
    if message[1] is not None:
        raise TuneoffError(message[1])
    return run if accelerator.is_main_process else RunDirectory(Path(cfg.output_dir), message[0])


def train_with_oom_retry(cfg: RunConfig, progress: bool = True, run_id: str | None = None, resume: bool = False,
                         say=print, on_evaluate: Callable[[int, dict], None] | None = None) -> RunResult:
    """On CUDA out-of-memory, retry with half the per-device batch and twice the accumulation (the effective batch is
    unchanged, so the retry resumes the same run from its last checkpoint), down to ``train.min_batch_size``.

    The failed attempt's memory is released before the retry: the exception is not kept (its traceback holds the
    frames that hold the model), and garbage collection breaks the model <-> forward cycle Accelerate's prepare
    makes, then the CUDA cache is emptied (what Accelerate's ``release_memory`` does)."""
    while True:
        try:
            return train(cfg, progress, run_id, resume, on_evaluate)
        except torch.cuda.OutOfMemoryError as exc:
            failed_run = getattr(exc, "tuneoff_run_id", None)
        release_memory()
        tc = cfg.train
        from tuneoff.launcher import launched

        if launched():  # the other processes are inside a collective: a lone retry would deadlock them
            raise TuneoffError(
                f"Out of GPU memory at per-device batch {tc.batch_size} in a multi-process run. Start it again with "
                f"train.batch_size={tc.batch_size // 2} train.grad_accum={tc.grad_accum * 2} (same effective batch) "
                "and --resume, or shard the model with FSDP (--accelerate-config)."
            )
        if tc.batch_size // 2 < tc.min_batch_size:
            raise TuneoffError(
                f"Out of GPU memory even at batch size {tc.batch_size}. Use a smaller model or method (see "
                "`tuneoff plan`), a shorter data.max_length, or lower train.min_batch_size."
            )
        smaller = tc.model_copy(update={"batch_size": tc.batch_size // 2, "grad_accum": tc.grad_accum * 2})
        say(f"CUDA out of memory at batch {tc.batch_size}: retrying with batch {smaller.batch_size} x "
            f"{smaller.grad_accum} accumulation steps (effective batch unchanged)")
        cfg = cfg.model_copy(update={"train": smaller})
        if failed_run is not None:
            run_id, resume = failed_run, True


def release_memory() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
