"""The model card every run directory's model carries (``model/README.md``): the Hub's model-card metadata filled in
(``huggingface_hub.ModelCard``, the well-kept library for it), so that the directory can be uploaded as it is.

peft's ``save_pretrained`` writes its empty template ("Model Card for Model ID", every section a placeholder) with
``base_model`` set to whatever path the base was loaded from: on an offline machine an absolute local path. Here the
base model is named by its hub id where one is known (the built-ins' upstream repositories, or the ``_name_or_path``
a local copy's config keeps when that is a hub id), never by a path of the machine that trained it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# The built-in models' upstream repositories (the PyPI packages carry copies of these).
UPSTREAM = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2",
    "mpnet": "sentence-transformers/all-mpnet-base-v2",
    "bert-base": "bert-base-uncased",
    "distilbert": "distilbert-base-uncased",
    "roberta-base": "roberta-base",
    "deberta-v3-base": "microsoft/deberta-v3-base",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A text classifier fine-tuned with [tuneoff](https://pypi.org/project/tuneoff/): {{ method }} on {{ base }}, trained on
{{ dataset }} ({{ sizes }}).

## Results

{{ results }}

## Training

{{ training }}

## Use

```python
from transformers import pipeline

classify = pipeline("text-classification", model="path/to/this/directory")
classify("{{ example }}")
```
{{ extra }}
"""


def base_model_id(name: str, source: str) -> str | None:
    """The base model's hub id, or None when only a local path is known."""
    if name in UPSTREAM:
        return UPSTREAM[name]
    if HUB_ID.match(name) and not Path(name).exists():
        return name
    try:
        config = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    upstream = str(config.get("_name_or_path") or "")
    return upstream if HUB_ID.match(upstream) and "/" in upstream else None


def write_model_card(
    model_dir: Path,
    *,
    model: str,
    source: str,
    method: str,
    dataset: str,
    dataset_hub: str | None,
    labels: list[str],
    sizes: dict,
    metrics: dict,
    interval: tuple[float, float],
    training: dict,
    run_id: str,
    extra: str = "",
) -> Path:
    """``model_dir/README.md``: metadata (base model, library, pipeline tag, dataset, metrics) and the run in words."""
    base = base_model_id(model, source)
    test = metrics["test"]
    library = "peft" if (model_dir / "adapter_config.json").is_file() else "transformers"
    data = ModelCardData(
        base_model=base,
        library_name=library,
        pipeline_tag="text-classification",
        datasets=[dataset_hub] if dataset_hub else None,
        metrics=["accuracy", "f1"],
        tags=["tuneoff", "text-classification", method],
        model_name=run_id,
        eval_results=[
            EvalResult(
                task_type="text-classification",
                dataset_type=dataset_hub or dataset,
                dataset_name=dataset,
                dataset_split="test",
                metric_type="accuracy",
                metric_value=round(float(test["accuracy"]), 4),
            ),
            EvalResult(
                task_type="text-classification",
                dataset_type=dataset_hub or dataset,
                dataset_name=dataset,
                dataset_split="test",
                metric_type="f1",
                metric_name="macro-F1",
                metric_value=round(float(test["macro_f1"]), 4),
            ),
        ],
    )
    results = (
        f"On the held-out test split ({test.get('n', sizes.get('test', '?'))} examples): accuracy "
        f"{100 * test['accuracy']:.1f}% (95% interval over test examples {100 * interval[0]:.1f}-"
        f"{100 * interval[1]:.1f}%, one training seed: a study of several seeds gives the interval over seeds "
        f"too), macro-F1 {test['macro_f1']:.3f}. Classes: {', '.join(labels)}."
    )
    lines = "\n".join(f"- {k}: {v}" for k, v in training.items())
    card = ModelCard.from_template(
        data,
        template_str=TEMPLATE,
        title=run_id,
        method=method,
        base=f"`{base}`" if base else "a local base model",
        dataset=dataset,
        sizes=", ".join(f"{v:,} {k}" for k, v in sizes.items()),
        results=results,
        training=lines,
        example="a gripping, beautifully acted film",
        extra=extra,
    )
    path = model_dir / "README.md"
    card.save(path)
    return path
