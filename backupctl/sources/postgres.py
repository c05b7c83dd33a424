"""PostgreSQL source: logical dumps (`pg_dump`) and physical base backups (`pg_basebackup`).

Logical (`method: pg_dump`): one plain-SQL dump per database, streamed from `pg_dump -Fp`
straight into the repository (uncompressed, so the engine compresses and deduplicates
it), plus the roles and tablespaces from `pg_dumpall --globals-only`. Paths:

    postgres/globals.sql                          yielded first, restored first
    postgres/database-properties/<name>.sql       per database, before its dump
    postgres/databases/<name>.sql                 one per database; name escaped by `safe_name`

The dumps are made without `--create`: the restore creates each database itself from
the recorded encoding, locale and owner, which is what lets a database be restored
under another name (clone). Ownership and privileges are kept in the dump. What lives
outside the database in the catalog (its ACL, comment, connection limit, `ALTER DATABASE
... SET` and `ALTER ROLE ... IN DATABASE ... SET`) is what `pg_dump --create` emits after
its `\\connect`: the database-properties file holds that output (made with every schema
excluded), and the restore applies it after the dump (see `database_properties_sql`).

Physical (`method: pg_basebackup`): `pg_basebackup -D - -Ft -X fetch` streams one tar of
the data directory with the WAL needed to make it consistent (`postgres/base.tar`).
It restores into an empty data directory that then starts with crash recovery; in place
(no target: the configured `data_dir`, server stopped) the directory's contents are
replaced (the engine takes a safety backup first). When the server is stopped on the
configured `data_dir` (no live postmaster.pid), a backup is an offline copy of that
directory in the same `base.tar` form (info `offline: true`, with a warning): that is how
the safety backup before an in-place restore is taken. An offline copy records no WAL
positions, so it is not a base for point-in-time recovery.

The password reaches the tools only through a temporary 0600 pgpass file (PGPASSFILE);
without `password_env`/`password_file` the user's own ~/.pgpass or PG* variables apply.

The class is built in layers, one module each: options, quoting and psql in
sources/postgres_client.py, the logical path in sources/postgres_logical.py, the physical
restore in sources/postgres_physical.py; this module adds the backup dispatch, the physical
and offline backups and the running-server checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backupctl.errors import SourceError
from backupctl.events import NullReporter
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest
from backupctl.sources.dbutil import child_env
from backupctl.sources.postgres_client import major_label
from backupctl.sources.postgres_logical import PostgresLogical
from backupctl.sources.postgres_physical import BASE_TAR, check_physical_version, restore_base_backup
from backupctl.sources.rowcount import recorded_counts


class PostgresSource(PostgresLogical):
    physical_method = "pg_basebackup"

    # -- backup ---------------------------------------------------------------------------

    def scan(self) -> Iterator[Entry]:
        stopped = self._stopped_data_dir()
        if stopped is not None:
            yield from self._scan_offline(stopped)
            return
        env = self.client_env(self._secrets)
        facts: list[dict[str, str]] = []
        if self.options.method == "pg_basebackup":
            version, version_num = self._server_version(self._secrets, env)
        else:
            (version, version_num), facts = self._version_and_facts(env)
        self._info = {
            "method": self.options.method,
            "server_version": version,
            "server_version_num": version_num,
            "major_version": major_label(version_num),
            "host": self.options.host,
            "port": self.options.port,
        }
        if self.options.method == "pg_basebackup":
            yield from self._scan_physical(env)
        else:
            yield from self._scan_logical(env, facts)

    def _scan_physical(self, env: dict[str, str]) -> Iterator[Entry]:
        argv = [
            "pg_basebackup",
            "-D",
            "-",
            "-Ft",
            "-X",
            "fetch",
            "--checkpoint=fast",
            "-v",
            *self.conn_args(),
        ]
        self._info["path"] = BASE_TAR
        yield Entry(path="postgres", kind="dir", mode=0o700)
        yield self._stream_entry(BASE_TAR, argv, env, "pg_basebackup")

    def _stopped_data_dir(self) -> Path | None:
        """The configured data_dir when a physical backup must copy it offline: it holds a
        cluster (PG_VERSION) and no server runs on it. None otherwise (back up over the network)."""
        d = self.options.data_dir
        if self.options.method != "pg_basebackup" or d is None:
            return None
        d = Path(d)
        try:
            (d / "PG_VERSION").read_text()
        except OSError:
            return None
        return None if postgres_running(d) else d

    def _scan_offline(self, data_dir: Path) -> Iterator[Entry]:
        """The stopped data directory as `base.tar` (GNU tar; the server's lock files left out)."""
        major = (data_dir / "PG_VERSION").read_text().strip()
        self._info = {
            "method": self.options.method,
            "offline": True,
            "major_version": major,
            "data_dir": str(data_dir),
            "path": BASE_TAR,
        }
        self._warn_offline(data_dir, BASE_TAR)
        argv = ["tar", "-C", str(data_dir), "-cf", "-", "--exclude=./postmaster.pid"]
        argv += ["--exclude=./postmaster.opts", "."]
        yield Entry(path="postgres", kind="dir", mode=0o700)
        yield self._stream_entry(BASE_TAR, argv, child_env({}), "tar of the stopped data directory")

    def _finished(self, outputs: list[tuple[str, str]]) -> None:
        for what, stderr in outputs:
            if what == "pg_basebackup":
                self._parse_basebackup_log(stderr)
        if getattr(self, "_row_counters", None):
            self._info["row_counts"] = recorded_counts(self._row_counters)

    def _parse_basebackup_log(self, stderr: str) -> None:
        start = re.search(r"write-ahead log start point: (\S+) on timeline (\d+)", stderr)
        end = re.search(r"write-ahead log end point: (\S+)", stderr)
        if start:
            self._info["start_lsn"] = start.group(1)
            self._info["timeline"] = int(start.group(2))
        if end:
            self._info["end_lsn"] = end.group(1)

    # -- restore (dispatched by DatabaseSource.restore; the globals are roles/tablespaces) -

    def check_in_place_restore(self, source_info: dict[str, Any]) -> None:
        """Before the safety backup: a running server on the data directory (physical), and
        the version check, so a refused restore changes nothing (its warnings come later,
        from the restore itself)."""
        super().check_in_place_restore(source_info)
        if source_info.get("method", self.options.method) == self.physical_method:
            dest = Path(self.options.data_dir) if self.options.data_dir else None
            check_physical_version(source_info, dest, NullReporter())
        else:
            with self._temp_secrets() as secrets:
                env = self.client_env(secrets)
                _, target_num = self._server_version(secrets, env)
                self.check_version(source_info, target_num, NullReporter())
                if source_info.get("databases"):
                    self._refuse_without_createdb(secrets, env)

    def _configured_datadir(self) -> str | Path | None:
        return self.options.data_dir

    def _refuse_running(self, datadir: Path) -> None:
        refuse_running_postgres(datadir)

    def _restore_physical(self, entries: Iterable[RestoreEntry], request: RestoreRequest) -> None:
        dest = request.target_dir or self.options.data_dir
        if dest is None:
            raise SourceError(
                "a physical PostgreSQL backup restores into a data directory",
                hint="give a target directory, or set data_dir in the deployment and stop the server",
            )
        dest = Path(dest)
        refuse_running_postgres(dest)
        check_physical_version(request.source_info, dest, request.reporter)
        restore_base_backup(entries, dest, request)


def postgres_running(data_dir: Path) -> int | None:
    """The PID of the server running on data_dir (postmaster.pid with a live PID), else None."""
    pidfile = data_dir / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError, NotADirectoryError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid


def refuse_running_postgres(data_dir: Path) -> None:
    """Refuse a live data directory, the way pgBackRest does: postmaster.pid with a live PID."""
    pid = postgres_running(data_dir)
    if pid is None:
        return
    raise SourceError(
        f"refusing to restore into {data_dir}: a PostgreSQL server is running on it (pid {pid})",
        hint="stop the server first, or restore into a new data directory",
    )
