"""Drill of a `mariadb` source, always on a throwaway server (never the live one).

Logical (mariadb-dump): a new, empty data directory (`mariadb-install-db`) and a temporary
server on it (sources/mariadb_server.TemporaryServer: no networking, a private socket, no
binary log, grant tables skipped, event scheduler off, so no event or account of the dump
ever runs against anything). The dumps are loaded through the source's own logical restore
(users and grants skipped), then per database the rows of every table against the counts
recorded while the dump streamed (info `row_counts`, sources/rowcount.py) and `CHECK TABLE`
on every table. A temporary server rather than temporary databases on the live server: a
dump's events would run there, and could name the live databases.

Physical (mariabackup): the backup (with its increments) is extracted, prepared and moved
into a throwaway data directory (the engine's `--target` restore), a temporary server is
started on it, and every table of every database is checked (`CHECK TABLE`) and counted (a
physical backup records no counts to compare). Point in time (`--to-time`, mariabackup plus
archived binary logs): the data directory is made by the `backup restore --to-time --target`
code (pitr.mariadb_restore: the base backup prepared, the binary logs replayed up to the
moment), then checked the same way; the counts are what was committed before the moment.

The server is shut down and its directory removed at the end; a kill -9 leaves them to the
next drill (drill/dbcheck.py). No password is involved: the temporary server skips grants
and is reached only over its private socket.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from backupctl.drill.base import DrillCheck, DrillContext, Driller, DrillUnsupported
from backupctl.drill.dbcheck import compare_rows, restore_with, throwaway_instance
from backupctl.events import InfoEvent
from backupctl.sources.dbutil import child_env, run
from backupctl.sources.mariadb_server import TemporaryServer, which

SYSTEM_DATABASES = ("information_schema", "performance_schema", "mysql", "sys")


class DrillServer(TemporaryServer):
    """TemporaryServer whose socket, pid file and log live in the drill's instance directory
    (so that a sweep after kill -9 finds them with the data directory)."""

    def __init__(self, datadir: Path, rundir: Path, reporter: Any = None, *, grants: bool = False) -> None:
        super().__init__(datadir, reporter)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = rundir
        self.socket = rundir / "mysqld.sock"
        self.log = rundir / "error.log"
        # With grant tables (a fresh data directory from install_db, whose accounts for root
        # and the installing OS user log in by unix socket): MariaDB disables the event
        # scheduler entirely under --skip-grant-tables, and a dump's CREATE EVENT then fails.
        self.grants = grants
        self.grant_tables = grants
        # OFF rather than DISABLED: a disabled scheduler refuses a dump's CREATE EVENT, while
        # OFF creates events and runs none.
        self.event_scheduler = "OFF"

    def client_argv(self) -> list[str]:
        argv = super().client_argv()
        if self.grants:
            argv = [a if a != "--user=root" else f"--user={_os_user()}" for a in argv]
        return argv

    def sql(self, sql: str) -> list[list[str]]:
        """Rows of `sql` (fed on stdin), tab-separated fields as the client's batch mode prints them."""
        argv = [*self.client_argv(), "--batch", "--skip-column-names"]
        out = run(argv, env=child_env(drop=["MYSQL_PWD"]), what="mariadb", input_chunks=[sql.encode()])
        return [line.split("\t") for line in out.splitlines() if line]


def _os_user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _hex_literal(name: str) -> str:
    return "X'" + name.encode().hex() + "'" if name else "''"


def databases(server: DrillServer) -> list[str]:
    rows = server.sql("SELECT HEX(schema_name) FROM information_schema.schemata ORDER BY schema_name")
    names = [bytes.fromhex(r[0]).decode("utf-8", "surrogateescape") for r in rows]
    return [n for n in names if n not in SYSTEM_DATABASES]


def tables(server: DrillServer, database: str) -> list[str]:
    """The tables holding rows (base and system-versioned tables; views and sequences not)."""
    rows = server.sql(
        "SELECT HEX(table_name) FROM information_schema.tables WHERE table_schema = "
        f"{_hex_literal(database)} AND table_type IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY table_name"
    )
    return [bytes.fromhex(r[0]).decode("utf-8", "surrogateescape") for r in rows]


def row_counts(server: DrillServer, database: str, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    sql = " UNION ALL ".join(
        f"SELECT {i}, COUNT(*) FROM {_ident(database)}.{_ident(t)}" for i, t in enumerate(names)
    )
    return {names[int(i)]: int(n) for i, n in server.sql(sql)}


def check_tables(server: DrillServer, database: str, names: list[str]) -> DrillCheck:
    """`CHECK TABLE` of every table: each must end with status OK."""
    if not names:
        return DrillCheck("check_table", True, f"database {database}: no tables to check")
    rows = server.sql("CHECK TABLE " + ", ".join(f"{_ident(database)}.{_ident(t)}" for t in names))
    ok = [r for r in rows if len(r) >= 4 and r[2] == "status" and r[3] == "OK"]
    bad = [r for r in rows if len(r) >= 4 and (r[2] == "error" or (r[2] == "status" and r[3] != "OK"))]
    if bad or len(ok) != len(names):
        found = (
            "; ".join(f"{r[0]}: {r[2]}: {r[3]}" for r in bad[:5]) or f"{len(ok)} of {len(names)} tables OK"
        )
        return DrillCheck("check_table", False, f"database {database}: CHECK TABLE found: {found}")
    return DrillCheck("check_table", True, f"database {database}: CHECK TABLE OK for {len(names)} tables")


def install_db(datadir: Path, rundir: Path) -> None:
    """A new, empty data directory (system tables only) for a logical drill."""
    tool = which("mariadb-install-db", "mysql_install_db")
    argv = [tool, "--no-defaults", f"--datadir={datadir}", f"--tmpdir={rundir}", "--skip-test-db"]
    argv += ["--skip-name-resolve", "--auth-root-authentication-method=socket"]
    if os.geteuid() == 0:
        argv.append("--user=root")
    run(argv, env=child_env(drop=["MYSQL_PWD"]), what="mariadb-install-db", timeout=600)


class MariaDBDriller(Driller):
    supports_pitr = True

    def drill(self, ctx: DrillContext) -> list[DrillCheck]:
        physical = (ctx.info.get("method") or ctx.source.get("method")) == "mariabackup"
        if ctx.to_time is not None and not physical:
            raise DrillUnsupported(
                "a mariadb-dump backup cannot be rolled forward to a moment; drill a mariabackup backup with --to-time"
            )
        with throwaway_instance() as inst:
            data, rundir = inst / "data", inst / "run"
            rundir.mkdir(mode=0o700)
            t0 = time.monotonic()
            if ctx.to_time is not None:
                from backupctl.pitr.common import Target
                from backupctl.pitr.mariadb_restore import restore_mariadb_to

                # What `backup restore --to-time T --target` does: the base backup prepared,
                # then the archived binary logs replayed up to T (on a temporary server).
                restore_mariadb_to(
                    ctx.service,
                    ctx.backup["deployment"],
                    Target(time=ctx.to_time),
                    backup_id=ctx.backup_id,
                    target_dir=data,
                    safety_backup=False,
                )
            elif physical:
                ctx.restore_to(data)
            else:
                install_db(data, rundir)
            server = DrillServer(data, rundir, ctx.reporter, grants=not physical)
            try:
                server.start()
                if not physical:
                    self._load(ctx, server)
                ctx.restore_seconds = time.monotonic() - t0
                moment = f", binary logs replayed to {ctx.to_time.isoformat()}" if ctx.to_time else ""
                checks = [DrillCheck("restore", True, f"restored and started on a temporary server{moment}")]
                recorded_all = None if physical else ctx.info.get("row_counts")
                why = "an older backup: none were recorded"
                if physical:
                    why = "a physical backup records none"
                    if ctx.to_time is not None:
                        why = "point in time: what was committed before it"
                names = databases(server)
                for db in sorted(set(names) | set(recorded_all or {})):
                    if db not in names:
                        checks.append(DrillCheck("rows", False, f"database {db}: missing after restore"))
                        continue
                    found = tables(server, db)
                    counts = row_counts(server, db, found)
                    if recorded_all is None:
                        checks += compare_rows(db, None, counts, why=why)
                    else:
                        checks += compare_rows(db, recorded_all.get(db), counts)
                    checks.append(check_tables(server, db, found))
                server.stop()
                return checks
            finally:
                server.cleanup()

    @staticmethod
    def _load(ctx: DrillContext, server: DrillServer) -> None:
        from backupctl.sources.mariadb import MariaDBSource
        from backupctl.sources.mariadb_client import MariaDBOptions

        names = [str(d["name"]) for d in ctx.info.get("databases", [])]
        opts = MariaDBOptions(
            type="mariadb", host="localhost", socket=server.socket, user=_os_user(), databases="all"
        )
        ctx.reporter.emit(
            InfoEvent(f"drill: loading {', '.join(names) or 'no databases'} into a temporary server")
        )
        source = MariaDBSource(opts, ctx.reporter)
        extra = {"rename": {n: n for n in names}, "only_databases": names, "skip_globals": True}
        restore_with(ctx, source, None, extra)


DRILLER = MariaDBDriller()
