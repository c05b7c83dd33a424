"""What both point-in-time recovery families (PostgreSQL WAL, MariaDB binary logs) share.

The errors (PitrError, TargetError), reading a moment (`parse_moment`; timestamps: backupctl.timefmt),
the restore `Target`, the physical backup methods a recovery starts from
(`PHYSICAL_METHODS`, `physical_backups`, `base_deployment`, `method_warnings`), and undoing
a failed restore into a new directory (`emptied_on_failure`, `remove_partial`).

Contract: this module imports no other module of backupctl.pitr (nor clone), so the two
families (pitr.postgres, pitr.mariadb) and everything above them can import it freely.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.errors import BackupctlError, ExitCode, UsageError
from backupctl.records import PhysicalBackup
from backupctl.timefmt import iso_us

if TYPE_CHECKING:
    from backupctl.backups.service import Service


class PitrError(BackupctlError):
    """A point-in-time restore that cannot reach the requested moment."""

    kind = "pitr"


class TargetError(PitrError, UsageError):
    """A point-in-time target that cannot be read or does not fit the engine (exit 2)."""

    exit_code = ExitCode.USAGE
    kind = "usage"


_TIME_RE = re.compile(
    r"^\s*(\d{4}-\d{2}-\d{2})[ T](\d{1,2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?)\s*(Z|UTC|[+-]\d{2}:?\d{2}|[A-Za-z_]+/[A-Za-z_/+-]+)?\s*$"
)


def parse_moment(text: str) -> dt.datetime:
    """'2026-11-20 09:03:00 Europe/Berlin', '...T09:03:00Z', '...+01:00', or local time -> aware UTC."""
    how = "use 'YYYY-MM-DD HH:MM[:SS[.ffffff]] [ZONE]', e.g. '2026-11-20 09:03:00 Europe/Berlin' or a +01:00 offset"
    m = _TIME_RE.match(text)
    if not m:
        raise TargetError(f"cannot read the time {text!r}", hint=how)
    date, clock, zone = m.groups()
    if clock.count(":") == 1:
        clock += ":00"
    hour, rest = clock.split(":", 1)
    try:
        naive = dt.datetime.fromisoformat(f"{date}T{int(hour):02d}:{rest}")
        if zone in (None, ""):
            return naive.astimezone().astimezone(dt.UTC)
        if zone in ("Z", "UTC"):
            return naive.replace(tzinfo=dt.UTC)
        if zone[0] in "+-":
            z = zone.replace(":", "")
            offset = dt.timedelta(hours=int(z[1:3]), minutes=int(z[3:5]))
            return naive.replace(tzinfo=dt.timezone(offset if z[0] == "+" else -offset)).astimezone(dt.UTC)
    except ValueError as exc:  # month 13, hour 25, an offset of a day or more...
        raise TargetError(f"cannot read the time {text!r}: {exc}", hint=how) from None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only for a named zone (start-up)

    try:
        return naive.replace(tzinfo=ZoneInfo(zone)).astimezone(dt.UTC)
    except (ZoneInfoNotFoundError, ValueError):
        raise TargetError(
            f"unknown time zone {zone!r}", hint="an IANA name such as Europe/Berlin, or +01:00"
        ) from None


PHYSICAL_METHODS = ("pg_basebackup", "mariabackup")


def physical_backups(service: Service, deployment: str) -> list[PhysicalBackup]:
    """Completed pg_basebackup / mariabackup backups of a deployment with their source info, oldest first."""
    primary = service.primary_destination(deployment)
    repo = service.repository(primary)
    out: list[PhysicalBackup] = []
    for rec in service.list_backups(deployment, expiries=False):
        if rec["status"] != "Completed" or rec["method"] not in PHYSICAL_METHODS:
            continue
        manifest = repo.load_manifest(rec["id"])
        srcs = [s for s in manifest["sources"] if s.get("method") in PHYSICAL_METHODS]
        # An offline copy of a stopped data directory (the safety backup before an in-place
        # restore) records no WAL position: a restore, not a base for replay.
        srcs = [s for s in srcs if not s.get("info", {}).get("offline")]
        if not srcs:
            continue
        out.append(
            {
                "id": rec["id"],
                "method": srcs[0]["method"],
                "started": rec["started"],
                "finished": rec["finished"],
                "info": srcs[0].get("info", {}),
            }
        )
    out.sort(key=lambda b: b["started"])
    return out


def method_warnings(source: Any, deployment: str, physical: str) -> list[str]:
    """`pitr setup`'s warning when the deployment's backups cannot be rolled forward."""
    method = source.options.method
    if method == physical:
        return []
    return [
        f"deployment {deployment!r} backs up with method {method}, and point-in-time recovery starts from a "
        f"physical backup: set `method: {physical}` on its source, or the archived log cannot be used"
    ]


@dataclass
class Target:
    time: dt.datetime | None = None
    lsn: str | None = None
    name: str | None = None
    position: int | None = None  # MariaDB binlog position (with the file)
    position_file: str | None = None

    def describe(self) -> str:
        if self.time is not None:
            return iso_us(self.time) or ""
        if self.lsn:
            return f"LSN {self.lsn}"
        if self.name:
            return f"restore point {self.name!r}"
        return f"position {self.position_file or ''}:{self.position}"


@contextlib.contextmanager
def emptied_on_failure(target_dir: Path | None) -> Iterator[None]:
    """A restore to a moment into `target_dir` that fails part-way (the base backup written,
    the recovery not set up or replayed) must not leave a directory that starts and looks
    right: it is emptied again (removed if the restore created it). In place (None) the
    safety backup is the way back."""
    if target_dir is None or (target_dir.exists() and (not target_dir.is_dir() or any(target_dir.iterdir()))):
        yield  # not a new directory (the restore refuses it): never remove what was there
        return
    created = not target_dir.exists()
    try:
        yield
    except BaseException:
        remove_partial(target_dir, created)
        raise


def base_deployment(service: Service, backup_id: str | None, deployment: str | None) -> str:
    """The deployment of a restore or clone to a moment: the given base backup's (which must be
    a physical one, of `deployment` if that is given too), or `deployment`."""
    if backup_id is None:
        if deployment is None:
            raise TargetError(
                "give --deployment (or a backup ID) with --to-time/--to-lsn/--to-name/--to-position"
            )
        return deployment
    record = service.find_backup(backup_id, expiries=False)
    if record["method"] not in PHYSICAL_METHODS:
        raise PitrError(
            f"backup {record['short_id']} is a {record['method']} backup; point-in-time recovery starts "
            "from a physical backup (pg_basebackup or mariabackup)",
            hint="give the ID of a physical backup, or --deployment alone to pick the newest one before the moment",
        )
    if deployment is not None and deployment != record["deployment"]:
        raise TargetError(
            f"backup {record['short_id']} belongs to deployment {record['deployment']!r}, not {deployment!r}"
        )
    return str(record["deployment"])


def remove_partial(datadir: Path, created: bool) -> None:
    """Undo a failed clone's data directory (not while a PostgreSQL server may run on it)."""
    if (datadir / "postmaster.pid").exists() or not datadir.is_dir():
        return
    if created:
        shutil.rmtree(datadir, ignore_errors=True)
        return
    for entry in datadir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
