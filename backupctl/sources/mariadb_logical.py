"""The logical path of the MariaDB source: `mariadb-dump` per database, the client to restore.

`MariaDBLogical` (the base of `MariaDBSource`, sources/mariadb.py) lists the databases,
yields their dumps (users and grants first, MariaDB only) and restores them into the
configured server: the users and grants (sources/mariadb_users.py says which are left out),
then each database dropped, created from its recorded character set and collation and
loaded, then the grants on single objects. Dumps are made without `--databases`, so they
hold no `CREATE DATABASE`/`USE` and can be restored under another name (clone). Paths:

    mariadb/globals.sql                   yielded first, restored first
    mariadb/databases/<name>.sql          one per database; name escaped by `safe_name`
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from backupctl.errors import SourceError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.sources.base import Entry, RestoreEntry, RestoreRequest
from backupctl.sources.database import Stream, pipelined
from backupctl.sources.dbutil import Secrets, ToolProcess, safe_name
from backupctl.sources.mariadb_client import MariaDBClient, mariadb_tool, quote_ident, quote_literal
from backupctl.sources.mariadb_users import (
    OBJECT_GRANT_RE,
    PROTECTED_ACCOUNTS,
    PROTECTED_USERS,
    UsersDump,
    grantee_pattern,
    parse_account,
)
from backupctl.sources.rowcount import InsertCounter, RowCounter, counted

GLOBALS_PATH = "mariadb/globals.sql"
DB_DIR = "mariadb/databases"
SYSTEM_DATABASES = ("information_schema", "performance_schema", "mysql", "sys")


class MariaDBLogical(MariaDBClient):
    """Logical backups (`method: mariadb-dump`) of the configured server and their restore."""

    globals_path = GLOBALS_PATH

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
        dump = mariadb_tool("mariadb-dump", "mysqldump")
        with_globals = (
            self.options.globals and self._info["flavor"] == "mariadb" and "mariadb" in Path(dump).name
        )
        self._info["globals"] = GLOBALS_PATH if with_globals else None

        common = [
            "--single-transaction",
            "--routines",
            "--events",
            "--triggers",
            "--hex-blob",
            "--skip-dump-date",
        ]
        common += ["--default-character-set=utf8mb4"]
        # Every stream planned first, so that each tool can start ahead of its turn
        # (sources/database.pipelined); yielded below in this order.
        streams: list[Stream] = []
        if with_globals:
            argv = [dump, *lead, *self.conn_args(), "--system=users", "--insert-ignore", "--skip-dump-date"]
            # Checked by UsersDump: accounts the server cannot resolve are skipped, not a failure.
            what = "mariadb-dump --system=users"
            streams.append(
                Stream(GLOBALS_PATH, self._starter([*argv, "--force"], env, what, tool_class=UsersDump))
            )
        for db in databases:
            argv = [dump, *lead, *self.conn_args(), *common, "--", db["name"]]
            what = f"{Path(dump).name} of database {db['name']!r}"
            streams.append(Stream(db["path"], self._starter(argv, env, what), heavy=True))
        entries = iter(pipelined(streams))

        yield Entry(path="mariadb", kind="dir", mode=0o700)
        if with_globals:
            yield next(entries)
        yield Entry(path=DB_DIR, kind="dir", mode=0o700)
        # Rows per table, counted in the INSERT statements as the dumps stream
        # (sources/rowcount.py): what a restore drill compares with (info `row_counts`).
        self._row_counters: list[tuple[str, RowCounter]] = []
        for db in databases:
            counter = InsertCounter()
            self._row_counters.append((db["name"], counter))
            yield counted(next(entries), counter)

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
                    if OBJECT_GRANT_RE.match(line):
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
        client = mariadb_tool("mariadb", "mysql")
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
        client = mariadb_tool("mariadb", "mysql")
        argv = [client, *lead, *self.conn_args(), f"--database={name}", "--binary-mode"]
        self._load_dump(argv, env, secrets, f"mariadb (restore of {name!r})", name, entry)
