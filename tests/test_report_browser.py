"""The report opens in a real browser (Debian's headless Chromium) and its screenshot shows the plots.

Skipped where no Chromium is installed (`apt-get install chromium`)."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from conftest import write_study

from tuneoff.report.build import build
from tuneoff.study.execution import execute
from tuneoff.study.spec import load_spec

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_report_renders_with_plots_in_headless_chromium(tiny_bert, toy_csv, tmp_path):
    import matplotlib.image

    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "browser",
        seeds=[42],
        train={"epochs": 2, "eval_every": 4},
        variants={
            "head": {"method": {"name": "head"}},
            "lora": {"method": {"name": "lora"}, "grid": {"method.r": [2, 4]}},
        },
    )
    execute(load_spec(path), tmp_path / "r")
    report = build("browser", tmp_path / "r")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,2400",
            f"--screenshot={shot}",
            report.as_uri(),
        ],
        check=True,
        timeout=120,
        capture_output=True,
    )
    pixels = matplotlib.image.imread(shot)[..., :3]
    colourful = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).sum(axis=2) > 0.15
    assert colourful.mean() > 0.02, "the screenshot shows coloured plots, not just text"


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed")
def test_report_sections_and_nothing_wider_than_the_page(tiny_bert, toy_csv, tmp_path):
    """Measured in the browser: every element fits the page width (wide tables scroll inside their own box), and
    the verdict, the baseline and the mistakes sections are there."""
    import re

    path = write_study(
        tmp_path,
        tiny_bert,
        toy_csv,
        "widths",
        train={"epochs": 2, "eval_every": None},
        variants={"head": {"method": {"name": "head"}}, "lora": {"method": {"name": "lora"}}},
    )
    execute(load_spec(path), tmp_path / "r")
    report = build("widths", tmp_path / "r")
    probe = (
        "<script>const w = document.documentElement.clientWidth;"
        "const wide = [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > w + 1"
        " && !(e.parentElement && e.parentElement.closest('.scroll'))).map(e => e.tagName);"
        "document.body.setAttribute('data-wide', wide.join(','));"
        "document.body.setAttribute('data-sections', [...document.querySelectorAll('h2,h3,h4')].map(h => h.textContent).join('|'));"
        "</script></body>"
    )
    page = tmp_path / "probe.html"
    page.write_text(report.read_text().replace("</body>", probe))
    for width in (1200, 800):
        dom = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={tmp_path / 'profile'}",
                f"--window-size={width},2000",
                "--dump-dom",
                page.as_uri(),
            ],
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        ).stdout
        wide = re.search(r'data-wide="([^"]*)"', dom).group(1)
        assert wide == "", f"wider than a {width}px page: {wide}"
    sections = re.search(r'data-sections="([^"]*)"', dom).group(1).split("|")
    for needed in ("Verdict", "Quality", "Mistakes", "Most confidently wrong examples", "Calibration", "Significance"):
        assert needed in sections, needed
    assert "majority class" in dom and "test examples only" not in dom.split("How to read")[0]
