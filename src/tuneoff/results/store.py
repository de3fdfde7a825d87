"""The results store: an SQLite index (stdlib ``sqlite3``) of studies and their runs, next to the run directories.

One database per results root (``results/tuneoff.sqlite``); each study's run directories live under
``results/<study>/runs/``. Every write is one transaction, so a study killed at any moment leaves the index
consistent: a run is ``done`` only once its directory is complete and its metrics are recorded.

The schema is versioned (SQLite's ``user_version``) and migrated forward in order when an older store is opened
(``MIGRATIONS``); a store written by a newer tuneoff is refused rather than misread. Foreign keys are enforced. The
run directories are the source of truth: a store that is not a database, or has lost a table, is never silently
recreated empty; ``tuneoff runs rebuild`` (:func:`rebuild`) indexes the run directories again.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

import yaml

from tuneoff.core.errors import TuneoffError
from tuneoff.core.provenance import tuneoff_commit, tuneoff_version

log = logging.getLogger(__name__)

DB_NAME = "tuneoff.sqlite"
SINGLE_RUNS = "(single runs)"  # the pseudo-study of runs started by `tuneoff train`
SCHEMA_VERSION = 2

# Version 1: the schema of every store written before versioning (user_version 0 on disk).
SCHEMA_V1 = """
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


def _v1_from_unversioned(db: sqlite3.Connection) -> None:
    """Stores written before 'pruned' or run_info existed: rebuild the runs table with the wider CHECK (SQLite
    cannot alter one) and add the column; a store already at the version-1 shape is left as it is."""
    for statement in filter(str.strip, SCHEMA_V1.split(";")):  # not executescript: it would commit the transaction
        db.execute(statement)
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name='runs'").fetchone()[0]
    if "run_info" not in sql:
        db.execute("ALTER TABLE runs ADD COLUMN run_info TEXT")
    if "'pruned'" not in sql:
        db.execute("ALTER TABLE runs RENAME TO runs_before_pruned")
        db.execute("CREATE TABLE runs" + SCHEMA_V1.split("CREATE TABLE IF NOT EXISTS runs", 1)[1].strip().rstrip(";"))
        db.execute("INSERT INTO runs SELECT * FROM runs_before_pruned")
        db.execute("DROP TABLE runs_before_pruned")


def _v2_provenance_and_phase(db: sqlite3.Connection) -> None:
    """Version 2: runs record tuneoff's own version and commit (``git_commit`` held the commit of whatever directory
    the study was started from: renamed, its old values kept), and the phase of a study's protocol a run belongs to
    (``tune``: a learning-rate trial; ``final``: a seed of a condition's comparison)."""
    db.execute("ALTER TABLE runs RENAME COLUMN git_commit TO tuneoff_commit")
    db.execute("ALTER TABLE runs ADD COLUMN tuneoff_version TEXT")
    db.execute("ALTER TABLE runs ADD COLUMN phase TEXT NOT NULL DEFAULT 'final' CHECK (phase IN ('tune', 'final'))")


MIGRATIONS = [_v1_from_unversioned, _v2_provenance_and_phase]  # MIGRATIONS[i] takes a store from version i to i + 1
assert len(MIGRATIONS) == SCHEMA_VERSION
TABLES = ("studies", "runs")


def yaml_seed(config_yaml: str) -> int:
    return int(((yaml.safe_load(config_yaml) or {}).get("train") or {}).get("seed", 0))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def loads(row, key: str, default=None):
    """A JSON cell of a row; a malformed one is logged with its run and read as ``default``, never a crash."""
    value = row[key] if key in row.keys() else None
    if not value:
        return default
    try:
        return json.loads(value)
    except (TypeError, ValueError):
        where = f"{row['study']}/{row['run_id']}" if "run_id" in row.keys() else "a row"
        log.warning(
            "results store: the %s of run %s is not valid JSON; it is skipped (`tuneoff runs rebuild` "
            "re-reads it from the run directory)",
            key,
            where,
        )
        return default


def _rebuild_hint(path: Path) -> str:
    return (
        f"The run directories are the source of truth: `tuneoff runs rebuild --results {path.parent}` indexes them "
        f"again into a new store (the damaged file is kept as {path.name}.damaged-<time>)."
    )


def writable(root: Path) -> bool:
    """Whether this process may write the store in ``root`` (its directory, and the file where it exists)."""
    path = root / DB_NAME
    return os.access(root, os.W_OK) and (not path.exists() or os.access(path, os.W_OK))


class Store:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.path = self.root / DB_NAME
        # A results directory this user cannot write (another's, a read-only mount) is read without writing: SQLite's
        # WAL mode would otherwise need its -shm file and fail as "attempt to write a readonly database".
        self.read_only = self.path.is_file() and not writable(self.root)
        try:
            if self.read_only:
                self.db = sqlite3.connect(
                    f"file:{quote(str(self.path.resolve()))}?mode=ro&immutable=1", uri=True, isolation_level=None
                )
                self.db.row_factory = sqlite3.Row
                self._check_readable()
                return
            self.root.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA journal_mode=WAL")
            self._migrate()
        except sqlite3.DatabaseError as exc:  # "file is not a database", a torn header, ...
            self._close_quietly()
            raise TuneoffError(
                f"The results store {self.path} cannot be read as an SQLite database ({exc}). "
                + _rebuild_hint(self.path)
            ) from exc
        except OSError as exc:
            raise TuneoffError(
                f"Cannot open the results store in {self.root}: {exc}. Choose another --results dir."
            ) from exc

    def _check_readable(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise TuneoffError(
                f"The results store {self.path} is read-only here and at schema {version}; this tuneoff "
                f"reads schema {SCHEMA_VERSION} and would migrate it. Copy the results directory somewhere "
                "writable (cp -r) and read the copy."
            )

    def _refuse_writes(self) -> None:
        raise TuneoffError(
            f"The results store {self.path} is read-only for this user ({self.root} cannot be written): "
            "it can be read and reported (tuneoff report <study dir> --out <writable dir>), not changed. "
            "Run as its owner, or copy the results directory somewhere writable."
        )

    def _close_quietly(self) -> None:
        try:
            self.db.close()
        except (AttributeError, sqlite3.Error):
            pass

    def _migrate(self) -> None:
        """Bring the store to ``SCHEMA_VERSION``, one migration at a time, each in its own transaction."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise TuneoffError(
                f"The results store {self.path} was written by a newer tuneoff (schema {version}; this one "
                f"reads up to {SCHEMA_VERSION}). Upgrade tuneoff, or use another --results directory."
            )
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version > 0 and not set(TABLES) <= tables:
            missing = ", ".join(sorted(set(TABLES) - tables))
            raise TuneoffError(
                f"The results store {self.path} has lost its {missing} table(s); it is not recreated empty "
                "while runs sit on disk. " + _rebuild_hint(self.path)
            )
        for step in range(version, SCHEMA_VERSION):
            with self.transaction() as db:
                MIGRATIONS[step](db)
                db.execute(f"PRAGMA user_version = {step + 1}")
            if version:  # an existing store, not a new one being created
                log.info("results store %s migrated to schema %d", self.path, step + 1)

    @contextmanager
    def transaction(self):
        if self.read_only:
            self._refuse_writes()
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
            # An upsert, not INSERT OR REPLACE: replacing deletes the row, which the study's runs reference.
            db.execute(
                "INSERT INTO studies VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET spec_yaml=excluded.spec_yaml, "
                "spec_hash=excluded.spec_hash, study_dir=excluded.study_dir",
                (name, spec_yaml, spec_hash, str(study_dir), now()),
            )

    def studies(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM studies ORDER BY created").fetchall()

    # --- runs -------------------------------------------------------------------------------------------------
    def plan_run(
        self, study: str, run_id: str, variant: str, params: dict, seed: int, config_yaml: str, *, phase: str = "final"
    ) -> None:
        """Register a planned run; an existing row (done, failed, ...) is left as it is."""
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO runs (study, run_id, variant, params, seed, status, config_yaml, phase) "
                "VALUES (?, ?, ?, ?, ?, 'pending', ?, ?)",
                (study, run_id, variant, json.dumps(params, sort_keys=True), seed, config_yaml, phase),
            )

    def mark_running(self, study: str, run_id: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='running', started=?, error=NULL WHERE study=? AND run_id=?",
                (now(), study, run_id),
            )

    def mark_done(self, study: str, run_id: str, run_dir: Path, metrics: dict, resources: dict, run_info: dict) -> None:
        versions = run_info.get("versions") or {}
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='done', metrics=?, resources=?, versions=?, tuneoff_commit=?, tuneoff_version=?, "
                "device=?, run_dir=?, finished=?, error=NULL, run_info=? WHERE study=? AND run_id=?",
                (
                    json.dumps(metrics),
                    json.dumps(resources),
                    json.dumps(versions),
                    run_info.get("tuneoff_commit") or tuneoff_commit(),
                    versions.get("tuneoff") or tuneoff_version(),
                    run_info.get("device"),
                    str(run_dir),
                    now(),
                    json.dumps(run_info, default=str),
                    study,
                    run_id,
                ),
            )

    def record_single(self, run_dir: Path, config_yaml: str, metrics: dict, resources: dict, run_info: dict) -> None:
        """A run started by ``tuneoff train`` (not by a study), learned when it is published."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO studies VALUES (?, '', '', ?, ?)", (SINGLE_RUNS, str(self.root), now()))
            db.execute(
                "INSERT OR REPLACE INTO runs (study, run_id, variant, params, seed, status, config_yaml, started) "
                "VALUES (?, ?, ?, '{}', ?, 'pending', ?, ?)",
                (
                    SINGLE_RUNS,
                    run_dir.name,
                    run_info.get("method", ""),
                    int(yaml_seed(config_yaml)),
                    config_yaml,
                    now(),
                ),
            )
        self.mark_done(SINGLE_RUNS, run_dir.name, run_dir, metrics, resources, run_info)

    def record(self, study: str, outcome) -> None:
        """How a run of the study ended (an executor's Outcome: done, pruned, failed, or stopped on request)."""
        if outcome.status == "done":
            self.mark_done(
                study, outcome.run_id, Path(outcome.run_dir), outcome.metrics, outcome.resources, outcome.run_info
            )
        elif outcome.status == "pruned":
            self.mark_pruned(study, outcome.run_id, outcome.error or "", outcome.metrics)
        elif outcome.status == "stopped":
            self.mark_stopped(study, outcome.run_id, outcome.error or "")
        else:
            self.mark_failed(study, outcome.run_id, outcome.error or "")

    def mark_pruned(self, study: str, run_id: str, reason: str, metrics: dict | None = None) -> None:
        """A trial stopped by the pruner; ``metrics`` holds what it reached (its validation so far), if known."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='pruned', error=?, finished=?, metrics=? WHERE study=? AND run_id=?",
                (reason, now(), json.dumps(metrics) if metrics else None, study, run_id),
            )

    def mark_pending(self, study: str, run_id: str) -> None:
        """To be trained again: the next ``tuneoff run --resume`` runs it; its stored results are cleared with it."""
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='pending', metrics=NULL, resources=NULL, run_dir=NULL, error=NULL, "
                "started=NULL, finished=NULL WHERE study=? AND run_id=?",
                (study, run_id),
            )

    def mark_stopped(self, study: str, run_id: str, note: str) -> None:
        """Stopped on request (a signal): pending, not failed, so the next ``--resume`` continues it from the checkpoint
        it saved; unlike ``mark_pending`` its start time stays and ``note`` says where it stopped."""
        with self.transaction() as db:
            db.execute("UPDATE runs SET status='pending', error=? WHERE study=? AND run_id=?", (note, study, run_id))

    def mark_failed(self, study: str, run_id: str, error: str) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE runs SET status='failed', error=?, finished=? WHERE study=? AND run_id=?",
                (error, now(), study, run_id),
            )

    def runs(self, study: str | None = None, status: str | None = None, phase: str | None = None) -> list[sqlite3.Row]:
        sql, args = "SELECT * FROM runs WHERE 1=1", []
        for column, value in (("study", study), ("status", status), ("phase", phase)):
            if value:
                sql, args = sql + f" AND {column} = ?", args + [value]
        return self.db.execute(sql + " ORDER BY study, rowid", args).fetchall()

    def run(self, run_id: str, study: str | None = None) -> list[sqlite3.Row]:
        """Runs matching ``run_id`` exactly, else as a prefix (``_`` and ``%`` in ids are literal); ``study`` narrows
        it, and so does a ``<study>/<run id>`` reference."""
        if study is None and "/" in run_id and self.study(run_id.rsplit("/", 1)[0]) is not None:
            study, run_id = run_id.rsplit("/", 1)
        where, args = ("AND study = ?", [study]) if study else ("", [])
        exact = self.db.execute(f"SELECT * FROM runs WHERE run_id = ? {where}", [run_id, *args]).fetchall()
        if exact:
            return exact
        pattern = run_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        return self.db.execute(
            f"SELECT * FROM runs WHERE run_id LIKE ? ESCAPE '\\' {where}", [pattern, *args]
        ).fetchall()
