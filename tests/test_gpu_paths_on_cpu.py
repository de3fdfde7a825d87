"""GPU-only decisions, tested on the CPU: precision choice, tensor-core padding, meters that return None."""

from __future__ import annotations

import pandas as pd
import torch

from tuneoff.data.batches import collator, encode
from tuneoff.training.resources import MemoryMeter, Throughput
from tuneoff.training.session import mixed_precision


def test_mixed_precision_choice(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert mixed_precision("auto", torch.device("cpu")) == "no", "emulated bf16 would be slower than fp32"
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert mixed_precision("auto", torch.device("cpu")) == "bf16"
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert mixed_precision("auto", torch.device("cpu")) == "bf16"
    assert mixed_precision("no", torch.device("cpu")) == "no"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert mixed_precision("auto", torch.device("cuda")) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert mixed_precision("auto", torch.device("cuda")) == "fp16"
    assert mixed_precision("fp16", torch.device("cpu")) == "fp16"


def test_gpu_batches_pad_to_multiples_of_8(tiny_bert):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    enc = encode(pd.DataFrame({"text": ["good film", "the plot was very good and nice"]}), tok, 32, [0, 1])
    gpu = collator(tok, on_gpu=True)(enc.features)
    cpu = collator(tok, on_gpu=False)(enc.features)
    assert gpu["input_ids"].shape[1] == 16 and cpu["input_ids"].shape[1] == 9


def test_meters_on_cpu_return_none_for_cuda_and_count_real_tokens():
    reading = MemoryMeter(torch.device("cpu")).start().read()
    assert reading["cuda_max_allocated_mb"] is None and reading["cuda_max_reserved_mb"] is None
    assert reading["peak_rss_mb"] is None or reading["peak_rss_mb"] > 0
    speed = Throughput(torch.device("cpu"))
    speed.resume()
    speed.add({"input_ids": torch.zeros(2, 5), "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])})
    speed.pause()
    r = speed.read()
    assert r["train_samples"] == 2 and r["train_tokens"] == 8  # padding excluded


def test_cpu_peak_does_not_carry_memory_an_earlier_run_freed():
    """glibc keeps freed small blocks: without handing them back, a study's later run would report an earlier,
    larger run's memory as its own peak."""
    import sys

    import pytest

    if not sys.platform.startswith("linux"):
        pytest.skip("VmHWM and malloc_trim are Linux / glibc")

    def rss_mb():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024

    blocks = [bytearray(2000) for _ in range(150_000)]  # about 300 MB in small blocks, as a finished run leaves them
    survivors = blocks[::1000]  # a few objects outlive the run (caches, results): the heap cannot shrink from its top
    del blocks
    held = rss_mb()
    reading = MemoryMeter(torch.device("cpu")).start().read()
    assert reading["peak_rss_since_start"] is True
    assert reading["peak_rss_mb"] < held - 200, (reading, held)
    assert len(survivors) == 150
