"""The documentation: the site builds strictly (broken links and references fail), the configuration and methods
references are generated from the code and name every key and method, and the README is a short front page whose
links resolve."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "docs"))


def test_the_site_builds_strictly(tmp_path):
    pytest.importorskip("mkdocs")
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "run_study" in api and "StudyResult" in api, "the API reference is rendered from the docstrings"


def test_the_configuration_reference_lists_every_key_with_its_default():
    import hooks

    from tuneoff.analysis.settings import AnalysisSettings
    from tuneoff.config import DataConfig, ModelConfig, TrainConfig
    from tuneoff.study.protocol import TuneSpec

    page = hooks.configuration()
    for prefix, model in (
        ("model", ModelConfig),
        ("data", DataConfig),
        ("train", TrainConfig),
        ("tune", TuneSpec),
        ("analysis", AnalysisSettings),
    ):
        for key in model.model_fields:
            assert f"`{prefix}.{key}`" in page, f"{prefix}.{key} missing"
    assert "| `train.lr` | `None` |" in page and "| `data.augment.copies` | `0` |" in page


def test_the_methods_reference_lists_every_method_and_parameter():
    import hooks

    from tuneoff.methods import all_methods

    page = hooks.methods()
    for name, method in all_methods().items():
        assert f"### `{name}`" in page
        for key in method.Params.model_fields:
            if key != "name":
                assert f"`method.{key}`" in page, f"{name}: method.{key}"


def test_the_readme_is_a_front_page_whose_links_resolve():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 210
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not link.startswith(("http://", "https://", "mailto:"))]
    assert local, "the README links into the docs"
    assert [link for link in local if not (REPO / link).exists()] == []
    assert "docs/" in " ".join(local)


@pytest.mark.parametrize("page", ["configuration.md", "methods.md"])
def test_the_committed_references_match_the_code(page):
    """The references are committed (readable on GitHub and in an editor, not only in the built site) and must be
    what the code generates now: after a change to the config models or a method, run ``python docs/hooks.py``."""
    import hooks

    text = (REPO / "docs" / page).read_text(encoding="utf-8")
    assert "<!-- end generated -->" in text and len(text.splitlines()) > 100
    assert hooks.fill(text) == text, f"docs/{page} is stale: run `python docs/hooks.py` and commit it"
