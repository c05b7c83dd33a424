"""The PostgreSQL source's connection to its server: options, SQL quoting, client tools.

`PostgresOptions` is the `type: postgres` source's configuration. `PostgresClient` is the
base of `PostgresSource` (sources/postgres.py): it runs psql against the configured server
and checks versions, for the logical and physical paths above it and for clone, drill and
pitr (`admin_sql`, the quoting helpers).

The password reaches the tools only through a temporary 0600 pgpass file (PGPASSFILE in
`client_env`), never argv; PGPASSWORD and the variable the password came from are dropped
from the children's environment. Without `password_env`/`password_file` the user's own
~/.pgpass or PG* variables apply.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backupctl.config.secrets import resolve_secret
from backupctl.errors import SourceError
from backupctl.events import WarningEvent
from backupctl.sources.base import SourceOptions
from backupctl.sources.database import DatabaseSource
from backupctl.sources.dbutil import Secrets, child_env, pgpass_line, run

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


VERSION_SQL = "SELECT current_setting('server_version'), current_setting('server_version_num')"


def psql_records(text: str) -> list[list[str]]:
    """The rows of psql's unaligned output with fields separated by 0x1F and records by 0x1E
    (`-A -t -F $'\\x1f' -R $'\\x1e'`), the result's final newline already removed."""
    return [rec.split("\x1f") for rec in text.split("\x1e") if rec]


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


class PostgresClient(DatabaseSource):
    """psql against the configured server: queries, admin SQL, version checks (no scan or restore)."""

    Options = PostgresOptions
    options: PostgresOptions
    label = "PostgreSQL"
    secrets_prefix = "backupctl-pg-"

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
        out = self._psql_out(secrets, env, sql, db=db)
        return psql_records(out.rstrip("\n"))

    def _psql_out(self, secrets: Secrets, env: dict[str, str], *sqls: str, db: str | None = None) -> str:
        """psql's unaligned output of `sqls` (one -c each): fields separated by 0x1F,
        records by 0x1E, each result ended by a newline."""
        commands = [arg for sql in sqls for arg in ("-c", sql)]
        return run(
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
            + ["-d", conninfo_dbname(db or self.options.maintenance_db), *commands],
            env=env,
            secrets=secrets,
            what="psql",
        )

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
        return psql_records(out.rstrip("\n"))

    def _server_version(self, secrets: Secrets, env: dict[str, str]) -> tuple[str, int]:
        rows = self._query(secrets, env, VERSION_SQL)
        return rows[0][0], int(rows[0][1])

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
