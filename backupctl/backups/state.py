"""Local job state: an embedded SQLite database under the XDG state directory.

The repositories' manifests are the truth for completed backups. This database holds
what manifests cannot: queued, running and failed jobs, per-destination upload state,
scheduler bookkeeping, and a cache of decoded manifest summaries (manifests are
immutable, so the cache never goes stale; it is dropped when a backup is deleted).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from backupctl.procs import pid_alive
from backupctl.records import BackupSummary

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    deployment TEXT NOT NULL,
    method TEXT NOT NULL DEFAULT '',
    type TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    created_by TEXT NOT NULL DEFAULT 'manual',
    started TEXT,
    finished TEXT,
    duration_s REAL,
    size_bytes INTEGER,
    stored_bytes INTEGER,
    comment TEXT NOT NULL DEFAULT '',
    error TEXT,
    pid INTEGER,
    hostname TEXT,
    destinations TEXT NOT NULL DEFAULT '{}',
    repository_id TEXT,
    location TEXT
);
CREATE INDEX IF NOT EXISTS jobs_deployment ON jobs(deployment, started);
CREATE TABLE IF NOT EXISTS manifest_cache (
    repository_id TEXT NOT NULL,
    id TEXT NOT NULL,
    summary TEXT NOT NULL,
    PRIMARY KEY (repository_id, id)
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

_JOB_COLUMNS = (
    "id",
    "deployment",
    "method",
    "type",
    "status",
    "created_by",
    "started",
    "finished",
    "duration_s",
    "size_bytes",
    "stored_bytes",
    "comment",
    "error",
    "pid",
    "hostname",
    "destinations",
    "repository_id",
    "location",
)
# Columns added after the first release: (name, declaration), added to older databases on open.
_ADDED_COLUMNS = (("location", "TEXT"),)


def _journal_mode_wal(conn: sqlite3.Connection, wait: float = 30.0) -> None:
    """Switch to WAL, waiting for other processes. Several processes opening a new state
    database at once (two cron jobs, `schedule run-due` with parallel backups) race on the
    switch, and SQLite answers the loser "database is locked" at once, without its busy
    timeout (seen as an internal error in 1 of 40 such starts)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


class StateDB:
    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = directory / "state.db"
        self._local = threading.local()
        with self._conn() as conn:
            conn.executescript(_SCHEMA)
            have = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
            for name, decl in _ADDED_COLUMNS:
                if name not in have:
                    try:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {decl}")
                    except sqlite3.OperationalError:  # another process added it meanwhile
                        pass

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            _journal_mode_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
        return conn

    # ---- jobs ------------------------------------------------------------------

    def insert_job(self, **fields: Any) -> None:
        fields.setdefault("pid", os.getpid())
        fields.setdefault("hostname", socket.gethostname())
        if isinstance(fields.get("destinations"), dict):
            fields["destinations"] = json.dumps(fields["destinations"])
        cols = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        self._conn().execute(f"INSERT OR REPLACE INTO jobs ({cols}) VALUES ({marks})", tuple(fields.values()))

    def update_job(self, job_id: str, **fields: Any) -> None:
        if isinstance(fields.get("destinations"), dict):
            fields["destinations"] = json.dumps(fields["destinations"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self._conn().execute(f"UPDATE jobs SET {sets} WHERE id = ?", (*fields.values(), job_id))

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return self._job(row) if row else None

    def jobs(self, deployment: str | None = None) -> list[dict[str, Any]]:
        if deployment:
            rows = self._conn().execute("SELECT * FROM jobs WHERE deployment = ?", (deployment,))
        else:
            rows = self._conn().execute("SELECT * FROM jobs")
        return [self._job(r) for r in rows]

    def settle_job(self, job_id: str, summary: BackupSummary, primary: str | None) -> dict[str, Any] | None:
        """Correct a job row that contradicts a manifest: the manifest is the truth.

        A process killed after its commit point (manifest saved) leaves the row Running
        (shown Failed once the process is gone) or Failed. Such a backup is Completed: the
        row takes the manifest's figures, the primary destination is "stored", and uploads
        that never ran are "not uploaded" (failed ones stay failed). A row of a process that
        is still running is left to that process. Returns the corrected job (None: no row).
        """
        job = self.get_job(job_id)
        if job is None or job["status"] == "Completed":
            return job
        if job["status"] in ("Running", "Queued"):  # alive: it finishes the row itself
            return {**job, "status": "Completed", "error": None}
        states: dict[str, Any] = dict(job["destinations"])
        for name, state in states.items():
            if state.get("state") in ("pending", "uploading"):
                states[name] = {"state": "not uploaded"}
        if primary is not None:
            states[primary] = {"state": "stored"}
        failed = [n for n, st in states.items() if st.get("state") == "failed"]
        error = "; ".join(f"upload to {n} failed: {states[n].get('error')}" for n in failed) or None
        fields = {
            "status": "Completed",
            "error": error,
            "finished": summary.get("finished"),
            "duration_s": summary.get("duration_s"),
            "size_bytes": summary.get("size_bytes"),
            "stored_bytes": summary.get("stored_bytes"),
            "type": summary.get("type") or job["type"],
            "repository_id": summary.get("repository_id") or job["repository_id"],
            "destinations": states,
        }
        self.update_job(job_id, **fields)
        return {**job, **fields}

    def delete_job(self, job_id: str) -> None:
        self._conn().execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    @staticmethod
    def _job(row: sqlite3.Row) -> dict[str, Any]:
        job = {k: row[k] for k in _JOB_COLUMNS}
        job["destinations"] = json.loads(job["destinations"] or "{}")
        # A Running job whose process is gone was killed: it is Failed, never Completed.
        if (
            job["status"] in ("Running", "Queued")
            and job["hostname"] == socket.gethostname()
            and not pid_alive(job["pid"])
        ):
            job["status"] = "Failed"
            job["error"] = (
                job["error"] or "interrupted: the backupctl process ended before the backup completed"
            )
        return job

    # ---- manifest cache ----------------------------------------------------------

    def cached_summary(self, repository_id: str, backup_id: str) -> BackupSummary | None:
        row = (
            self._conn()
            .execute(
                "SELECT summary FROM manifest_cache WHERE repository_id = ? AND id = ?",
                (repository_id, backup_id),
            )
            .fetchone()
        )
        summary: BackupSummary | None = json.loads(row["summary"]) if row else None
        return summary

    def cache_summary(self, repository_id: str, backup_id: str, summary: BackupSummary) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO manifest_cache (repository_id, id, summary) VALUES (?, ?, ?)",
            (repository_id, backup_id, json.dumps(summary)),
        )

    def forget_summary(self, backup_id: str) -> None:
        self._conn().execute("DELETE FROM manifest_cache WHERE id = ?", (backup_id,))

    # ---- small key/value store (scheduler bookkeeping) ------------------------------

    def get(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def set(self, key: str, value: str) -> None:
        self._conn().execute("INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, value))
