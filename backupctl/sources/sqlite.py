"""Source `sqlite`: a consistent copy of a live SQLite database.

The copy is made with SQLite's online backup API into a private temporary file, so
it is a transaction-consistent snapshot even while an application writes (WAL or
rollback journal). The copy is then stored like a file under the database's path.
Restore in place is an atomic replace: the restored copy is written next to the
database and renamed over it; stale `-wal`/`-shm` files of the old database are
removed so SQLite does not replay them onto the restored file.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Literal

from pydantic import Field

from backupctl.errors import SourceError
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest, Source, SourceOptions
from backupctl.sources.restore_fs import FsRestorer
from backupctl.tempdir import create_file, make_dir


def table_row_counts(conn: sqlite3.Connection) -> dict[str, int] | None:
    """Rows per table (virtual tables and SQLite's own sqlite_* tables left out), or None
    when a table cannot be counted: then nothing is recorded and a drill checks integrity only."""
    try:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND coalesce(sql, '') NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name"
            )
        ]
        quoted = ['"' + name.replace('"', '""') + '"' for name in names]
        return {
            name: int(conn.execute(f"SELECT count(*) FROM {q}").fetchone()[0])
            for name, q in zip(names, quoted, strict=True)
        }
    except sqlite3.Error:
        return None


class SQLiteOptions(SourceOptions):
    type: Literal["sqlite"] = "sqlite"
    path: Path = Field(description="The SQLite database file; copied with the online backup API.")


class SQLiteSource(Source):
    Options = SQLiteOptions

    def __init__(self, options: SourceOptions, reporter=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(options, reporter)
        self._tmpdir: str | None = None
        self._version = ""
        self._row_counts: dict[str, int] | None = None

    @property
    def method(self) -> str:
        return "sqlite"

    @property
    def db_path(self) -> Path:
        assert isinstance(self.options, SQLiteOptions)
        return Path(os.path.abspath(os.path.expanduser(str(self.options.path))))

    def scan(self) -> Iterator[Entry]:
        db = self.db_path
        if not db.is_file():
            raise SourceError(f"sqlite database {db} does not exist")
        # The copy is as secret as the database: a 0600 file in this run's private directory
        # (SQLite gives its journal the same mode), removed by the next run after a kill -9.
        self._tmpdir = str(make_dir("sqlite-"))
        copy = Path(self._tmpdir) / "copy.db"
        os.close(create_file(copy))
        try:
            # A URI so that mode=ro holds (nothing is ever created at the source side); the
            # path is percent-encoded so '#', '?' and '%' in it are part of the file name.
            uri = "file:" + urllib.parse.quote(os.fsencode(db), safe="/") + "?mode=ro"
            src = sqlite3.connect(uri, uri=True, timeout=30)
            dst = sqlite3.connect(copy)
            try:
                # pages=-1: the whole database in one step, under one read transaction.
                src.backup(dst, pages=-1)
                self._version = src.execute("select sqlite_version()").fetchone()[0]
                # Counted on the copy (no extra read of the live database): restore drills
                # compare the restored tables against them (backupctl/drill/sqlite.py).
                self._row_counts = table_row_counts(dst)
            finally:
                dst.close()
                src.close()
        except sqlite3.Error as exc:
            raise SourceError(f"sqlite database {db}: {exc}") from None
        st = os.stat(db)
        size = os.path.getsize(copy)

        def opener() -> IO[bytes]:
            return open(copy, "rb")  # noqa: SIM115 - the engine closes it

        yield Entry(
            path=str(db).lstrip("/"),
            kind="file",
            mode=st.st_mode & 0o7777,
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            size=size,
            open=opener,
        )

    def info(self) -> dict[str, object]:
        info: dict[str, object] = {"sqlite_version": self._version}
        if self._row_counts is not None:
            info["row_counts"] = self._row_counts
        return info

    def finish(self) -> None:
        self._cleanup()

    def abort(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def restore(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        if request.target_dir is None:
            # In place: remove the old database's WAL/SHM after the atomic replace.
            FsRestorer(None, request.reporter).restore(entries)
            for suffix in ("-wal", "-shm", "-journal"):
                try:
                    os.unlink(str(self.db_path) + suffix)
                except FileNotFoundError:
                    pass
        else:
            FsRestorer(request.target_dir, request.reporter).restore(entries)
