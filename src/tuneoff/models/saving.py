"""Saved models the Hugging Face ecosystem loads: a whole model, a PEFT adapter directory (with ``config.json``, the
head and the tokenizer, over a link to the base weights), or only the trained tensors over links to the base.

Every directory written here loads with ``AutoModelForSequenceClassification.from_pretrained`` and
``pipeline("text-classification")`` (or, for the adapters transformers' integration cannot load, with peft's
``AutoPeftModelForSequenceClassification``: the method says which).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tuneoff.core.errors import TuneoffError
from tuneoff.core.files import UMASK, read_json, write_json


def _base_weight_files(source: str, revision: str | None) -> list[Path]:
    """The safetensors file(s) of the base model a PEFT adapter was trained on."""
    base = Path(source)
    if not base.is_dir():
        from huggingface_hub import snapshot_download

        base = Path(
            snapshot_download(source, revision=revision, allow_patterns=["*.safetensors", "*.safetensors.index.json"])
        )
    index = base / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(read_json(index)["weight_map"].values()))
        return [index] + [base / s for s in shards]
    if (base / "model.safetensors").is_file():
        return [base / "model.safetensors"]
    raise TuneoffError(f"Base model {source} has no safetensors weights; tuneoff loads and links safetensors only.")


def save_full(model, tokenizer, out: Path, state_dict=None) -> None:
    """A whole model: ``save_pretrained`` (config.json with id2label, model.safetensors) and the tokenizer."""
    _fresh(out)
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    _finish(out, tokenizer)


def save_adapter(model, tokenizer, out: Path, base_source: str, revision: str | None = None, state_dict=None) -> None:
    """A PEFT adapter that ``AutoModelForSequenceClassification.from_pretrained(out)`` and ``pipeline(model=out)`` load.

    The adapter (adapter_config.json, adapter_model.safetensors, with the head modules in ``modules_to_save``), plus
    config.json with id2label/label2id, plus the base model's weights by symbolic link. transformers (>= 5, PR
    #43781) treats a local dir holding config.json as "base model with an embedded adapter" and loads the base
    weights from that dir, so the link is what makes the dir loadable while the checkpoint stays small. The base
    checkpoint has no classification head, which transformers would report as "classifier.weight MISSING ... newly
    initialized" (then the adapter puts the trained head in place): the trained head is also written as
    ``head.safetensors`` and a ``model.safetensors.index.json`` maps every weight to the base file or the head
    file, so the base loads complete and nothing is reported missing. Adapters transformers' integration cannot load
    (``PEFT_LOADER_ONLY``: prompt tuning, VeRA, AdaLoRA) load with peft's ``AutoPeftModelForSequenceClassification``.
    """
    _fresh(out)
    model.save_pretrained(out, safe_serialization=True, state_dict=state_dict)
    base = model.get_base_model()
    base.config.architectures = [type(base).__name__]
    base.config.save_pretrained(out)
    heads = set(model.peft_config[model.active_adapter].modules_to_save or [])
    _link_base_with_head(out, _base_weight_files(base_source, revision), heads)
    _finish(out, tokenizer)


def _fresh(out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)  # a resumed run that was killed after saving once saves again, afresh
    out.mkdir(parents=True)


def _finish(out: Path, tokenizer) -> None:
    tokenizer.save_pretrained(out)
    for path in out.iterdir():  # the writers' temp files are 0600; results are shared like any file (umask)
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~UMASK)


def _link_base_with_head(out: Path, base_files: list[Path], heads: set[str]) -> None:
    """Link the base weights into ``out`` and index them together with the adapter's head tensors."""
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")
    # The modules_to_save: the head (classifier, pre_classifier, pooler...), as named in the base model.
    head = {
        k.removeprefix("base_model.model."): v
        for k, v in adapter.items()
        if k.removeprefix("base_model.model.").split(".")[0] in heads
    }
    _index(out, base_files, head, "head.safetensors")


def _index(out: Path, base_files: list[Path], trained: dict, name: str) -> None:
    """Link the base weight files into ``out`` and write ``model.safetensors.index.json`` mapping every weight to a
    base file, except the ``trained`` tensors, written to ``name`` (named as the base file names its weights)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weight_map: dict[str, str] = {}
    for src in base_files:
        if src.name.endswith(".index.json"):
            continue
        link = out / f"base-{src.name}"
        link.symlink_to(src.resolve())
        with safe_open(src, "pt") as f:
            weight_map.update({k: link.name for k in f.keys()})
    if trained:
        save_file({k: v.contiguous() for k, v in trained.items()}, out / name)
        weight_map.update({k: name for k in trained})
    write_json(
        out / "model.safetensors.index.json",
        {"metadata": {"tuneoff": f"base weights linked + {name}"}, "weight_map": weight_map},
    )


def save_trained_only(model, tokenizer, out: Path, base_source: str, revision: str | None = None) -> None:
    """``train.save: trained_only`` for methods that train part of a model (head, partial, BitFit): only the trained
    tensors are written (``trained.safetensors``), the rest is the base model's weights by link, and the index maps
    each weight to its file, so the directory loads with ``from_pretrained`` like a whole model while it holds only
    what this task changed. Weights are named as the base checkpoint names them (it may lack the ``bert.`` prefix)."""
    _fresh(out)
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(out)
    base_files = _base_weight_files(base_source, revision)
    from safetensors import safe_open

    shard = next(f for f in base_files if not f.name.endswith(".index.json"))
    with safe_open(shard, "pt") as f:
        prefixed = any(k.startswith(model.base_model_prefix + ".") for k in f.keys())
    trained = {}
    for key, param in model.named_parameters():
        if param.requires_grad:
            named = (
                key
                if prefixed or not key.startswith(model.base_model_prefix + ".")
                else key[len(model.base_model_prefix) + 1 :]
            )
            trained[named] = param.detach().cpu()
    _index(out, base_files, trained, "trained.safetensors")
    _finish(out, tokenizer)
