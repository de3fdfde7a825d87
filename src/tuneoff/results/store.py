"""The results store: an SQLite index (stdlib ``sqlite3``) of studies and their runs, next to the run directories.

One database per results root (``results/tuneoff.sqlite``); each study's run directories live under
``results/<study>/runs/``. Every write is one transaction, so a study killed at any moment leaves the index
consistent: a run is ``done`` only once its directory is complete and its metrics are recorded.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from tuneoff.core.errors import TuneoffError
from tuneoff.core.provenance import git_commit

DB_NAME = "tuneoff.sqlite"
SINGLE_RUNS = "(single runs)"  # the pseudo-study of runs started by `tuneoff train`


def yaml_seed(config_yaml: str) -> int:
    import yaml

    return int(((yaml.safe_load(config_yaml) or {}).get("train") or {}).get("seed", 0))

SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    spec_yaml TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    study_dir TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    study TEXT NOT NULL REFERENCES studies(name),
    run_id TEXT NOT NULL,
    variant TEXT NOT NULL,
    params TEXT NOT NULL,          -- JSON: the grid values of this run
    seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed', 'pruned')),
    config_yaml TEXT NOT NULL,
    metrics TEXT,                  -- JSON: metrics.json
    resources TEXT,                -- JSON: resources.json
    versions TEXT,                 -- JSON: tuneoff, torch, transformers, peft, ...
    git_commit TEXT,
    device TEXT,
    run_dir TEXT,
    error TEXT,
    started TEXT,
    finished TEXT,
    run_info TEXT,                 -- JSON: run.json (dataset, label counts, versions, ...)
    PRIMARY KEY (study, run_id)
);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.root / DB_NAME, timeout=30, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise TuneoffError(f"Cannot open the results store in {self.root}: {exc}. Choose another --results dir.") from exc
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Stores written before 'pruned' existed: rebuild the runs table with the wider CHECK (SQLite cannot alter one)."""
        sql = self.db.execute("SELECT sql FROM sqlite_master WHERE name='runs'").fetchone()[0]
        if "'pruned'" in sql:
            if "run_info" not in sql:  # stores written before run_info: a nullable column, added in place
                with self.transaction() as db:
                    db.execute("ALTER TABLE runs ADD COLUMN run_info TEXT")
            return
        if "run_info" not in sql:
            self.db.execute("ALTER TABLE runs ADD COLUMN run_info TEXT")
        with self.transaction() as db:
            db.execute("ALTER TABLE runs RENAME TO runs_before_pruned")
            db.execute("CREATE TABLE runs" + SCHEMA.split("CREATE TABLE IF NOT EXISTS runs", 1)[1].strip().rstrip(";"))
            db.execute("INSERT INTO runs SELECT * FROM runs_before_pruned")
            db.execute("DROP TABLE runs_before_pruned")

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # --- studies ----------------------------------------------------------------------------------------------
    def study(self, name: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM studies WHERE name = ?", (name,)).fetchone()

    def add_study(self, name: str, spec_yaml: str, spec_hash: str, study_dir: Path) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO studies VALUES (?, ?, ?, ?, ?)", (name, spec_yaml, spec_hash, str(study_dir), now()))

    def studies(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM studies ORDER BY created").fetchall()

    # --- runs -------------------------------------------------------------------------------------------------
    def plan_run(self, study: str, run_id: str, variant: str, params: dict, seed: int, config_yaml: str) -> None:
        """Register a planned run; an existing row (done, failed, ...) is left as it is."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (study, run_id, variant, params, seed, status, config_yaml) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?)",
                (study, run_id, variant, json.dumps(params, sort_keys=True), seed, config_yaml),
            )

    def mark_running(self, study: str, run_id: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status='running', started=?, error=NULL WHERE study=? AND run_id=?", (now(), study, run_id))

    def mark_done(self, study: str, run_id: str, run_dir: Path, metrics: dict, resources: dict, run_info: dict) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='done', metrics=?, resources=?, versions=?, git_commit=?, device=?, run_dir=?, "
                "finished=?, error=NULL, run_info=? WHERE study=? AND run_id=?",
                (json.dumps(metrics), json.dumps(resources), json.dumps(run_info.get("versions")), git_commit(),
                 run_info.get("device"), str(run_dir), now(), json.dumps(run_info, default=str), study, run_id),
            )

    def record_single(self, run_dir: Path, config_yaml: str, metrics: dict, resources: dict, run_info: dict) -> None:
        """A run started by ``tuneoff train`` (not by a study), learned when it is published."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO studies VALUES (?, '', '', ?, ?)", (SINGLE_RUNS, str(self.root), now()))
            db.execute("INSERT OR REPLACE INTO runs (study, run_id, variant, params, seed, status, config_yaml, started) "
                       "VALUES (?, ?, ?, '{}', ?, 'pending', ?, ?)",
                       (SINGLE_RUNS, run_dir.name, run_info.get("method", ""), int(yaml_seed(config_yaml)), config_yaml, now()))
        self.mark_done(SINGLE_RUNS, run_dir.name, run_dir, metrics, resources, run_info)

    def record(self, study: str, outcome) -> None:
        """How a run of the study ended (an executor's Outcome: done, pruned or failed)."""
        if outcome.status == "done":
            self.mark_done(study, outcome.run_id, Path(outcome.run_dir), outcome.metrics, outcome.resources, outcome.run_info)
        elif outcome.status == "pruned":
            self.mark_pruned(study, outcome.run_id, outcome.error or "")
        else:
            self.mark_failed(study, outcome.run_id, outcome.error or "")

    def mark_pruned(self, study: str, run_id: str, reason: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status='pruned', error=?, finished=? WHERE study=? AND run_id=?", (reason, now(), study, run_id))

    def mark_failed(self, study: str, run_id: str, error: str) -> None:
        with self.transaction() as db:
            db.execute("UPDATE runs SET status='failed', error=?, finished=? WHERE study=? AND run_id=?", (error, now(), study, run_id))

    def runs(self, study: str | None = None, status: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        if study:
            sql, args = sql + " AND study = ?", args + [study]
        if status:
            sql, args = sql + " AND status = ?", args + [status]
        return self.db.execute(sql + " ORDER BY study, rowid", args).fetchall()

    def run(self, run_id: str) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM runs WHERE run_id = ? OR run_id LIKE ?", (run_id, run_id + "%")).fetchall()
