"""Config: YAML + dotted overrides, strict keys, clear errors naming the field."""

from __future__ import annotations

import pytest

from tuneoff.config import build_config, load_config
from tuneoff.core.errors import TuneoffError


def test_defaults_and_overrides_with_yaml_values():
    cfg = build_config(
        {}, ["method.r=4", "train.lr=1e-4", "method.target_modules=[query,key]", "data.max_train_samples=null"]
    )
    assert cfg.method.name == "lora" and cfg.method.r == 4 and cfg.method.target_modules == ["query", "key"]
    assert cfg.train.lr == 1e-4 and cfg.data.max_train_samples is None


def test_yaml_file_then_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("method: {name: lora_plus, r: 16, loraplus_lr_ratio: 2}\ntrain: {epochs: 3}\n")
    cfg = load_config(path, ["train.epochs=1"])
    assert (cfg.method.name, cfg.method.r, cfg.method.loraplus_lr_ratio, cfg.train.epochs) == ("lora_plus", 16, 2, 1)
    # Choosing another method drops the file's LoRA+ parameters instead of failing on them.
    cfg = load_config(path, [], names={"method": "partial"})
    assert cfg.method.name == "partial" and cfg.method.k == 2
    # The saved YAML reloads to the same config.
    again = tmp_path / "again.yaml"
    again.write_text(cfg.to_yaml())
    assert load_config(again) == cfg


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.learning_rate=1e-4"], r"train.learning_rate: unknown key; this section takes batch_size, .*, lr, "),
        (["train.epoch=3"], r"train.epoch: unknown key; did you mean 'epochs'\?"),
        (["data.max_len=64"], r"data.max_len: unknown key; did you mean 'max_length'\?"),
        (["train.lr=-1"], r"train.lr: Input should be greater than 0"),
        (["method.r=0"], r"r: Input should be greater than or equal to 1"),
        (["method.rank=8"], r"rank: unknown parameter for this method \(parameters of lora: .*r, alpha"),
        (["method.name=qloraa"], r"unknown method 'qloraa'; choose one of: adalora, bitfit, full"),
        (["train.scheduler=exponential"], r"train.scheduler: Input should be 'linear', 'cosine', 'constant' or 'step'"),
        (["model.trust_remote_code=true"], r"needs model.revision pinned"),
        (["epochs=3"], r"epochs: unknown key; the top level takes .*train"),
        (["train.epochs"], r"not of the form key=value"),
        (["train.lr=[1"], r"not valid YAML"),
        (["train.epochs.x=1"], r"`epochs` is a value, not a section|train.epochs"),
    ],
)
def test_bad_values_name_the_field(overrides, message):
    with pytest.raises(TuneoffError, match=message):
        build_config({"train": {"epochs": 2}}, overrides)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(TuneoffError, match="must hold a mapping"):
        load_config(path)
    with pytest.raises(TuneoffError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_a_bare_no_is_the_mixed_precision_setting_not_false(tmp_path):
    """YAML 1.1 reads `no` as false; `train.mixed_precision=no` must still mean fp32."""
    assert build_config({}, ["train.mixed_precision=no"]).train.mixed_precision == "no"
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  mixed_precision: no\n")
    assert load_config(path, []).train.mixed_precision == "no"
