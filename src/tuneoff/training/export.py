"""``tuneoff export RUN --format onnx``: a finished run as an ONNX model for serving (ONNX Runtime), checked against
the run's own predictions before it is kept.

Adapters are merged into the weights first (exporting an unmerged LoRA model is a known failure in the PEFT tracker:
the adapter's branch is traced as separate matmuls, or not at all); the graph takes the tokenizer's outputs with a
dynamic batch and sequence length and returns the logits. ``int8`` adds a dynamically quantized copy (ONNX Runtime's
``quantize_dynamic``: int8 weights of the linear layers). Each exported file is loaded back with ONNX Runtime and run
on every test example of ``predictions.csv`` (the run's own texts, tokenized as it was trained): the fp32 model must
give every example the label the run gave it, with probabilities within ``TOLERANCE``; the int8 copy's agreement and
largest probability difference are recorded, not required (quantization moves borderline examples). Its size and
latency (one example at a time, the median) go to ``export.json`` beside it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from tuneoff.config import read_yaml
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import write_json
from tuneoff.core.outputs import from_spreadsheet
from tuneoff.training.saved import load_saved_model, method_of, model_labels

TOLERANCE = 1e-3  # largest difference of a class probability between the fp32 ONNX model and the run's own


class _Logits(torch.nn.Module):
    """The classifier as ONNX sees it: positional tensors in, logits out."""

    def __init__(self, model, names: list[str]):
        super().__init__()
        self.model, self.names = model, names

    def forward(self, *inputs):
        return self.model(**dict(zip(self.names, inputs))).logits


def _merged(model):
    """The model with its adapter merged into the weights and peft's wrappers gone. A run's saved adapter loads through
    transformers' own PEFT integration, which has no merge: each adapted layer (peft's ``BaseTunerLayer``) merges
    itself and is replaced by its base layer, and each trained head (``ModulesToSaveWrapper``) by its trained copy."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    swaps = []
    for name, module in model.named_modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
            swaps.append((name, module.get_base_layer()))
        elif isinstance(module, ModulesToSaveWrapper):
            swaps.append((name, module.modules_to_save[module.active_adapters[0]]))
    for name, replacement in swaps:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, replacement)
    left = [n for n, m in model.named_modules() if isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper))]
    if left:
        raise TuneoffError(
            f"the adapter could not be merged into the weights ({left[0]} is still adapted); an unmerged "
            "adapter does not export to ONNX faithfully."
        )
    return model


def export_onnx(run_dir: Path, out: Path | None = None, int8: bool = False, opset: int = 17) -> dict:
    """Export, verify and describe; returns what ``export.json`` records."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise TuneoffError(
            "ONNX export needs onnx and onnxruntime: pip install 'tuneoff[onnx]' (or onnx onnxruntime onnxscript)."
        ) from exc
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "onnx"
    model, tokenizer = load_saved_model(run_dir)
    model = _merged(method_of(run_dir).for_inference(model)).float().eval()
    labels = model_labels(model)
    sample = tokenizer(["a short text", "another, a little longer text"], padding=True, return_tensors="pt")
    names = list(sample.keys())
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.onnx"
    axes = {**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(
            _Logits(model, names),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    tokenizer.save_pretrained(out)
    model.config.save_pretrained(out)  # id2label beside the graph
    files = {"fp32": path}
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        files["int8"] = out / "model.int8.onnx"
        quantize_dynamic(str(path), str(files["int8"]), weight_type=QuantType.QInt8)
    expected = from_spreadsheet(pd.read_csv(run_dir / "predictions.csv", dtype=str, keep_default_na=False))
    max_length = (read_yaml(run_dir / "config.yaml").get("data") or {}).get("max_length", 512)
    record = {"run": run_dir.name, "opset": opset, "labels": labels, "test_examples": len(expected), "files": {}}
    for kind, file in files.items():
        session = ort.InferenceSession(str(file), providers=["CPUExecutionProvider"])
        probs = _predict(session, tokenizer, expected, names, max_length)
        agree = float(np.mean(np.array(labels)[probs.argmax(1)] == expected["pred_label"].to_numpy()))
        gap = float(np.max(np.abs(probs - expected[[f"prob_{n}" for n in labels]].to_numpy(dtype=float))))
        record["files"][kind] = {
            "file": file.name,
            "bytes": file.stat().st_size,
            "label_agreement": agree,
            "max_probability_difference": gap,
            "latency_ms_p50": _latency(session, tokenizer, expected, names, max_length),
        }
        if kind == "fp32" and (agree < 1.0 or gap > TOLERANCE):
            raise TuneoffError(
                f"{run_dir}: the exported ONNX model disagrees with the run's own predictions (labels "
                f"agree on {agree:.2%} of {len(expected)} test examples, probabilities differ by up to "
                f"{gap:.2g}, tolerance {TOLERANCE:g}); it is not kept as verified."
            )
    write_json(out / "export.json", record)
    return record


def _inputs(tokenizer, frame: pd.DataFrame, names: list[str], max_length: int) -> dict:
    pairs = list(frame["text_pair"]) if "text_pair" in frame.columns else None
    encoded = tokenizer(
        list(frame["text"]), pairs, truncation=True, max_length=max_length, padding=True, return_tensors="np"
    )
    return {n: encoded[n].astype(np.int64) for n in names}


def _predict(session, tokenizer, frame: pd.DataFrame, names: list[str], max_length: int) -> np.ndarray:
    chunks = []
    for start in range(0, len(frame), 64):
        logits = session.run(["logits"], _inputs(tokenizer, frame.iloc[start : start + 64], names, max_length))[0]
        z = logits - logits.max(axis=1, keepdims=True)
        chunks.append(np.exp(z) / np.exp(z).sum(axis=1, keepdims=True))
    return np.concatenate(chunks)


def _latency(session, tokenizer, frame: pd.DataFrame, names: list[str], max_length: int, examples: int = 50) -> float:
    times = []
    for i in range(min(examples, len(frame))):
        feed = _inputs(tokenizer, frame.iloc[i : i + 1], names, max_length)
        start = time.perf_counter()
        session.run(["logits"], feed)
        times.append(1000 * (time.perf_counter() - start))
    return float(np.median(times)) if times else float("nan")


def summary(record: dict) -> list[str]:
    """The export in a few lines, for the terminal."""
    return [
        f"{k}: {v['file']}, {v['bytes'] / 1e6:.1f} MB, labels agree with the run on {v['label_agreement']:.2%} of "
        f"{record['test_examples']} test examples (probabilities within {v['max_probability_difference']:.2g}), "
        f"{v['latency_ms_p50']:.1f} ms per example"
        for k, v in record["files"].items()
    ]


def read_export(path: Path) -> dict:
    return json.loads(Path(path).read_text())
