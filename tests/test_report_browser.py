"""The report opens in a real browser (Debian's headless Chromium) and its screenshot shows the plots.

Skipped where no Chromium is installed (`apt-get install chromium`)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import yaml

from tuneoff.report import build
from tuneoff.study import execute, load_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_report_renders_with_plots_in_headless_chromium(tiny_bert, toy_csv, tmp_path):
    import matplotlib.image

    spec = {"name": "browser", "base": {"model": {"name": tiny_bert}, "data": {"name": toy_csv, "max_length": 16},
                                        "train": {"epochs": 2, "eval_every": 4}},
            "variants": {"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora"}, "grid": {"method.r": [2, 4]}}}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(spec))
    execute(load_spec(path), tmp_path / "r", say=lambda *_: None)
    report = build("browser", tmp_path / "r")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,2400", f"--screenshot={shot}",
                    report.as_uri()], check=True, timeout=120, capture_output=True)
    pixels = matplotlib.image.imread(shot)[..., :3]
    colourful = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).sum(axis=2) > 0.15
    assert colourful.mean() > 0.02, "the screenshot shows coloured plots, not just text"
