"""What a finished run writes besides its model: ``resources.json`` (what it cost), ``metrics.json``,
``predictions.csv`` (spreadsheet-safe), ``history.jsonl``, the resolved ``config.yaml`` and ``run.json``.
"""

from __future__ import annotations

import json
import socket

from statsmodels.stats.proportion import proportion_confint

from tuneoff.core.files import atomic_write_text, write_json
from tuneoff.core.outputs import spreadsheet_safe
from tuneoff.core.provenance import versions
from tuneoff.data.builtins import hub_repo as data_repo
from tuneoff.models.card import write_model_card
from tuneoff.results.rundir import FORMAT_VERSION, MODEL_DIR, RunDirectory
from tuneoff.training.evaluate import predictions_frame
from tuneoff.training.resources import (
    combine_processes,
    device_name,
)
from tuneoff.training.session import Session, feature_cache_status


def resources_of(s: Session, p) -> dict:
    """What the run cost: parameters, time, throughput, memory (combined over processes), batch geometry, cache."""
    own = {**p.speed.read(), **p.meter.read()}
    if s.world > 1:
        from accelerate.utils import gather_object

        own = combine_processes(gather_object([own]))
    return {
        **s.counts,
        **own,
        "optimizer_steps": p.state.step,
        "eval_seconds": p.state.eval_seconds,
        "processes": s.world,
        "per_device_batch_size": s.tc.batch_size,
        # What an optimizer step actually averaged: an epoch shorter than grad_accum micro-batches steps on fewer.
        "effective_batch_size": s.tc.batch_size * min(s.tc.grad_accum, s.micro_batches) * s.world,
        "resumed_from_step": p.restored.path.name if p.restored else None,
        "fp16_skipped_steps": p.skips.total if p.scaled else None,
        "frozen_below_layer": s.edge,
        "feature_cache": feature_cache_status(s),
    }


def write_run(s: Session, run: RunDirectory, p, metrics: dict, resources: dict, test_logits, converged: dict) -> None:
    tc, corpus, state = s.tc, s.corpus, p.state
    # The resolved config: every value the run used, including what "auto" and the method's defaults chose.
    used = tc.model_copy(
        update={
            "lr": s.lr,
            "warmup_steps": s.warmup,
            "mixed_precision": s.accelerator.mixed_precision,
            "device": s.device.type,
        }
    )
    atomic_write_text(run.path / "config.yaml", s.cfg.model_copy(update={"train": used}).to_yaml())
    atomic_write_text(run.path / "history.jsonl", "".join(json.dumps(h) + "\n" for h in state.history))
    predictions = predictions_frame(corpus.splits["test"], test_logits, corpus.label_names)
    spreadsheet_safe(predictions).to_csv(run.path / "predictions.csv", index=False)
    write_json(run.path / "metrics.json", metrics)
    write_json(run.path / "resources.json", resources)
    write_json(
        run.path / "run.json",
        {
            "format_version": FORMAT_VERSION,
            "run_id": run.run_id,
            "status": "done",
            "method": s.method.name,
            "model": s.cfg.model.name,
            "model_source": s.source,
            "dataset": corpus.name,
            "label_names": corpus.label_names,
            "data_notes": corpus.notes,
            "lr": s.lr,
            "total_steps": s.total_steps,
            "device": device_name(s.device),
            "mixed_precision": s.accelerator.mixed_precision,
            "versions": versions(),
            "distributed": {"type": s.accelerator.distributed_type.name, "processes": s.world},
            "frozen": {
                "below_layer": s.edge,
                "eval_mode": s.edge is not None,
                "feature_cache": feature_cache_status(s),
            },
            "sizes": {k: len(df) for k, df in corpus.splits.items()},
            "augmentation": state.augmentation,
            "label_counts": {
                k: {str(a): int(b) for a, b in df["label"].value_counts().items()} for k, df in corpus.splits.items()
            },
            "class_weights": None if s.class_weights is None else dict(zip(corpus.label_names, s.class_weights)),
            "batch_order_digest": state.order_digest,
            "host": socket.gethostname(),
            "convergence": converged,
        },
    )
    card(s, run, metrics)


def card(s: Session, run: RunDirectory, metrics: dict) -> None:
    """The model card beside the saved model (``models.card``), in place of peft's empty template."""
    test, n = metrics["test"], len(s.corpus.splits["test"])
    interval = proportion_confint(round(test["accuracy"] * n), n, alpha=0.05, method="wilson") if n else (0.0, 1.0)
    method = s.cfg.method.model_dump(exclude_defaults=True)
    budget = f"at most {s.tc.max_steps} steps" if s.tc.max_steps else f"at most {s.tc.epochs} epoch(s)"
    training = {
        "method": ", ".join(f"{k}={v}" for k, v in method.items()),
        "learning rate": f"{s.lr:.3g}",
        "budget": f"{budget}, early stopping after {s.tc.patience} evaluations without gain"
        if s.tc.patience
        else budget,
        "optimizer steps": _best_step(metrics),
        "batch": f"{s.tc.batch_size} x {s.tc.grad_accum}",
        "seed": s.tc.seed,
        "precision": s.accelerator.mixed_precision,
        "tuneoff": versions()["tuneoff"],
    }
    write_model_card(
        run.path / MODEL_DIR,
        model=s.cfg.model.name,
        source=s.source,
        method=s.method.name,
        dataset=s.corpus.name,
        dataset_hub=data_repo(s.cfg.data),
        labels=s.corpus.label_names,
        sizes={k: len(df) for k, df in s.corpus.splits.items()},
        metrics=metrics,
        interval=interval,
        training=training,
        run_id=run.run_id,
    )


def _best_step(metrics: dict) -> str:
    return f"best at step {metrics.get('best_step')}" + (" (stopped early)" if metrics.get("stopped_early") else "")
