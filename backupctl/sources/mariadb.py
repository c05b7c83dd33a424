"""MariaDB/MySQL source: logical dumps (`mariadb-dump`) and physical backups (`mariabackup`).

Logical (`method: mariadb-dump`; `mysqldump` where that is what is installed): one dump per
database with `--single-transaction --routines --events --triggers`, streamed into the
repository, plus users and grants (`mariadb-dump --system=users`, MariaDB only). Paths:

    mariadb/globals.sql                   yielded first, restored first
    mariadb/databases/<name>.sql          one per database; name escaped by `safe_name`

Dumps are made without `--databases`, so they hold no `CREATE DATABASE`/`USE` and can be
restored under another name (clone); the restore creates the database from the recorded
character set and collation.

Physical (`method: mariabackup`): `mariabackup --backup --stream=xbstream`, one entry
(`mariadb/mariabackup.xbstream`). Full, or incremental from the parent's `to_lsn` (the
engine calls `set_parent(parent_info)` before `scan()`). `restore_chain` extracts a full
backup and its increments, prepares them in order and moves the result into an empty
data directory that then starts. `info()` records the binary log position of the backup's
consistent point (binlog_file, binlog_pos, binlog_gtid, from mariabackup's `binlog_pos`),
where a point-in-time restore starts replaying binary logs (pitr.mariadb).

In place (no target: the configured `datadir`, server stopped) the directory's contents are
replaced once the backup is prepared (the engine takes a safety backup first); the
directory itself, its owner and mode stay. mariabackup needs a running server, so when the
server is stopped on the configured `datadir` a backup is an offline copy of that directory
in the same stored form (`mbstream -c` of its files; info `offline: true`, with a warning):
that is how the safety backup before an in-place restore is taken. It restores by plain
extraction (no prepare) and records no LSN or binary log position, so it is neither a parent
for increments nor a base for point-in-time recovery.

Whether a server runs on a data directory is asked of the kernel: a running mariadbd holds
POSIX write locks on `aria_log_control` and `ibdata1` (that is how MariaDB refuses a second
server on the same directory). Unlike its pid file (a server option, left behind by a
crash) or a connection (needs the right port, socket and password), the locks exist exactly
while a server uses the directory, wherever it listens. A connection that reports the same
@@datadir is a second, independent signal.

The password reaches the tools only through a 0600 option file passed as the FIRST
argument (`--defaults-extra-file`); without `password_env`/`password_file` the user's own
option files (~/.my.cnf) apply.

The class is built in layers, one module each: options, quoting and the client in
sources/mariadb_client.py, the logical path in sources/mariadb_logical.py (users and grants
in sources/mariadb_users.py), mariabackup's files and the chain restore in
sources/mariadb_physical.py; this module adds the backup dispatch, the physical and offline
backups and the running-server checks.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backupctl.errors import SourceError
from backupctl.events import InfoEvent, NullReporter, WarningEvent
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest, SourceOptions
from backupctl.sources.dbutil import child_env
from backupctl.sources.mariadb_client import mariadb_tool
from backupctl.sources.mariadb_logical import GLOBALS_PATH, MariaDBLogical
from backupctl.sources.mariadb_physical import (
    XBSTREAM,
    check_chain,
    check_physical_version,
    offline_files,
    read_binlog_position,
    read_checkpoints,
    read_upgrade_info,
    restore_into_datadir,
)
from backupctl.sources.mariadb_users import UsersDump
from backupctl.sources.rowcount import recorded_counts

# Files a running mariadbd holds a POSIX write lock on (Aria's control file, InnoDB's system
# tablespace); either one present marks a data directory.
LOCKED_FILES = ("aria_log_control", "ibdata1")


class MariaDBSource(MariaDBLogical):
    physical_method = "mariabackup"

    def __init__(self, options: SourceOptions, reporter: Any = None) -> None:
        super().__init__(options, reporter)
        self._parent: dict[str, Any] | None = None
        self._lsndir: Path | None = None

    @property
    def supports_incremental(self) -> bool:
        return self.options.method == "mariabackup"

    def set_parent(self, info: dict[str, Any] | None) -> None:
        """The parent backup's recorded `info()` for an incremental backup; None for a full one."""
        self._parent = info

    # -- backup ---------------------------------------------------------------------------

    def scan(self) -> Iterator[Entry]:
        lead, env = self.client_setup(self._secrets)
        stopped = self._stopped_datadir(lead, env)
        if stopped is not None:
            yield from self._scan_offline(stopped)
            return
        version = self.query(self._secrets, lead, env, "SELECT VERSION()")[0][0]
        self._info = {
            "method": self.options.method,
            "server_version": version,
            "flavor": "mariadb" if "mariadb" in version.lower() else "mysql",
            "host": self.options.host,
            "port": self.options.port,
        }
        if self.options.method == "mariabackup":
            yield from self._scan_physical(lead, env)
        else:
            yield from self._scan_logical(lead, env)

    def _scan_physical(self, lead: list[str], env: dict[str, str]) -> Iterator[Entry]:
        datadir = self.options.datadir or Path(self.query(self._secrets, lead, env, "SELECT @@datadir")[0][0])
        tool = mariadb_tool("mariabackup", "mariadb-backup")
        self._lsndir = self._secrets.dir / "lsn"
        self._lsndir.mkdir(mode=0o700)
        work = self._secrets.dir / "work"
        work.mkdir(mode=0o700)
        # --innodb-log-checkpoint-now: the server checkpoints first, so the backup's to_lsn
        # (where the next increment starts) is now, and the redo log it carries is what was
        # written during the copy. Without it, on a quiet server whose last checkpoint is
        # old, every backup (each increment too) carries all redo since that checkpoint and
        # the next increment starts there again: nearly full-size increments.
        argv = [
            tool,
            *lead,
            "--backup",
            "--stream=xbstream",
            "--innodb-log-checkpoint-now",
            f"--target-dir={work}",
            f"--extra-lsndir={self._lsndir}",
        ]
        argv += [f"--datadir={datadir}", *self.conn_args()]
        parent_lsn = (self._parent or {}).get("to_lsn")
        if self._parent is not None and (self._parent.get("method") != "mariabackup" or parent_lsn is None):
            self.reporter.emit(
                InfoEvent("the parent is not a mariabackup backup with a recorded LSN; taking a full backup")
            )
            parent_lsn = None
        if parent_lsn is not None:
            argv.append(f"--incremental-lsn={parent_lsn}")
            self._info["parent_to_lsn"] = parent_lsn
        self._info["backup_type"] = "incremental" if parent_lsn is not None else "full"
        self._info["path"] = XBSTREAM
        yield Entry(path="mariadb", kind="dir", mode=0o700)
        yield self._stream_entry(XBSTREAM, argv, env, "mariabackup", cwd=work)

    def _stopped_datadir(self, lead: list[str], env: dict[str, str]) -> Path | None:
        """The configured datadir when a mariabackup backup must copy it offline: it holds a
        data directory, no server holds its locks and the configured server does not answer
        from it. None otherwise (mariabackup through the running server)."""
        d = self.options.datadir
        if self.options.method != "mariabackup" or d is None:
            return None
        d = Path(d)
        if not any((d / name).is_file() for name in LOCKED_FILES):
            return None
        if mariadb_running(d) is not None or self._live_datadir(self._secrets, lead, env) == d.resolve():
            return None
        return d

    def _scan_offline(self, datadir: Path) -> Iterator[Entry]:
        """The stopped data directory as the xbstream entry (`mbstream -c` of its files)."""
        files = offline_files(datadir)
        listing = self._secrets.write("files", "".join(f + "\0" for f in files))
        version = read_upgrade_info(datadir)
        self._info = {
            "method": self.options.method,
            "offline": True,
            "backup_type": "full",
            "datadir": str(datadir),
            "path": XBSTREAM,
        }
        if version:
            self._info.update(
                server_version=version, flavor="mariadb" if "mariadb" in version.lower() else "mysql"
            )
        self._warn_offline(datadir, XBSTREAM)
        # xargs splits a long file list over several mbstream runs; concatenated xbstreams
        # extract as one (each file ends with its own EOF chunk).
        argv = [mariadb_tool("xargs"), "-0", "-r", "-a", str(listing), mariadb_tool("mbstream"), "-c"]
        yield Entry(path="mariadb", kind="dir", mode=0o700)
        yield self._stream_entry(
            XBSTREAM, argv, child_env({}), "mbstream of the stopped data directory", cwd=datadir
        )

    def _finished(self, outputs: list[tuple[str, str]]) -> None:
        """Record mariabackup's LSNs and binary log position (from --extra-lsndir), and the
        accounts the users dump had to skip (warned about, left out again at restore)."""
        if getattr(self, "_row_counters", None):
            self._info["row_counts"] = recorded_counts(self._row_counters)
        skipped = [a for tool in self._procs if isinstance(tool, UsersDump) for a in tool.skipped]
        if skipped:
            self._info["skipped_accounts"] = skipped
            self.reporter.emit(
                WarningEvent(
                    f"{len(skipped)} account(s) not backed up, the server cannot resolve them (a host name"
                    f" under --skip-name-resolve): {', '.join(skipped)}; every other account was backed up",
                    path=GLOBALS_PATH,
                )
            )
        if self._lsndir is not None:
            self._info.update(read_checkpoints(self._lsndir / "xtrabackup_checkpoints"))
            self._info.update(read_binlog_position(self._lsndir))
            inc = self._info.get("backup_type") == "incremental"
            if inc and str(self._info.get("from_lsn")) != str(self._info.get("parent_to_lsn")):
                raise SourceError("mariabackup: the increment does not start at the parent's LSN")

    # -- restore (dispatched by DatabaseSource.restore; the globals are users and grants) --

    def _restore_physical(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        """One backup; for a mariabackup increment the engine calls `restore_chain` itself."""
        self.restore_chain([(request.source_info, entries)], request)

    def check_in_place_restore(self, source_info: dict[str, Any]) -> None:
        """Before the safety backup: a running server on the data directory (physical), and
        the version check, so a refused restore changes nothing (its warnings come later,
        from the restore itself)."""
        super().check_in_place_restore(source_info)
        if source_info.get("method", self.options.method) == self.physical_method:
            check_physical_version([source_info], NullReporter())
        else:
            with self._temp_secrets() as secrets:
                lead, env = self.client_setup(secrets)
                target_version = self.query(secrets, lead, env, "SELECT VERSION()")[0][0]
            self.check_version(source_info, target_version, NullReporter())

    # -- physical restore -----------------------------------------------------------------

    def restore_chain(
        self, chain: list[tuple[dict[str, Any], Iterator[RestoreEntry]]], request: RestoreRequest
    ) -> None:
        """Restore a full mariabackup backup followed by its increments, oldest first.

        Each element is (the backup's recorded info, its entries). The entries are read in
        order, each stream extracted once into a hidden directory next to the destination;
        the base is prepared, each increment applied with --incremental-dir, and the result
        moved into request.target_dir, which must be empty or absent. Without a target it is
        the configured datadir of a stopped server (a running one is refused before anything
        is read): its contents are deleted only once the backup is extracted and prepared,
        the directory itself (owner, mode, a mount point) stays. An offline copy (info
        `offline`) is extracted as it is, without prepare.
        """
        if not chain:
            raise SourceError("nothing to restore: empty backup chain")
        dest = request.target_dir or self.options.datadir
        if dest is None:
            raise SourceError(
                "a mariabackup backup restores into a data directory",
                hint="give a target directory, or set datadir in the deployment and stop the server",
            )
        dest = Path(dest)
        check_chain([info for info, _ in chain])
        check_physical_version([info for info, _ in chain], request.reporter)
        in_place = request.target_dir is None and dest.is_dir()
        if request.target_dir is None:
            self.refuse_running_server(dest)
        restore_into_datadir(chain, dest, in_place, request)

    def _configured_datadir(self) -> str | Path | None:
        return self.options.datadir

    def _refuse_running(self, datadir: Path) -> None:
        self.refuse_running_server(datadir)

    def refuse_running_server(self, datadir: Path) -> None:
        """Refuse a data directory a server runs on: one holds its locks (mariadb_running), or
        the configured server answers from it. Called before anything is written in place."""
        pid = mariadb_running(datadir)
        live: Path | None = None
        if pid is None:
            with self._temp_secrets() as secrets:
                lead, env = self.client_setup(secrets)
                live = self._live_datadir(secrets, lead, env)
        if pid is not None or live == datadir.resolve():
            by = f" (pid {pid})" if pid and pid > 0 else ""
            raise SourceError(
                f"refusing to restore into {datadir}: a MariaDB server is running on it{by}",
                hint="stop the server first, or restore into a new data directory",
            )


def mariadb_running(datadir: Path) -> int | None:
    """The PID of the server running on `datadir` (-1 when the holder's PID is not visible,
    e.g. another PID namespace), or None when none holds the locks of LOCKED_FILES.

    F_GETLK asks who holds a write lock without taking one, so probing never disturbs a
    server that is starting. A file that cannot be opened (absent, no permission) says nothing.
    """
    for name in LOCKED_FILES:
        try:
            fd = os.open(datadir / name, os.O_RDONLY)
        except OSError:
            continue
        try:
            # struct flock: l_type, l_whence, l_start, l_len, l_pid (native layout, as C has it).
            probe = struct.pack("hhqqi", fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
            l_type, _, _, _, pid = struct.unpack("hhqqi", fcntl.fcntl(fd, fcntl.F_GETLK, probe))
        except OSError:
            continue
        finally:
            os.close(fd)
        if l_type != fcntl.F_UNLCK:
            return pid if pid > 0 else -1
    return None
