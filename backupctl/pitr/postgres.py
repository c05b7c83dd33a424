"""Point-in-time recovery: set-up, the recoverable window, verification and restore to a moment.

PostgreSQL: base backups (`method: pg_basebackup`) + WAL archived by `backupctl wal push`
(pitr.logarchive). MariaDB/MySQL: mariabackup backups + binary logs archived by
`backupctl binlog sync` (pitr.mariadb). See docs/pitr.md.

The window of a PostgreSQL deployment: for each retained base backup whose WAL is archived
continuously from its start segment on, every moment from the backup's end to the last
transaction (commit/abort record) held by that continuous run. PostgreSQL itself refuses a
time target it never passes ("recovery ended before configured recovery target was
reached"), so the latest moment is the last archived commit, read with `pg_waldump`.
"""

from __future__ import annotations

import datetime as dt
import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.errors import ConfigError
from backupctl.pitr.common import PitrError, method_warnings, physical_backups
from backupctl.pitr.logarchive import (
    Segment,
    contiguous_from,
    fetch_log,
    gaps_in,
    list_wal,
    lsn_segment,
    lsn_to_int,
    read_meta,
    segment_name,
    verify_archive,
    wal_object,
)
from backupctl.records import PhysicalBackup
from backupctl.sources.dbutil import Secrets, child_env, run
from backupctl.sources.postgres_client import conninfo_dbname, quote_literal
from backupctl.tempdir import create_file, directory
from backupctl.timefmt import iso_us, parse_iso_utc

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository


def pg_source(service: Service, deployment: str) -> Any:
    dep = service.deployment(deployment)
    for opts in dep.sources:
        if opts.type == "postgres":
            return service.build_source(opts)
    raise ConfigError(f"deployment {deployment!r} has no postgres source")


# ---- pg_waldump -----------------------------------------------------------------------------


def pg_tool(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


@dataclass(frozen=True)
class WalRecord:
    lsn: int
    kind: str  # COMMIT, ABORT, RESTORE_POINT
    time: dt.datetime | None
    name: str = ""


_REC_RE = re.compile(
    r"lsn: ([0-9A-F]+/[0-9A-F]+), prev [0-9A-F/]+, desc: (COMMIT|ABORT|RESTORE_POINT) ?(.*)$"
)
_TS_RE = re.compile(r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?) UTC")


def waldump(repo: Repository, segment: Segment) -> list[WalRecord] | None:
    """Commit/abort/restore-point records of one archived segment (None: no pg_waldump installed)."""
    exe = pg_tool("pg_waldump")
    if exe is None:
        return None
    data, _ = fetch_log(repo, segment.object)
    with directory("waldump-") as tmp:
        with os.fdopen(create_file(tmp / segment.name), "wb") as fh:
            fh.write(data)
        env = child_env({"TZ": "UTC", "LC_ALL": "C"})
        proc = subprocess.run(
            [exe, "-p", tmp, segment.name, segment.name],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    records = []
    for line in proc.stdout.splitlines():
        m = _REC_RE.search(line)
        if not m:
            continue
        lsn, kind, rest = lsn_to_int(m.group(1)), m.group(2), m.group(3)
        if kind == "RESTORE_POINT":
            records.append(WalRecord(lsn, kind, None, rest.strip()))
            continue
        tm = _TS_RE.match(rest)
        when = dt.datetime.fromisoformat(tm.group(1)).replace(tzinfo=dt.UTC) if tm else None
        records.append(WalRecord(lsn, kind, when))
    return records


_NO_TRANSACTION = "no transaction archived after the backup"


def last_commit(repo: Repository, run: list[Segment], stop_at: int) -> tuple[dt.datetime | None, str]:
    """The time of the last commit/abort in `run` (searching back to segment `stop_at`).

    Falls back to the archive time of the last segment when pg_waldump is not installed
    ("archived_at": an upper bound, said so in the result)."""
    for seg in reversed(run):
        if seg.segno < stop_at:
            break
        records = waldump(repo, seg)
        if records is None:
            _, meta = read_meta(repo, run[-1].object)
            return parse_iso_utc(meta["archived_at"]), "archived_at (pg_waldump not installed)"
        times = [r.time for r in records if r.time is not None]
        if times:
            return max(times), "last archived transaction"
    return None, _NO_TRANSACTION


# ---- the window -------------------------------------------------------------------------------


def wal_window(service: Service, deployment: str) -> dict[str, Any]:
    """Earliest/latest recoverable moments, per-backup ranges, gaps and timeline changes."""
    primary = service.primary_destination(deployment)
    repo = service.repository(primary)
    timelines, others = list_wal(repo.dest, deployment)
    backups = [b for b in physical_backups(service, deployment) if b["method"] == "pg_basebackup"]
    problems: list[dict[str, Any]] = []
    for tl, segs in sorted(timelines.items()):
        for first, last in gaps_in(segs):
            problems.append(
                {
                    "kind": "missing_segments",
                    "timeline": tl,
                    "first": segment_name(tl, first),
                    "last": segment_name(tl, last),
                    "count": last - first + 1,
                }
            )
    for tl in sorted(timelines):
        if tl > 1:
            history = any(o.endswith(f"/{tl:08X}.history") for o in others)
            problems.append(
                {
                    "kind": "timeline_change",
                    "timeline": tl,
                    "first": timelines[tl][0].name,
                    "history_file": history,
                }
            )
    ranges = []
    for b in backups:
        ranges.append(backup_range(repo, timelines, b))
    usable = [r for r in ranges if r["usable"]]
    earliest = min((r["from"] for r in usable), default=None)
    # A backup with no archived transaction after it cannot be rolled forward to a time
    # (PostgreSQL stops only at transactions): its `to` is its end, not a reachable latest.
    # Only when no backup has one does the window end at a backup's end.
    latest = max((r["to"] for r in usable if r["to"] and r.get("to_basis") != _NO_TRANSACTION), default=None)
    if latest is None:
        latest = max((r["to"] for r in usable if r["to"]), default=None)
    return {
        "deployment": deployment,
        "engine": "postgres",
        "destination": primary,
        "earliest": earliest,
        "latest": latest,
        "segments": sum(len(s) for s in timelines.values()),
        "timelines": sorted(timelines),
        "newest_segment": max((s[-1].name for s in timelines.values()), default=None),
        "backups": ranges,
        "gaps": problems,
    }


def backup_range(repo: Repository, timelines: dict[int, list[Segment]], b: PhysicalBackup) -> dict[str, Any]:
    info = b["info"]
    out: dict[str, Any] = {
        "id": b["id"],
        "finished": b["finished"],
        "usable": False,
        "from": None,
        "to": None,
    }
    if not info.get("start_lsn") or not info.get("end_lsn"):
        out["reason"] = "the backup recorded no WAL positions"
        return out
    tl = int(info.get("timeline", 1))
    start, end = lsn_segment(info["start_lsn"]), lsn_segment(info["end_lsn"])
    run, gap = contiguous_from(timelines.get(tl, []), start)
    out.update(timeline=tl, start_segment=segment_name(tl, start), end_segment=segment_name(tl, end))
    out["last_segment"] = run[-1].name if run else None
    out["missing_segment"] = segment_name(tl, gap) if gap is not None else None
    if not run or run[-1].segno < end:
        missing = segment_name(tl, run[-1].segno + 1 if run else start)
        out["reason"] = f"WAL segment {missing} needed by this backup is not in the archive"
        return out
    latest, how = last_commit(repo, run, end)
    out.update(usable=True, **{"from": b["finished"], "to": iso_us(latest) if latest else b["finished"]})
    out["to_basis"] = how
    return out


def verify_wal(service: Service, deployment: str, reporter: Any = None) -> dict[str, Any]:
    """Decrypt and hash-check every archived WAL file; continuity from each base backup on."""
    window = wal_window(service, deployment)
    repo = service.repository(window["destination"])
    timelines, others = list_wal(repo.dest, deployment)
    return verify_archive(
        repo,
        [s.object for segs in timelines.values() for s in segs] + others,
        window,
        check=lambda data, name: None,  # WAL content is checked by the archive's hash
        unusable_kind="backup_without_wal",
        fatal_kinds=frozenset({"missing_segments", "backup_without_wal"}),
    )


# ---- set-up and check ----------------------------------------------------------------------------


def default_command_prefix() -> str:
    """How PostgreSQL runs backupctl's light entry point: this interpreter, `-m backupctl.wal`.

    $BACKUPCTL_WAL_COMMAND overrides it (e.g. a wrapper script, or another interpreter that the
    postgres OS user can execute)."""
    return os.environ.get("BACKUPCTL_WAL_COMMAND") or f"{shlex.quote(sys.executable)} -m backupctl.wal"


def wal_command(service: Service, deployment: str, action: str, prefix: str | None = None) -> str:
    cfg = service.config.path
    if cfg is None:
        raise ConfigError("the configuration was not read from a file; archive_command needs its path")
    parts = [prefix or default_command_prefix(), "--config", shlex.quote(str(Path(cfg).resolve()))]
    parts += ["--deployment", shlex.quote(deployment)]
    parts += ["push %p"] if action == "push" else ["fetch %f %p"]
    return " ".join(parts)


def pg_settings(service: Service, deployment: str, prefix: str | None = None) -> dict[str, str]:
    return {
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": wal_command(service, deployment, "push", prefix),
    }


def _psql_autocommit(source: Any, sql: str) -> str:
    """Run SQL through psql's stdin in autocommit mode (ALTER SYSTEM refuses a transaction)."""
    secrets = Secrets("backupctl-pg-")
    try:
        env = source.client_env(secrets)
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *source.conn_args()]
        argv += ["-d", conninfo_dbname(source.options.maintenance_db), "-f", "-"]
        return run(argv, env=env, secrets=secrets, what="psql", input_chunks=[sql.encode()])
    finally:
        secrets.cleanup()


def setup_postgres(
    service: Service, deployment: str, *, apply: bool, prefix: str | None = None
) -> dict[str, Any]:
    source = pg_source(service, deployment)
    settings = pg_settings(service, deployment, prefix)
    primary = service.primary_destination(deployment)
    repo = service.repository(primary, create=True)  # archive_command needs the repository to exist
    result: dict[str, Any] = {
        "deployment": deployment,
        "settings": settings,
        "applied": False,
        "repository": repo.dest.location,
        "restart_needed": None,
        "sql": [f"ALTER SYSTEM SET {k} = {quote_literal(v)};" for k, v in settings.items()],
        "warnings": method_warnings(source, deployment, "pg_basebackup"),
    }
    if not apply:
        return result
    sql = "".join(result["sql"]) + "SELECT pg_reload_conf();\n"
    _psql_autocommit(source, sql)
    time.sleep(0.5)
    out = _psql_autocommit(
        source,
        "SELECT name || '=' || setting || '=' || pending_restart::int FROM pg_settings"
        " WHERE name IN ('wal_level', 'archive_mode', 'archive_command');\n",
    )
    rows = dict(line.split("=", 1) for line in out.splitlines() if line.count("=") >= 2)
    pending = {name for name, rest in rows.items() if rest.endswith("=1")}
    # wal_level and archive_mode take effect only at a restart, and pending_restart may not be
    # set yet (the reload is asynchronous): the running values decide as well.
    if rows.get("archive_mode", "").rsplit("=", 1)[0] not in ("on", "always"):
        pending.add("archive_mode")
    if rows.get("wal_level", "").rsplit("=", 1)[0] == "minimal":
        pending.add("wal_level")
    result.update(applied=True, restart_needed=bool(pending), pending_restart=sorted(pending))
    return result


def check_postgres(service: Service, deployment: str, *, timeout: float = 60.0) -> dict[str, Any]:
    """Write a transaction, switch WAL, and wait until the switched segment is in the archive."""
    source = pg_source(service, deployment)
    repo = service.repository(service.primary_destination(deployment))
    t0 = time.monotonic()
    out = _psql_autocommit(
        source,
        "SELECT txid_current();\nSELECT pg_walfile_name(pg_switch_wal());\n"
        "SELECT setting FROM pg_settings WHERE name = 'archive_command';\n",
    )
    lines = [ln for ln in out.splitlines() if ln.strip()]
    segment, archive_command = lines[1].strip(), lines[2].strip() if len(lines) > 2 else ""
    name = wal_object(deployment, segment)
    while time.monotonic() - t0 < timeout:
        if repo.dest.exists(name):
            return {
                "deployment": deployment,
                "segment": segment,
                "object": name,
                "ok": True,
                "seconds": round(time.monotonic() - t0, 3),
            }
        time.sleep(0.2)
    failed = _psql_autocommit(
        source,
        "SELECT coalesce(last_failed_wal, '') || ' ' || coalesce(last_failed_time::text, '') FROM pg_stat_archiver;\n",
    ).strip()
    raise PitrError(
        f"WAL segment {segment} did not arrive in the archive within {timeout:.0f} s"
        + (f" (last failure: {failed})" if failed else ""),
        hint=f"archive_command is {archive_command!r}; run `backupctl pitr setup {deployment} --apply`, "
        "restart PostgreSQL if archive_mode changed, and read the server log",
    )
