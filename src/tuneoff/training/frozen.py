"""Frozen layers computed once: the hidden states at a method's frozen boundary, cached and replayed.

``head`` trains nothing below the classifier, ``partial`` top-k nothing below layer N-k, LoRA on the top layers
nothing below its lowest adapted layer. Below that *boundary* the model is a pure function of the input once
dropout is off there (the usual convention for frozen modules: they run in eval mode, in every run, cached or
not; ``run.json`` says so). So the hidden states entering the boundary layer are computed once for every
training and evaluation example (batched, ``inference_mode``), kept on disk (float16 by default), and each
training step runs only the layers above: the frozen layers' forward is replaced by a replay of their output.
They are computed at the run's precision (bf16 autocast where the run trains in bf16: the speed of an inference pass,
the same numbers the uncached run's frozen layers give), in length-sorted batches of the evaluation batch size.

The cache is keyed by everything it depends on (the model's files by content, revision, depth and attention kernel,
max_length, the split's examples, the boundary, the precision, the storage dtype), lives under
``$TUNEOFF_CACHE/features``, is written atomically (temporary directory, then rename) and only read afterwards, so
every run of a study with the same model, data and boundary (every seed, learning rate and search trial) shares one
computation, and so do concurrent processes (the first builds under a lock, the others wait for it). Saved models are unchanged: the layers' own forward is back before anything is saved.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from tuneoff.core.files import open_own

log = logging.getLogger(__name__)

COMPUTED: list[str] = []  # keys computed by this process (tests count them)


class _Stop(Exception):
    """Raised by the capture hook: the layers above the boundary are not needed to fill the cache."""


def boundary(model, arch) -> int | None:
    """The index of the lowest encoder layer with a trainable parameter (``num_layers`` when no layer trains: only the
    head does); None when something below the layers trains (embeddings, encoder-wide tensors) or layer 0 does."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inside = {id(p) for p in base.parameters()}
    if any(p.requires_grad and id(p) not in inside for p in model.parameters()):
        return (
            None  # trained outside the encoder, e.g. prompt tuning's virtual tokens, which change every layer's input
        )
    layers = base.get_submodule(arch.layers_path)
    encoder = arch.layers_path.rsplit(".", 1)[0]
    for name, param in base.named_parameters():
        if (
            param.requires_grad
            and not name.startswith(arch.layers_path + ".")
            and name.startswith((encoder + ".", f"{getattr(base, 'base_model_prefix', '')}.embeddings."))
        ):
            return None
    lowest = next(
        (i for i, layer in enumerate(layers) if any(p.requires_grad for p in layer.parameters())), len(layers)
    )
    return lowest or None


def frozen_modules(model, arch, edge: int) -> list[torch.nn.Module]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = base.get_submodule(arch.layers_path)
    embeddings = getattr(base.get_submodule(arch.layers_path.split(".")[0]), "embeddings", None)
    return ([embeddings] if embeddings is not None else []) + [layers[i] for i in range(edge)]


def keep_in_eval(modules: list[torch.nn.Module]) -> None:
    """Frozen modules stay in eval mode (no dropout) whatever ``model.train()`` asks."""
    for module in modules:
        for sub in module.modules():
            sub.train = (lambda self: lambda mode=True: torch.nn.Module.train(self, False))(sub)
            torch.nn.Module.train(sub, False)


class _Standin(torch.nn.Module):
    """Sits in the encoder's layer list in place of a frozen layer: passes its input through, or (the last one
    below the boundary) returns the cached hidden states of the current batch. No parameters, no compute."""

    def __init__(self, replay: "Replay", last: bool):
        super().__init__()
        self._replay, self._last = replay, last  # a plain attribute: Replay is not a module

    def forward(self, hidden_states, *args, **kwargs):
        out = self._replay.current.to(hidden_states.dtype) if self._last else hidden_states
        n = self._replay.tuple_len
        return out if not n else (out,) + (None,) * (n - 1)


class Replay:
    """Swaps the frozen layers out of the encoder's layer list for stand-ins that replay the cache (and back).

    Replacing the modules, not their ``forward`` attribute: transformers 5 calls layers through
    ``GradientCheckpointingLayer.__call__``, which reaches the class's forward, not an instance's."""

    def __init__(self, model, arch, edge: int):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.layer_list = base.get_submodule(arch.layers_path)
        self.originals = [self.layer_list[i] for i in range(edge)]
        self.standins = [_Standin(self, last=i == edge - 1) for i in range(edge)]
        self.current: torch.Tensor | None = None
        self.tuple_len = 0  # the frozen layers return a tensor (0) or a tuple whose first item is the hidden states
        self.depth = 0  # on() / off() nest: an evaluation inside the training loop leaves the swap in place

    def on(self) -> None:
        self.depth += 1
        for i, standin in enumerate(self.standins):
            self.layer_list[i] = standin

    def off(self) -> None:
        self.depth -= 1
        if self.depth == 0:
            for i, original in enumerate(self.originals):
                self.layer_list[i] = original


MODEL_FILES = ("*.safetensors", "*.bin", "*.json", "*.txt", "*.model")  # weights, config, tokenizer


def cache_key(source: str, cfg, split_frames: dict, edge: int, dtype: str, precision: str = "no") -> str:
    """Everything the cached states depend on: the model's files by content (weights, the whole config.json, the
    tokenizer), revision, depth, attention kernel, max_length, each split's examples, the boundary, the storage."""
    files = {}
    if Path(source).is_dir():
        for pattern in MODEL_FILES:
            for path in sorted(Path(source).glob(pattern)):
                files[path.name] = file_digest(path)
    data = {s: hashlib.sha256(pd_bytes(df)).hexdigest() for s, df in split_frames.items()}
    parts = {
        "source": source,
        "files": files,
        "revision": cfg.model.revision,
        "layers": cfg.model.num_hidden_layers,
        "attn": cfg.model.attn_implementation,
        "max_length": cfg.data.max_length,
        "data": data,
        "edge": edge,
        "dtype": dtype,
        "precision": precision,
        "version": 3,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


FULL_HASH_BYTES = 512 << 20  # files up to this size are hashed whole
SAMPLE_BLOCKS, BLOCK = 256, 1 << 20
_DIGESTS: dict = {}  # (path, size, mtime_ns, ctime_ns, inode) -> digest, per process


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content (remembered per process while its size, mtime, ctime and inode stay: a rewrite that
    restores the mtime still changes the ctime, which no one can set); files over 512 MB
    are digested from 256 blocks of 1 MiB spread over the file and its size, which any rewrite of the file changes
    with overwhelming probability (zeros, another entry's content) at a fraction of the reading."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
    if key not in _DIGESTS:
        h = hashlib.sha256(str(stat.st_size).encode())
        with open(path, "rb") as fh:
            if stat.st_size <= FULL_HASH_BYTES:
                for chunk in iter(lambda: fh.read(16 << 20), b""):
                    h.update(chunk)
            else:
                for k in range(SAMPLE_BLOCKS):
                    fh.seek(k * (stat.st_size - BLOCK) // (SAMPLE_BLOCKS - 1))
                    h.update(fh.read(BLOCK))
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def pd_bytes(df) -> bytes:
    import pandas as pd

    cols = [c for c in ("id", "text", "text_pair") if c in df.columns]
    return pd.util.hash_pandas_object(df[cols], index=False).values.tobytes()


class CacheInvalid(Exception):
    """A cache entry that does not prove it is what it claims: rebuilt, never used."""


_VERIFIED: set[str] = set()  # entries whose files were checked against their digests in this process


class FeatureCache:
    """Per split: ``offsets`` (n + 1) and the hidden states of every token (sum of lengths x hidden), memory-mapped.

    Opening an entry checks it: meta.json readable, every split's offsets and states present, each states file exactly
    the size its offsets and width say, and (first use in this process) each file's digest equal to the one recorded
    when it was built. Anything else raises ``CacheInvalid``."""

    def __init__(self, root: Path, splits=("train", "validation", "test")):
        self.root = root
        try:
            meta = json.loads((root / "meta.json").read_text())
            self.hidden, self.dtype = int(meta["hidden"]), np.dtype(meta["dtype"])
            self.offsets = {s: np.load(root / f"{s}.offsets.npy") for s in splits}
            for s, o in self.offsets.items():
                expected = max(int(o[-1]), 1) * self.hidden * self.dtype.itemsize
                size = (root / f"{s}.states").stat().st_size
                if size != expected:
                    raise CacheInvalid(f"{s}.states holds {size:,} bytes where its offsets say {expected:,}")
            if str(root) not in _VERIFIED:
                for s in splits:
                    if file_digest(root / f"{s}.states") != meta["digests"][s]:
                        raise CacheInvalid(f"{s}.states does not match the digest recorded when it was built")
                _VERIFIED.add(str(root))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CacheInvalid(f"{type(exc).__name__}: {exc}") from exc
        self.data = {
            s: np.memmap(root / f"{s}.states", dtype=self.dtype, mode="r", shape=(max(int(o[-1]), 1), self.hidden))
            for s, o in self.offsets.items()
        }
        self.tuple_len = int(meta.get("tuple_len") or 0)

    def batch(self, split: str, indices, length: int, device) -> torch.Tensor:
        """The cached states of these examples, zero-padded to ``length`` tokens (padding is masked in attention)."""
        out = np.zeros((len(indices), length, self.hidden), dtype=np.float32)
        offsets, data = self.offsets[split], self.data[split]
        for row, i in enumerate(indices):
            start, end = int(offsets[i]), int(offsets[i + 1])
            out[row, : min(end - start, length)] = data[start : start + min(end - start, length)]
        return torch.from_numpy(out).to(device)


def _writable(directory: Path) -> str | None:
    """None when a cache entry can be written under ``directory``, else why not."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(dir=directory, prefix=".probe."))
        probe.rmdir()
        return None
    except OSError as exc:
        return f"{directory} is not writable ({exc.strerror or exc})"


def open_or_build(
    root: Path,
    model,
    arch,
    edge: int,
    encoded: dict,
    collate,
    batch_size: int,
    device,
    dtype: str,
    autocast=contextlib.nullcontext,
) -> tuple[FeatureCache | None, str | None]:
    """The cache entry for this key, built if absent, rebuilt if it fails its checks; (None, why) when the cache
    directory cannot be written (the run then recomputes its frozen layers). The note says what happened.

    Runs packed side by side (``study.packing``) often want the same entry at once: the first takes the entry's lock
    (``flock`` on ``.<key>.lock``) and builds, the others wait on the lock and then open what it built."""
    why = _writable(root.parent)
    if why is not None:
        if root.exists():  # a read-only cache can still serve an entry that proves itself
            try:
                return FeatureCache(root, tuple(encoded)), None
            except CacheInvalid:
                pass
        return None, f"feature cache off for this run: {why}; the frozen layers are recomputed every step"
    with open_own(root.parent / f".{root.name}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        note = None
        if root.exists():
            try:
                return FeatureCache(root, tuple(encoded)), None
            except CacheInvalid as exc:
                note = f"the cached frozen-layer states in {root} failed their check ({exc}): rebuilt"
                log.warning(note)
                aside = root.with_name(f".{root.name}.invalid-{os.getpid()}")
                os.replace(root, aside)
                shutil.rmtree(aside, ignore_errors=True)
        return build(root, model, arch, edge, encoded, collate, batch_size, device, dtype, autocast), (
            f"{note}; " if note else ""
        ) + "built by this run"


def build(
    root: Path,
    model,
    arch,
    edge: int,
    encoded: dict,
    collate,
    batch_size: int,
    device,
    dtype: str,
    autocast=contextlib.nullcontext,
) -> FeatureCache:
    """Compute the hidden states entering layer ``edge`` for every example of every split, and write them as one
    cache entry (a temporary directory renamed into place; the digests of its states files in meta.json)."""
    from tuneoff.data.batches import eval_loader

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer = base.get_submodule(arch.layers_path)[edge - 1]
    captured: dict = {}

    def hook(module, args, output):
        captured["out"] = output
        raise _Stop

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root.parent, prefix=f".{root.name}."))
    handle = layer.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    hidden = tuple_len = None
    try:
        for split, enc in encoded.items():
            offsets = np.concatenate([[0], np.cumsum(enc.lengths)]).astype(np.int64)
            np.save(tmp / f"{split}.offsets.npy", offsets)
            states = None
            loader, order = eval_loader(enc, batch_size, collate)
            position = 0
            with torch.inference_mode(), autocast():  # the run's precision: an inference pass's speed
                for batch in loader:
                    batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
                    try:
                        model(**batch)
                    except _Stop:
                        pass
                    out = captured.pop("out")
                    tuple_len = len(out) if isinstance(out, tuple) else 0
                    h = (out[0] if tuple_len else out).float().cpu().numpy()
                    hidden = h.shape[-1]
                    if states is None:
                        states = np.memmap(
                            tmp / f"{split}.states",
                            dtype=np.dtype(dtype),
                            mode="w+",
                            shape=(max(int(offsets[-1]), 1), hidden),
                        )
                    for row in range(h.shape[0]):
                        i = order[position + row]
                        n = int(offsets[i + 1] - offsets[i])
                        states[int(offsets[i]) : int(offsets[i]) + n] = h[row, :n]
                    position += h.shape[0]
            states.flush()
            del states
        digests = {split: file_digest(tmp / f"{split}.states") for split in encoded}
        (tmp / "meta.json").write_text(
            json.dumps({"hidden": hidden, "dtype": dtype, "tuple_len": tuple_len, "edge": edge, "digests": digests})
        )
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished the same cache first: its copy is complete and identical
            shutil.rmtree(tmp, ignore_errors=True)
        COMPUTED.append(root.name)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        handle.remove()
        model.train(was_training)
    return FeatureCache(root, tuple(encoded))
