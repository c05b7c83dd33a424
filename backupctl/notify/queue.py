"""The local queue of undelivered notifications (one SQLite file in the state directory).

A channel that fails does not fail the backup: the event is kept here, per channel, and
retried before anything else the next time backupctl notifies (the next `backup create`,
`schedule run-due`, daemon round or `notify test`), oldest first, until delivered or older
than `notifications.retry_for`. Rows hold the event document (already free of secrets) and
the last error line; never a resolved secret.
"""

from __future__ import annotations

import json
import sqlite3
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


class Queue:
    def __init__(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.path = state_dir / "notify.db"
        self._conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.row_factory = sqlite3.Row
        self._conn.executescript(_SCHEMA)

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

    def remove(self, seq: int) -> None:
        self._conn.execute("DELETE FROM pending WHERE seq = ?", (seq,))

    def failed_again(self, seq: int, error: str) -> None:
        self._conn.execute(
            "UPDATE pending SET attempts = attempts + 1, last_error = ? WHERE seq = ?", (error, seq)
        )

    # Small marks, e.g. which missed slot of a deployment was already reported overdue.
    def mark(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM marks WHERE key = ?", (key,)).fetchone()
        return str(row["value"]) if row else None

    def set_mark(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO marks (key, value) VALUES (?, ?)", (key, value))
