"""Drill of a `postgres` source.

Logical (pg_dump): every database of the backup is restored through the source's own
logical restore, renamed to a temporary database on the SAME server
(`backupctl_drill_<host>_<pid>_<random>_<n>`; the roles are not touched: `skip_globals`), so
the live databases are never written. Then, per database, the rows of every table (`SELECT
count(*) FROM ONLY t`, the way pg_dump dumps a table's own rows) against the counts recorded
while the dump streamed (info `row_counts`, sources/rowcount.py), and `pg_amcheck` (heap and
B-tree checks, `--install-missing` installs amcheck into the temporary database) where it is
installed. The temporary databases are dropped at the end; ones a killed drill of this host
left (their pid no longer runs) are dropped by the next logical drill against the server.

Physical (pg_basebackup), and point-in-time (`--to-time`, pg_basebackup + archived WAL): the
backup is restored into a throwaway data directory (the engine's `--target` restore; with a
target time the `backup restore --to-time --target` code, which writes restore_command and
recovery_target_time), and a throwaway server is started on it as the directory's owner: a
private socket directory, no TCP (`listen_addresses=''`), a trust-only hba file of its own,
archive_mode off. With a target time the server replays the archived WAL, and the drill waits
until it has promoted. Then the rows of every table of every database (listed: a physical
backup records no counts; for a point in time they are what was committed before the target)
and pg_amcheck on all databases. The server is stopped (immediate) and everything removed; a
kill -9 leaves it to the next drill (drill/dbcheck.py).

Passwords: the live server's only through the source's pgpass file (client_env); the
throwaway server needs none (trust on its private socket).
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl.drill.base import DrillCheck, DrillContext, Driller, DrillUnsupported
from backupctl.drill.dbcheck import (
    compare_rows,
    give_to,
    restore_with,
    sweep_instances,
    tail,
    throwaway_instance,
)
from backupctl.errors import SourceError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.procs import pid_alive
from backupctl.sources.dbutil import Secrets, child_env, run

if TYPE_CHECKING:
    from backupctl.sources.postgres import PostgresSource

Query = Callable[[str, str], list[list[str]]]  # (database, sql) -> rows

TEMP_PREFIX = "backupctl_drill_"
_TEMP_NAME = re.compile(r"^backupctl_drill_(?P<host>[0-9a-f]{6})_(?P<pid>\d+)_[0-9a-f]{6}_\d+$")
# How long a point-in-time drill's server may take to replay WAL up to the target and promote.
RECOVERY_TIMEOUT_S = 6 * 3600.0

# The tables whose rows pg_dump dumps with COPY: ordinary tables (partitions included; a
# partitioned parent holds no rows of its own), outside the system schemas; with whether an
# extension created them (pg_dump holds the data only of its configuration tables).
TABLES_SQL = (
    "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),"
    " EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid"
    " AND d.deptype = 'e')"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')"
    " AND n.nspname !~ '^pg_(toast|temp_)' ORDER BY 1"
)


def host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def table_counts(query: Query, database: str) -> tuple[dict[str, int], set[str]]:
    """({schema.table as pg_dump names it: rows}, the tables an extension made) of `database`."""
    tables = query(database, TABLES_SQL)
    if not tables:
        return {}, set()
    # The names come from the catalog (quote_ident), never from the backup's record. With
    # row_security off a row-level security policy makes the count fail rather than
    # silently count fewer rows (as pg_dump itself does).
    sql = "SET row_security = off;\n" + " UNION ALL ".join(
        f"SELECT {i}, count(*) FROM ONLY {row[0]}" for i, row in enumerate(tables)
    )
    counts = {tables[int(i)][0]: int(n) for i, n in query(database, sql)}
    return counts, {row[0] for row in tables if row[1] == "t"}


def pg_tool(name: str, major: str = "") -> str | None:
    """`name` of the given major version (Debian / PGDG layouts) when installed, else PATH."""
    for candidate in (
        Path(f"/usr/lib/postgresql/{major}/bin/{name}"),
        Path(f"/usr/pgsql-{major}/bin/{name}"),
    ):
        if major and candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    installed = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(installed[0]) if installed else None


# pg_amcheck's errors when the amcheck extension cannot be used on the server at all.
_AMCHECK_UNAVAILABLE = (
    'extension "amcheck" is not available',
    "could not open extension control file",
    "permission denied to create extension",
    "must be superuser",  # compared in lower case
)


def amcheck(
    argv_conn: list[str], env: dict[str, str], databases: list[str], major: str, shown: str
) -> DrillCheck:
    """pg_amcheck over `databases` (connection in `argv_conn`/`env`): the `amcheck` check."""
    tool = pg_tool("pg_amcheck", major)
    if tool is None:
        return DrillCheck("amcheck", True, f"{shown}: pg_amcheck is not installed: not run")
    argv = [tool, *argv_conn, "--install-missing"]
    for db in databases:
        argv += ["--database", db]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=24 * 3600)
    if proc.returncode == 0:
        return DrillCheck("amcheck", True, f"{shown}: pg_amcheck found no corruption")
    output = proc.stdout + proc.stderr
    if any(reason in output.lower() for reason in _AMCHECK_UNAVAILABLE):
        # The server lacks the amcheck extension (contrib) or the user may not install it:
        # like a missing pg_amcheck, nothing was checked; the row checks still stand.
        errors = [ln.strip() for ln in output.splitlines() if "error:" in ln.lower()]
        return DrillCheck(
            "amcheck",
            True,
            f"{shown}: pg_amcheck not run, the amcheck extension cannot be installed (it needs a superuser"
            f" and the server's contrib package): {(errors or [tail(output, 1)])[0]}",
        )
    return DrillCheck(
        "amcheck",
        False,
        f"{shown}: pg_amcheck failed (exit code {proc.returncode}): {tail(proc.stdout + proc.stderr)}",
    )


class PostgresDriller(Driller):
    supports_pitr = True

    def drill(self, ctx: DrillContext) -> list[DrillCheck]:
        sweep_instances()  # throwaway servers of killed drills, whichever kind this one is
        method = ctx.info.get("method") or ctx.source.get("method")
        if method == "pg_basebackup":
            return self._physical(ctx)
        if ctx.to_time is not None:
            raise DrillUnsupported(
                "a pg_dump backup cannot be rolled forward to a moment; drill a pg_basebackup backup with --to-time"
            )
        return self._logical(ctx)

    # -- logical ----------------------------------------------------------------------------

    def _logical(self, ctx: DrillContext) -> list[DrillCheck]:
        from backupctl.sources.postgres import PostgresSource

        source = ctx.service.restore_source(ctx.source, ctx.deployment, ctx.position)
        assert isinstance(source, PostgresSource)
        info = ctx.info
        databases = [str(d["name"]) for d in info.get("databases", [])]
        if not databases:
            return [DrillCheck("restore", False, "the backup records no databases")]
        where = f"{source.options.host}:{source.options.port}"
        dropped = drop_leftovers(source)
        if dropped:
            ctx.reporter.emit(
                InfoEvent(
                    f"dropped {len(dropped)} temporary database(s) of earlier drills: {', '.join(dropped)}"
                )
            )
        stem = f"{TEMP_PREFIX}{host_tag()}_{os.getpid()}_{secrets.token_hex(3)}"
        rename = {name: f"{stem}_{i}" for i, name in enumerate(databases)}
        recorded_all = info.get("row_counts")
        checks: list[DrillCheck] = []
        try:
            ctx.reporter.emit(
                InfoEvent(
                    "drill: restoring "
                    + ", ".join(f"{o!r} as {n!r}" for o, n in rename.items())
                    + f" on {where} (temporary databases)"
                )
            )
            t0 = time.monotonic()
            extra = {"rename": rename, "only_databases": databases, "skip_globals": True}
            restore_with(ctx, source, None, extra)
            ctx.restore_seconds = time.monotonic() - t0
            checks.append(DrillCheck("restore", True, f"{len(databases)} database(s) restored on {where}"))

            def query(db: str, sql: str) -> list[list[str]]:
                return source.admin_sql(sql, db=db)

            for name, temp in rename.items():
                counts, from_extensions = table_counts(query, temp)
                if recorded_all is None:
                    checks += compare_rows(name, None, counts, why="an older backup: none were recorded")
                else:
                    checks += compare_rows(name, recorded_all.get(name), counts, from_extensions)
            secrets_ = Secrets(source.secrets_prefix)
            try:
                checks.append(
                    amcheck(
                        [*source.conn_args(), f"--maintenance-db={source.options.maintenance_db}"],
                        source.client_env(secrets_),  # the password through its pgpass file
                        list(rename.values()),
                        str(info.get("major_version") or ""),
                        f"temporary database(s) on {where}",
                    )
                )
            finally:
                secrets_.cleanup()
        finally:
            try:
                drop_databases(source, list(rename.values()))
            except SourceError as exc:
                ctx.reporter.emit(
                    WarningEvent(
                        f"the temporary database(s) {', '.join(rename.values())} could not be dropped"
                        f" ({exc.message}); the next drill against {where} drops them"
                    )
                )
        return checks

    # -- physical and point in time ---------------------------------------------------------

    def _physical(self, ctx: DrillContext) -> list[DrillCheck]:
        with throwaway_instance() as inst:
            data = inst / "data"
            t0 = time.monotonic()
            if ctx.to_time is None:
                ctx.restore_to(data)
            else:
                from backupctl.pitr.common import Target
                from backupctl.pitr.postgres_restore import restore_postgres_to

                restore_postgres_to(
                    ctx.service,
                    ctx.backup["deployment"],
                    Target(time=ctx.to_time),
                    backup_id=ctx.backup_id,
                    target_dir=data,
                    safety_backup=False,
                )
            st = (data / "PG_VERSION").stat()
            give_to(inst, st.st_uid, st.st_gid)
            server = ThrowawayPostgres(data, inst)
            user = str(
                getattr(
                    ctx.service.restore_source(ctx.source, ctx.deployment, ctx.position).options,
                    "user",
                    "postgres",
                )
            )
            try:
                server.start(recovery=ctx.to_time is not None, user=user)
                ctx.restore_seconds = time.monotonic() - t0
                moment = f" recovered to {ctx.to_time.isoformat()} and promoted" if ctx.to_time else ""
                checks = [DrillCheck("start", True, f"the restored data directory started{moment}")]
                # Count and check as the cluster's bootstrap superuser (the configured user may
                # be a replication role that cannot read every table).
                user = server.query(user, "template1", "SELECT rolname FROM pg_roles WHERE oid = 10")[0][0]
                databases = [r[0] for r in server.query(user, "template1", DATABASES_SQL)]
                why = (
                    "a physical backup records none"
                    if ctx.to_time is None
                    else "point in time: what was committed before it"
                )
                for db in databases:
                    counts, _ = table_counts(lambda d, sql: server.query(user, d, sql), db)
                    checks += compare_rows(db, None, counts, why=why)
                checks.append(
                    amcheck(
                        ["-h", str(inst), "-p", str(server.port), "-U", user, "--no-password"],
                        child_env(drop=["PGPASSWORD", "PGPASSFILE"]),
                        databases,
                        (data / "PG_VERSION").read_text().strip(),
                        "the throwaway server",
                    )
                )
                return checks
            finally:
                server.stop()


DATABASES_SQL = "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY 1"


class ThrowawayPostgres:
    """A PostgreSQL server on a restored data directory, private to the drill (module doc)."""

    def __init__(self, data: Path, workdir: Path) -> None:
        self.data = data
        self.dir = workdir
        self.port = 5432  # names the socket only: there is no TCP listener
        self.log = workdir / "server.log"
        self.major = (data / "PG_VERSION").read_text().strip()
        self.owner: str | None = None
        if os.geteuid() == 0:
            import pwd

            uid = data.stat().st_uid
            try:
                self.owner = pwd.getpwuid(uid).pw_name
            except KeyError:
                raise SourceError(f"the owner (uid {uid}) of the restored {data} has no user name") from None
        self.started = False

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *argv] if self.owner and self.owner != "root" else argv

    def _tool(self, name: str) -> str:
        tool = pg_tool(name, self.major)
        if tool is None:
            raise SourceError(f"{name} not found", hint=f"install the PostgreSQL {self.major} server package")
        return tool

    def start(self, *, recovery: bool, user: str) -> None:
        hba = self.dir / "pg_hba.conf"
        hba.write_text("local all all trust\n")
        st = self.dir.stat()
        if os.geteuid() == 0:
            os.chown(hba, st.st_uid, st.st_gid)
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses='' -c hba_file={hba} -c archive_mode=off"
            " -c ssl=off -c log_destination=stderr -c logging_collector=off"
        )
        argv = [
            self._tool("pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            opts,
            "-l",
            str(self.log),
            "-w",
            "-t",
            "3600",
            "start",
        ]
        self.started = True
        proc = subprocess.run(
            self._as_owner(argv),
            capture_output=True,
            text=True,
            cwd=self.dir,
            # A point in time: its restore_command runs `backupctl wal fetch`, which needs the
            # repository's secrets. Otherwise no secret of ours reaches the server.
            env=child_env(repository_access=recovery),
        )
        if proc.returncode != 0:
            raise SourceError(
                f"the restored data directory would not start: {tail(proc.stderr + self.log_tail())}"
            )
        if recovery:
            self._wait_promoted(user)

    def log_tail(self) -> str:
        try:
            return "\n" + self.log.read_text(errors="replace")
        except OSError:
            return ""

    def _wait_promoted(self, user: str) -> None:
        """Until `pg_is_in_recovery()` is false: the target was reached and the server promoted.
        A server that ends recovery short of its target shuts down: said at once."""
        deadline = time.monotonic() + RECOVERY_TIMEOUT_S
        while True:
            try:
                if self.query(user, "template1", "SELECT pg_is_in_recovery()")[0][0] == "f":
                    return
            except SourceError:
                pass
            if not (self.data / "postmaster.pid").exists():
                raise SourceError(
                    f"the restored server stopped before it reached the recovery target: {tail(self.log_tail())}"
                )
            if time.monotonic() > deadline:
                raise SourceError(
                    f"the restored server did not reach the recovery target within {RECOVERY_TIMEOUT_S:.0f} s"
                )
            time.sleep(0.3)

    def query(self, user: str, database: str, sql: str) -> list[list[str]]:
        from backupctl.sources.postgres_client import conninfo_dbname

        argv = [
            self._tool("psql"),
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
        ]
        argv += ["-h", str(self.dir), "-p", str(self.port), "-U", user, "--no-password"]
        argv += ["-d", conninfo_dbname(database), "-f", "-"]
        out = run(
            argv, env=child_env(drop=["PGPASSWORD", "PGPASSFILE"]), what="psql", input_chunks=[sql.encode()]
        )
        return [rec.split("\x1f") for rec in out.rstrip("\n").split("\x1e") if rec]

    def stop(self) -> None:
        if not self.started or not (self.data / "postmaster.pid").exists():
            return
        subprocess.run(
            self._as_owner(
                [self._tool("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "60", "stop"]
            ),
            capture_output=True,
            cwd=self.dir,
            env=child_env(),
        )


# -- temporary databases on the live server ---------------------------------------------------


def _autocommit(source: PostgresSource, sql: str) -> None:
    """A statement that cannot run in a transaction (DROP DATABASE), as the source's user."""
    secrets_ = Secrets(source.secrets_prefix)
    try:
        source.psql(secrets_, source.client_env(secrets_), sql)
    finally:
        secrets_.cleanup()


def drop_databases(source: PostgresSource, names: list[str]) -> None:
    from backupctl.sources.postgres_client import quote_ident

    version = int(source.admin_sql("SELECT current_setting('server_version_num')")[0][0])
    force = " WITH (FORCE)" if version >= 130000 else ""
    for name in names:
        _autocommit(source, f"DROP DATABASE IF EXISTS {quote_ident(name)}{force}")


def drop_leftovers(source: PostgresSource) -> list[str]:
    """Drop the temporary databases that drills of this host left on the server when they
    were killed (their pid no longer runs); return their names."""
    rows = source.admin_sql(
        f"SELECT datname FROM pg_database WHERE datname LIKE '{TEMP_PREFIX.replace('_', chr(92) + '_')}%'"
    )
    me, mine = os.getpid(), host_tag()
    stale = []
    for name, *_rest in rows:
        m = _TEMP_NAME.match(name)
        if m and m["host"] == mine and int(m["pid"]) != me and not pid_alive(int(m["pid"])):
            stale.append(name)
    if stale:
        drop_databases(source, stale)
    return stale


DRILLER = PostgresDriller()
