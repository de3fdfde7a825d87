"""A run directory: its layout, and how it is built hidden and published whole.

Layout of ``runs/<run-id>/``::

    config.yaml        resolved config (what ran, with every default filled in)
    run.json           status, versions, device, timing, label names, convergence
    metrics.json       validation (best checkpoint) and test metrics
    history.jsonl      one line per evaluation: step, epoch, train loss, lr, validation metrics
    predictions.csv    test split: id, text, true_label, pred_label, prob_<label>...
    resources.json     parameters, time, throughput, peak memory, checkpoint size, seconds per phase
    train.log          the run's log records (every process's)
    model/             the model (``tuneoff.models.saving``)

A run is built in a hidden temporary directory next to its final place and renamed into place when complete,
so ``runs/`` never holds a half-written run.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

import yaml

from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import (
    atomic_write_text,
    disk_full,
    safe_name,
    write_json,
)

log = logging.getLogger(__name__)
MODEL_DIR = "model"
# The run directory's format: 1 (tuneoff 0.1, no format_version in run.json); 2 (tuneoff 0.2: train.log, convergence,
# seconds per phase). Readers of older runs fill what they lack.
FORMAT_VERSION = 2


def new_run_id(name: str | None, model: str, data: str, method: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = name or f"{Path(model).name}-{Path(data).stem}-{method}"
    return safe_name(f"{base}-{stamp}")


def _claim(root: Path, run_id: str) -> str:
    """The first of ``run_id``, ``run_id-2``, ... with neither a finished nor a working directory, claimed by creating
    its working directory (``mkdir`` is atomic, so two processes never get the same one)."""
    for n in range(1, 1000):
        candidate = run_id if n == 1 else f"{run_id}-{n}"
        if (root / candidate).exists():
            continue
        try:
            (root / f".{candidate}.tmp").mkdir()
            return candidate
        except FileExistsError:
            continue
        except OSError as exc:
            hint = "Free some space" if disk_full(exc) else "Choose another output_dir"
            raise TuneoffError(
                f"Cannot start the run in {root}: {exc.strerror or exc}. {hint}; nothing was trained."
            ) from exc
    raise TuneoffError(f"{root} holds 999 runs named {run_id}*; choose another name= or output_dir=.")


def _flat(tree, prefix: str = "") -> dict:
    out = {}
    for key, value in (tree or {}).items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_differences(old_yaml: str, new_yaml: str) -> list[str]:
    """The fields two run configs differ in, as ``key: old -> new``."""
    old, new = _flat(yaml.safe_load(old_yaml)), _flat(yaml.safe_load(new_yaml))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]


def _interrupted_similar(root: Path, config_yaml: str, resume: bool) -> None:
    """An interrupted run (a working directory with checkpoints) of the same model, data and method but another
    config: with --resume that is an error naming the differing fields (resuming would silently start afresh at step
    0); without, a warning that it exists."""
    now = _flat(yaml.safe_load(config_yaml))
    same = ("model.name", "data.name", "method.name")
    for tmp in sorted(root.glob(".*.tmp"), key=lambda p: p.stat().st_mtime, reverse=True):
        if not (tmp / "checkpoints").is_dir() or not (tmp / "config.yaml").is_file():
            continue
        old_yaml = (tmp / "config.yaml").read_text(encoding="utf-8")
        if any(_flat(yaml.safe_load(old_yaml)).get(k) != now.get(k) for k in same):
            continue
        diffs = "; ".join(config_differences(old_yaml, config_yaml)[:8])
        if resume:
            raise TuneoffError(
                f"--resume found no interrupted run of this exact config in {root}. The interrupted run {tmp.name[1:-4]} "
                f"({tmp}) has another config ({diffs}). Run again with its settings to continue it, or without --resume "
                "to start a new run (its working directory is then left as it is)."
            )
        log.warning(
            "an interrupted run of a similar config exists: %s (%s); `--resume` with its settings continues it",
            tmp,
            diffs,
        )
        return


class RunDirectory:
    """Builds a run in ``<output_dir>/.<run_id>.tmp`` and publishes it as ``<output_dir>/<run_id>``.

    The working directory also holds the run's checkpoints; it survives a crash (so ``--resume`` can continue) and
    a failure (with ``failed.json`` saying why), and is renamed into place, without checkpoints, when complete.
    """

    def __init__(self, root: Path, run_id: str):
        self.root, self.run_id = root, run_id
        self.final = root / run_id
        self.path = root / f".{run_id}.tmp"

    @classmethod
    def open(
        cls, output_dir: str | Path, run_id: str, config_yaml: str, resume: bool, find: bool = False
    ) -> RunDirectory:
        """``resume``: reuse ``.<run_id>.tmp`` (its checkpoints); with ``find``, the unfinished run whose config is this one."""
        root = Path(output_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TuneoffError(
                f"Cannot create the output directory {root}: {exc.strerror}. Choose output_dir=..."
            ) from exc
        if not os.access(root, os.W_OK):
            raise TuneoffError(f"Output directory {root} is not writable. Choose another with output_dir=<dir>.")
        found = False
        if resume and find:
            for tmp in sorted(root.glob(".*.tmp"), key=lambda p: p.stat().st_mtime, reverse=True):
                if (tmp / "config.yaml").is_file() and (tmp / "config.yaml").read_text(encoding="utf-8") == config_yaml:
                    run_id, found = tmp.name[1 : -len(".tmp")], True
                    break
        if find and not found:
            _interrupted_similar(root, config_yaml, resume)
        claimed = find and not found
        if claimed:  # a generated name: two runs started in the same second (a script, a fast GPU) get -2, -3, ...
            run_id = _claim(root, run_id)
        run = cls(root, run_id)
        if run.final.exists() and not claimed:
            raise TuneoffError(f"Run directory {run.final} already exists; choose another name=.")
        if not resume and not claimed:
            shutil.rmtree(run.path, ignore_errors=True)
        try:
            run.path.mkdir(exist_ok=True)
            (run.path / "failed.json").unlink(missing_ok=True)
            atomic_write_text(run.path / "config.yaml", config_yaml)
        except OSError as exc:
            hint = "Free some space" if disk_full(exc) else "Choose another output_dir"
            raise TuneoffError(
                f"Cannot start the run in {run.path}: {exc.strerror or exc}. {hint} and run again"
                f"{' with --resume' if resume else ''}; nothing was trained."
            ) from exc
        return run

    def publish(self) -> Path:
        shutil.rmtree(self.path / "checkpoints", ignore_errors=True)
        os.replace(self.path, self.final)
        return self.final

    def fail(self, reason: str) -> None:
        """Keep the working directory (its last good checkpoint) and say why the run stopped. Best effort: on a full
        disk the note itself may not fit, and the error the user sees matters more than the note."""
        try:
            write_json(self.path / "failed.json", {"status": "failed", "error": reason})
        except OSError:
            pass

    def abandon(self) -> None:
        """Interrupted: keep the working directory if it holds a checkpoint to resume from, else remove it."""
        if not (self.path / "checkpoints").is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
