"""What one run carries from its first phase to its last: the prepare phase of the training loop.

``prepare(cfg)`` does everything that can fail on bad input before any output exists: the Accelerator, the data,
the model and the method, the optimizer and the schedule, the tokenized splits, and (where the method leaves
layers frozen) the frozen-feature cache. The loop and the finish phase (``train``) read it; nothing in it knows
which method it holds.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tuneoff.config import RunConfig
from tuneoff.core.errors import TuneoffError
from tuneoff.data.augment import wordnet
from tuneoff.data.batches import collator, encode, unknown_share
from tuneoff.data.corpus import load_corpus
from tuneoff.data.inspection import (
    model_max_length,
    recommend_max_length,
    token_lengths,
)
from tuneoff.models.assets import cache_dir
from tuneoff.models.loading import (
    load_tokenizer,
)
from tuneoff.training import frozen, tracking
from tuneoff.training.frozen import pd_bytes
from tuneoff.training.launcher import check_sharding
from tuneoff.training.loss import class_weights
from tuneoff.training.model import adapt, load_base, make_optimizer
from tuneoff.training.resources import param_counts
from tuneoff.training.schedule import make_scheduler

log = logging.getLogger(__name__)


@dataclass
class Session:
    cfg: RunConfig
    accelerator: Any
    corpus: Any
    source: str
    tokenizer: Any
    model: Any  # prepared by Accelerate (wrapped when several processes)
    arch: Any
    method: Any
    lr: float
    warmup: int
    optimizer: Any
    scheduler: Any
    counts: dict
    encoded: dict
    collate: Any
    micro_batches: int  # per process and epoch
    steps_per_epoch: int
    total_steps: int
    epochs: int
    named: dict = field(default_factory=dict)  # trainable parameters by name (unwrapped: same with 1 or N processes)
    forward: Any = None  # the (possibly compiled) training forward
    eval_model: Any = None
    fsdp: bool = False
    edge: int | None = None  # frozen boundary: layers below it are frozen, in eval mode, and may be cached
    features: Any = None  # FeatureCache when the frozen part is replayed from the cache
    replay: Any = None
    cache_note: str | None = None  # the feature cache was rebuilt, or could not be used (run.json says which)
    seconds: dict = field(default_factory=dict)  # wall time per phase (resources.json "seconds")
    class_weights: list[float] | None = None  # train.class_weight resolved, in label order (run.json records it)
    loss_weight: Any = None  # the same as a tensor on the device, for the loss

    @property
    def tc(self):
        return self.cfg.train

    @property
    def device(self):
        return self.accelerator.device

    @property
    def rank(self) -> int:
        return self.accelerator.process_index

    @property
    def world(self) -> int:
        return self.accelerator.num_processes

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def trainable(self) -> list:
        return list(self.named.values())

    @property
    def geometry(self) -> dict:
        return {"batch_size": self.tc.batch_size, "grad_accum": self.tc.grad_accum, "processes": self.world}


def mixed_precision(setting: str, device: torch.device) -> str:
    """auto: bf16 on GPUs that have it, else fp16 on GPU; on CPU bf16 autocast where the CPU computes bf16 natively
    (measured 1.3-1.4x the fp32 training speed on MiniLM, bench/results/), else fp32 ("no").
    Weights, gradients and optimizer state stay fp32 either way: autocast only lowers the matmuls."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def precision_words(mixed: str, device: torch.device) -> str:
    """The precision a run trains in, said plainly: Accelerate's "no" is fp32, and on a CPU that is because it has no
    native bf16 (about 2-3x slower than a CPU that has it: machines differ, compare times measured on one)."""
    if mixed != "no":
        return f"{mixed} mixed precision"
    return "fp32 (this CPU has no native bf16)" if device.type == "cpu" and not cpu_has_native_bf16() else "fp32"


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (oneDNN) instead of being emulated, which would be slower."""
    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:  # older torch without the probes: stay in fp32
        return False


def accelerator_for(tc):
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import set_seed

    set_seed(tc.seed, deterministic=tc.deterministic)
    cpu = tc.device == "cpu" or (tc.device == "auto" and not torch.cuda.is_available())
    if tc.device == "cuda" and not torch.cuda.is_available():
        raise TuneoffError("train.device=cuda but no CUDA GPU is visible. Use train.device=auto or cpu.")
    check_sharding(on_cpu=cpu)
    # Accelerate keeps one process-wide state and refuses a second precision; a study trains many runs, each with its
    # own settings, in one process. The process-group part (PartialState) is kept: it is the launch, not the run.
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    return Accelerator(
        cpu=cpu, mixed_precision=mixed_precision(tc.mixed_precision, torch.device("cpu" if cpu else "cuda"))
    )


def prepare(cfg: RunConfig) -> Session:
    """Data, model, method, optimizer, schedule: everything that can fail on bad input fails here."""
    tc = cfg.train
    started = time.perf_counter()
    if tc.report_to:
        tracking.check(cfg)  # an unreachable tracking server fails now, before anything trains
    accelerator = accelerator_for(tc)
    device, world = accelerator.device, accelerator.num_processes
    corpus = load_corpus(cfg.data)
    weights = class_weights(tc.class_weight, corpus.label_names, corpus.label_ids("train"))  # bad labels fail here
    source, method, model, arch = load_base(cfg, corpus.label_names)
    tokenizer = load_tokenizer(source, cfg.model.revision, cfg.model.trust_remote_code)
    if cfg.data.max_length == "auto":  # cover the training set's p99 in tokens; the saved config gets the number
        limit = min(model_max_length(model.config, tokenizer), cfg.data.max_length_cap or 1 << 30)
        auto = recommend_max_length(token_lengths(corpus.splits["train"], tokenizer), limit)
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"max_length": auto})})
    model = adapt(cfg, method, model, arch)
    lr, optimizer = make_optimizer(cfg, method, model, device.type)
    counts = param_counts(model)  # after the optimizer: LoRA-FA's freezes A
    edge = frozen.boundary(model, arch)
    if edge is not None:  # the convention for frozen layers, cached or not: eval mode, no dropout
        frozen.keep_in_eval(frozen.frozen_modules(model, arch, edge))

    encoded = encoded_splits(corpus, tokenizer, cfg.data.max_length)
    augment = cfg.data.augment
    if augment.synonym_fraction and augment.copies:
        wordnet()  # a missing WordNet is a clear error now, not after the first epoch
    micro_batches = math.ceil(math.ceil(len(encoded["train"]) * (1 + augment.copies) / tc.batch_size) / world)
    steps_per_epoch = math.ceil(micro_batches / tc.grad_accum)
    if tc.grad_accum > micro_batches:
        log.warning(
            "train.grad_accum=%d but an epoch has only %d micro-batch(es) of %d: each optimizer step averages "
            "those %d, an effective batch of %d",
            tc.grad_accum,
            micro_batches,
            tc.batch_size,
            micro_batches,
            micro_batches * tc.batch_size * world,
        )
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    warmup = tc.warmup_steps if tc.warmup_steps is not None else math.ceil(tc.warmup_ratio * total_steps)
    scheduler = make_scheduler(tc, optimizer, warmup, total_steps, steps_per_epoch)
    method.begin(model, cfg.method, total_steps)
    s = Session(
        cfg,
        accelerator,
        corpus,
        source,
        tokenizer,
        model,
        arch,
        method,
        lr,
        warmup,
        optimizer,
        scheduler,
        counts,
        encoded,
        collator(tokenizer, on_gpu=device.type == "cuda", bucket=32 if compiles(tc) else None),
        micro_batches,
        steps_per_epoch,
        total_steps,
        math.ceil(total_steps / steps_per_epoch),
        edge=edge,
        class_weights=weights,
    )
    if weights is not None:
        s.loss_weight = torch.tensor(weights, dtype=torch.float32, device=device)
    s.seconds["load"] = time.perf_counter() - started
    started = time.perf_counter()
    _attach_features(s)
    s.seconds["feature_cache"] = time.perf_counter() - started
    s.model, s.optimizer = accelerator.prepare(s.model, s.optimizer)
    s.named = {n: p for n, p in accelerator.unwrap_model(s.model).named_parameters() if p.requires_grad}
    # Dynamic shapes and length buckets (the collator pads to multiples of 32): a handful of compilations, not one per
    # padded length (19 samples/s against 106 eager, measured with a static compile on a CPU).
    s.forward = torch.compile(s.model, dynamic=True) if compiles(tc) else s.model  # same parameters
    # DDP replicas evaluate unwrapped (no collectives in their forward); FSDP shards must run the wrapped forward.
    s.fsdp = accelerator.distributed_type.name == "FSDP"
    s.eval_model = s.model if s.fsdp else accelerator.unwrap_model(s.model)
    return s


_ENCODED: dict = {}  # (tokenizer, max_length, examples) -> encoded splits: a study's runs in one process share them


def encoded_splits(corpus, tokenizer, max_length: int) -> dict:
    """The splits tokenized once per (tokenizer, max_length, examples) in this process (the last two are kept)."""

    key = (
        tokenizer.name_or_path,
        len(tokenizer),
        max_length,
        tuple(corpus.label_names),
        hashlib.sha256(
            b"".join(pd_bytes(df) + df["label"].str.cat().encode() for df in corpus.splits.values())
        ).hexdigest(),
    )
    if key not in _ENCODED:
        while len(_ENCODED) >= 2:
            _ENCODED.pop(next(iter(_ENCODED)))
        encoded = {s: encode(df, tokenizer, max_length, corpus.label_ids(s)) for s, df in corpus.splits.items()}
        share = unknown_share(encoded["train"], tokenizer)
        if share > UNKNOWN_LIMIT:
            # silent otherwise: a model directory without its vocabulary trains on [UNK]s and reports the majority class
            raise TuneoffError(
                f"The tokenizer of {tokenizer.name_or_path} maps {share:.0%} of the training text's tokens "
                f"to {tokenizer.unk_token!r}: it does not cover this text, and the model would never see "
                "it. Use the model's own tokenizer files (vocab.txt or tokenizer.json beside its "
                "config.json), or a model made for this language."
            )
        _ENCODED[key] = encoded
    return _ENCODED[key]


UNKNOWN_LIMIT = 0.5  # more than half of the text's tokens unknown: the tokenizer does not cover the text


def compiles(tc) -> bool:
    """Whether the run compiles its forward: only when asked (``on``); ``auto`` stays eager, see TrainConfig.compile."""
    return tc.compile == "on"


def feature_cache_reason(s: Session) -> str | None:
    """Why this run does not replay its frozen layers from the cache (None: it does)."""
    tc = s.tc
    if s.edge is None:
        return "every layer trains"
    if tc.feature_cache == "off":
        return "train.feature_cache=off"
    if s.world > 1:
        return "several processes"
    if s.cfg.data.augment.copies:
        return "augmented copies are new inputs every epoch"
    if compiles(tc):
        return "train.compile=on"
    if s.features is None and s.cache_note:
        return s.cache_note
    return None


def feature_cache_status(s: Session) -> str:
    """What run.json says of the cache: why it was not used, or "used" (with a note when it was rebuilt)."""
    reason = feature_cache_reason(s)
    if reason is not None:
        return reason
    return f"used; {s.cache_note}" if s.cache_note else "used"


def _attach_features(s: Session) -> None:
    if feature_cache_reason(s) is not None:
        return
    dtype = s.tc.feature_cache_dtype
    key = frozen.cache_key(s.source, s.cfg, s.corpus.splits, s.edge, dtype, s.accelerator.mixed_precision)
    root = Path(os.environ.get("TUNEOFF_FEATURE_CACHE") or cache_dir() / "features") / key
    model = s.model.to(s.device)
    s.features, s.cache_note = frozen.open_or_build(
        root, model, s.arch, s.edge, s.encoded, s.collate, s.tc.eval_batch_size, s.device, dtype, s.accelerator.autocast
    )
    if s.features is not None:
        s.replay = frozen.Replay(model, s.arch, s.edge)
        s.replay.tuple_len = s.features.tuple_len
