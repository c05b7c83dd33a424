"""The MariaDB source's connection to its server: options, SQL quoting, client tools.

`MariaDBOptions` is the `type: mariadb` source's configuration. `MariaDBClient` is the base
of `MariaDBSource` (sources/mariadb.py): it runs the `mariadb` client against the configured
server and checks versions, for the logical and physical paths above it and for clone and
pitr (`admin_sql`, the quoting helpers). `mariadb_tool` finds a client or backup tool.

The password reaches the tools only through a 0600 option file passed as the FIRST
argument (`--defaults-extra-file`, from `client_setup`), never argv or the environment
(MYSQL_PWD and the password's own variable are dropped); without `password_env`/
`password_file` the user's own option files (~/.my.cnf) apply.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from backupctl.config.secrets import resolve_secret
from backupctl.errors import SourceError
from backupctl.events import WarningEvent
from backupctl.sources.base import SourceOptions
from backupctl.sources.database import DatabaseSource
from backupctl.sources.dbutil import Secrets, child_env, find_tool, mysql_option_file, run


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


def mariadb_tool(*names: str) -> str:
    """The path of the first installed of `names` (MariaDB client and backup tools)."""
    return find_tool(names, hint="install the MariaDB client / backup tools")


class MariaDBClient(DatabaseSource):
    """The client against the configured server: queries, admin SQL, version checks."""

    Options = MariaDBOptions
    options: MariaDBOptions
    label = "MariaDB"
    secrets_prefix = "backupctl-mariadb-"

    @property
    def method(self) -> str:
        return self.options.method

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
        client = mariadb_tool("mariadb", "mysql")
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
            client = mariadb_tool("mariadb", "mysql")
            out = run(
                [client, *lead, *self.conn_args(), "--batch", "--skip-column-names", "--raw"],
                env=env,
                secrets=secrets,
                what=Path(client).name,
                input_chunks=[sql.encode()],
            )
        return [line.split("\t") for line in out.splitlines() if line]

    def _live_datadir(self, secrets: Secrets, lead: list[str], env: dict[str, str]) -> Path | None:
        """The @@datadir of the configured server when it answers, else None (stopped or unreachable)."""
        try:
            return Path(self.query(secrets, lead, env, "SELECT @@datadir")[0][0]).resolve()
        except (SourceError, IndexError):
            return None

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
