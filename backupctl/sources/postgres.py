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
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backupctl.config.secrets import resolve_secret
from backupctl.errors import SourceError
from backupctl.events import InfoEvent, NullReporter, WarningEvent
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest, SourceOptions
from backupctl.sources.database import DatabaseSource
from backupctl.sources.dbutil import (
    ChunkReader,
    Secrets,
    ToolProcess,
    child_env,
    chown_tree,
    ensure_empty_dir,
    pgpass_line,
    run,
    safe_name,
)
from backupctl.sources.postgres_conf import write_missing_config
from backupctl.sources.rowcount import CopyCounter, RowCounter, counted, recorded_counts

GLOBALS_PATH = "postgres/globals.sql"
DB_DIR = "postgres/databases"
PROPS_DIR = "postgres/database-properties"
BASE_TAR = "postgres/base.tar"
SSL_MODES = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


class PostgresOptions(SourceOptions):
    type: Literal["postgres"] = "postgres"
    host: str = "localhost"  # a host name, an IP address, or a socket directory
    port: int = Field(5432, ge=1, le=65535)
    user: str = "postgres"
    databases: list[str] | Literal["all"] = "all"
    sslmode: SSL_MODES | None = None
    password_env: str | None = None
    password_file: Path | None = None
    method: Literal["pg_dump", "pg_basebackup"] = "pg_dump"
    # Database used for listing, dropping and creating databases.
    maintenance_db: str = "postgres"
    # The server's data directory; only needed to restore a physical backup in place.
    data_dir: Path | None = None
    # Capture roles and tablespaces (needs a superuser; set false for a non-superuser).
    globals: bool = True


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def conninfo_dbname(name: str) -> str:
    """A `dbname=` connection string, so names containing '=' are never parsed as conninfo."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def major_of(version_num: int) -> int:
    """150020 -> 15; 90624 -> 906 (9.6)."""
    return version_num // 10000 if version_num >= 100000 else version_num // 100


def major_label(version_num: int) -> str:
    m = major_of(version_num)
    return f"{m // 100}.{m % 100}" if m >= 900 else str(m)


class PostgresSource(DatabaseSource):
    Options = PostgresOptions
    options: PostgresOptions
    label = "PostgreSQL"
    secrets_prefix = "backupctl-pg-"
    globals_path = GLOBALS_PATH
    physical_method = "pg_basebackup"

    @property
    def method(self) -> str:
        return self.options.method

    # -- connection helpers ---------------------------------------------------------------

    def client_env(self, secrets: Secrets) -> dict[str, str]:
        """The environment for a libpq client (psql, pg_dump...): the password through a 0600
        PGPASSFILE in `secrets`, never argv; PGPASSWORD and the password's own variable dropped."""
        opts = self.options
        extra: dict[str, str] = {"PGCONNECT_TIMEOUT": "30", "PGAPPNAME": "backupctl"}
        if opts.sslmode:
            extra["PGSSLMODE"] = opts.sslmode
        drop: list[str] = []
        password = resolve_secret(env=opts.password_env, file=opts.password_file, what="postgres password")
        if password is not None:
            extra["PGPASSFILE"] = str(
                secrets.write("pgpass", pgpass_line(opts.user, password), secret=password)
            )
            # Neither libpq's variable nor the one the password came from reach the child.
            drop += ["PGPASSWORD", *([opts.password_env] if opts.password_env else [])]
        return child_env(extra, drop=drop)

    def conn_args(self) -> list[str]:
        """Host, port and user for a libpq client's argv (no secret; --no-password)."""
        o = self.options
        return ["-h", o.host, "-p", str(o.port), "-U", o.user, "--no-password"]

    def _query(
        self, secrets: Secrets, env: dict[str, str], sql: str, db: str | None = None
    ) -> list[list[str]]:
        out = run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-F",
                "\x1f",
                "-R",
                "\x1e",
                "-v",
                "ON_ERROR_STOP=1",
                *self.conn_args(),
            ]
            + ["-d", conninfo_dbname(db or self.options.maintenance_db), "-c", sql],
            env=env,
            secrets=secrets,
            what="psql",
        )
        return [rec.split("\x1f") for rec in out.rstrip("\n").split("\x1e") if rec]

    def psql(self, secrets: Secrets, env: dict[str, str], *commands: str, db: str | None = None) -> None:
        """Run each of `commands` with psql -c (each in its own transaction) against `db`."""
        argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", *self.conn_args()]
        argv += ["-d", conninfo_dbname(db or self.options.maintenance_db)]
        for command in commands:
            argv += ["-c", command]
        run(argv, env=env, secrets=secrets, what="psql")

    def admin_sql(self, sql: str, db: str | None = None, *, secret: str | None = None) -> list[list[str]]:
        """Run `sql` as the configured user in one transaction and return the result rows.

        The SQL reaches psql through stdin, never argv, so it may carry a secret (e.g. a
        password verifier); `secret` is redacted from any error message. Used by clone.
        """
        with self._temp_secrets(secret) as secrets:
            env = self.client_env(secrets)
            argv = ["psql", "-X", "-q", "-1", "-A", "-t", "-F", "\x1f", "-R", "\x1e", "-v", "ON_ERROR_STOP=1"]
            argv += [*self.conn_args(), "-d", conninfo_dbname(db or self.options.maintenance_db), "-f", "-"]
            out = run(argv, env=env, secrets=secrets, what="psql", input_chunks=[sql.encode()])
        return [rec.split("\x1f") for rec in out.rstrip("\n").split("\x1e") if rec]

    def _server_version(self, secrets: Secrets, env: dict[str, str]) -> tuple[str, int]:
        rows = self._query(
            secrets, env, "SELECT current_setting('server_version'), current_setting('server_version_num')"
        )
        return rows[0][0], int(rows[0][1])

    # -- backup ---------------------------------------------------------------------------

    def scan(self) -> Iterator[Entry]:
        stopped = self._stopped_data_dir()
        if stopped is not None:
            yield from self._scan_offline(stopped)
            return
        env = self.client_env(self._secrets)
        version, version_num = self._server_version(self._secrets, env)
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
            yield from self._scan_logical(env)

    def _database_facts(self, env: dict[str, str]) -> list[dict[str, str]]:
        rows = self._query(
            self._secrets,
            env,
            "SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate,"
            " d.datctype, d.datlocprovider, coalesce(d.daticulocale, '')"
            " FROM pg_database d WHERE NOT d.datistemplate AND d.datallowconn ORDER BY d.datname"
            if self._info["server_version_num"] >= 150000
            else "SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate,"
            " d.datctype, 'c', '' FROM pg_database d WHERE NOT d.datistemplate AND d.datallowconn ORDER BY d.datname",
        )
        keys = ("name", "owner", "encoding", "collate", "ctype", "locale_provider", "icu_locale")
        return [dict(zip(keys, row, strict=False)) for row in rows]

    def _scan_logical(self, env: dict[str, str]) -> Iterator[Entry]:
        facts = {d["name"]: d for d in self._database_facts(env)}
        wanted = self._wanted_databases(facts)
        databases = [{**facts[name], "path": f"{DB_DIR}/{safe_name(name)}.sql"} for name in wanted]
        self._info["databases"] = databases
        self._info["globals"] = GLOBALS_PATH if self.options.globals else None

        yield Entry(path="postgres", kind="dir", mode=0o700)
        if self.options.globals:
            argv = ["pg_dumpall", "--globals-only", *self.conn_args()]
            argv += ["-l", self.options.maintenance_db]
            yield self._stream_entry(GLOBALS_PATH, argv, env, "pg_dumpall --globals-only")
        yield Entry(path=PROPS_DIR, kind="dir", mode=0o700)
        for db in databases:
            db["properties"] = f"{PROPS_DIR}/{safe_name(db['name'])}.sql"
            argv = ["pg_dump", "-Fp", "--create", "--schema-only", "--quote-all-identifiers"]
            argv += ["--exclude-schema=*", *self.conn_args(), "-d", conninfo_dbname(db["name"])]
            yield self._stream_entry(
                db["properties"], argv, env, f"pg_dump --create of database {db['name']!r} (its properties)"
            )
        yield Entry(path=DB_DIR, kind="dir", mode=0o700)
        # Rows per table, counted in the COPY blocks as the dumps stream (sources/rowcount.py):
        # what a restore drill compares with (info `row_counts`, set in _finished).
        self._row_counters: list[tuple[str, RowCounter]] = []
        for db in databases:
            argv = ["pg_dump", "-Fp", *self.conn_args(), "-d", conninfo_dbname(db["name"])]
            counter = CopyCounter()
            self._row_counters.append((db["name"], counter))
            yield counted(
                self._stream_entry(db["path"], argv, env, f"pg_dump of database {db['name']!r}"), counter
            )

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

    def check_version(self, recorded: dict[str, Any], target_num: int, reporter: Any) -> None:
        """Refuse a target older (major) than the backup's server; warn for a newer one."""
        source_num = recorded.get("server_version_num")
        if not source_num:
            return
        src, dst = major_of(int(source_num)), major_of(target_num)
        if dst < src:
            raise SourceError(
                f"refusing to restore: the backup was taken from PostgreSQL {recorded.get('server_version', source_num)}"
                f" but the target server runs PostgreSQL {major_label(target_num)}, an older major version",
                hint=f"restore into PostgreSQL {major_label(int(source_num))} or newer",
            )
        if dst > src:
            reporter.emit(
                WarningEvent(
                    f"the backup was taken from PostgreSQL {major_label(int(source_num))}; restoring into the newer "
                    f"PostgreSQL {major_label(target_num)} (check the release notes for incompatibilities)"
                )
            )

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

    def _refuse_without_createdb(self, secrets: Secrets, env: dict[str, str]) -> None:
        """A logical restore drops and creates each database: refuse up front, before any
        drop, when the configured user cannot create databases."""
        rows = self._query(
            secrets, env, "SELECT rolsuper OR rolcreatedb FROM pg_roles WHERE rolname = current_user"
        )
        if rows and rows[0][0] != "t":
            raise SourceError(
                f"refusing to restore: PostgreSQL user {self.options.user!r} cannot create databases, and a"
                " restore drops and creates each database",
                hint=f"ALTER ROLE {quote_ident(self.options.user)} CREATEDB, or restore as a superuser",
            )

    def _restore_logical(self, entries: Iterable[RestoreEntry], request: RestoreRequest) -> None:
        # The database-properties files (small) are held until their database is restored.
        properties: dict[str, bytes] = {}

        def dumps_only() -> Iterator[RestoreEntry]:
            for entry in entries:
                if entry.path == PROPS_DIR or entry.path.startswith(PROPS_DIR + "/"):
                    if entry.kind == "file":
                        properties[entry.path] = b"".join(entry.chunks())
                    continue
                yield entry

        items = self._logical_items(dumps_only(), request)
        with self._temp_secrets() as secrets:
            env = self.client_env(secrets)
            _, target_num = self._server_version(secrets, env)
            self.check_version(request.source_info, target_num, request.reporter)
            if request.source_info.get("databases"):
                self._refuse_without_createdb(secrets, env)
            for entry, db, name in items:
                if db is None:
                    self._apply_globals(entry, secrets, env, request)
                else:
                    self._restore_database(db, name, entry, secrets, env, target_num, request)
                    props = properties.pop(db.get("properties") or "", None)
                    if props is not None:
                        self._apply_properties(db["name"], name, props, secrets, env, request)

    def _apply_globals(
        self, entry: RestoreEntry, secrets: Secrets, env: dict[str, str], request: RestoreRequest
    ) -> None:
        """Apply roles and tablespaces, tolerating those that already exist.

        The statements for the role we connect as are dropped, so restoring a backup from
        another server never changes the target's own login (its password, its attributes).
        """
        me = {self.options.user, quote_ident(self.options.user)}
        own = re.compile(r"^(CREATE|ALTER) ROLE (\S+?)( WITH .*)?;$")

        def filtered() -> Iterator[bytes]:
            pending = b""
            for chunk in entry.chunks():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    m = own.match(line.decode("utf-8", "replace"))
                    if m and m.group(2) in me:
                        continue
                    yield line + b"\n"
            if pending:
                yield pending

        argv = ["psql", "-X", "-q", *self.conn_args(), "-d", conninfo_dbname(self.options.maintenance_db)]
        argv += ["-o", os.devnull, "-f", "-"]
        tool_out = ToolProcess(
            argv, env=env, secrets=secrets, what="psql (globals)", stdin=True, stdout=False
        )
        tool_out.feed(filtered())
        stderr = tool_out.check()
        for line in stderr.splitlines():
            if "ERROR:" in line and "already exists" not in line:
                request.reporter.emit(WarningEvent(f"globals: {line.strip()}", path=entry.path))

    def _restore_database(
        self,
        db: dict[str, str],
        name: str,
        entry: RestoreEntry,
        secrets: Secrets,
        env: dict[str, str],
        target_num: int,
        request: RestoreRequest,
    ) -> None:
        owner = db.get("owner") or ""
        owner_exists = bool(owner) and bool(
            self._query(secrets, env, f"SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(owner)}")
        )
        if owner and not owner_exists:
            request.reporter.emit(
                WarningEvent(
                    f"role {owner!r} does not exist on the target; database {name!r} is owned by {self.options.user!r}"
                )
            )
        create = f"CREATE DATABASE {quote_ident(name)} TEMPLATE template0"
        if db.get("encoding"):
            create += f" ENCODING {quote_literal(db['encoding'])}"
        if db.get("locale_provider") == "i" and target_num >= 150000:
            create += f" LOCALE_PROVIDER icu ICU_LOCALE {quote_literal(db.get('icu_locale', ''))}"
        if db.get("collate"):
            create += f" LC_COLLATE {quote_literal(db['collate'])} LC_CTYPE {quote_literal(db.get('ctype') or db['collate'])}"
        if owner_exists:
            create += f" OWNER {quote_ident(owner)}"
        if target_num >= 130000:
            drop = [f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)"]
        else:
            drop = [
                f"UPDATE pg_database SET datallowconn = false WHERE datname = {quote_literal(name)}",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                f" WHERE datname = {quote_literal(name)} AND pid <> pg_backend_pid()",
                f"DROP DATABASE IF EXISTS {quote_ident(name)}",
            ]
        request.reporter.emit(InfoEvent(f"restoring PostgreSQL database {name!r}"))
        self.psql(secrets, env, *drop, create, db=self._admin_db_for(name))
        # One transaction: a dump that fails half-way leaves an empty database, not half of one.
        argv = ["psql", "-X", "-q", "-1", "-v", "ON_ERROR_STOP=1", *self.conn_args()]
        argv += ["-d", conninfo_dbname(name), "-o", os.devnull, "-f", "-"]
        self._load_dump(argv, env, secrets, f"psql (restore of database {name!r})", name, entry)

    def _apply_properties(
        self,
        original: str,
        name: str,
        dump: bytes,
        secrets: Secrets,
        env: dict[str, str],
        request: RestoreRequest,
    ) -> None:
        """Apply a database's recorded properties (ACL, comment, settings) to database `name`.

        A statement the target refuses (e.g. a GRANT to a role it lacks) is a warning naming
        the database, not a failed restore: the data is in place by now."""
        sql = database_properties_sql(dump.decode("utf-8", "surrogateescape"), original, name)
        if not sql.strip():
            return
        argv = [
            "psql",
            "-X",
            "-q",
            *self.conn_args(),
            "-d",
            conninfo_dbname(name),
            "-o",
            os.devnull,
            "-f",
            "-",
        ]
        tool = ToolProcess(
            argv, env=env, secrets=secrets, what=f"psql (properties of database {name!r})", stdin=True
        )
        tool.feed([sql.encode("utf-8", "surrogateescape")])
        stderr = tool.check()
        for line in stderr.splitlines():
            if "ERROR:" in line:
                request.reporter.emit(
                    WarningEvent(f"database {name!r}: a database property was not restored: {line.strip()}")
                )

    def _admin_db_for(self, name: str) -> str:
        """The database to connect to while dropping and creating `name`: the maintenance
        database, unless that is `name` itself (a server-wide backup holds `postgres` too:
        no session can drop the database it is connected to), then template1 (or postgres)."""
        if name != self.options.maintenance_db:
            return self.options.maintenance_db
        return "template1" if name != "template1" else "postgres"

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
        if request.target_dir is None and dest.is_dir():
            # In place: the configured data directory of a stopped server, after the confirmation
            # and the engine's safety backup. Its contents go; the directory itself (owner, mode,
            # a mount point) stays.
            clear_dir(dest)
        ensure_empty_dir(dest, what="physical restore")
        restored = False
        for entry in entries:
            if entry.kind != "file":
                continue
            if entry.path != BASE_TAR:
                request.reporter.emit(WarningEvent("not part of a base backup; skipped", path=entry.path))
                continue
            extract_tar_stream(ChunkReader(entry.chunks()), dest)
            restored = True
        if not restored:
            raise SourceError(f"the backup holds no {BASE_TAR}")
        for stale in ("postmaster.pid", "postmaster.opts"):
            with contextlib.suppress(FileNotFoundError):
                (dest / stale).unlink()
        os.chmod(dest, 0o700)
        version_file = dest / "PG_VERSION"
        if os.geteuid() == 0 and version_file.exists():
            st = version_file.stat()
            chown_tree(dest, st.st_uid, st.st_gid)
        # A copy elsewhere must start on its own; in place the configuration stays where it is.
        written = write_missing_config(dest) if request.target_dir is not None else []
        if written:
            request.reporter.emit(
                InfoEvent(
                    f"the backup holds no {', '.join(written)} (the cluster keeps its configuration outside "
                    f"its data directory, as Debian does in /etc/postgresql): wrote minimal ones into {dest} "
                    "(local connections only)"
                )
            )
        request.reporter.emit(
            InfoEvent(
                f"restored a PostgreSQL {request.source_info.get('major_version', '')} data directory into {dest}"
                + (
                    ""  # a restore to a moment adds recovery settings and says how to start it
                    if request.source_info.get("pitr")
                    else f"; start it with `pg_ctl -D {dest} start` (it replays the WAL included in the backup)"
                )
            )
        )


_PROPERTY_STATEMENT = re.compile(r"^(COMMENT ON |GRANT |REVOKE |ALTER DATABASE |ALTER ROLE |SECURITY LABEL )")


def database_properties_sql(dump: str, original: str, name: str) -> str:
    """The part of `pg_dump --create --quote-all-identifiers` output to run inside database
    `name`: everything after its first `\\connect` (the CREATE DATABASE before it is done by
    the restore itself), without the `\\connect` lines; statements naming the database
    `original` name `name` instead. Empty when the dump has no `\\connect` line."""
    lines = dump.split("\n")  # only newlines: a comment's text may hold other line breaks
    starts = [i for i, line in enumerate(lines) if line.startswith("\\connect ")]
    if not starts:
        return ""
    old, new = "DATABASE " + quote_ident(original), "DATABASE " + quote_ident(name)
    out = []
    for line in lines[starts[0] + 1 :]:
        if line.startswith("\\connect "):
            continue
        if original != name and _PROPERTY_STATEMENT.match(line):
            line = line.replace(old, new, 1)
        out.append(line)
    return "\n".join(out)


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


def _major_tuple(label: str) -> tuple[int, ...]:
    """ "15" -> (15,); "9.6" -> (9, 6); anything else -> ()."""
    parts = label.strip().split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) and label.strip() else ()


def installed_server_majors() -> set[str]:
    """The PostgreSQL server major versions installed here (Debian's /usr/lib/postgresql/N,
    and a `postgres` on PATH), as labels ("15", "9.6")."""
    found = {p.parent.parent.name for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")}
    on_path = shutil.which("postgres")
    if on_path:
        with contextlib.suppress(SourceError, OSError):
            m = re.search(
                r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", run([on_path, "--version"], what="postgres --version")
            )
            if m:
                found.add(m.group(1) if int(m.group(1)) >= 10 else f"{m.group(1)}.{m.group(2)}")
    return {label for label in found if _major_tuple(label)}


def check_physical_version(info: dict[str, Any], dest: Path | None, reporter: Any) -> None:
    """Refuse a physical backup that the server meant to start it cannot start; warn when
    it is older than that server (a newer server needs pg_upgrade to use it).

    The server meant to start it: the cluster already in `dest` (its PG_VERSION, in place),
    else the servers installed here (when none is found, nothing is checked)."""
    backup = str(info.get("major_version") or "")
    backup_t = _major_tuple(backup)
    if not backup_t:
        return
    existing = ""
    if dest is not None:
        with contextlib.suppress(OSError):
            existing = (dest / "PG_VERSION").read_text().strip()
    if _major_tuple(existing):
        if _major_tuple(existing) < backup_t:
            raise SourceError(
                f"refusing to restore: the backup is a PostgreSQL {backup} data directory, but {dest} holds a"
                f" cluster of PostgreSQL {existing}, an older major version that cannot start it",
                hint=f"restore with --target into a new directory and start it with PostgreSQL {backup}",
            )
        if _major_tuple(existing) > backup_t:
            reporter.emit(
                WarningEvent(
                    f"the backup is a PostgreSQL {backup} data directory, replacing a PostgreSQL {existing} cluster"
                    f" in {dest}: start it with PostgreSQL {backup} (then pg_upgrade to move to {existing})"
                )
            )
        return
    installed = installed_server_majors()
    if not installed or backup in installed:
        return
    listed = ", ".join(sorted(installed, key=_major_tuple))
    if all(_major_tuple(label) < backup_t for label in installed):
        raise SourceError(
            f"refusing to restore: the backup is a PostgreSQL {backup} data directory, but the PostgreSQL"
            f" server here is {listed}, an older major version that cannot start it",
            hint=f"restore on a machine with PostgreSQL {backup}, or install its server first",
        )
    reporter.emit(
        WarningEvent(
            f"no PostgreSQL {backup} server is installed here (found {listed}): the restored data directory"
            f" starts only with PostgreSQL {backup}"
        )
    )


# TarFile.extractall(filter=...) arrived in 3.11.4 (and 3.8.17, 3.9.17, 3.10.12); Debian 12's
# system Python is 3.11.2.
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")


def extract_tar_stream(fileobj: Any, dest: Path, *, python_filter: bool = HAS_TAR_FILTER) -> None:
    """Extract an uncompressed tar stream (read once, in order) into the directory `dest`.

    Every member is checked before it is written, on every Python: no absolute name, nothing
    that lands outside `dest` (`..`, or through a symbolic link extracted earlier), no
    symbolic or hard link whose target is absolute or outside `dest`, no device node. A
    member that fails raises SourceError ("refusing ...") before anything of it is written.
    Owners and modes are kept (as root), without setuid/setgid/sticky bits or group/other
    write bits. Where the Python has extraction filters (`python_filter`), its "tar"
    filter runs as well.
    """
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return os.path.commonpath([real, root]) == root

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        for member in tar:
            name = member.name
            why = None
            if name.startswith("/") or os.path.isabs(name):
                why = "an absolute path"
            elif not inside(os.path.join(root, name)):
                why = "a path outside the directory"
            elif member.issym() or member.islnk():
                base = os.path.dirname(name) if member.issym() else ""
                if os.path.isabs(member.linkname):
                    why = f"a link to the absolute path {member.linkname!r}"
                elif not inside(os.path.join(root, base, member.linkname)):
                    why = f"a link outside the directory ({member.linkname!r})"
            elif member.ischr() or member.isblk():
                why = "a device node"
            elif not (member.isreg() or member.isdir() or member.isfifo()):
                why = "an entry of an unknown type"
            if why:
                raise SourceError(
                    f"refusing to extract {name!r} from the backup: {why}",
                    hint="the backup's tar is not a data directory written by pg_basebackup",
                )
            member.mode &= 0o755
            yield member

    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        if python_filter:
            tar.extractall(dest, members=checked(tar), filter="tar")
        else:
            tar.extractall(dest, members=checked(tar))


def clear_dir(path: Path) -> None:
    """Delete everything inside `path` (symbolic links themselves, never their targets)."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)


def refuse_running_postgres(data_dir: Path) -> None:
    """Refuse a live data directory, the way pgBackRest does: postmaster.pid with a live PID."""
    pid = postgres_running(data_dir)
    if pid is None:
        return
    raise SourceError(
        f"refusing to restore into {data_dir}: a PostgreSQL server is running on it (pid {pid})",
        hint="stop the server first, or restore into a new data directory",
    )
