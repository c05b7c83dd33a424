"""What the PostgreSQL and MariaDB drillers share: throwaway-server directories that the
next drill cleans up after a kill -9, restoring into a server of the driller's choosing,
and the row-count comparison.

Throwaway servers (a restored physical backup, the temporary MariaDB a logical dump is
loaded into) run as the data directory's owner, another OS user when backupctl runs as
root, so their directory cannot live in the 0700 per-user temporary directory (the
exception backupctl/tempdir.py names). It is `$TMPDIR/bctl-drill-<pid>-<start>-<random>` (short:
Unix socket paths are limited), 0700 and owned by the server's user. A drill stops its
server and removes the directory in a `finally`; after a kill -9 the server keeps running,
so every drill first runs `sweep_instances`: for each such directory whose creating
process is gone it kills the server that holds its data directory (postmaster.pid, or
MariaDB's data-file locks) and removes the directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from backupctl import tempdir
from backupctl.drill.base import DrillCheck, DrillContext
from backupctl.procs import pid_running
from backupctl.sources.base import Source

INSTANCE_PREFIX = "bctl-drill-"


def instance_dir() -> Path:
    """A new directory (0700) for one throwaway server of this process (see the module doc)."""
    path = Path(tempfile.mkdtemp(prefix=f"{INSTANCE_PREFIX}{tempdir.owner_tag()}-"))
    os.chmod(path, 0o700)
    return path


def give_to(path: Path, uid: int, gid: int) -> None:
    """Hand a directory made by instance_dir to the server's OS user (as root only)."""
    if os.geteuid() == 0:
        os.chown(path, uid, gid)


def _server_pid(data: Path) -> int | None:
    from backupctl.sources.mariadb import mariadb_running
    from backupctl.sources.postgres import postgres_running

    if (data / "PG_VERSION").exists():
        return postgres_running(data)
    return mariadb_running(data) if data.is_dir() else None


def _kill_server(pid: int, data: Path) -> None:
    """Stop a throwaway server at once: SIGQUIT (PostgreSQL's immediate shutdown; MariaDB
    dies of it too), then SIGKILL; wait until it has released its data directory."""
    for sig, wait in ((signal.SIGQUIT, 20.0), (signal.SIGKILL, 20.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            # The process itself, not its pid file: the postmaster removes postmaster.pid
            # before it has exited.
            if not pid_running(pid):
                return
            time.sleep(0.1)


def remove_instance(path: Path) -> None:
    """Kill whatever server still runs on `path`/data and remove `path`."""
    data = path / "data"
    pid = _server_pid(data)
    if pid is not None and pid > 0:
        _kill_server(pid, data)
    shutil.rmtree(path, ignore_errors=True)


def sweep_instances() -> list[Path]:
    """Remove the throwaway-server directories (and stop their servers) of drills that died."""
    return tempdir.sweep_tagged(INSTANCE_PREFIX, remove_instance)


@contextlib.contextmanager
def throwaway_instance() -> Iterator[Path]:
    """A directory for one throwaway server: older leftovers swept first, removed (its
    server killed if still running) at the end of the block."""
    sweep_instances()
    path = instance_dir()
    try:
        yield path
    finally:
        remove_instance(path)


def restore_with(ctx: DrillContext, source: Source, target_dir: Path | None, extra: dict[str, Any]) -> None:
    """Restore the drilled stored source through `source` (any server the driller chose: a
    temporary database's server, a throwaway one), as the engine restores; restore warnings
    become the drill's findings (ctx.restore_warnings), as in DrillContext.restore_to."""
    from backupctl.events import CollectingReporter, WarningsAsInfo

    assert ctx.prefetcher is not None
    collector = CollectingReporter(WarningsAsInfo(ctx.reporter, "drill restore: "))
    source.reporter = collector
    saved, ctx.service.reporter = ctx.service.reporter, collector
    try:
        ctx.service.restore_stored_source(
            ctx.repo, ctx.manifest, ctx.source, source, ctx.prefetcher, target_dir, extra
        )
    finally:
        ctx.service.reporter = saved
        ctx.restore_warnings.extend(
            f"{w.path}: {w.message}" if w.path else w.message for w in collector.warnings
        )


def compare_rows(
    database: str,
    recorded: dict[str, int] | None,
    restored: dict[str, int],
    extension_tables: Collection[str] = (),
    *,
    why: str = "",
) -> list[DrillCheck]:
    """Checks named `rows` for one database: every table recorded at backup time must be
    restored with that many rows, and no other table may hold rows (tables created by an
    extension, which a dump does not hold the data of, excepted). Without recorded counts
    (a physical backup, or one taken before counts were recorded: `why`) the restored counts
    are listed in one passed check."""
    listed = " (" + ", ".join(f"{t} {n}" for t, n in sorted(restored.items())) + ")" if restored else ""
    if recorded is None:
        because = f" ({why})" if why else ""
        return [
            DrillCheck(
                "rows",
                True,
                f"database {database}: {len(restored)} tables restored{listed}; no row counts to compare"
                + because,
            )
        ]
    checks: list[DrillCheck] = []
    for table in sorted(set(recorded) | set(restored)):
        want, got = recorded.get(table), restored.get(table)
        if want is None:
            if got and table not in extension_tables:
                checks.append(
                    DrillCheck(
                        "rows",
                        False,
                        f"database {database}: table {table} ({got} rows) restored but not recorded at backup time",
                    )
                )
        elif got is None:
            checks.append(
                DrillCheck(
                    "rows",
                    False,
                    f"database {database}: table {table} recorded with {want} rows at backup time, missing after restore",
                )
            )
        elif got != want:
            checks.append(
                DrillCheck(
                    "rows",
                    False,
                    f"database {database}: table {table}: {want} rows recorded at backup time, {got} restored",
                )
            )
    if not checks:
        checks.append(
            DrillCheck("rows", True, f"database {database}: {len(recorded)} tables as recorded{listed}")
        )
    return checks


def tail(text: str, lines: int = 5) -> str:
    """The last non-empty lines of a tool's output, on one line."""
    kept = [ln.strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(kept)[-1500:]
