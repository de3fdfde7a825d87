"""Evidence lives in the repository: every result file the README cites is tracked by git."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def cited_result_files() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    paths = set()
    for match in re.findall(r"(?<![\w/])((?:bench|studies)/results/[\w.{},/-]+\.(?:md|json|csv))", text):
        braces = re.search(r"\{([^}]*)\}", match)
        options = braces.group(1).split(",") if braces else [None]
        paths |= {match if o is None else match.replace(braces.group(0), o) for o in options}
    return sorted(paths)


def test_every_cited_result_file_is_tracked():
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    cited = cited_result_files()
    assert cited, "the README cites its results"
    tracked = set(
        subprocess.run(["git", "ls-files", *cited], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    )
    assert not set(cited) - tracked, f"cited but not committed: {sorted(set(cited) - tracked)}"
    ignored = subprocess.run(["git", "check-ignore", *cited], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert not ignored, f"ignored by .gitignore: {ignored}"


def test_ci_runs_the_readmes_test_command_verbatim():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    test_commands = [line for block in blocks for line in block.splitlines() if "pytest" in line]
    assert len(test_commands) == 1, test_commands
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert test_commands[0].strip() in [line.strip() for line in ci.splitlines()]
