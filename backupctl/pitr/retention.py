"""Retention of archived WAL and binary logs: `pitr prune` and the scheduler's prune.

What the oldest retained physical backup (pitr.common.physical_backups) still needs is kept;
everything older is deleted from every destination of the deployment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backupctl.destinations.base import NotFound
from backupctl.pitr.common import physical_backups
from backupctl.pitr.logarchive import (
    binlog_sort_key,
    list_binlog_partials,
    list_binlogs,
    list_wal,
    lsn_segment,
    segment_name,
)

if TYPE_CHECKING:
    from backupctl.backups.service import Service


def prune_logs(service: Service, deployment: str, *, dry_run: bool = False) -> dict[str, Any]:
    """Delete archived WAL / binlogs that no retained backup needs.

    WAL: every segment of the oldest retained pg_basebackup backup's timeline (and of older
    timelines) numbered below that backup's start segment. Binlogs: every file before the
    one recorded by the oldest retained mariabackup backup (partial copies too). With no such backup nothing is
    deleted. History files are always kept. Runs on every destination of the deployment.
    """
    dep = service.deployment(deployment)
    primary = service.primary_destination(deployment)
    repo = service.repository(primary)
    backups = physical_backups(service, deployment)
    doomed: list[str] = []
    keep_from: dict[str, Any] = {}
    pg = [b for b in backups if b["method"] == "pg_basebackup" and b["info"].get("start_lsn")]
    if pg:
        oldest = min(pg, key=lambda b: b["started"])
        tl = int(oldest["info"].get("timeline", 1))
        first = lsn_segment(oldest["info"]["start_lsn"])
        keep_from["wal"] = {"backup": oldest["id"], "segment": segment_name(tl, first)}
        timelines, _ = list_wal(repo.dest, deployment)
        for seg_tl, segs in timelines.items():
            if seg_tl <= tl:
                doomed += [s.object for s in segs if s.segno < first]
    mb = [b for b in backups if b["method"] == "mariabackup" and b["info"].get("binlog_file")]
    if mb:
        oldest = min(mb, key=lambda b: b["started"])
        keep = binlog_sort_key(oldest["info"]["binlog_file"])
        keep_from["binlog"] = {"backup": oldest["id"], "file": oldest["info"]["binlog_file"]}
        for name in [*list_binlogs(repo.dest, deployment), *list_binlog_partials(repo.dest, deployment)]:
            key = binlog_sort_key(name)
            if key[0] == keep[0] and key[1] < keep[1]:
                doomed.append(name)
    deleted = 0
    if not dry_run:
        for dest_name in dep.destinations:
            dest = service.destination(dest_name)
            for name in doomed:
                try:
                    dest.delete(name)
                    deleted += 1
                except NotFound:
                    pass
    return {
        "deployment": deployment,
        "dry_run": dry_run,
        "keep_from": keep_from,
        "deleted": doomed,
        "objects_deleted": deleted,
    }
