"""Hub names fail at once, with one message, when the hub cannot be reached and the cache does not hold them
(transformers and datasets would retry each download for tens of seconds, per run of a study)."""

from __future__ import annotations

import time

import pytest
import yaml
from typer.testing import CliRunner

from tuneoff.cli.app import app
from tuneoff.core import hub

runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch):
    """The hub host does not answer (a closed local port), and nothing says offline on purpose."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "HUB_HOST", ("127.0.0.1", 9))
    monkeypatch.setattr(hub, "_reachable", None)
    monkeypatch.setattr(hub, "go_offline", lambda: None)  # keep this test process's libraries as they were
    yield


def test_probe_of_an_unreachable_hub_is_quick_and_asked_once(no_network, monkeypatch):
    t0 = time.perf_counter()
    assert hub.reachable(timeout=1.0) is False
    assert time.perf_counter() - t0 < 3
    monkeypatch.setattr(hub, "HUB_HOST", ("10.255.255.1", 443))  # would time out; the answer is remembered
    assert hub.reachable(timeout=1.0) is False


def test_a_hub_model_fails_at_once_with_one_message(no_network):
    t0 = time.perf_counter()
    result = runner.invoke(app, ["train", "--model", "someorg/not-cached-model", "train.epochs=1"])
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert "'someorg/not-cached-model'" in text and "does not answer" in text and "Nothing was run" in text
    assert time.perf_counter() - t0 < 15


def test_a_hub_study_fails_before_any_run(no_network, tmp_path):
    spec = {
        "name": "hubby",
        "base": {"model": {"name": "roberta-base"}, "data": {"name": "ag_news"}},
        "variants": {"lora": {"method": {"name": "lora"}}, "full": {"method": {"name": "full"}}},
        "seeds": [1, 2],
    }
    path = tmp_path / "hubby.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = runner.invoke(app, ["run", str(path), "--results", str(tmp_path / "r")])
    text = " ".join(result.output.split())
    assert (
        result.exit_code == 2
        and "Study 'hubby' needs" in text
        and "'roberta-base'" in text
        and "'fancyzhx/ag_news'" in text
    )
    assert not (tmp_path / "r" / "tuneoff.sqlite").exists()


def test_offline_by_choice_and_a_cached_repository_are_fine(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_reachable", None)
    monkeypatch.setattr(hub, "go_offline", lambda: None)
    assert hub.reachable() is False
    monkeypatch.setattr(hub, "cached", lambda repo, kind="model": True)
    hub.require({"someorg/cached": "model"}, "x")  # cached: no error
