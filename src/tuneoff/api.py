"""The Python API: what the command line does, as functions a notebook can call.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tuneoff.config import build_config
from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import atomic_write_text, safe_name
from tuneoff.data.corpus import load_corpus
from tuneoff.data.inspection import inspect_corpus, model_max_length
from tuneoff.models.assets import resolve_model
from tuneoff.models.loading import load_tokenizer
from tuneoff.report.plots import plot_lengths


def inspect_to_dir(data: str, overrides: list[str], model: str, out=None):
    """Load a dataset and a tokenizer, inspect, and write inspect.json + histogram.png + boxplot.png."""

    from transformers import AutoConfig

    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise TuneoffError(f"inspect takes only data.* overrides, not {bad}.")
    cfg = build_config({}, overrides, names={"data": data, "model": model})
    corpus = load_corpus(cfg.data)
    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source)
    config = AutoConfig.from_pretrained(source)
    report = inspect_corpus(corpus, tokenizer, model_max_length(config, tokenizer), getattr(config, "hidden_size", 768))
    out_dir = Path(out) if out else Path("inspect") / safe_name(corpus.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    histogram, boxplot = plot_lengths(report)
    (out_dir / "histogram.png").write_bytes(base64.b64decode(histogram))
    (out_dir / "boxplot.png").write_bytes(base64.b64decode(boxplot))
    atomic_write_text(out_dir / "inspect.json", json.dumps({k: v for k, v in report.items() if not k.startswith("_")}, indent=2))
    return report, out_dir
