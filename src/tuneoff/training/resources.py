"""What a run costs: parameters, time, throughput, peak memory and size on disk.

Memory meters measure from a clean baseline and return None where a reading does not exist (no CUDA on a CPU
machine, no /proc outside Linux) instead of raising. CUDA peaks come from ``max_memory_allocated`` /
``max_memory_reserved`` after ``reset_peak_memory_stats``; the CPU peak is the process's high-water RSS
(``VmHWM``), reset through ``/proc/self/clear_refs`` so an earlier step of the same process does not count. Before
the reset, memory that earlier runs of the process freed is handed back to the OS (glibc's ``malloc_trim``: it keeps
freed small blocks otherwise), so a study's later runs do not carry an earlier, larger model's memory in their peak.
"""

from __future__ import annotations

import ctypes
import gc
import os
import platform
import time
from pathlib import Path

import torch

MB = 1024 * 1024


def param_counts(model: torch.nn.Module) -> dict:
    """Trainable and total parameters, and ``trained_bytes``: what a user must keep per task (the trained weights,
    not the frozen base, tokenizer or config), the cost that tells head-only from full fine-tuning on disk."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    trained_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_pct": 100.0 * trainable / max(total, 1),
        "trained_bytes": trained_bytes,
    }


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_freed_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to hand back this way
        pass


class MemoryMeter:
    """Peak memory between ``start()`` and ``read()``, and how many runs this process measured before it: a CPU peak
    taken after others in one process (a packed study's worker) counts what they left resident, an upper bound."""

    started = 0  # meters started in this process

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda" and torch.cuda.is_available()
        self.runs_before = MemoryMeter.started

    def start(self) -> MemoryMeter:
        MemoryMeter.started += 1
        if self.cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        _release_freed_memory()
        try:  # "5" resets the peak resident set size (Linux >= 4.0, proc(5) clear_refs)
            Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
            self.rss_reset = True
        except OSError:
            self.rss_reset = False
        return self

    def read(self) -> dict:
        out = {
            "cuda_max_allocated_mb": None,
            "cuda_max_reserved_mb": None,
            "peak_rss_mb": None,
            "runs_before_in_process": self.runs_before,
        }
        if self.cuda:
            torch.cuda.synchronize(self.device)
            out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(self.device) / MB
            out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(self.device) / MB
        hwm = _status_kb("VmHWM")
        if hwm is not None:
            out["peak_rss_mb"] = hwm / 1024
            out["peak_rss_since_start"] = self.rss_reset
        return out


class Throughput:
    """Training throughput counting real tokens only (padding excluded) and wall time."""

    def __init__(
        self, device: torch.device | None = None, samples: int = 0, tokens: int = 0, seconds: float = 0.0
    ) -> None:
        self.sync = device is not None and device.type == "cuda"
        self.samples = samples
        self.tokens = tokens
        self.seconds = seconds
        self._pending_tokens = 0
        self._t0: float | None = None

    def resume(self) -> None:
        self._t0 = time.perf_counter()

    def pause(self) -> None:
        if self._t0 is not None:
            if self.sync:  # CUDA runs asynchronously: wait for the queued work before reading the clock
                torch.cuda.synchronize()
            self.seconds += time.perf_counter() - self._t0
            self._t0 = None
        self.tokens += int(self._pending_tokens)
        self._pending_tokens = 0

    def add(self, batch: dict) -> None:
        self.samples += int(batch["input_ids"].shape[0])
        # Summed on the device and read at pause(): an int() per batch would wait for the GPU every step.
        real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["input_ids"].numel()
        self._pending_tokens = self._pending_tokens + real

    def read(self) -> dict:
        """Totals so far, the running interval included (a rate read mid-epoch is the real one, not samples over
        the time of the epochs before)."""
        secs = self.seconds + (time.perf_counter() - self._t0 if self._t0 is not None else 0.0)
        secs = max(secs, 1e-9)
        return {
            "train_seconds": self.seconds,
            "train_samples": self.samples,
            "train_tokens": self.tokens,
            "train_samples_per_s": self.samples / secs,
            "train_tokens_per_s": self.tokens / secs,
        }


def combine_processes(parts: list[dict]) -> dict:
    """The readings of several data-parallel processes as one run: samples and tokens summed over the slowest
    process's time, and the largest peak memory of any one process (what each device must hold)."""
    seconds = max(p["train_seconds"] for p in parts)
    samples, tokens = sum(p["train_samples"] for p in parts), sum(p["train_tokens"] for p in parts)
    out = {
        **parts[0],
        "train_seconds": seconds,
        "train_samples": samples,
        "train_tokens": tokens,
        "train_samples_per_s": samples / max(seconds, 1e-9),
        "train_tokens_per_s": tokens / max(seconds, 1e-9),
    }
    for key in ("cuda_max_allocated_mb", "cuda_max_reserved_mb", "peak_rss_mb"):
        values = [p[key] for p in parts if p.get(key) is not None]
        out[key] = max(values) if values else None
    return out


def dir_size(path: str | Path) -> int:
    """Bytes of the files under ``path``; symbolic links count as links (the base weights are not copied)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(root, name)).st_size
    return total


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
