"""The one training loop, for every method, on Hugging Face Accelerate.

It reads as its phases: **prepare** (``session.prepare``: data, model, method, optimizer, schedule, frozen-feature
cache), **start** (the run directory, or the checkpoint a resumed run continues from), **loop** (micro-batches,
optimizer steps, evaluations, checkpoints) and **finish** (best weights, save, final evaluation, serving cost,
the written run). Nothing in here knows which method it is training: methods decide which parameters train
and how the optimizer treats them; where they leave the lower layers frozen, those layers are replayed from a
cache instead of recomputed (``frozen``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import (
    disk_full,
    write_json,
)
from tuneoff.core.logs import PROGRESS, run_log
from tuneoff.core.provenance import versions
from tuneoff.data.augment import augmented_copies
from tuneoff.data.batches import encode, train_loader, train_order
from tuneoff.data.batches import micro_batches as micro_batches_of
from tuneoff.results.rundir import MODEL_DIR, RunDirectory, new_run_id
from tuneoff.training import checkpoint, convergence, guards, serving, stop
from tuneoff.training.evaluate import compute_metrics, predict_logits
from tuneoff.training.heartbeat import Heartbeat
from tuneoff.training.launcher import on_main_process, open_run_directory
from tuneoff.training.loss import training_loss
from tuneoff.training.record import resources_of, write_run
from tuneoff.training.resources import (
    MemoryMeter,
    Throughput,
    device_name,
    dir_size,
)
from tuneoff.training.session import Session, precision_words, prepare
from tuneoff.training.tracking import Trackers

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    resources: dict


@dataclass
class Progress:
    """The loop's running meters next to the resumable ``LoopState``."""

    state: checkpoint.LoopState
    best: list | None
    speed: Throughput
    meter: MemoryMeter
    bar: object
    running_loss: torch.Tensor
    grad_ok: torch.Tensor
    skips: guards.SkipGuard
    scaled: bool
    restored: object = None
    trackers: object = None  # MLflow / TensorBoard (train.report_to)
    best_validation: tuple | None = None  # (logits, metrics) of the best evaluation, when this process saw it


def train(
    cfg: RunConfig,
    progress: bool = True,
    run_id: str | None = None,
    resume: bool = False,
    on_evaluate: Callable[[int, dict], None] | None = None,
) -> RunResult:
    """Train one run. ``on_evaluate(step, validation_metrics)`` is called after each evaluation (a search's pruner
    uses it; an exception it raises stops the run, keeping its last checkpoint)."""
    s = prepare(cfg)
    run = open_run_directory(
        s.cfg,
        run_id or new_run_id(cfg.name, cfg.model.name, s.corpus.name, s.method.name),
        resume,
        run_id is None,
        s.accelerator,
    )
    with run_log(run.path, s.rank), stop.on_signals():
        return _run(s, run, resume, progress, on_evaluate)


def _run(s: Session, run: RunDirectory, resume: bool, progress: bool, on_evaluate) -> RunResult:
    log.info(
        "run %s: %s on %s / %s, %d optimizer steps at lr %g, %s, %s; tuneoff %s",
        run.run_id,
        s.method.name,
        s.cfg.model.name,
        s.corpus.name,
        s.total_steps,
        s.lr,
        device_name(s.device),
        precision_words(s.accelerator.mixed_precision, s.device),
        versions()["tuneoff"],
    )
    for note in s.corpus.notes:
        log.debug("data: %s", note)  # in train.log; on the terminal with -v
    p = start(s, run, resume, progress)
    try:
        loop(s, run, p, on_evaluate)
        return finish(s, run, p)
    except stop.RunStopped as exc:  # not a failure: the run continues with --resume
        log.warning("%s", exc)
        p.trackers.abort()
        p.bar.close()
        raise
    except TuneoffError as exc:
        log.error("stopped: %s", exc)
        p.trackers.abort()
        if s.main:
            run.fail(str(exc))
        raise
    except BaseException as exc:
        p.trackers.abort()
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            exc.tuneoff_run_id = run.run_id  # the retry resumes this run, from its checkpoint if it wrote one
        if s.main and disk_full(exc, run.path):  # OSError, or safetensors' own error type carrying the OS message
            message = (
                f"No space left on the device while writing the run in {run.path}: {str(exc).splitlines()[0]}. "
                "Free some space and run again with --resume; the run was not published and its last complete "
                "checkpoint is kept."
            )
            run.fail(message)
            raise TuneoffError(message) from exc
        if s.main:
            run.abandon()
        raise


def start(s: Session, run: RunDirectory, resume: bool, progress: bool) -> Progress:
    """A fresh loop state, or the one of the newest checkpoint that reads back."""
    state, best = checkpoint.LoopState(), None
    try:
        restored = checkpoint.load(run.path, _trainer(s), rank=s.rank, geometry=s.geometry) if resume else None
    except TuneoffError as exc:
        run.fail(str(exc))
        raise
    if restored is not None:
        state, best = restored.state, restored.best
        for note in restored.skipped if s.main else []:
            log.warning("checkpoint %s does not read back: resuming from %s", note, restored.path.name)
    bar = (
        tqdm(total=s.total_steps, initial=state.step, desc=s.method.name, unit="step", dynamic_ncols=True)
        if progress and s.main
        else Heartbeat(run.run_id, s.total_steps, state.step)
        if s.main
        else tqdm(disable=True)
    )

    return Progress(
        state,
        best,
        Throughput(s.device, state.samples, state.tokens, state.train_seconds),
        MemoryMeter(s.device).start(),
        bar,
        torch.full((), state.running_loss, device=s.device),
        torch.ones((), dtype=torch.bool, device=s.device),
        guards.SkipGuard(s.tc.max_skipped_steps),
        guards.fp16_scaled(s.accelerator),
        restored,
        Trackers(s.cfg, run.run_id, s.main),
    )


def evaluate(s: Session, split: str, net=None, autocast=None, cached: bool = True):
    """Logits and metrics of a split; the frozen layers replayed from the cache unless ``cached`` is False."""
    use = cached and s.features is not None and net is None
    before = (
        (
            lambda indices, batch: setattr(
                s.replay, "current", s.features.batch(split, indices, batch["input_ids"].shape[1], s.device)
            )
        )
        if use
        else None
    )
    with _replaying(s, use):
        logits = predict_logits(
            net or s.eval_model,
            s.encoded[split],
            s.tc.eval_batch_size,
            s.collate,
            s.device,
            autocast=autocast or s.accelerator.autocast,
            rank=s.rank,
            world=s.world,
            before_batch=before,
        )
    return logits, compute_metrics(s.corpus.label_ids(split), logits, s.corpus.label_names)


@contextlib.contextmanager
def _replaying(s: Session, on: bool):
    if on:
        s.replay.on()
    try:
        yield
    finally:
        if on:
            s.replay.off()


def loop(s: Session, run: RunDirectory, p: Progress, on_evaluate) -> None:
    """Epochs of micro-batches; an optimizer step every ``grad_accum`` of them, then evaluation and checkpoint."""
    tc, state = s.tc, p.state
    s.model.train()
    with _replaying(s, s.features is not None):
        while state.epoch < s.epochs and state.step < s.total_steps and not state.stopped_early:
            train_set = _epoch_examples(s, state)
            # The order is a pure function of (seed, epoch): a resumed run skips what it consumed and sees the rest.
            # Grouped by the effective batch, so the order is the same however it is split into micro-batches and
            # processes (N processes at b see what one sees at N x b; an out-of-memory retry resumes exactly).
            order = train_order(
                train_set, tc.batch_size * tc.grad_accum * s.world, tc.group_by_length, tc.seed, state.epoch
            )
            rounds = [micro_batches_of(order, tc.batch_size, r, s.world) for r in range(s.world)]
            p.speed.resume()
            for i, batch in enumerate(
                train_loader(train_set, rounds[s.rank][state.batch :], s.collate), start=state.batch
            ):
                if not _micro_step(s, p, i, batch, rounds):
                    continue
                epoch_end = _optimizer_step(s, p)
                _after_step(s, run, p, epoch_end, on_evaluate)
                if state.stopped_early or state.step >= s.total_steps:
                    break
            p.speed.pause()
    p.bar.close()


def _epoch_examples(s: Session, state):
    if not s.cfg.data.augment.copies:
        return s.encoded["train"]

    augment = s.cfg.data.augment
    copies, stats = augmented_copies(s.corpus.splits["train"], augment, state.epoch)
    if len(state.augmentation) <= state.epoch:
        state.augmentation.append(stats)
    return s.encoded["train"] + encode(
        copies, s.tokenizer, s.cfg.data.max_length, s.corpus.label_ids("train") * augment.copies
    )


def _micro_step(s: Session, p: Progress, i: int, batch: dict, rounds) -> bool:
    """Forward and backward of one micro-batch; True when it completes an optimizer step's group."""
    tc, state = s.tc, p.state
    # Gradient accumulation: each micro-batch's loss is divided by the size of its group (an epoch's last group may
    # be short), so every optimizer step sees a mean gradient.
    group_start = i - i % tc.grad_accum
    group_size = min(tc.grad_accum, s.micro_batches - group_start)
    indices = [x for r in range(s.world) for x in rounds[r][i]]  # this round, all processes
    state.order_digest = hashlib.sha256(f"{state.order_digest}:{indices}".encode()).hexdigest()[:16]
    batch = {k: v.to(s.device) for k, v in batch.items()}
    labels = batch.pop("labels")
    if s.features is not None:  # the frozen layers' output for these examples, from the cache
        s.replay.current = s.features.batch("train", rounds[s.rank][i], batch["input_ids"].shape[1], s.device)
    # Between optimizer steps DDP need not all-reduce gradients: only the group's last backward syncs.
    with s.accelerator.no_sync(s.model) if i + 1 < group_start + group_size else contextlib.nullcontext():
        with s.accelerator.autocast():
            logits = s.forward(**batch).logits
        loss = training_loss(logits, labels, s.loss_weight, tc.label_smoothing)
        extra = s.method.regularizer(s.accelerator.unwrap_model(s.model))  # e.g. AdaLoRA's orthogonality term
        s.accelerator.backward((loss if extra is None else loss + extra) / group_size)
    p.running_loss += loss.detach()
    state.running_n += 1
    p.speed.add(batch)
    state.batch = i + 1
    return state.batch >= group_start + group_size


def _optimizer_step(s: Session, p: Progress) -> bool:
    """Clip, step, schedule; returns whether the epoch ended."""
    state = p.state
    checkpoint.crash_point("step", state.step + 1)
    if s.tc.max_grad_norm:
        p.grad_ok &= torch.isfinite(s.accelerator.clip_grad_norm_(s.trainable, s.tc.max_grad_norm))
    s.optimizer.step()
    s.method.after_step(
        s.accelerator.unwrap_model(s.model), state.step + 1
    )  # e.g. AdaLoRA's rank budget, before zero_grad
    if p.scaled:  # fp16: a skipped step (overflow) is normal; many in a row is divergence
        p.skips.observe(guards.step_was_skipped(s.optimizer), state.step + 1, s.lr)
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    p.bar.update(1)
    return state.batch == s.micro_batches


def _after_step(s: Session, run: RunDirectory, p: Progress, epoch_end: bool, on_evaluate) -> None:
    tc, state = s.tc, p.state
    should_eval = epoch_end or state.step == s.total_steps or bool(tc.eval_every and state.step % tc.eval_every == 0)
    should_save = tc.checkpoints and (epoch_end or bool(tc.checkpoint_every and state.step % tc.checkpoint_every == 0))
    if state.step % 10 == 0 or should_eval or should_save:  # a host sync, so not every step
        _check_finite(s, p)
    if should_eval:
        _evaluate_and_track(s, run, p, on_evaluate)
    if epoch_end:
        state.epoch, state.batch = state.epoch + 1, 0
    if should_save:
        _save(s, run, p)
    if stop.agreed(s.accelerator, s.world, s.device, synced=state.step % 10 == 0 or should_eval or should_save):
        if tc.checkpoints and not should_save:
            _save(s, run, p)
        where = (
            f"its checkpoint at this step is in {run.path / checkpoint.CHECKPOINTS}; the same command with --resume "
            "continues it from there"
            if tc.checkpoints
            else "train.checkpoints is off, so --resume starts it again"
        )
        asked = stop.requested() or "a signal to another of its processes"
        raise stop.RunStopped(
            f"Run {run.run_id} stopped by {asked} at step {state.step} of {s.total_steps}: {where}.", stop.requested()
        )


def _trainer(s: Session) -> checkpoint.Trainer:
    return checkpoint.Trainer(s.named, s.optimizer, s.scheduler, s.accelerator.scaler)


def _save(s: Session, run: RunDirectory, p: Progress) -> None:
    p.speed.pause()
    state = p.state
    state.samples, state.tokens, state.train_seconds = p.speed.samples, p.speed.tokens, p.speed.seconds
    checkpoint.save(
        run.path,
        _trainer(s),
        state,
        p.best,
        keep=s.tc.keep_checkpoints,
        rank=s.rank,
        barrier=s.accelerator.wait_for_everyone,
        geometry=s.geometry,
    )
    p.speed.resume()


def _check_finite(s: Session, p: Progress) -> None:
    """Loss and gradient norm, averaged over processes so every process takes the same decision."""
    state = p.state
    state.running_loss = (
        float(s.accelerator.reduce(p.running_loss.clone(), "mean")) if s.world > 1 else float(p.running_loss)
    )
    if s.world > 1:
        p.grad_ok = s.accelerator.reduce(p.grad_ok.to(torch.int32), "sum") == s.world
    if not p.scaled and not math.isfinite(state.running_loss):
        raise guards.non_finite("loss", state.step, s.lr)
    if not p.scaled and not bool(p.grad_ok):
        raise guards.non_finite("gradient norm", state.step, s.lr)
    p.bar.set_postfix(
        loss=f"{state.running_loss / max(state.running_n, 1):.4f}",
        samples_s=f"{p.speed.read()['train_samples_per_s']:.1f}",
    )


def _evaluate_and_track(s: Session, run: RunDirectory, p: Progress, on_evaluate) -> None:
    """Validation metrics into the history; the best weights so far; early stopping; a search's report."""
    tc, state = s.tc, p.state
    p.speed.pause()
    t0 = time.perf_counter()
    val_logits, val = evaluate(s, "validation")
    checkpoint.crash_point("eval", state.step)
    if not math.isfinite(val["loss"]):
        raise guards.non_finite("validation loss", state.step, s.lr)
    state.eval_seconds += time.perf_counter() - t0
    state.history.append(
        {
            "step": state.step,
            "epoch": round(state.step / s.steps_per_epoch, 4),
            "train_loss": state.running_loss / max(state.running_n, 1),
            "lr": s.scheduler.get_last_lr()[0],
            "seconds": round(p.speed.seconds, 3),
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "val_macro_f1": val["macro_f1"],
        }
    )
    if s.main:
        h = state.history[-1]
        log.info(
            "%s step %d/%d (epoch %.2f): train loss %.4f, validation loss %.4f accuracy %.4f macro-F1 %.4f, "
            "%.1f samples/s",
            run.run_id,
            state.step,
            s.total_steps,
            h["epoch"],
            h["train_loss"],
            h["val_loss"],
            h["val_accuracy"],
            h["val_macro_f1"],
            p.speed.read()["train_samples_per_s"],
            extra=PROGRESS,
        )
    p.trackers.evaluation(state.step, val)
    p.running_loss.zero_()
    state.running_loss, state.running_n = 0.0, 0
    if on_evaluate is not None:  # process 0 reports (once, to a search); every process stops with it
        on_main_process(s.accelerator, on_evaluate, state.step, {**val, "epoch": state.history[-1]["epoch"]})
    if convergence.observe(state, val[tc.metric_for_best], val["loss"], tc.metric_for_best):
        p.best = [q.detach().to("cpu", copy=True) for q in s.trainable]
        p.best_validation = (val_logits, val)  # the final metrics: the model the run ends with is this one
    else:
        # Not before train.min_epochs: a run often sits at the majority class for its first evaluations.
        state.stopped_early = (
            tc.patience is not None and state.stale >= tc.patience and state.step >= tc.min_epochs * s.steps_per_epoch
        )
    s.model.train()
    p.speed.resume()


def finish(s: Session, run: RunDirectory, p: Progress) -> RunResult:
    """Best weights back, the model saved, the test split predicted in fp32 as a reload predicts, the run written.
    Nothing is computed twice: the validation metrics are the best evaluation's (the model the run ends with)."""
    clock = time.perf_counter()
    seconds = {**s.seconds, "train": p.speed.seconds, "evaluations": p.state.eval_seconds}

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        seconds[phase] = seconds.get(phase, 0.0) + now - clock
        clock = now

    resources = resources_of(s, p)
    with torch.no_grad():  # frozen weights never change: restoring the trainable ones restores the model
        for param, saved in zip(s.trainable, p.best):
            param.copy_(saved.to(param.device))
    model_dir = run.path / MODEL_DIR
    state_dict = s.accelerator.get_state_dict(s.model) if s.fsdp else None  # a collective: every process takes part
    if s.main:
        s.method.save(
            s.accelerator.unwrap_model(s.model),
            s.tokenizer,
            model_dir,
            s.source,
            s.cfg.model.revision,
            state_dict=state_dict,
            trained_only=s.tc.save == "trained_only",
        )
        resources["checkpoint_bytes"] = dir_size(model_dir)
    lap("save")
    # Predicted with LoRA merged into the weights, as fast as the full model, in fp32 without the feature cache:
    # predictions.csv is what `tuneoff predict`, from_pretrained and pipeline() give. keep_fp32_wrapper=False
    # removes the autocast Accelerate wrapped around forward in prepare().
    unwrapped = s.accelerator.unwrap_model(s.model, keep_fp32_wrapper=False)
    measure = s.main and not s.fsdp
    trained = serving.latency(unwrapped, s.encoded["test"], s.collate, s.device) if measure else None
    deployed = s.method.for_inference(unwrapped) if not s.fsdp else unwrapped  # LoRA: merged into the weights, in place
    if measure:
        merged = trained if deployed is unwrapped else serving.latency(deployed, s.encoded["test"], s.collate, s.device)
        resources.update(
            latency_ms_p50=merged["p50"], latency_ms_p95=merged["p95"], **serving.deploy_bytes(model_dir, s.counts)
        )
        if deployed is not unwrapped:  # what serving the adapter unmerged would cost
            resources.update(latency_unmerged_ms_p50=trained["p50"], latency_unmerged_ms_p95=trained["p95"])
    lap("latency")
    final_model = s.model if s.fsdp else deployed
    checkpoint.crash_point("final", p.state.step)
    if p.best_validation is None:  # resumed after its best evaluation: that evaluation's logits were not kept
        p.best_validation = evaluate(s, "validation", final_model, contextlib.nullcontext, cached=False)
    val_logits, val_metrics = p.best_validation
    converged = convergence.assess(
        p.state.history,
        s.tc.metric_for_best,
        s.tc.patience,
        p.state.stopped_early,
        val_logits,
        s.corpus.label_ids("validation"),
        class_weights=s.class_weights,
    )
    lap("final_validation")
    test_logits, test_metrics = evaluate(s, "test", final_model, contextlib.nullcontext, cached=False)
    lap("test_evaluation")
    resources["test_eval_seconds"] = seconds["test_evaluation"]
    resources["test_samples_per_s"] = len(s.encoded["test"]) / max(seconds["test_evaluation"], 1e-9)
    metrics = {
        "best_step": p.state.best_step,
        "metric_for_best": s.tc.metric_for_best,
        "stopped_early": p.state.stopped_early,
        "validation": val_metrics,
        "test": test_metrics,
    }
    resources["seconds"] = seconds
    if not s.main:  # process 0 writes the run; the others wait until it is published
        s.accelerator.wait_for_everyone()
        return RunResult(run.final, metrics, resources)
    write_run(s, run, p, metrics, resources, test_logits, converged)
    lap("write")
    resources["seconds"] = {**seconds, "total": sum(seconds.values())}
    write_json(run.path / "resources.json", resources)
    final = run.publish()
    p.trackers.finish(metrics, resources, final / MODEL_DIR)
    s.accelerator.wait_for_everyone()
    return RunResult(final, metrics, resources)
