"""The results store is versioned: an old store migrates in order, a newer or damaged one is refused with the way to
rebuild it, foreign keys hold, malformed cells never crash a reader, and records say which tuneoff wrote them."""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from tuneoff.core.errors import TuneoffError
from tuneoff.results.store import DB_NAME, SCHEMA_VERSION, Store, loads

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1.sqlite"  # written by tuneoff 0.1.0 (no user_version)


def old_store(tmp_path) -> Path:
    root = tmp_path / "results"
    root.mkdir()
    shutil.copy(FIXTURE, root / DB_NAME)
    return root


def test_a_store_of_the_previous_schema_opens_and_migrates(tmp_path):
    root = old_store(tmp_path)
    assert sqlite3.connect(root / DB_NAME).execute("PRAGMA user_version").fetchone()[0] == 0
    store = Store(root)
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    rows = {r["run_id"]: r for r in store.runs("old")}
    assert sorted(rows) == ["full-s1", "lora-s1"]
    assert rows["lora-s1"]["status"] == "done" and rows["full-s1"]["error"] == "boom"
    assert json.loads(rows["lora-s1"]["metrics"])["test"]["accuracy"] == 0.8
    assert {r["phase"] for r in rows.values()} == {"final"}
    assert "tuneoff_commit" in rows["lora-s1"].keys() and "git_commit" not in rows["lora-s1"].keys()
    store.close()
    Store(root).close()  # a second open finds it current: nothing to migrate


def test_a_newer_store_is_refused(tmp_path):
    root = old_store(tmp_path)
    sqlite3.connect(root / DB_NAME).execute("PRAGMA user_version = 99")
    with pytest.raises(TuneoffError, match="newer tuneoff"):
        Store(root)


def test_a_file_that_is_not_a_database_names_the_rebuild(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not a database at all, just text " * 100)
    with pytest.raises(TuneoffError, match="cannot be read as an SQLite database.*tuneoff runs rebuild"):
        Store(tmp_path)


def test_a_dropped_runs_table_is_not_silently_recreated(tmp_path):
    Store(tmp_path).close()
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.execute("DROP TABLE runs")
    db.commit()
    db.close()
    with pytest.raises(TuneoffError, match="lost its runs table.*tuneoff runs rebuild"):
        Store(tmp_path)


def test_foreign_keys_are_enforced(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(sqlite3.IntegrityError):
        store.plan_run("no such study", "x-s1", "x", {}, 1, "")
    store.add_study("s", "name: s\n", "h", tmp_path / "s")
    store.plan_run("s", "x-s1", "x", {}, 1, "")
    store.add_study("s", "name: s\n", "h2", tmp_path / "s")  # re-registering a study keeps its runs
    assert [r["run_id"] for r in store.runs("s")] == ["x-s1"]
    store.close()


def test_records_carry_tuneoffs_version_and_commit(tmp_path):
    store = Store(tmp_path)
    store.add_study("s", "name: s\n", "h", tmp_path / "s")
    store.plan_run("s", "a-s1", "a", {}, 1, "")
    outcome = SimpleNamespace(
        status="done",
        run_id="a-s1",
        run_dir=str(tmp_path),
        metrics={"test": {}},
        resources={},
        run_info={"versions": {"tuneoff": "9.9.9", "tuneoff_commit": "abc"}, "device": "cpu"},
    )
    store.record("s", outcome)
    [row] = store.runs("s")
    assert row["tuneoff_version"] == "9.9.9" and row["tuneoff_commit"]
    store.close()


def test_a_malformed_json_cell_is_named_and_skipped(tmp_path, caplog):
    store = Store(tmp_path)
    store.add_study("s", "name: s\n", "h", tmp_path / "s")
    store.plan_run("s", "a-s1", "a", {}, 1, "")
    store.db.execute("UPDATE runs SET metrics='{not json' WHERE run_id='a-s1'")
    [row] = store.runs("s")
    with caplog.at_level(logging.WARNING, logger="tuneoff"):
        assert loads(row, "metrics", {}) == {}
    assert "s/a-s1" in caplog.text and "metrics" in caplog.text
    store.close()


def test_run_ids_match_literally_and_by_study(tmp_path):
    store = Store(tmp_path)
    for study in ("one", "two"):
        store.add_study(study, f"name: {study}\n", "h", tmp_path / study)
        store.plan_run(study, "head-s1", "head", {}, 1, "")
    store.plan_run("one", "lora_r8-s1", "lora", {}, 1, "")
    store.plan_run("one", "loraXr8-s1", "lora", {}, 1, "")
    assert len(store.run("head-s1")) == 2
    assert [r["study"] for r in store.run("head-s1", study="two")] == ["two"]
    assert [r["study"] for r in store.run("one/head-s1")] == ["one"]
    assert [r["run_id"] for r in store.run("lora_r8")] == ["lora_r8-s1"], "`_` is a literal, not a wildcard"
    store.close()


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv to act as another user"
)
def test_a_results_directory_another_user_cannot_write_is_read_and_reported_elsewhere(tiny_bert, toy_csv):
    """Reading needs no write: a results directory this user cannot write (another's, a read-only mount) was called
    "cannot be read as an SQLite database" with advice to rebuild it, which then failed with a traceback. It is listed
    and reported (to --out), and commands that must write say read-only and exit 2."""
    import subprocess
    import sys
    import tempfile

    from conftest import write_study
    from typer.testing import CliRunner

    from tuneoff.cli.app import app

    root = Path(tempfile.mkdtemp(prefix="tuneoff-ro-"))
    try:
        model, data = shutil.copytree(tiny_bert, root / "model"), shutil.copy(toy_csv, root / "toy.csv")
        spec = write_study(root, str(model), str(data), "ro", seeds=[1], train={"epochs": 1})
        assert CliRunner().invoke(app, ["run", str(spec), "--results", str(root / "r")]).exit_code == 0
        out = root / "out"
        out.mkdir()
        for path in [root, *root.rglob("*")]:
            path.chmod(0o777 if path == out else (0o755 if path.is_dir() else 0o644))
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "tuneoff"]
        env = {**os.environ, "HOME": str(out)}

        def run(*args):
            done = subprocess.run([*as_nobody, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)
            return done.returncode, " ".join((done.stdout + done.stderr).split())

        code, text = run("runs", "list", "--results", root / "r")
        assert code == 0 and "lora-s1" in text, text
        code, text = run("report", root / "r" / "ro")
        assert code == 2 and "is read-only for this user" in text and "--out" in text and "Traceback" not in text, text
        code, text = run("report", root / "r" / "ro", "--out", out / "report")
        assert code == 0 and (out / "report" / "report.html").is_file(), text
        code, text = run("runs", "rebuild", "--results", root / "r")
        assert code == 2 and "read-only" in text and "Traceback" not in text, text
        code, text = run("run", spec, "--results", root / "r", "--resume")
        assert code == 2 and "read-only" in text and "Traceback" not in text, text
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_a_study_whose_runs_all_failed_says_so_not_run_it_first(tmp_path):
    """`tuneoff report` on a study whose every run failed said "Run it first": it names the failures and the last
    error, and how to continue."""
    from tuneoff.analysis.groups import load_conditions

    store = Store(tmp_path)
    store.add_study("s", "name: s\n", "h", tmp_path / "s")
    for run_id in ("a-s1", "b-s1"):
        store.plan_run("s", run_id, run_id[0], {}, 1, "{}")
        store.mark_failed("s", run_id, "Traceback ...\nRuntimeError: CUDA out of memory")
    with pytest.raises(
        TuneoffError,
        match=r"no comparison run finished; 2 of its 2 runs failed \(the last: b-s1: "
        r"RuntimeError: CUDA out of memory\)",
    ):
        load_conditions(store, "s")
    store.close()
