"""Checkpoints inside a run, so a killed run resumes to the same result.

A checkpoint is a directory ``checkpoints/step-000120/`` in the run's working directory holding:

- ``trainable.safetensors``  the trainable weights (frozen ones never change, so these restore the model)
- ``best.safetensors``       the trainable weights of the best evaluation so far
- ``optimizer.pt``           optimizer, scheduler and grad-scaler state (loaded with ``weights_only=True``)
- ``rng.pt``, ``rng-<rank>.pt``  torch (and CUDA) RNG states of each process
- ``state.json``             loop position (epoch, micro-batch, step), history, best metric, counters, and the
                              python / numpy RNG states as plain lists

It is written into ``.tmp-step-000120``, every file fsynced, then renamed: a kill during the write leaves a
``.tmp-*`` directory that is ignored and removed, never a torn checkpoint. The last ``keep`` are kept.

Reading is all-or-nothing: every file of a checkpoint is read back (safetensors, ``weights_only`` pickles, JSON)
before anything is applied, and a checkpoint that does not read back (truncated by a full disk, corrupted, holding
a pickle payload) is skipped for the one before it. ``state.json`` also records the batch geometry (per-device
batch, accumulation, processes), so a run resumed at another geometry (the out-of-memory retry halves the batch
and doubles the accumulation) continues exactly where the effective batch allows, and is refused where it does not.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import signal
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tuneoff.core.errors import TuneoffError

CHECKPOINTS = "checkpoints"
# What a checkpoint that does not read back raises: a truncated or corrupt safetensors file (SafetensorError), a
# refused pickle payload or torn zip (pickle.UnpicklingError, RuntimeError from torch.load), bad JSON (ValueError),
# a missing file (OSError), a missing tensor or key (KeyError).
UNREADABLE = (OSError, ValueError, KeyError, RuntimeError, EOFError, pickle.UnpicklingError, SafetensorError)


@dataclass
class LoopState:
    """Everything the training loop carries from step to step, apart from tensors."""

    epoch: int = 0
    batch: int = 0  # micro-batches of this epoch already consumed
    step: int = 0  # optimizer steps done
    best: float | None = None
    best_step: int = 0
    best_loss: float | None = None  # lowest validation loss so far: a run whose loss still falls is still learning
    stale: int = 0
    stopped_early: bool = False
    history: list = field(default_factory=list)
    running_loss: float = 0.0
    running_n: int = 0
    samples: int = 0
    tokens: int = 0
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    augmentation: list = field(default_factory=list)
    order_digest: str = ""  # hash chain of the example indices consumed, to prove the batch order


def crash_point(name: str, step: int) -> None:
    """Fault injection for the crash tests: ``TUNEOFF_CRASH_AT=checkpoint:6`` kills the process (SIGKILL) there;
    ``TUNEOFF_CRASH_SIGNAL=SIGTERM`` sends that signal instead (a request to stop, ``training.stop``). With
    ``TUNEOFF_CRASH_ONCE=<file>`` only the first process to get there dies (it creates the file), so a retried run
    gets past the point."""
    if os.environ.get("TUNEOFF_CRASH_AT") != f"{name}:{step}":
        return
    once = os.environ.get("TUNEOFF_CRASH_ONCE")
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return
    os.kill(os.getpid(), getattr(signal.Signals, os.environ.get("TUNEOFF_CRASH_SIGNAL", "SIGKILL")))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _rng_state() -> tuple[dict, dict]:
    py = random.getstate()
    np_state = np.random.get_state()
    plain = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        tensors["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return plain, tensors


def _set_rng_state(plain: dict, tensors: dict) -> None:
    py = plain["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = plain["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(tensors["torch"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(tensors["cuda"]))


def rng_file(rank: int) -> str:
    return "rng.pt" if rank == 0 else f"rng-{rank}.pt"


@dataclass
class Trainer:
    """What a checkpoint saves and restores of a run, beside its loop state: the trainable tensors by name, the
    optimizer, the schedule and the fp16 loss scaler (None without fp16)."""

    named_trainable: dict[str, torch.Tensor]
    optimizer: Any
    scheduler: Any
    scaler: Any = None


def save(
    run_path: Path,
    trainer: Trainer,
    state: LoopState,
    best: list[torch.Tensor] | None,
    *,
    keep: int,
    rank: int = 0,
    barrier=lambda: None,
    geometry: dict | None = None,
) -> Path:
    """Process 0 writes the checkpoint; every process adds its own RNG state (dropout masks differ per process).
    ``barrier`` is the processes' rendezvous (a no-op for one process)."""
    root = run_path / CHECKPOINTS
    name = f"step-{state.step:07d}"
    tmp = root / f".tmp-{name}"
    final = root / name
    if rank == 0:
        root.mkdir(exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        names = list(trainer.named_trainable)
        save_file(
            {n: t.detach().cpu().contiguous() for n, t in trainer.named_trainable.items()},
            tmp / "trainable.safetensors",
        )
        if best is not None:
            save_file({n: t.contiguous() for n, t in zip(names, best)}, tmp / "best.safetensors")
        torch.save(
            {
                "optimizer": trainer.optimizer.state_dict(),
                "scheduler": trainer.scheduler.state_dict(),
                "scaler": trainer.scaler.state_dict() if trainer.scaler is not None else None,
            },
            tmp / "optimizer.pt",
        )
        crash_point("checkpoint", state.step)
    barrier()
    plain, tensors = _rng_state()
    torch.save(tensors, tmp / rng_file(rank))
    barrier()
    if rank == 0:
        (tmp / "state.json").write_text(json.dumps({"loop": asdict(state), "rng": plain, "geometry": geometry}))
        for f in tmp.iterdir():
            _fsync_file(f)
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync_dir(root)
        for old in sorted(p for p in root.iterdir() if p.name.startswith("step-"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def complete(run_path: Path) -> list[Path]:
    """Complete checkpoints, newest first; torn ``.tmp-*`` directories are removed."""
    root = run_path / CHECKPOINTS
    if not root.is_dir():
        return []
    for torn in root.glob(".tmp-*"):
        shutil.rmtree(torn, ignore_errors=True)
    return sorted(
        (p for p in root.iterdir() if p.name.startswith("step-") and (p / "state.json").is_file()), reverse=True
    )


def latest(run_path: Path) -> Path | None:
    """The newest complete checkpoint (it may still fail to read back: ``load`` falls back past it)."""
    done = complete(run_path)
    return done[0] if done else None


@dataclass
class Restored:
    path: Path
    state: LoopState
    best: list | None
    skipped: list[str]  # newer checkpoints that did not read back, and why


def _read(path: Path, names: list[str], rank: int) -> dict:
    """Every file of one checkpoint, read and checked; nothing applied yet."""
    weights = load_file(path / "trainable.safetensors")
    if set(weights) != set(names):
        raise ValueError(
            f"its weights are not this model's trainable parameters: {sorted(set(weights) ^ set(names))[:5]}"
        )
    stored = load_file(path / "best.safetensors") if (path / "best.safetensors").is_file() else None
    best = [stored[n] for n in names] if stored is not None else None
    opt = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu")
    data = json.loads((path / "state.json").read_text())
    rng = path / rng_file(rank) if (path / rng_file(rank)).is_file() else path / rng_file(0)
    return {
        "weights": weights,
        "best": best,
        "optimizer": opt,
        "data": data,
        "rng": torch.load(rng, weights_only=True, map_location="cpu"),
    }


def load(run_path: Path, trainer: Trainer, *, rank: int = 0, geometry: dict | None = None) -> Restored | None:
    """Restore weights, optimizer, scheduler, scaler and RNG states from the newest checkpoint that reads back.

    A process without its own RNG file (the run was checkpointed with fewer processes) takes process 0's.
    Returns None when the run has no checkpoint; raises TuneoffError when it has some and none reads back."""

    skipped = []
    for path in complete(run_path):
        try:
            parts = _read(path, list(trainer.named_trainable), rank)
        except torch.cuda.OutOfMemoryError:  # a RuntimeError, but the machine's state, not the checkpoint's
            raise
        except UNREADABLE as exc:  # a torn or tampered file; out-of-memory and bugs are not an unreadable checkpoint
            skipped.append(f"{path.name} ({type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''})")
            continue
        state = LoopState(**parts["data"]["loop"])
        state.batch = translate_position(state, parts["data"].get("geometry"), geometry, path)
        with torch.no_grad():
            for name, param in trainer.named_trainable.items():
                param.copy_(parts["weights"][name].to(param.device))
        trainer.optimizer.load_state_dict(parts["optimizer"]["optimizer"])
        state_to_parameter_device(trainer.optimizer)
        trainer.scheduler.load_state_dict(parts["optimizer"]["scheduler"])
        if trainer.scaler is not None and parts["optimizer"]["scaler"] is not None:
            trainer.scaler.load_state_dict(parts["optimizer"]["scaler"])
        _set_rng_state(parts["data"]["rng"], parts["rng"])
        return Restored(path, state, parts["best"], skipped)
    if skipped:
        raise TuneoffError(
            f"No checkpoint of the run in {run_path} reads back: {'; '.join(skipped)}. Nothing was "
            "loaded from them. Start the run afresh (without --resume), or delete that directory."
        )
    return None


def translate_position(state: LoopState, saved: dict | None, now: dict | None, path: Path) -> int:
    """The micro-batch to continue from when the batch geometry changed since the checkpoint.

    Epoch orders are grouped by the effective batch (per-device batch x accumulation x processes), so runs with
    the same effective batch see the same examples in the same order however it is split; a checkpoint sits on
    an optimizer-step boundary, so its position translates exactly. Another effective batch is another run."""

    if not saved or not now or saved == now:
        return state.batch
    effective = {g: d["batch_size"] * d["grad_accum"] * d["processes"] for g, d in (("saved", saved), ("now", now))}
    if effective["saved"] != effective["now"] or state.batch % saved["grad_accum"]:
        raise TuneoffError(
            f"Checkpoint {path.name} was written at batch {saved['batch_size']} x accumulation {saved['grad_accum']} x "
            f"{saved['processes']} process(es) (effective {effective['saved']}); this run has batch {now['batch_size']} x "
            f"{now['grad_accum']} x {now['processes']} (effective {effective['now']}). Resume with train.batch_size / "
            "train.grad_accum giving the same effective batch, or start afresh without --resume."
        )
    return state.batch // saved["grad_accum"] * now["grad_accum"]


def state_to_parameter_device(optimizer) -> None:
    """Optimizer state keyed by something other than a parameter (peft's LoRA-FA keys it by parameter *name*) is not
    moved by ``load_state_dict``; loaded with ``map_location="cpu"`` it would stay on the CPU while the parameters
    are on the GPU (device mismatch at the first step). Move it to the parameters' device."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if not params:
        return
    device = params[0].device
    for key, value in optimizer.state.items():
        if isinstance(key, torch.Tensor) or not isinstance(value, dict):
            continue  # keyed by a parameter: load_state_dict already put it where the parameter is
        for k, v in value.items():
            if isinstance(v, torch.Tensor) and v.device != device:
                value[k] = v.to(device)
