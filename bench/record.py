"""Where a benchmark's numbers go: ``<stem>.json`` (everything it measured, for re-analysis) and ``<stem>.md`` (the
table a README cites, headed with the command, device, versions and date), both under ``bench/results/`` unless the
script was told otherwise; the table is printed too."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(stem: Path, data: dict, lines: list[str]) -> Path:
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return stem
