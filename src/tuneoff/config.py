"""Run configuration: pydantic models, YAML files and dotted ``key=value`` overrides.

Every section forbids unknown keys, so a typo (``train.learning_rate``) is an error naming the field rather
than a silently ignored setting. The resolved config is written next to every run (``config.yaml``).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import MethodParams, get_method, method_params_from_dict

DEFAULT_METHOD = "lora"


class Section(BaseModel):
    # Unknown keys are errors; so are inf and NaN (`train.lr=.inf` would train an all-NaN model "successfully").
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(Section):
    name: str = Field(
        "minilm", description="Built-in short name (`tuneoff models`), Hugging Face hub id, or local dir."
    )
    revision: str | None = Field(None, description="Hub revision (commit/tag); required with trust_remote_code.")
    trust_remote_code: bool = Field(False, description="Run model code from the hub. Off unless pinned by revision.")
    num_hidden_layers: int | None = Field(
        None, ge=1, description="Keep only the first N encoder layers (real weights, faster; for quick runs/tests)."
    )
    attn_implementation: Literal["sdpa", "eager"] | None = Field(
        None, description="Attention kernel; None lets transformers choose (SDPA where the model supports it)."
    )
    hidden_dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Dropout on hidden states (BERT's "
        "hidden_dropout_prob, DistilBERT's dropout); None keeps the model's.",
    )
    attention_dropout: float | None = Field(
        None, ge=0, lt=1, description="Dropout on attention probabilities; None keeps the model's."
    )
    classifier_dropout: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Dropout before the classification head "
        "(classifier_dropout, seq_classif_dropout, cls_dropout; else the "
        "head's own dropout layer, as MPNet's); None keeps the model's.",
    )

    @model_validator(mode="after")
    def _remote_code_needs_pin(self) -> ModelConfig:
        if self.trust_remote_code and not self.revision:
            raise ValueError("trust_remote_code=true needs model.revision pinned to a commit hash")
        return self


class AugmentConfig(Section):
    copies: int = Field(
        0, ge=0, description="Augmented copies of each training example per epoch (0 = off); originals are kept."
    )
    sentence_shuffle_p: float = Field(0.0, ge=0, le=1, description="Probability that a copy's sentences are shuffled.")
    synonym_fraction: float = Field(
        0.0, ge=0, le=1, description="Share of a copy's content words replaced by WordNet synonyms."
    )
    synonym_max: int | None = Field(None, ge=1, description="At most this many replacements per text.")
    seed: int = Field(0, description="Augmentation seed (with the epoch number).")

    @model_validator(mode="after")
    def _something_to_do(self) -> AugmentConfig:
        if self.copies and not (self.sentence_shuffle_p or self.synonym_fraction):
            raise ValueError("copies > 0 but no augmentation is on: set sentence_shuffle_p and/or synonym_fraction")
        return self


class DataConfig(Section):
    name: str = Field(
        "rotten_tomatoes",
        description="Built-in dataset (`tuneoff datasets`), hub id, or path to a CSV/JSONL/Parquet file.",
    )
    validation_file: str | None = Field(None, description="Local file for the validation split (optional).")
    test_file: str | None = Field(None, description="Local file for the test split (optional).")
    hub_config: str | None = Field(None, description="Hub dataset configuration name.")
    text_column: str = Field("text", description="Column holding the text (local files, hub datasets).")
    text_pair_column: str | None = Field(None, description="Second text for sentence-pair tasks (e.g. NLI).")
    label_column: str = Field("label", description="Column holding the label (any values; mapped to ids once).")
    validation_fraction: float = Field(0.1, gt=0, lt=0.5, description="Carved from train when the source has none.")
    test_fraction: float = Field(0.1, gt=0, lt=0.5, description="Carved from train when the source has no test split.")
    split_seed: int = Field(0, description="Seed of the deterministic stratified split (independent of train.seed).")
    max_train_samples: int | None = Field(
        None,
        ge=2,
        description="Train on a prefix of one seeded, stratified order of the "
        "training split: a smaller set is inside every larger one.",
    )
    max_eval_samples: int | None = Field(None, ge=1, description="Caps validation and test each.")
    max_validation_samples: int | None = Field(
        None,
        ge=1,
        description="Caps validation alone (overrides max_eval_samples): validation is evaluated many "
        "times a run, the test set once, so a study can keep validation small and the test set large.",
    )
    max_test_samples: int | None = Field(None, ge=1, description="Caps test alone (overrides max_eval_samples).")
    augment: AugmentConfig = Field(AugmentConfig(), description="Augmented copies of the training split (see below).")
    max_length: int | Literal["auto"] = Field(
        128,
        description="Truncation length in tokens (batches pad dynamically); auto = cover the training set's p99 "
        "(`tuneoff inspect` shows it).",
    )

    max_length_cap: int | None = Field(
        None,
        ge=8,
        le=8192,
        description="With max_length=auto: never pick more than this (auto can pick 512 on long "
        "documents, and time grows with length; `tuneoff inspect` shows the relative time of each length).",
    )

    @field_validator("max_length")
    @classmethod
    def _length_range(cls, value):
        if value != "auto" and not 8 <= value <= 8192:
            raise ValueError("must be between 8 and 8192, or auto")
        return value


class TrainConfig(Section):
    epochs: int = Field(
        1,
        ge=1,
        description="Epochs to train; with train.patience, the cap (early stopping ends the run at "
        "its validation plateau).",
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    batch_size: int = Field(16, ge=1, description="Per-step micro-batch size.")
    eval_batch_size: int = Field(
        64, ge=1, description="Batch size of evaluation and prediction (length-sorted batches)."
    )
    grad_accum: int = Field(
        1, ge=1, description="Gradient accumulation steps; effective batch = batch_size x grad_accum."
    )
    lr: float | None = Field(None, gt=0, description="Peak learning rate; None takes the method's default.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW decay, never applied to biases and LayerNorm weights.")
    warmup_ratio: float = Field(0.06, ge=0, lt=1, description="Share of the optimizer steps spent warming the rate up.")
    warmup_steps: int | None = Field(None, ge=0, description="Overrides warmup_ratio.")
    scheduler: Literal["linear", "cosine", "constant", "step"] = Field(
        "linear",
        description="Decay after the warmup: linear or cosine to 0, constant, or step (gamma every step_size).",
    )
    optimizer: Literal["adamw", "sgd"] = Field("adamw", description="AdamW (decoupled decay) or SGD with momentum.")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum.")
    step_size: int | None = Field(
        None, ge=1, description="scheduler=step: optimizer steps between decays (default: one epoch)."
    )
    gamma: float = Field(
        0.1, gt=0, le=1, description="scheduler=step: the factor the lr is multiplied by at each decay."
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="Label smoothing of the cross-entropy loss.")
    class_weight: Literal["none", "balanced"] | dict[str, float] = Field(
        "none",
        description="Weight of each class in the training loss: none; balanced (scikit-learn's n / (classes x "
        "count): a rare class weighs as much in total as a common one); or {label: weight}, unlisted labels 1. "
        "Validation loss, metrics and early stopping stay unweighted.",
    )
    max_grad_norm: float | None = Field(1.0, gt=0, description="Gradient clipping norm; None turns clipping off.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto",
        description="auto = bf16 on GPUs that support it, fp16 on older GPUs; on CPU bf16 where it is native "
        "(AVX512-BF16/AMX), else fp32.",
    )
    eval_every: int | None = Field(None, ge=1, description="Also evaluate every N optimizer steps (always per epoch).")
    save: Literal["full", "trained_only"] = Field(
        "full",
        description="full: the whole model. trained_only (head, partial, BitFit): only the trained tensors, over "
        "links to the base model's weights (still loads with from_pretrained); adapters are always adapter-sized.",
    )
    report_to: list[Literal["mlflow", "tensorboard", "wandb"]] = Field(
        default_factory=list,
        description="Also send params, metrics per evaluation, final metrics and the model to MLflow, "
        "TensorBoard and/or Weights & Biases (pip install 'tuneoff[tracking]'; W&B follows WANDB_MODE, WANDB_PROJECT "
        "and `wandb login`; WANDB_MODE=offline writes <output_dir>/wandb).",
    )
    tracking_uri: str | None = Field(None, description="MLflow tracking URI; default sqlite:///<output_dir>/mlflow.db.")
    experiment: str | None = Field(None, description="MLflow experiment; a study sets its name (default: tuneoff).")
    max_skipped_steps: int = Field(
        50,
        ge=1,
        description="fp16: stop after this many optimizer steps in a row that the "
        "gradient scaler skipped (overflow); occasional skips are normal.",
    )

    @field_validator("class_weight", mode="before")
    @classmethod
    def _class_weight(cls, value):
        if value is None:
            return "none"
        if isinstance(value, dict):  # YAML reads a label 1 as an int; labels are strings
            if not all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and 0 < w < float("inf") for w in value.values()
            ):
                raise ValueError(f"each weight must be a positive number, got {value}")
            return {str(k): float(w) for k, w in value.items()}
        return value

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value):
        return "no" if value is False else value  # YAML 1.1 reads a bare `no` as false

    @field_validator("compile", mode="before")
    @classmethod
    def _yaml_bool_compile(cls, value):
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value

    @field_validator("feature_cache", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        return {False: "off", True: "auto"}.get(value, value) if isinstance(value, bool) else value  # YAML 1.1 `off`

    metric_for_best: Literal["accuracy", "macro_f1", "loss"] = Field(
        "accuracy", description="Validation metric that picks the best checkpoint, early stopping and a tuning trial."
    )
    patience: int | None = Field(
        None,
        ge=1,
        description="Early stopping after N evaluations without a better "
        "train.metric_for_best (before it first improves, a 0.5% lower validation loss counts).",
    )
    min_epochs: float = Field(
        1.0,
        ge=0,
        description="Early stopping never ends a run before this many epochs (a run often "
        "sits at the majority class for its first evaluations).",
    )
    seed: int = Field(42, description="Training seed: initialisation of the head, data order, dropout.")
    group_by_length: bool = Field(True, description="Length-grouped batches: less padding, same examples.")
    checkpoints: bool = Field(
        True, description="Write resumable checkpoints (each epoch end and every checkpoint_every steps)."
    )
    checkpoint_every: int | None = Field(None, ge=1, description="Also checkpoint every N optimizer steps.")
    keep_checkpoints: int = Field(2, ge=1, description="Keep the newest K checkpoints.")
    min_batch_size: int = Field(
        1, ge=1, description="Floor for the out-of-memory retry (batch halves, accumulation doubles)."
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward (non-reentrant): less memory, ~30% more compute."
    )
    feature_cache: Literal["auto", "off"] = Field(
        "auto",
        description="auto: layers a method leaves frozen (head, partial, LoRA on top layers) run once, their "
        "output cached on disk and replayed each step; off: recomputed every step.",
    )
    feature_cache_dtype: Literal["float16", "float32"] = Field("float16", description="Storage of the cached states.")
    compile: Literal["auto", "on", "off"] = Field(
        "auto",
        description="torch.compile the training forward (dynamic shapes, batches padded to multiples of 32 so it "
        "compiles a handful of times). auto: off, because on a CPU it measured slower than eager (bench/results/"
        "compile-*.md) and it is unmeasured on a GPU here; on: compile anyway.",
    )
    deterministic: bool = Field(
        False, description="Deterministic GPU kernels (slower); CPU runs are deterministic anyway."
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto: a CUDA GPU when one is visible, else the CPU."
    )


def validation_score(validation: dict, metric: str) -> float | None:
    """A finished run's score on validation under ``train.metric_for_best`` = ``metric``, higher is better (loss
    negated): how a study's tuning phase chooses a rate and how its report marks the trial it chose."""
    value = (validation or {}).get(metric)
    return None if value is None else float(value) * (-1 if metric == "loss" else 1)


class RunConfig(Section):
    name: str | None = Field(None, description="Run name; default <model>-<data>-<method>-<timestamp>.")
    output_dir: str = Field("runs", description="Directory that holds run directories.")
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    method: SerializeAsAny[MethodParams] = Field(
        default_factory=lambda: method_params_from_dict({"name": DEFAULT_METHOD})
    )
    train: TrainConfig = TrainConfig()

    @field_validator("method", mode="before")
    @classmethod
    def _method_from_registry(cls, value: Any) -> MethodParams:
        if isinstance(value, MethodParams):
            return value
        if isinstance(value, str):
            value = {"name": value}
        if not isinstance(value, dict):
            raise ValueError("method must be a mapping with a `name` key")
        return method_params_from_dict({"name": DEFAULT_METHOD, **value})

    @model_validator(mode="after")
    def _optimizer_fits_method(self) -> RunConfig:
        kinds = get_method(self.method.name).optimizer_kinds
        if self.train.optimizer not in kinds:
            raise ValueError(
                f"train.optimizer={self.train.optimizer} does not combine with method {self.method.name} "
                f"(its optimizer is part of the method); choose one of {', '.join(kinds)}"
            )
        return self

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a mapping that repeats a key (plain YAML keeps the last one silently: `lr` twice,
    or two `method:` sections, would train with whichever came last)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        # a merge key (`<<: *defaults`) brings keys the mapping may override: only the mapping's own keys must differ
        for key_node, _ in [(k, v) for k, v in node.value if k.tag != "tag:yaml.org,2002:merge"]:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} appears twice (lines {seen[key]} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def load_yaml(text: str):
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Set ``tree["a"]["b"] = value`` for ``"a.b"``, creating sections as needed."""
    *parents, leaf = dotted.split(".")
    node = tree
    for key in parents:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise TuneoffError(f"Override `{dotted}`: `{key}` is a value, not a section.")
        node = child
    node[leaf] = value


def parse_overrides(items: list[str]) -> list[tuple[str, Any]]:
    """Parse ``key=value`` strings; values are YAML (``[1,2]``, ``true``, ``1e-4``, ``null``)."""
    parsed = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise TuneoffError(f"Override `{item}` is not of the form key=value (e.g. method.r=8, train.lr=1e-4).")
        check_tree(item, f"override `{key}`")
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise TuneoffError(f"Override `{item}`: the value is not valid YAML ({problem}).") from exc
        check_tree(key, f"override `{key}`")
        check_tree(value, f"override `{key}`")
        parsed.append((key.strip(), value))
    return parsed


MAX_CONFIG_BYTES = 1_000_000
MAX_CONFIG_VALUES = 100_000


def check_tree(data: Any, source: str) -> None:
    """Refuse what no config needs and an attacker could send: a YAML alias bomb (a few hundred bytes whose aliases
    expand to billions of values once copied: values are counted as expanded, stopping at the limit), and NUL
    bytes in strings (no path or name can hold one)."""
    stack, seen = [data], 0
    while stack:
        value = stack.pop()
        seen += 1
        if seen > MAX_CONFIG_VALUES:
            raise TuneoffError(
                f"{source} expands to more than {MAX_CONFIG_VALUES:,} values (YAML aliases `*name` "
                "repeated?). Write the values out; a config never needs that many."
            )
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, str) and "\x00" in value:
            raise TuneoffError(f"{source}: the value {value!r} holds a NUL byte; names and paths cannot.")


def read_yaml(path: str | Path) -> dict:
    if "\x00" in str(path):
        raise TuneoffError(f"Config file name {str(path)!r} holds a NUL byte.")
    path = Path(path)
    if not path.is_file():
        raise TuneoffError(f"Config file {path} does not exist.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise TuneoffError(
            f"Config file {path} is {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}."
        )
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        what = "not valid UTF-8" if isinstance(exc, UnicodeDecodeError) else "not valid YAML"
        raise TuneoffError(f"Config file {path} is {what}: {exc}") from exc
    check_tree(data, f"Config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TuneoffError(
            f"Config file {path} must hold a mapping (model:, data:, method:, train:), not a list or value."
        )
    return data


def format_validation_error(exc: ValidationError, source: str, model: type[BaseModel] | None = None) -> str:
    """One line per error, at its dotted location; an unknown key lists the keys its section takes (from ``model``,
    the schema that was validated) so a misplaced key is found, not only a misspelt one."""
    lines = [f"Invalid configuration ({source}):"]
    for err in exc.errors():
        parts = [part for part in err["loc"] if not str(part).startswith("function-")]
        loc = ".".join(map(str, parts))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            known = _keys_at(model, parts[:-1])
            close = difflib.get_close_matches(str(parts[-1]), known or [], n=1)
            msg = (
                "unknown key (check the spelling; `tuneoff methods` lists method parameters)"
                if not known
                else f"unknown key; did you mean {close[0]!r}?"
                if close
                else f"unknown key; {'this section' if parts[:-1] else 'the top level'} takes {', '.join(known)}"
            )
        lines.append(f"  {loc or '<root>'}: {msg}")
    return "\n".join(lines)


def _keys_at(model: type[BaseModel] | None, path: list) -> list[str] | None:
    """The field names of the (sub-)model at ``path`` inside ``model``, or None where the path leaves the schema
    (a method's parameters, a free mapping)."""
    for part in path:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            return None
        candidates = [
            a
            for a in (get_args(field.annotation) or (field.annotation,))
            if isinstance(a, type) and issubclass(a, BaseModel)
        ]
        model = candidates[0] if len(candidates) == 1 else None
    return sorted(model.model_fields) if model is not None else None


def build_config(
    base: dict | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    source: str = "command line",
    names: dict[str, str | None] | None = None,
) -> RunConfig:
    """Merge a config mapping, section names (``--model``/``--data``/``--method``) and dotted overrides; validate.

    Choosing a different method starts that method's parameters afresh, so the parameters of a method named in
    a YAML file never leak into another method chosen on the command line.
    """
    tree: dict = dict(base or {})
    pairs = [(f"{section}.name", value) for section, value in (names or {}).items() if value is not None]
    pairs += parse_overrides(list(overrides))
    pairs.sort(key=lambda kv: kv[0] not in ("method", "method.name"))  # choose the method before its parameters
    for key, value in pairs:
        if key in ("method", "method.name"):
            current = tree.get("method")
            current = current if isinstance(current, dict) else {"name": current}
            tree["method"] = current if current.get("name") == value else {}
            key = "method.name"
        set_dotted(tree, key, value)
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        raise TuneoffError(format_validation_error(exc, source, RunConfig)) from exc


def load_config(
    path: str | Path | None, overrides: list[str] | tuple[str, ...] = (), names: dict[str, str | None] | None = None
) -> RunConfig:
    base = read_yaml(path) if path else {}
    source = f"{path} + command line" if path else "command line"
    return build_config(base, overrides, source, names)
