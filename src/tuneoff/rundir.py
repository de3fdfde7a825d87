"""A run directory: its layout, atomic writes, and the saved model the Hugging Face ecosystem can load.

Layout of ``runs/<run-id>/``::

    config.yaml        resolved config (what ran, with every default filled in)
    run.json           status, versions, device, timing, label names
    metrics.json       validation (best checkpoint) and test metrics
    history.jsonl      one line per evaluation: step, epoch, train loss, lr, validation metrics
    predictions.csv    test split: id, text, true_label, pred_label, prob_<label>...
    resources.json     parameters, time, throughput, peak memory, checkpoint size
    model/             the model (see ``save_model``)

A run is built in a hidden temporary directory next to its final place and renamed into place when complete,
so ``runs/`` never holds a half-written run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from tuneoff.errors import TuneoffError

MODEL_DIR = "model"
_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same directory, fsync, then rename: readers see old or new, never half."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are meant to be shared like any file
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=str) + "\n")


def disk_full(exc: BaseException, where: Path | None = None) -> bool:
    """Out of space or quota, however the library that was writing said it: an OSError, safetensors' own error type
    with the OS message in it, or torch.save's zip writer, which only says "unexpected pos" (then the file system
    of ``where`` is checked: less than 1 MiB free is a full disk)."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text or "os error 28" in text:
        return True
    if where is not None and isinstance(exc, (OSError, RuntimeError)):
        try:
            return shutil.disk_usage(where).free < 1024 * 1024
        except OSError:
            return False
    return False


def read_json(path: Path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def safe_name(name: str) -> str:
    """A name usable as one path component: no separators, no ``..``, no leading dot."""
    cleaned = re.sub(r"[^A-Za-z0-9._+-]+", "-", name).strip(".-")
    if not cleaned:
        raise TuneoffError(f"Name {name!r} has no usable characters; use letters, digits, '.', '_', '-'.")
    return cleaned[:120]


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
            raise TuneoffError(f"Cannot start the run in {root}: {exc.strerror or exc}. {hint}; nothing was trained.") from exc
    raise TuneoffError(f"{root} holds 999 runs named {run_id}*; choose another name= or output_dir=.")


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
    def open(cls, output_dir: str | Path, run_id: str, config_yaml: str, resume: bool, find: bool = False) -> RunDirectory:
        """``resume``: reuse ``.<run_id>.tmp`` (its checkpoints); with ``find``, the unfinished run whose config is this one."""
        root = Path(output_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TuneoffError(f"Cannot create the output directory {root}: {exc.strerror}. Choose output_dir=...") from exc
        if not os.access(root, os.W_OK):
            raise TuneoffError(f"Output directory {root} is not writable. Choose another with output_dir=<dir>.")
        found = False
        if resume and find:
            for tmp in sorted(root.glob(".*.tmp"), key=lambda p: p.stat().st_mtime, reverse=True):
                if (tmp / "config.yaml").is_file() and (tmp / "config.yaml").read_text(encoding="utf-8") == config_yaml:
                    run_id, found = tmp.name[1:-len(".tmp")], True
                    break
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
            raise TuneoffError(f"Cannot start the run in {run.path}: {exc.strerror or exc}. {hint} and run again"
                               f"{' with --resume' if resume else ''}; nothing was trained.") from exc
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


def _base_weight_files(source: str, revision: str | None) -> list[Path]:
    """The safetensors file(s) of the base model a PEFT adapter was trained on."""
    base = Path(source)
    if not base.is_dir():
        from huggingface_hub import snapshot_download

        base = Path(snapshot_download(source, revision=revision, allow_patterns=["*.safetensors", "*.safetensors.index.json"]))
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
            os.chmod(path, 0o666 & ~_UMASK)


def _link_base_with_head(out: Path, base_files: list[Path], heads: set[str]) -> None:
    """Link the base weights into ``out`` and index them together with the adapter's head tensors."""
    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")
    # The modules_to_save: the head (classifier, pre_classifier, pooler...), as named in the base model.
    head = {k.removeprefix("base_model.model."): v for k, v in adapter.items()
            if k.removeprefix("base_model.model.").split(".")[0] in heads}
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
    write_json(out / "model.safetensors.index.json", {"metadata": {"tuneoff": f"base weights linked + {name}"},
                                                       "weight_map": weight_map})


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
            named = key if prefixed or not key.startswith(model.base_model_prefix + ".") else key[len(model.base_model_prefix) + 1:]
            trained[named] = param.detach().cpu()
    _index(out, base_files, trained, "trained.safetensors")
    _finish(out, tokenizer)


# Adapters that transformers' PEFT integration cannot load (prompt learning; VeRA's shared matrices; AdaLoRA's
# per-module ranks after pruning): peft's own AutoPeftModelForSequenceClassification loads them.
PEFT_LOADER_ONLY = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING", "VERA", "ADALORA")


def _needs_peft_loader(model_dir: Path) -> bool:
    config = model_dir / "adapter_config.json"
    return config.is_file() and read_json(config).get("peft_type") in PEFT_LOADER_ONLY


def load_saved_model(run_dir: Path, device: str = "cpu"):
    """Model and tokenizer of a finished run (adapter or full), in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = Path(run_dir) / MODEL_DIR
    if not (model_dir / "config.json").is_file():
        raise TuneoffError(f"{run_dir} is not a finished tuneoff run: {model_dir}/config.json is missing.")
    broken = [p.name for p in model_dir.iterdir() if p.is_symlink() and not p.exists()]
    if broken:
        raise TuneoffError(
            f"{model_dir}: the link(s) {broken} to the base model's weights are broken (the base model moved or was "
            "uninstalled). Reinstall the base model or recreate the links."
        )
    try:
        if _needs_peft_loader(model_dir):
            from peft import AutoPeftModelForSequenceClassification

            model = AutoPeftModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(model_dir, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, safetensors' own error on a corrupt file, ...
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TuneoffError(f"Cannot load the model in {model_dir}: {first}. The file may be truncated or corrupt; "
                           "re-run the training (the run's other files are intact).") from exc
    return model.to(device).eval(), tokenizer
