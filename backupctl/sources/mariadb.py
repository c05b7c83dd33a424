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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import Field

from backupctl.config.secrets import resolve_secret
from backupctl.errors import SourceError
from backupctl.events import InfoEvent, NullReporter, WarningEvent
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest, SourceOptions
from backupctl.sources.database import DatabaseSource
from backupctl.sources.dbutil import (
    Secrets,
    ToolProcess,
    child_env,
    chown_tree,
    ensure_empty_dir,
    find_tool,
    mysql_option_file,
    run,
    safe_name,
)
from backupctl.sources.postgres_physical import clear_dir
from backupctl.sources.rowcount import InsertCounter, RowCounter, counted, recorded_counts

GLOBALS_PATH = "mariadb/globals.sql"
DB_DIR = "mariadb/databases"
XBSTREAM = "mariadb/mariabackup.xbstream"
SYSTEM_DATABASES = ("information_schema", "performance_schema", "mysql", "sys")
# Accounts whose statements are never replayed from a backup: the target's own. By user
# name (any host): root and mariadb.sys; by account, the ones `mariadb-install-db` creates
# for the server itself: mysql@localhost (the service user, with PROXY rights a restoring
# user may lack) and the anonymous accounts (a secured target has removed them).
PROTECTED_USERS = ("root", "mariadb.sys")
PROTECTED_ACCOUNTS = (("mysql", "localhost"),)
# Files a running mariadbd holds a POSIX write lock on (Aria's control file, InnoDB's system
# tablespace); either one present marks a data directory.
LOCKED_FILES = ("aria_log_control", "ibdata1")
# Left out of an offline copy: recreated at start (temporary tablespace) or runtime leftovers.
OFFLINE_SKIP = ("ibtmp1",)
OFFLINE_SKIP_SUFFIXES = (".pid", ".sock.lock")


class MariaDBOptions(SourceOptions):
    type: Literal["mariadb"] = "mariadb"
    host: str = "localhost"
    port: int = Field(3306, ge=1, le=65535)
    socket: Path | None = None
    user: str = "root"
    databases: list[str] | Literal["all"] = "all"
    password_env: str | None = None
    password_file: Path | None = None
    method: Literal["mariadb-dump", "mariabackup"] = "mariadb-dump"
    # The server's data directory: read by mariabackup (default: the server's @@datadir)
    # and the destination of an in-place physical restore (the server must be stopped).
    datadir: Path | None = None
    # Capture users and grants (MariaDB's mariadb-dump only).
    globals: bool = True


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def quote_literal(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def version_tuple(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _which(*names: str) -> str:
    return find_tool(names, hint="install the MariaDB client / backup tools")


class MariaDBSource(DatabaseSource):
    Options = MariaDBOptions
    options: MariaDBOptions
    label = "MariaDB"
    secrets_prefix = "backupctl-mariadb-"
    globals_path = GLOBALS_PATH
    physical_method = "mariabackup"

    def __init__(self, options: SourceOptions, reporter: Any = None) -> None:
        super().__init__(options, reporter)
        self._parent: dict[str, Any] | None = None
        self._lsndir: Path | None = None

    @property
    def method(self) -> str:
        return self.options.method

    @property
    def supports_incremental(self) -> bool:
        return self.options.method == "mariabackup"

    def set_parent(self, info: dict[str, Any] | None) -> None:
        """The parent backup's recorded `info()` for an incremental backup; None for a full one."""
        self._parent = info

    # -- connection helpers ---------------------------------------------------------------

    def client_setup(self, secrets: Secrets) -> tuple[list[str], dict[str, str]]:
        """(leading argv with the option file first, environment) for any client tool."""
        opts = self.options
        password = resolve_secret(env=opts.password_env, file=opts.password_file, what="mariadb password")
        lead: list[str] = []
        drop = ["MYSQL_PWD"]
        if password is not None:
            path = secrets.write("client.cnf", mysql_option_file(password), secret=password)
            lead.append(f"--defaults-extra-file={path}")
            if opts.password_env:
                drop.append(opts.password_env)
        return lead, child_env(drop=drop)

    def conn_args(self) -> list[str]:
        """Host, port, user (and socket) for a MariaDB client's argv (no secret)."""
        o = self.options
        args = [f"--host={o.host}", f"--port={o.port}", f"--user={o.user}"]
        if o.socket:
            args.append(f"--socket={o.socket}")
        return args

    def query(self, secrets: Secrets, lead: list[str], env: dict[str, str], sql: str) -> list[list[str]]:
        """Rows of one SQL statement run by the client (`lead`, `env`: from client_setup)."""
        client = _which("mariadb", "mysql")
        out = run(
            [client, *lead, *self.conn_args(), "--batch", "--skip-column-names", "--raw", "-e", sql],
            env=env,
            secrets=secrets,
            what=Path(client).name,
        )
        return [line.split("\t") for line in out.splitlines() if line]

    def admin_sql(self, sql: str, *, secret: str | None = None) -> list[list[str]]:
        """Run `sql` as the configured user and return the result rows (tab-separated fields).

        The SQL reaches the client through stdin, never argv, so it may carry a secret;
        `secret` is redacted from any error message. Used by clone.
        """
        with self._temp_secrets(secret) as secrets:
            lead, env = self.client_setup(secrets)
            client = _which("mariadb", "mysql")
            out = run(
                [client, *lead, *self.conn_args(), "--batch", "--skip-column-names", "--raw"],
                env=env,
                secrets=secrets,
                what=Path(client).name,
                input_chunks=[sql.encode()],
            )
        return [line.split("\t") for line in out.splitlines() if line]

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

    def _scan_logical(self, lead: list[str], env: dict[str, str]) -> Iterator[Entry]:
        rows = self.query(
            self._secrets,
            lead,
            env,
            "SELECT schema_name, default_character_set_name, default_collation_name FROM information_schema.schemata"
            " ORDER BY schema_name",
        )
        facts = {
            r[0]: {"name": r[0], "charset": r[1], "collation": r[2]}
            for r in rows
            if r[0] not in SYSTEM_DATABASES
        }
        wanted = self._wanted_databases(facts)
        databases = [{**facts[name], "path": f"{DB_DIR}/{safe_name(name)}.sql"} for name in wanted]
        self._info["databases"] = databases
        dump = _which("mariadb-dump", "mysqldump")
        with_globals = (
            self.options.globals and self._info["flavor"] == "mariadb" and "mariadb" in Path(dump).name
        )
        self._info["globals"] = GLOBALS_PATH if with_globals else None

        yield Entry(path="mariadb", kind="dir", mode=0o700)
        if with_globals:
            argv = [dump, *lead, *self.conn_args(), "--system=users", "--insert-ignore", "--skip-dump-date"]
            yield self._users_entry([*argv, "--force"], env)
        yield Entry(path=DB_DIR, kind="dir", mode=0o700)
        common = [
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--skip-dump-date",
        ]
        common += ["--default-character-set=utf8mb4"]
        # Rows per table, counted in the INSERT statements as the dumps stream
        # (sources/rowcount.py): what a restore drill compares with (info `row_counts`).
        self._row_counters: list[tuple[str, RowCounter]] = []
        for db in databases:
            argv = [dump, *lead, *self.conn_args(), *common, "--", db["name"]]
            counter = InsertCounter()
            self._row_counters.append((db["name"], counter))
            entry = self._stream_entry(db["path"], argv, env, f"{Path(dump).name} of database {db['name']!r}")
            yield counted(entry, counter)

    def _users_entry(self, argv: list[str], env: dict[str, str]) -> Entry:
        """The users-and-grants entry: `mariadb-dump --system=users --force`, checked by
        UsersDump (accounts the server cannot resolve are skipped, not a failed backup)."""

        def open_stream() -> IO[bytes]:
            tool = UsersDump(argv, env=env, secrets=self._secrets, what="mariadb-dump --system=users")
            self._procs.append(tool)
            return tool.stdout

        return Entry(path=GLOBALS_PATH, kind="file", mode=0o600, size=-1, open=open_stream)

    def _scan_physical(self, lead: list[str], env: dict[str, str]) -> Iterator[Entry]:
        datadir = self.options.datadir or Path(self.query(self._secrets, lead, env, "SELECT @@datadir")[0][0])
        tool = _which("mariabackup", "mariadb-backup")
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

    def _live_datadir(self, secrets: Secrets, lead: list[str], env: dict[str, str]) -> Path | None:
        """The @@datadir of the configured server when it answers, else None (stopped or unreachable)."""
        try:
            return Path(self.query(secrets, lead, env, "SELECT @@datadir")[0][0]).resolve()
        except (SourceError, IndexError):
            return None

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
        argv = [_which("xargs"), "-0", "-r", "-a", str(listing), _which("mbstream"), "-c"]
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

    def check_version(self, recorded: dict[str, Any], target_version: str, reporter: Any) -> None:
        source = recorded.get("server_version")
        if not source:
            return
        src, dst = version_tuple(str(source)), version_tuple(target_version)
        if dst < src:
            raise SourceError(
                f"refusing to restore: the backup was taken from {source} but the target server runs"
                f" {target_version}, an older version",
                hint=f"restore into a server running {src[0]}.{src[1]} or newer",
            )
        if dst > src:
            reporter.emit(
                WarningEvent(f"the backup was taken from {source}; restoring into the newer {target_version}")
            )

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

    def _restore_logical(self, entries: Iterable[RestoreEntry], request: RestoreRequest) -> None:
        items = self._logical_items(entries, request)
        with self._temp_secrets() as secrets:
            lead, env = self.client_setup(secrets)
            target_version = self.query(secrets, lead, env, "SELECT VERSION()")[0][0]
            self.check_version(request.source_info, target_version, request.reporter)
            deferred: list[bytes] = []
            for entry, db, name in items:
                if db is None:
                    deferred = self._apply_globals(entry, secrets, lead, env, request)
                else:
                    self._restore_database(db, name, entry, secrets, lead, env, request)
            if deferred:
                # Grants on tables, columns and routines, now that their databases are back.
                self._run_users_sql(deferred, secrets, lead, env, request, GLOBALS_PATH)

    def _apply_globals(
        self,
        entry: RestoreEntry,
        secrets: Secrets,
        lead: list[str],
        env: dict[str, str],
        request: RestoreRequest,
    ) -> list[bytes]:
        """Create users and grants; never touch the server's own accounts (PROTECTED_*), the
        account we log in as, or the accounts the backup skipped. Grants on single objects
        (tables, columns, routines) need the object, so they are returned to be applied
        once the databases are restored."""
        protected = [*PROTECTED_USERS, self.options.user]
        needles = [f"`{u}`@".encode() for u in protected] + [f"'{u}'@".encode() for u in protected]
        accounts: list[tuple[str, str | None]] = [(u, h) for u, h in PROTECTED_ACCOUNTS]
        accounts.append(("", None))  # anonymous, at any host
        for skipped in request.source_info.get("skipped_accounts") or []:
            parsed = parse_account(skipped)
            if parsed is not None:
                accounts.append(parsed)
        grantee = grantee_pattern(accounts)

        def keep(line: bytes) -> bool:
            return not any(n in line for n in needles) and not grantee.search(line)

        deferred: list[bytes] = []

        def filtered() -> Iterator[bytes]:
            pending = b""
            for chunk in entry.chunks():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if not keep(line):
                        continue
                    if _OBJECT_GRANT_RE.match(line):
                        deferred.append(line + b"\n")
                    else:
                        yield line + b"\n"
            if pending and keep(pending):
                yield pending

        self._run_users_sql(filtered(), secrets, lead, env, request, entry.path)
        return deferred

    def _run_users_sql(
        self,
        chunks: Iterable[bytes],
        secrets: Secrets,
        lead: list[str],
        env: dict[str, str],
        request: RestoreRequest,
        path: str,
    ) -> None:
        """Feed users-and-grants SQL to the client with --force: each refused statement is a
        warning, the others still apply."""
        client = _which("mariadb", "mysql")
        tool = ToolProcess(
            [client, *lead, *self.conn_args(), "--force"],
            env=env,
            secrets=secrets,
            what="mariadb (users)",
            stdin=True,
        )
        tool.feed(chunks)
        try:
            stderr = tool.check()
        except SourceError as exc:
            stderr = exc.message
        for line in stderr.splitlines():
            if "ERROR" in line:
                request.reporter.emit(WarningEvent(f"users and grants: {line.strip()}", path=path))

    def _restore_database(
        self,
        db: dict[str, str],
        name: str,
        entry: RestoreEntry,
        secrets: Secrets,
        lead: list[str],
        env: dict[str, str],
        request: RestoreRequest,
    ) -> None:
        request.reporter.emit(InfoEvent(f"restoring MariaDB database {name!r}"))
        sessions = self.query(
            secrets,
            lead,
            env,
            f"SELECT id FROM information_schema.processlist WHERE db = {quote_literal(name)} AND id <> CONNECTION_ID()",
        )
        kills = "".join(f"KILL CONNECTION {int(row[0])};" for row in sessions if row and row[0].isdigit())
        create = f"CREATE DATABASE {quote_ident(name)}"
        if db.get("charset"):
            create += f" CHARACTER SET {db['charset']}"
        if db.get("collation"):
            create += f" COLLATE {db['collation']}"
        # A session may end on its own between the listing and the KILL: ignore that error.
        if kills:
            with contextlib.suppress(SourceError):
                self.query(secrets, lead, env, kills)
        self.query(secrets, lead, env, f"DROP DATABASE IF EXISTS {quote_ident(name)}; {create}")
        client = _which("mariadb", "mysql")
        argv = [client, *lead, *self.conn_args(), f"--database={name}", "--binary-mode"]
        self._load_dump(argv, env, secrets, f"mariadb (restore of {name!r})", name, entry)

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
        self._check_chain([info for info, _ in chain])
        check_physical_version([info for info, _ in chain], request.reporter)
        in_place = request.target_dir is None and dest.is_dir()
        if request.target_dir is None:
            self.refuse_running_server(dest)
        existed = dest.exists()
        if not in_place:
            ensure_empty_dir(dest, what="physical restore")
        owner = dest.stat() if existed else None
        offline = bool(chain[0][0].get("offline"))
        work = Path(tempfile.mkdtemp(prefix=".backupctl-mariabackup-", dir=dest.parent))
        try:
            dirs = [self._extract(i, entries, work) for i, (_info, entries) in enumerate(chain)]
            base = dirs[0]
            if not offline:
                self._prepare_chain(dirs, request)
            if in_place:
                request.reporter.emit(InfoEvent(f"replacing the contents of {dest}"))
                clear_dir(dest)
            if offline:
                for item in os.scandir(base):  # same file system: renames
                    os.rename(item.path, dest / item.name)
            else:
                run(
                    [
                        _which("mariabackup", "mariadb-backup"),
                        "--move-back",
                        f"--target-dir={base}",
                        f"--datadir={dest}",
                    ],
                    what="mariabackup --move-back",
                )
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if not in_place:
            os.chmod(dest, 0o750)
        if owner is not None and os.geteuid() == 0:
            chown_tree(dest, owner.st_uid, owner.st_gid)
        request.reporter.emit(
            InfoEvent(
                f"restored {chain[-1][0].get('server_version', 'MariaDB')} data into {dest}; make it owned by the"
                " server's user (e.g. chown -R mysql:mysql) if needed, then start the server on it"
            )
        )

    @staticmethod
    def _extract(i: int, entries: Iterator[RestoreEntry], work: Path) -> Path:
        """Extract backup `i` of the chain (its xbstream entry) into work/i."""
        target = work / str(i)
        target.mkdir(mode=0o700)
        found = False
        for entry in entries:
            if entry.kind == "file" and entry.path == XBSTREAM:
                run(
                    [_which("mbstream"), "-x", "-C", str(target)],
                    what="mbstream",
                    input_chunks=entry.chunks(),
                )
                found = True
        if not found:
            raise SourceError(f"backup {i + 1} of the chain holds no {XBSTREAM}")
        return target

    @staticmethod
    def _prepare_chain(dirs: list[Path], request: RestoreRequest) -> None:
        tool = _which("mariabackup", "mariadb-backup")
        base = dirs[0]
        request.reporter.emit(InfoEvent(f"preparing the full backup ({len(dirs) - 1} increment(s) to apply)"))
        run([tool, "--prepare", f"--target-dir={base}"], what="mariabackup --prepare")
        for inc in dirs[1:]:
            run(
                [tool, "--prepare", f"--target-dir={base}", f"--incremental-dir={inc}"],
                what="mariabackup --prepare",
            )

    def _check_chain(self, infos: list[dict[str, Any]]) -> None:
        if infos[0].get("backup_type", "full") != "full":
            raise SourceError("a mariabackup chain must start with a full backup")
        for prev, cur in zip(infos, infos[1:], strict=False):
            if cur.get("backup_type") != "incremental":
                raise SourceError("only the first backup of a chain may be a full backup")
            if str(cur.get("from_lsn")) != str(prev.get("to_lsn")):
                raise SourceError(
                    f"broken chain: an increment starts at LSN {cur.get('from_lsn')} but its parent ends at {prev.get('to_lsn')}"
                )

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


def tool_version(*names: str) -> str | None:
    """The MariaDB version of the first installed of `names` (from `--version`), else None."""
    for name in names:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            # mariabackup prints its version on stderr, mariadbd on stdout.
            done = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=60, env=child_env()
            )
            m = re.search(r"(\d+\.\d+\.\d+)", done.stdout + done.stderr)
            if m:
                return m.group(1)
    return None


def check_physical_version(infos: list[dict[str, Any]], reporter: Any) -> None:
    """Refuse a mariabackup chain that the tools here cannot prepare (mariabackup older than
    the backup's server) or whose data directory the server here cannot start (an older
    mariadbd); warn when they are newer. An offline copy needs no prepare; a tool or server
    that is not installed is not checked."""
    recorded = next((str(i["server_version"]) for i in reversed(infos) if i.get("server_version")), "")
    src = version_tuple(recorded)
    if src == (0, 0):
        return
    label = f"{src[0]}.{src[1]}"
    if not infos[0].get("offline"):
        tool = tool_version("mariabackup", "mariadb-backup")
        if tool is not None and version_tuple(tool) < src:
            raise SourceError(
                f"refusing to restore: the backup was taken from MariaDB {recorded}, and mariabackup {tool}"
                " here cannot prepare a backup of a newer server",
                hint=f"restore on a machine with MariaDB {label} or newer (its mariabackup and server)",
            )
        if tool is not None and version_tuple(tool) > src:
            reporter.emit(
                WarningEvent(
                    f"the backup was taken from MariaDB {recorded}; preparing it with the newer mariabackup {tool}"
                    f" (if the prepare fails, use mariabackup {label})"
                )
            )
    server = tool_version("mariadbd", "mysqld")
    if server is not None and version_tuple(server) < src:
        raise SourceError(
            f"refusing to restore: the backup was taken from MariaDB {recorded}, and the MariaDB server here"
            f" ({server}) is older and cannot start its data directory",
            hint=f"restore on a machine with MariaDB {label} or newer",
        )
    if server is not None and version_tuple(server) > src:
        reporter.emit(
            WarningEvent(
                f"the backup was taken from MariaDB {recorded}; the server here is the newer {server}:"
                " run mariadb-upgrade after starting it"
            )
        )


# How mariadb-dump reports an account the server cannot find (a host name under
# --skip-name-resolve): the account is QUOTE(user)@QUOTE(host).
_UNRESOLVABLE_RE = re.compile(
    r"^mariadb-dump: Couldn't execute 'SHOW (?:CREATE USER|GRANTS FOR) (?P<account>.+)': .*\((?:1133|1141)\)$"
)
# A grant on one table, column set or routine (not `db`.* or *.*): needs the object to exist.
_OBJECT_GRANT_RE = re.compile(
    rb"^GRANT .* ON (?:(?:PROCEDURE|FUNCTION|PACKAGE(?: BODY)?) )?`(?:[^`]|``)*`\.`"
)
_ACCOUNT_RE = re.compile(r"'((?:[^'\\]|\\.)*)'@'((?:[^'\\]|\\.)*)'")


class UsersDump(ToolProcess):
    """`mariadb-dump --system=users --force`: an account the server cannot resolve is skipped.

    With --force, mariadb-dump goes on past a `SHOW CREATE USER`/`SHOW GRANTS FOR` the
    server refuses and exits 2. That exit is accepted when every line of stderr is such a
    refusal for "no matching row"/"no such grant" (1133/1141); the accounts are in `skipped`.
    Any other failure fails the backup as before."""

    skipped: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skipped = []

    def check(self, timeout: float | None = None) -> str:
        try:
            return super().check(timeout)
        except SourceError:
            rc, message = self._result or (1, "")
            accounts = unresolvable_accounts(message) if rc == 2 else None
            if not accounts:
                raise
            self.skipped = accounts
            return message


def unresolvable_accounts(stderr: str) -> list[str] | None:
    """The accounts mariadb-dump could not dump, in order; None if stderr says anything else."""
    found: list[str] = []
    for line in stderr.splitlines():
        if not line.strip():
            continue
        m = _UNRESOLVABLE_RE.match(line.strip())
        if m is None:
            return None
        if m.group("account") not in found:
            found.append(m.group("account"))
    return found or None


def parse_account(quoted: str) -> tuple[str, str] | None:
    """`'user'@'host'` (SQL QUOTE() form) -> (user, host)."""
    m = _ACCOUNT_RE.fullmatch(quoted.strip())
    if m is None:
        return None

    def unquote(s: str) -> str:
        return re.sub(r"\\(.)", r"\1", s)

    return unquote(m.group(1)), unquote(m.group(2))


def _quoted_forms(value: str) -> tuple[str, str]:
    """`value` as a backtick identifier and as a QUOTE()d string (the two forms a dump uses)."""
    return quote_ident(value), quote_literal(value)


def grantee_pattern(accounts: list[tuple[str, str | None]]) -> re.Pattern[bytes]:
    """A statement of a users dump whose subject is one of `accounts` ((user, host); host
    None: any): `CREATE USER IF NOT EXISTS a`, `GRANT ... TO a`, `SET DEFAULT ROLE r FOR a`,
    `ALTER USER a`, with a in backtick or quote form."""
    alternatives: list[str] = []
    for user, host in accounts:
        users = _quoted_forms(user)
        hosts = _quoted_forms(host) if host is not None else None
        for i, any_host in enumerate((r"`(?:[^`]|``)*`", r"'(?:[^'\\]|\\.)*'")):
            h = re.escape(hosts[i]) if hosts is not None else any_host
            alternatives.append(re.escape(users[i]) + "@" + h)
    return re.compile(("(?:EXISTS | TO | FOR |ALTER USER )(?:" + "|".join(alternatives) + ")").encode())


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


def offline_files(datadir: Path) -> list[str]:
    """The regular files of a stopped data directory, relative and sorted, for `mbstream -c`.

    Runtime leftovers are left out (OFFLINE_SKIP*, at the top level). Directories are not
    streamed themselves: each database directory holds at least its db.opt.
    """
    out: list[str] = []

    def fail(exc: OSError) -> None:
        raise SourceError(f"cannot read the data directory {datadir}: {exc}")

    for root, dirs, files in os.walk(datadir, onerror=fail):
        dirs.sort()
        rel = Path(root).relative_to(datadir)
        for name in sorted(files):
            if rel == Path(".") and (name in OFFLINE_SKIP or name.endswith(OFFLINE_SKIP_SUFFIXES)):
                continue
            path = Path(root) / name
            if path.is_file():  # sockets, fifos and dangling links are not data
                out.append(str(rel / name) if rel != Path(".") else name)
    return out


def read_upgrade_info(datadir: Path) -> str | None:
    """The server version that last ran on a data directory (mysql_upgrade_info), if recorded."""
    try:
        text = (datadir / "mysql_upgrade_info").read_text(errors="replace").strip("\0\n ")
    except OSError:
        return None
    return text or None


def read_checkpoints(path: Path) -> dict[str, Any]:
    """from_lsn, to_lsn, last_lsn and the backup type from mariabackup's xtrabackup_checkpoints."""
    facts: dict[str, Any] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SourceError("mariabackup wrote no xtrabackup_checkpoints; the backup is incomplete") from None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in ("from_lsn", "to_lsn", "last_lsn"):
            facts[key] = int(value)
        elif key == "backup_type":
            facts["backup_type"] = "incremental" if value.startswith("incremental") else "full"
    return facts


_BINLOG_POS_RE = re.compile(
    r"filename '(?P<file>[^']+)', position '?(?P<pos>\d+)'?(?:, GTID of the last change '(?P<gtid>[^']*)')?"
)


def read_binlog_position(lsndir: Path) -> dict[str, Any]:
    """The binary log position mariabackup recorded under its backup lock (the PITR replay start).

    From `binlog_pos = filename 'mariadb-bin.000002', position '597', GTID of the last change
    '0-1-6'` in xtrabackup_info / mariadb_backup_info (written to --extra-lsndir), or from
    xtrabackup_binlog_info / mariadb_backup_binlog_info (file, position, GTID separated by tabs).
    Empty when binary logging was off.
    """
    for name in ("mariadb_backup_info", "xtrabackup_info"):
        try:
            text = (lsndir / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "binlog_pos":
                m = _BINLOG_POS_RE.search(value)
                if m:
                    facts: dict[str, Any] = {
                        "binlog_file": m.group("file"),
                        "binlog_pos": int(m.group("pos")),
                    }
                    if m.group("gtid"):
                        facts["binlog_gtid"] = m.group("gtid")
                    return facts
    for name in ("mariadb_backup_binlog_info", "xtrabackup_binlog_info"):
        try:
            fields = (lsndir / name).read_text().split()
        except OSError:
            continue
        if len(fields) >= 2 and fields[1].isdigit():
            facts = {"binlog_file": fields[0], "binlog_pos": int(fields[1])}
            if len(fields) > 2:
                facts["binlog_gtid"] = fields[2]
            return facts
    return {}
