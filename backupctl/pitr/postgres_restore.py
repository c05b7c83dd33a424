"""PostgreSQL restore to a moment: choose the base backup, restore it, and write the
recovery settings (restore_command = `wal fetch`, recovery_target_*, promote) so that the
server replays the archived WAL up to the target when it starts. The window and archive
code is in pitr.postgres.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from backupctl.errors import ConfigError, NotFoundError
from backupctl.events import InfoEvent
from backupctl.pitr.common import PitrError, Target, emptied_on_failure, physical_backups
from backupctl.pitr.logarchive import (
    WAL_SEGMENT_SIZE,
    Segment,
    contiguous_from,
    list_wal,
    lsn_segment,
    lsn_to_int,
    segment_name,
)
from backupctl.pitr.postgres import WalRecord, backup_range, pg_source, wal_command, waldump
from backupctl.records import PhysicalBackup
from backupctl.sources.postgres import refuse_running_postgres
from backupctl.sources.postgres_client import quote_literal
from backupctl.timefmt import parse_iso_utc

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository


def find_restore_point(
    repo: Repository, segments: list[Segment], name: str
) -> tuple[Segment, WalRecord] | None:
    for seg in reversed(segments):
        records = waldump(repo, seg)
        if records is None:
            raise PitrError("finding a restore point needs pg_waldump (PostgreSQL server binaries)")
        for rec in records:
            if rec.kind == "RESTORE_POINT" and rec.name == name:
                return seg, rec
    return None


def choose_pg_backup(
    service: Service, deployment: str, target: Target, backup_id: str | None
) -> tuple[PhysicalBackup, dict[str, Any], dict[str, Any]]:
    """(backup, its range in the window, extra recovery facts) or PitrError with the reason."""
    repo = service.repository(service.primary_destination(deployment))
    timelines, _ = list_wal(repo.dest, deployment)
    backups = _pg_basebackups(service, deployment, backup_id)
    target_lsn, extra = _target_lsn(repo, timelines, deployment, target)
    b = _newest_before(backups, deployment, target, target_lsn)
    rng = backup_range(repo, timelines, b)
    if not rng["usable"]:
        raise PitrError(f"cannot restore to {target.describe()} from backup {b['id'][:8]}: {rng['reason']}")
    tl = rng["timeline"]
    run, gap = contiguous_from(timelines.get(tl, []), lsn_segment(b["info"]["start_lsn"]))
    gap_text = (
        f"WAL segment {segment_name(tl, gap)} is missing from the archive, so from backup {b['id'][:8]} "
        f"recovery can only reach {rng['to']} (the last transaction before the gap)"
        if gap is not None
        else None
    )
    _check_archive_reaches(deployment, target, target_lsn, rng, run, gap_text)
    return b, rng, extra


def _pg_basebackups(service: Service, deployment: str, backup_id: str | None) -> list[PhysicalBackup]:
    """The deployment's pg_basebackup backups (only `backup_id`'s when given), oldest first;
    none: NotFoundError or PitrError."""
    backups = [b for b in physical_backups(service, deployment) if b["method"] == "pg_basebackup"]
    if backup_id:
        backups = [b for b in backups if b["id"].startswith(backup_id.lower())]
        if not backups:
            raise NotFoundError(f"no pg_basebackup backup {backup_id!r} of deployment {deployment!r}")
    if not backups:
        raise PitrError(
            f"deployment {deployment!r} has no completed pg_basebackup backup",
            hint="point-in-time recovery starts from a physical backup: set `method: pg_basebackup`",
        )
    return backups


def _target_lsn(
    repo: Repository, timelines: dict[int, list[Segment]], deployment: str, target: Target
) -> tuple[int | None, dict[str, Any]]:
    """(the LSN an LSN or restore-point target stands for, extra recovery facts); a restore
    point is looked up in the archived WAL."""
    extra: dict[str, Any] = {}
    target_lsn: int | None = None
    if target.lsn:
        target_lsn = lsn_to_int(target.lsn)
    if target.name:
        all_segs = [s for tl in sorted(timelines) for s in timelines[tl]]
        found = find_restore_point(repo, all_segs, target.name)
        if found is None:
            raise PitrError(
                f"no restore point named {target.name!r} in the archive of {deployment!r}",
                hint="restore points are made with SELECT pg_create_restore_point('NAME'); the segment holding "
                "it must have been archived (pg_switch_wal() or `backupctl pitr check`)",
            )
        target_lsn = found[1].lsn
        extra["restore_point_lsn"] = f"{target_lsn >> 32:X}/{target_lsn & 0xFFFFFFFF:X}"
    return target_lsn, extra


def _newest_before(
    backups: list[PhysicalBackup], deployment: str, target: Target, target_lsn: int | None
) -> PhysicalBackup:
    """The newest backup that ends before the target (its time, or its LSN)."""
    for b in reversed(backups):
        info = b["info"]
        if target.time is not None and parse_iso_utc(b["finished"]) >= target.time:
            continue
        if target_lsn is not None and info.get("end_lsn") and lsn_to_int(info["end_lsn"]) > target_lsn:
            continue
        return cast("PhysicalBackup", b)  # mypy types reversed() of TypedDicts as Any
    oldest = backups[0]
    raise PitrError(
        f"no base backup of {deployment!r} ends before {target.describe()}"
        + (f"; the oldest ends at {oldest['finished']}" if target.time else ""),
        hint="the earliest recoverable moment is the end of the oldest retained backup: see `backupctl pitr show`",
    )


def _check_archive_reaches(
    deployment: str,
    target: Target,
    target_lsn: int | None,
    rng: dict[str, Any],
    run: list[Segment],
    gap_text: str | None,
) -> None:
    """Refuse a target past the archived WAL that follows the backup without a gap."""
    if target.time is not None:
        last = parse_iso_utc(rng["to"]) if rng["to"] else None
        if last is None or last <= target.time:
            if gap_text:
                raise PitrError(f"refusing to restore to {target.describe()}: {gap_text}")
            raise PitrError(
                f"refusing to restore to {target.describe()}: it is after the last archived transaction "
                f"({rng['to']}); recovery to a time stops at a transaction, so one at or after that time "
                "must be in the archived WAL",
                hint=f"run `backupctl pitr check {deployment}` to archive the current segment, then retry",
            )
    elif target_lsn is not None and target_lsn // WAL_SEGMENT_SIZE > run[-1].segno:
        if gap_text:
            raise PitrError(f"refusing to restore to {target.describe()}: {gap_text}")
        raise PitrError(
            f"refusing to restore to {target.describe()}: the archive ends at segment {run[-1].name}",
            hint=f"run `backupctl pitr check {deployment}` to archive the current segment, then retry",
        )


def restore_command_for(service: Service, deployment: str, datadir: Path) -> str:
    """restore_command: the restored server's own archive_command turned into `fetch %f %p`
    when it is backupctl's, else this interpreter."""
    for conf in ("postgresql.auto.conf", "postgresql.conf"):
        try:
            text = (datadir / conf).read_text()
        except OSError:
            continue
        found = None
        for line in text.splitlines():
            m = re.match(r"^\s*archive_command\s*=\s*'((?:[^']|'')*)'", line)
            if m:
                found = m.group(1).replace("''", "'")
        if found and "backupctl" in found and found.rstrip().endswith("push %p"):
            return found.rstrip()[: -len("push %p")] + "fetch %f %p"
    return wal_command(service, deployment, "fetch")


def restore_postgres_to(
    service: Service,
    deployment: str,
    target: Target,
    *,
    backup_id: str | None,
    target_dir: Path | None,
    safety_backup: bool = True,
) -> dict[str, Any]:
    b, rng, extra = choose_pg_backup(service, deployment, target, backup_id)
    service.reporter.emit(
        InfoEvent(
            f"restoring base backup {b['id'][:8]} (ended {b['finished']}), then replaying WAL to {target.describe()}"
        )
    )
    datadir = target_dir
    if datadir is None:
        datadir = pg_source(service, deployment).options.data_dir
        if datadir is None:
            raise ConfigError(
                f"deployment {deployment!r} has no data_dir; give --target NEWDATADIR",
                hint="a point-in-time restore writes a data directory",
            )
        # In place: refuse a running server before the safety backup (which, with the server
        # stopped, is an offline copy of the data directory: sources/postgres.py).
        refuse_running_postgres(Path(datadir))
    with emptied_on_failure(target_dir):
        result = service.restore_backup(
            b["id"], target_dir=target_dir, safety_backup=safety_backup, extra_info={"pitr": True}
        )
        settings = _write_recovery_settings(
            service, deployment, b, target, Path(datadir), side_copy=target_dir is not None
        )
    datadir = Path(datadir)
    result.update(
        engine="postgres",
        backup=b["id"],
        target_moment=target.describe(),
        datadir=str(datadir),
        recovery_settings=settings,
        window_to=rng["to"],
        **extra,
        next_step=f"start the server on {datadir} (pg_ctl -D {datadir} start): it replays the archived WAL up to "
        "the target and promotes",
    )
    return result


def _write_recovery_settings(
    service: Service, deployment: str, b: PhysicalBackup, target: Target, datadir: Path, *, side_copy: bool
) -> dict[str, str]:
    """postgresql.auto.conf lines and recovery.signal for a restored base backup (owned as PG_VERSION)."""
    settings: dict[str, str] = {
        "restore_command": restore_command_for(service, deployment, datadir),
        "recovery_target_action": "promote",
        "recovery_target_timeline": "current",
    }
    if target.time is not None:
        settings["recovery_target_time"] = target.time.strftime("%Y-%m-%d %H:%M:%S.%f+00")
    elif target.name:
        settings["recovery_target_name"] = target.name
    elif target.lsn:
        settings["recovery_target_lsn"] = target.lsn
    if side_copy:
        # A side copy must not write into the deployment's archive once promoted.
        settings["archive_mode"] = "off"
    lines = ["", f"# point-in-time recovery by backupctl: backup {b['id'][:8]} to {target.describe()}"]
    lines += [f"{k} = {quote_literal(v)}" for k, v in settings.items()]
    with open(datadir / "postgresql.auto.conf", "a") as fh:
        fh.write("\n".join(lines) + "\n")
    (datadir / "recovery.signal").write_text("")
    version = datadir / "PG_VERSION"
    if os.geteuid() == 0 and version.exists():
        st = version.stat()
        for p in (datadir / "postgresql.auto.conf", datadir / "recovery.signal"):
            os.chown(p, st.st_uid, st.st_gid)
    return settings
