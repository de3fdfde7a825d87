"""What a trained model costs to serve: latency at batch 1 (p50 / p95) of the model as deployed (LoRA merged into
the weights) and, for adapter methods, of the adapter left unmerged; and the bytes a user must deploy.

Measured on up to ``LATENCY_EXAMPLES`` test examples, one at a time, under ``inference_mode`` in fp32 (what
``pipeline()`` runs), after two warm-up calls. Throughput at the evaluation batch is the final test evaluation's
(``test_samples_per_s``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

LATENCY_EXAMPLES = 20  # a sample: enough for a median and a 95th percentile, a second or two on a CPU


def latency(model, encoded, collate, device, n: int = LATENCY_EXAMPLES) -> dict:
    was_training = model.training
    model.eval()
    picks = np.linspace(0, len(encoded) - 1, num=min(n, len(encoded)), dtype=int)
    times = []
    with torch.inference_mode():
        for k, i in enumerate([picks[0], picks[0], *picks]):
            batch = {key: v.to(device) for key, v in collate([encoded.features[i]]).items() if key != "labels"}
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(**batch)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if k >= 2:  # two warm-up calls first
                times.append(1000 * (time.perf_counter() - t0))
    model.train(was_training)
    return {"p50": float(np.percentile(times, 50)), "p95": float(np.percentile(times, 95))}


def deploy_bytes(model_dir, counts: dict) -> dict:
    """The adapter (with its head) alone, and the whole model a merged deployment ships (fp32 weights)."""
    adapter = model_dir / "adapter_model.safetensors"
    full = counts["total_params"] * 4
    return {"deploy_adapter_bytes": adapter.stat().st_size if adapter.is_file() else None, "deploy_model_bytes": full}
