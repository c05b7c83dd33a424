"""The local queue of undelivered notifications (one SQLite file in the state directory).

A channel that fails does not fail the backup: the event is kept here, per channel, and
retried before anything else the next time backupctl notifies (the next `backup create`,
`schedule run-due`, daemon round or `notify test`), oldest first, until delivered or older
than `notifications.retry_for`. Rows hold the event document (already free of secrets) and
the last error line; never a resolved secret.

Several processes may retry at once (two cron jobs, a daemon and a manual backup): a row is
claimed with a conditional UPDATE before it is delivered, so exactly one of them sends it.
A claim older than CLAIM_TTL (its process was killed mid-delivery) may be taken over.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from backupctl.notify.event import NotificationEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    event TEXT NOT NULL,
    queued TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1,
    last_error TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS marks (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


# Longer than any delivery attempt (timeouts are at most 120 s per channel).
CLAIM_TTL = dt.timedelta(minutes=10)


class Queue:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / "notify.db"
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.executescript(_SCHEMA)
        columns = {r["name"] for r in self._conn.execute("PRAGMA table_info(pending)")}
        if "claimed" not in columns:  # a queue written before claims existed
            try:
                self._conn.execute("ALTER TABLE pending ADD COLUMN claimed TEXT")
                self._conn.execute("ALTER TABLE pending ADD COLUMN claimed_at REAL")
            except sqlite3.OperationalError:  # another process added them meanwhile
                pass
        self._token = f"{os.getpid()}-{uuid.uuid4().hex}"

    def close(self) -> None:
        self._conn.close()

    def add(self, channel: str, event: NotificationEvent, error: str, queued: str) -> None:
        self._conn.execute(
            "INSERT INTO pending (channel, event, queued, last_error) VALUES (?, ?, ?, ?)",
            (channel, json.dumps(event.to_doc()), queued, error),
        )

    def pending(self) -> list[dict[str, Any]]:
        rows = self._conn.execute("SELECT * FROM pending ORDER BY seq").fetchall()
        return [{**dict(r), "event": json.loads(r["event"])} for r in rows]

    def claim(self, seq: int, now: float) -> bool:
        """Take row `seq` for delivery; False when another process holds a fresh claim on it
        (or it is gone). `now`: seconds since the epoch."""
        stale = now - CLAIM_TTL.total_seconds()
        cur = self._conn.execute(
            "UPDATE pending SET claimed = ?, claimed_at = ? "
            "WHERE seq = ? AND (claimed IS NULL OR claimed = ? OR claimed_at < ?)",
            (self._token, now, seq, self._token, stale),
        )
        return cur.rowcount == 1

    def remove(self, seq: int) -> None:
        self._conn.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def failed_again(self, seq: int, error: str) -> None:
        self._conn.execute(
            "UPDATE pending SET attempts = attempts + 1, last_error = ?, claimed = NULL, claimed_at = NULL "
            "WHERE seq = ?",
            (error, seq),
        )

    # Small marks, e.g. which missed slot of a deployment was already reported overdue.
    def mark(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM marks WHERE key = ?", (key,)).fetchone()
        return str(row["value"]) if row else None

    def set_mark(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO marks (key, value) VALUES (?, ?)", (key, value))
