"""`recoverable_until` in `backup list`: how far each physical backup can be rolled forward.

For a completed pg_basebackup / mariabackup backup whose deployment archives WAL / binary
logs: the last continuously archived moment reachable from it, the `to` that `pitr show`
gives for it (pitr.postgres.backup_range / pitr.mariadb.backup_range); None otherwise.

`backup list` must stay fast, so the cost is bounded:
* nothing is read unless a listed backup is a completed physical backup of a configured
  deployment with a postgres / mariadb source;
* per such deployment, one listing of its archive (list_wal / mariadb.archived_binlogs);
* per backup, its WAL / binlog start position (source info in the manifest), read once and
  then kept in local state (manifests never change);
* PostgreSQL: the last transaction time of a segment is read with pg_waldump at most once
  per segment and call, and kept in local state (archived segments are write-once: a
  different file under an existing name is refused by `wal push`). The continuous runs of
  all backups on a timeline end at the same segment, so a listing runs pg_waldump about
  once per timeline, and not at all once the newest segment is known;
* MariaDB: one metadata read (two range reads) per distinct last binary log.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from backupctl.errors import BackupctlError, NotFoundError
from backupctl.events import WarningEvent
from backupctl.pitr.common import PHYSICAL_METHODS
from backupctl.pitr.logarchive import (
    Segment,
    binlog_sort_key,
    contiguous_from,
    gaps_in,
    list_wal,
    lsn_segment,
    read_meta,
)
from backupctl.pitr.mariadb import archived_binlogs
from backupctl.pitr.mariadb import backup_range as binlog_range
from backupctl.pitr.postgres import backup_range, waldump
from backupctl.records import BackupSummary, PhysicalBackup, PitrWindow
from backupctl.timefmt import iso_us, parse_iso_utc

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository

KEY: Final = "recoverable_until"


def _physical_method(record: BackupSummary) -> str | None:
    methods = str(record.get("method") or "").split(",")
    return next((m for m in PHYSICAL_METHODS if m in methods), None)


def add_recoverable_until(service: Service, records: Sequence[BackupSummary]) -> None:
    """Set `recoverable_until` on every record (None unless it can be rolled forward).

    A deployment whose window cannot be read (destination down, damaged object) gets None
    and one warning: the listing itself must not fail for it."""
    by_deployment: dict[str, list[BackupSummary]] = {}
    for rec in records:
        rec[KEY] = None
        if rec.get("status") != "Completed" or _physical_method(rec) is None:
            continue
        dep = service.config.deployments.get(rec["deployment"])
        if dep is None or not {o.type for o in dep.sources} & {"postgres", "mariadb"}:
            continue
        by_deployment.setdefault(rec["deployment"], []).append(rec)
    for deployment, recs in by_deployment.items():
        try:
            window = _Window(service, deployment)
            for rec in recs:
                rec[KEY] = window.until(rec)
        except BackupctlError as exc:
            for rec in recs:
                rec[KEY] = None
            service.reporter.emit(
                WarningEvent(f"cannot compute the recoverable window of {deployment}: {exc.message}")
            )


class _Window:
    """One deployment's archive, listed lazily once per engine."""

    def __init__(self, service: Service, deployment: str) -> None:
        self.service = service
        self.deployment = deployment
        self.repo: Repository = service.repository(service.primary_destination(deployment))
        self._timelines: dict[int, list[Segment]] | None = None
        self._binlogs: dict[str, dict[int, str]] | None = None
        self._binlog_meta: dict[str, dict[str, Any]] = {}
        self._segment_times: dict[str, str | None] = {}

    def until(self, record: BackupSummary) -> str | None:
        backup = self._backup_entry(record)
        if backup is None:
            return None
        if backup["method"] == "pg_basebackup":
            return self._pg_until(backup)
        return self._binlog_until(backup)

    # ---- the backup's start position --------------------------------------------------

    def _backup_entry(self, record: BackupSummary) -> PhysicalBackup | None:
        """The physical_backups() shape: id, deployment, method, finished, info."""
        key = f"pitrinfo/{record['id']}"
        cached = self.service.state.get(key)
        if cached is not None:
            found = json.loads(cached)
        else:
            found = None
            try:
                manifest = self.repo.load_manifest(record["id"])
            except NotFoundError:  # listed from another destination, not in the primary
                return None
            for src in manifest.get("sources", []):
                if src.get("method") in PHYSICAL_METHODS:
                    found = {"method": src["method"], "info": src.get("info") or {}}
                    break
            self.service.state.set(key, json.dumps(found))
        if found is None:
            return None
        return {
            "id": record["id"],
            "deployment": record["deployment"],
            "method": found["method"],
            "started": record["started"],
            "finished": record["finished"],
            "info": found["info"],
        }

    # ---- PostgreSQL ------------------------------------------------------------------------

    def _pg_until(self, b: PhysicalBackup) -> str | None:
        """pitr.backup_range's `to`, with the pg_waldump answers cached per segment."""
        info = b["info"]
        if not info.get("start_lsn") or not info.get("end_lsn"):
            return None
        if self._timelines is None:
            self._timelines, _ = list_wal(self.repo.dest, self.deployment)
        tl = int(info.get("timeline", 1))
        start, end = lsn_segment(info["start_lsn"]), lsn_segment(info["end_lsn"])
        run, _ = contiguous_from(self._timelines.get(tl, []), start)
        if not run or run[-1].segno < end:
            return None  # a segment the backup needs is missing
        latest = self._last_commit(run, end)
        return iso_us(latest) if latest else str(b["finished"])

    def _last_commit(self, run: list[Segment], stop_at: int) -> dt.datetime | None:
        """pitr.last_commit: the last commit/abort in `run`, searching back to segment stop_at
        (without pg_waldump: the archive time of the last segment, an upper bound)."""
        for seg in reversed(run):
            if seg.segno < stop_at:
                break
            found, when = self._segment_last_time(seg)
            if not found:
                _, meta = read_meta(self.repo, run[-1].object)
                return parse_iso_utc(meta["archived_at"])
            if when:
                return parse_iso_utc(when)
        return None

    def _segment_last_time(self, seg: Segment) -> tuple[bool, str | None]:
        """(pg_waldump ran, time of the segment's last commit/abort or None)."""
        if seg.object in self._segment_times:
            return True, self._segment_times[seg.object]
        key = f"pitrwal/{self.repo.id}/{seg.object}"
        cached = self.service.state.get(key)
        if cached is not None:
            when = cached or None
        else:
            records = waldump(self.repo, seg)
            if records is None:
                return False, None  # pg_waldump not installed: nothing to cache
            times = [r.time for r in records if r.time is not None]
            when = iso_us(max(times)) if times else None
            self.service.state.set(key, when or "")
        self._segment_times[seg.object] = when
        return True, when

    # ---- MariaDB ---------------------------------------------------------------------------

    def _binlog_until(self, b: PhysicalBackup) -> str | None:
        if self._binlogs is None:
            self._binlogs = archived_binlogs(self.repo, self.deployment)
        if not self._binlogs:
            return None
        rng = binlog_range(self.repo, self._binlogs, b, self._binlog_meta)
        return str(rng["to"]) if rng["usable"] else None


# ---- the window of one backup in `backup show` ------------------------------------------------


def _backup_entry(record: BackupSummary) -> PhysicalBackup | None:
    """The physical_backups() shape of a `backup show` record (None: not a physical backup,
    or an offline copy of a stopped data directory, which records no log position)."""
    for src in record.get("sources", []):
        if src.get("method") in PHYSICAL_METHODS and not src.get("info", {}).get("offline"):
            return {
                "id": record["id"],
                "deployment": record["deployment"],
                "method": src["method"],
                "started": record["started"],
                "finished": record["finished"],
                "info": src.get("info", {}),
            }
    return None


def backup_pitr(service: Service, record: BackupSummary) -> PitrWindow | None:
    """The window reachable from one backup: `{"earliest", "latest", "gaps"}`.

    earliest is the backup's end, latest the last continuously archived moment after it, gaps
    the number of archive gaps (missing segments/binlogs, timeline changes) after its start.
    None when the backup is not a physical one or its deployment has no archived WAL/binlogs.
    One destination listing and at most one pg_waldump/metadata read: cheap for `backup show`.
    """
    if record.get("status") != "Completed":
        return None
    b = _backup_entry(record)
    if b is None:
        return None
    deployment = record["deployment"]
    try:
        repo = service.repository(service.primary_destination(deployment))
    except BackupctlError:
        return None
    out: PitrWindow
    if b["method"] == "pg_basebackup":
        timelines, _ = list_wal(repo.dest, deployment)
        if not timelines:
            return None
        rng = backup_range(repo, timelines, b)
        tl = int(b["info"].get("timeline", 1))
        start = lsn_segment(b["info"]["start_lsn"]) if b["info"].get("start_lsn") else 0
        gaps = sum(1 for first, _ in gaps_in(timelines.get(tl, [])) if first > start)
        gaps += sum(1 for t in timelines if t > tl)
    else:
        archive = archived_binlogs(repo, deployment)
        if not archive:
            return None
        rng = binlog_range(repo, archive, b, {})
        gaps = 0
        if b["info"].get("binlog_file"):
            stem, first = binlog_sort_key(b["info"]["binlog_file"])
            nums = sorted(n for n in archive.get(stem, {}) if n >= first)
            gaps = sum(1 for p, c in zip(nums, nums[1:], strict=False) if c != p + 1)
    out = {"earliest": rng["from"], "latest": rng["to"], "gaps": gaps}
    if not rng["usable"]:
        out["reason"] = rng.get("reason")
    return out
