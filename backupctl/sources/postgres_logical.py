"""The logical path of the PostgreSQL source: `pg_dump` per database, `psql` to restore.

`PostgresLogical` (the base of `PostgresSource`, sources/postgres.py) lists the databases,
yields their dumps (with `pg_dumpall --globals-only` first and each database's properties),
and restores them into the configured server: the globals (roles, tablespaces; the login
role's own statements left out), then each database dropped, created from its recorded
encoding, locale and owner, loaded in one transaction, and given its recorded properties
(`database_properties_sql`). Creating the database itself instead of `pg_dump --create` is
what lets a database be restored under another name (clone). Paths in the backup:

    postgres/globals.sql                          yielded first, restored first
    postgres/database-properties/<name>.sql       per database, before its dump
    postgres/databases/<name>.sql                 one per database; name escaped by `safe_name`
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator

from backupctl.events import InfoEvent, WarningEvent
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest
from backupctl.sources.database import Stream, pipelined
from backupctl.sources.dbutil import Secrets, ToolProcess, safe_name
from backupctl.sources.postgres_client import (
    VERSION_SQL,
    PostgresClient,
    conninfo_dbname,
    psql_records,
    quote_ident,
    quote_literal,
)
from backupctl.sources.rowcount import CopyCounter, RowCounter, counted

GLOBALS_PATH = "postgres/globals.sql"
DB_DIR = "postgres/databases"
PROPS_DIR = "postgres/database-properties"


class PostgresLogical(PostgresClient):
    """Logical backups (`method: pg_dump`) of the configured server and their restore."""

    globals_path = GLOBALS_PATH

    def _version_and_facts(self, env: dict[str, str]) -> tuple[tuple[str, int], list[dict[str, str]]]:
        """The server's version and its databases' facts, in one psql call (each call is a
        process and a connection: ~10 ms before the dumps can start).

        The facts query reads the columns that differ between versions through to_jsonb, so
        it needs no version first: datlocprovider and daticulocale (15, 16; datlocale from
        17), absent before 15 (libc, no ICU locale)."""
        facts_sql = (
            "SELECT d.datname, pg_get_userbyid(d.datdba), pg_encoding_to_char(d.encoding), d.datcollate,"
            " d.datctype, coalesce(to_jsonb(d)->>'datlocprovider', 'c'),"
            " coalesce(to_jsonb(d)->>'daticulocale', to_jsonb(d)->>'datlocale', '')"
            " FROM pg_database d WHERE NOT d.datistemplate AND d.datallowconn ORDER BY d.datname"
        )
        out = self._psql_out(self._secrets, env, VERSION_SQL, facts_sql)
        # Each result ends with a newline; the version row holds none, so it ends at the first.
        version_row, _, rest = out.partition("\n")
        version, version_num = version_row.split("\x1f")
        keys = ("name", "owner", "encoding", "collate", "ctype", "locale_provider", "icu_locale")
        rows = psql_records(rest.removesuffix("\n"))
        return (version, int(version_num)), [dict(zip(keys, row, strict=False)) for row in rows]

    def _scan_logical(self, env: dict[str, str], facts_rows: list[dict[str, str]]) -> Iterator[Entry]:
        facts = {d["name"]: d for d in facts_rows}
        wanted = self._wanted_databases(facts)
        databases = [{**facts[name], "path": f"{DB_DIR}/{safe_name(name)}.sql"} for name in wanted]
        self._info["databases"] = databases
        self._info["globals"] = GLOBALS_PATH if self.options.globals else None

        # Every stream planned first, so that each tool can start ahead of its turn
        # (sources/database.pipelined); yielded below in the order a restore reads them.
        streams: list[Stream] = []
        if self.options.globals:
            argv = ["pg_dumpall", "--globals-only", *self.conn_args()]
            argv += ["-l", self.options.maintenance_db]
            streams.append(Stream(GLOBALS_PATH, self._starter(argv, env, "pg_dumpall --globals-only")))
        for db in databases:
            db["properties"] = f"{PROPS_DIR}/{safe_name(db['name'])}.sql"
            argv = ["pg_dump", "-Fp", "--create", "--schema-only", "--quote-all-identifiers"]
            argv += ["--exclude-schema=*", *self.conn_args(), "-d", conninfo_dbname(db["name"])]
            what = f"pg_dump --create of database {db['name']!r} (its properties)"
            streams.append(Stream(db["properties"], self._starter(argv, env, what)))
        for db in databases:
            argv = ["pg_dump", "-Fp", *self.conn_args(), "-d", conninfo_dbname(db["name"])]
            what = f"pg_dump of database {db['name']!r}"
            streams.append(Stream(db["path"], self._starter(argv, env, what), heavy=True))
        entries = iter(pipelined(streams))

        yield Entry(path="postgres", kind="dir", mode=0o700)
        if self.options.globals:
            yield next(entries)
        yield Entry(path=PROPS_DIR, kind="dir", mode=0o700)
        for _ in databases:
            yield next(entries)
        yield Entry(path=DB_DIR, kind="dir", mode=0o700)
        # Rows per table, counted in the COPY blocks as the dumps stream (sources/rowcount.py):
        # what a restore drill compares with (info `row_counts`, set in _finished).
        self._row_counters: list[tuple[str, RowCounter]] = []
        for db in databases:
            counter = CopyCounter()
            self._row_counters.append((db["name"], counter))
            yield counted(next(entries), counter)

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
