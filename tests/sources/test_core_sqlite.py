"""SQLite source: a consistent copy while an application writes, and in-place restore."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import helpers
import pytest


class Writer(threading.Thread):
    """An application inserting rows (ids 1, 2, 3, ...) one transaction at a time."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.stop = threading.Event()
        self.committed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = sqlite3.connect(self.db, timeout=60, isolation_level=None)
            while not self.stop.is_set():
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t (payload) VALUES (randomblob(2000))")
                conn.execute("INSERT INTO audit (t_id) VALUES (last_insert_rowid())")
                conn.execute("COMMIT")
                self.committed += 1
            conn.close()
        except BaseException as exc:  # surfaced by the test
            self.error = exc


def _make_db(path: Path, journal_mode: str, rows: int = 6000) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0].lower() == journal_mode.lower()
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL)")
    conn.execute("CREATE TABLE audit (t_id INTEGER PRIMARY KEY REFERENCES t(id))")
    conn.execute("CREATE INDEX t_payload ON t(payload)")
    conn.execute("BEGIN")
    for _ in range(rows):
        conn.execute("INSERT INTO t (payload) VALUES (randomblob(2000))")
        conn.execute("INSERT INTO audit (t_id) VALUES (last_insert_rowid())")
    conn.execute("COMMIT")
    conn.close()


def _check_snapshot(path: Path, low: int, high: int) -> int:
    """integrity_check ok, ids 1..N without gaps (a prefix), both tables agree; returns N."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        ids = [r[0] for r in conn.execute("SELECT id FROM t ORDER BY id")]
        audit = [r[0] for r in conn.execute("SELECT t_id FROM audit ORDER BY t_id")]
    finally:
        conn.close()
    n = len(ids)
    assert ids == list(range(1, n + 1)), "the copy has gaps: not a transaction-consistent snapshot"
    assert audit == ids, "the two tables disagree: a transaction was copied half"
    assert low <= n <= high, (low, n, high)
    return n


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_backup_while_the_application_writes(tmp_path: Path, make_deployment, journal_mode: str) -> None:
    app = tmp_path / "app"
    app.mkdir()
    db = app / "app.db"
    _make_db(db, journal_mode)
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    writer = Writer(db)
    writer.start()
    try:
        deadline = time.monotonic() + 30
        while writer.committed < 50:
            assert writer.error is None, writer.error
            assert time.monotonic() < deadline
            time.sleep(0.01)
        before = 6000 + writer.committed
        result = dep.run("backup", "create", "app", "-o", "json")
        after = 6000 + writer.committed + 1  # a commit may be in flight
    finally:
        writer.stop.set()
        writer.join(timeout=60)
    assert writer.error is None, writer.error
    assert result.returncode == 0, str(result)
    record = result.json()
    assert record["method"] == "sqlite" and record["status"] == "Completed"
    assert record["source_versions"].get("sqlite.sqlite_version") == sqlite3.sqlite_version
    assert writer.committed > 50, "the application did not keep writing during the backup"

    target = tmp_path / "restore"
    dep.ok("backup", "restore", record["id"], "--target", target)
    restored_db = helpers.restored(target, db)
    assert restored_db.is_file()
    n = _check_snapshot(restored_db, before, after)
    shown = dep.show(record["id"])
    assert shown["sources"][0]["files"] == 1
    assert shown["sources"][0]["describe"]["path"] == str(db)
    # The application's own database is still fine and has more rows than the snapshot.
    total = _check_snapshot(db, n, 10**9)
    assert total >= n


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_in_place_restore_replaces_the_database_atomically(
    tmp_path: Path, make_deployment, journal_mode: str
) -> None:
    db = tmp_path / "live" / "app.db"
    db.parent.mkdir()
    _make_db(db, journal_mode, rows=500)
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    backup_id = dep.create()

    # The application goes on: more rows, a dropped table, uncheckpointed WAL content.
    conn = sqlite3.connect(db, isolation_level=None)
    if journal_mode == "wal":
        conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("BEGIN")
    for _ in range(300):
        conn.execute("INSERT INTO t (payload) VALUES (randomblob(100))")
    conn.execute("COMMIT")
    conn.execute("DROP TABLE audit")
    inode_before = db.stat().st_ino

    refused = dep.run("backup", "restore", backup_id)
    assert refused.returncode == 14, str(refused)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 800
    conn.close()
    if journal_mode == "wal":
        # Leave a stale WAL behind as a crashed app would: it must not be replayed onto the restored file.
        wal = Path(str(db) + "-wal")
        c2 = sqlite3.connect(db, isolation_level=None)
        c2.execute("PRAGMA wal_autocheckpoint=0")
        c2.execute("INSERT INTO t (payload) VALUES (x'00')")
        assert wal.exists() and wal.stat().st_size > 0
        saved = wal.read_bytes()
        c2.close()
        wal.write_bytes(saved)

    dep.ok("backup", "restore", backup_id, "--yes")
    assert db.stat().st_ino != inode_before, "not replaced by rename (written in place?)"
    leftovers = [p.name for p in db.parent.iterdir() if p.name not in ("app.db", "app.db-wal", "app.db-shm")]
    assert not leftovers, leftovers
    # The application opens it and sees exactly the backed-up state.
    _check_snapshot(db, 500, 500)
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("SELECT count(*) FROM audit").fetchone()[0] == 500
    conn.execute("INSERT INTO t (payload) VALUES (x'01')")
    assert conn.execute("SELECT max(id) FROM t").fetchone()[0] >= 501
    conn.close()


def test_missing_database_fails_the_backup(tmp_path: Path, make_deployment) -> None:
    dep = make_deployment([{"type": "sqlite", "path": str(tmp_path / "nope.db")}])
    result = dep.run("backup", "create", "app")
    helpers.assert_one_line_error(result, 1, "nope.db")
    records = dep.list()
    assert [r["status"] for r in records] == ["Failed"]
    assert not (dep.repository / "snapshots").exists() or not any((dep.repository / "snapshots").iterdir())


def test_files_and_sqlite_in_one_deployment(tmp_path: Path, make_deployment, sample_tree: Path) -> None:
    db = tmp_path / "db" / "x.sqlite"
    db.parent.mkdir()
    _make_db(db, "wal", rows=50)
    dep = make_deployment(
        [{"type": "files", "paths": [str(sample_tree)]}, {"type": "sqlite", "path": str(db)}]
    )
    rec = dep.ok("backup", "create", "app", "-o", "json").json()
    assert rec["method"] == "files,sqlite"
    target = tmp_path / "r"
    dep.ok("backup", "restore", rec["id"], "--target", target)
    _check_snapshot(helpers.restored(target, db), 50, 50)
    helpers.assert_same_tree(
        helpers.snapshot_tree(sample_tree), helpers.snapshot_tree(helpers.restored(target, sample_tree))
    )
    assert os.path.getsize(helpers.restored(target, db)) > 0
