"""Per-deployment protection state, computed once and shared by `status` and the metrics.

`compute(service, now=None, grace=None)` returns a `Health` document (`grace` None: the
config's `notifications.overdue_grace`, the same grace the overdue notification uses):

* `destinations`: every destination a deployment uses, listed ONCE (`list("")`): whether it
  answered, its object count and total size (the repository size), and which backups have a
  manifest there. No per-backup request is made: the catalog comes from
  `Service.list_backups` (one `snapshots/` listing per primary, manifests cached locally).
* `deployments`: one `DeploymentHealth` per configured deployment: the newest Completed
  backup, failed runs recorded in the local job state, the next scheduled run (its policy),
  the newest successful drill (`backupctl.drill`, when it has any record), the PITR window
  end and archive lag (deployments with archived WAL/binary logs), RPO and the problems.

RPO ("how much would be lost now") = now - the newest restorable moment: the end of the
newest Completed backup, or the PITR window end when that is later.

Problems (`kind`, stable): never_backed_up, last_run_failed, overdue, upload_failed,
upload_pending, copy_missing, archive_gap, drill_failed, destination_unreachable, repository_unreadable.
`overdue`: a scheduled slot older than `grace` has no backup started at or after it
(policy/overdue.py, the rule the `backup_overdue` notification uses); paused policies and
`policy: none` are never overdue.

Keys are stable (only added). Never prints; reports through the service's Reporter.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from backupctl.errors import BackupctlError
from backupctl.monitor.health_doc import (
    DeploymentCopy,
    DeploymentHealth,
    DestinationHealth,
    Health,
    LastBackup,
    LastDrill,
    Pitr,
    Problem,
)
from backupctl.pitr import dispatch
from backupctl.pitr.logarchive import binlog_partial_prefix, binlog_prefix, wal_prefix
from backupctl.policy.models import parse_duration
from backupctl.policy.overdue import missed_slot
from backupctl.policy.resolve import effective_policy
from backupctl.policy.schedule import next_runs
from backupctl.timefmt import iso_ms, parse_iso_utc, utcnow

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.config.models import Config
    from backupctl.records import BackupSummary

DEFAULT_GRACE = dt.timedelta(hours=1)
# States of a copy on a remote destination that mean "it is there" (repo/upload.py).
_COPIED = ("stored", "uploaded")


class _Listing:
    """One listing of a whole destination: sizes, manifests, archived logs by prefix."""

    def __init__(self, service: Service, name: str) -> None:
        self.name = name
        self.type = service.config.destinations[name].type
        self.error: str | None = None
        self.objects: list[tuple[str, int, float | None]] = []
        try:
            dest = service.destination(name)
            self.objects = [(o.name, o.size, o.mtime) for o in dest.list("")]
        except BackupctlError as exc:
            self.error = exc.message
        except Exception as exc:  # an SDK error that escaped classification
            self.error = f"{type(exc).__name__}: {exc}"
        self.snapshots = {n.split("/", 1)[1] for n, _, _ in self.objects if n.startswith("snapshots/")}

    @property
    def reachable(self) -> bool:
        return self.error is None

    def under(self, *prefixes: str) -> list[tuple[str, int, float | None]]:
        return [o for o in self.objects if o[0].startswith(prefixes)]

    def doc(self) -> DestinationHealth:
        return {
            "name": self.name,
            "type": self.type,
            "reachable": self.reachable,
            "error": self.error,
            "objects": len(self.objects),
            "size_bytes": sum(size for _, size, _ in self.objects),
        }


def compute(
    service: Service,
    *,
    now: dt.datetime | None = None,
    grace: dt.timedelta | None = None,
) -> Health:
    """The protection state of every configured deployment (see the module docstring)."""
    now = (now or utcnow()).astimezone(dt.UTC)
    config = service.config
    grace = grace if grace is not None else configured_grace(config)
    used = list(dict.fromkeys(n for dep in config.deployments.values() for n in dep.destinations))
    listings = {name: _Listing(service, name) for name in used}
    records, unreadable = _catalog(service, listings)
    deployments = [
        _deployment(service, name, records, unreadable.get(name), listings, now, grace)
        for name in config.deployments
    ]
    return {
        "generated": iso_ms(now),
        "ok": not any(d["problems"] for d in deployments),
        "deployments": deployments,
        "destinations": [listing.doc() for listing in listings.values()],
    }


def configured_grace(config: Config) -> dt.timedelta:
    """`notifications.overdue_grace` (validated with the config), else DEFAULT_GRACE."""
    text = getattr(getattr(config, "notifications", None), "overdue_grace", None)
    return parse_duration(text) if text else DEFAULT_GRACE


def _catalog(service: Service, listings: dict[str, _Listing]) -> tuple[list[BackupSummary], dict[str, str]]:
    """Every backup record (Completed and failed runs), and deployment -> why its catalog
    could not be read. One call for all deployments; per deployment only when that fails."""
    try:
        return service.list_backups(expiries=False), {}
    except BackupctlError:
        pass
    records: list[BackupSummary] = []
    unreadable: dict[str, str] = {}
    for name in service.config.deployments:
        primary = listings.get(service.primary_destination(name))
        if primary is not None and not primary.reachable:
            continue  # reported as destination_unreachable
        try:
            records.extend(service.list_backups(name, expiries=False))
        except BackupctlError as exc:
            unreadable[name] = exc.message
    return records, unreadable


def _seconds(later: dt.datetime, text: str | None) -> float | None:
    return None if not text else round((later - parse_iso_utc(text)).total_seconds(), 3)


def _deployment(
    service: Service,
    name: str,
    records: list[BackupSummary],
    unreadable: str | None,
    listings: dict[str, _Listing],
    now: dt.datetime,
    grace: dt.timedelta,
) -> DeploymentHealth:
    primary = service.primary_destination(name)
    mine = sorted(
        (r for r in records if r["deployment"] == name), key=lambda r: r["started"] or "", reverse=True
    )
    completed = [r for r in mine if r["status"] == "Completed"]
    newest = completed[0] if completed else None
    failed = [r for r in mine if r["status"] == "Failed"]
    settled = [r for r in mine if r["status"] in ("Completed", "Failed")]
    last = settled[0] if settled else None
    since_success = [r for r in failed if newest is None or (r["started"] or "") > newest["started"]]

    problems = _run_problems(service, name, listings, unreadable, newest, last)
    policy_name, next_run = _schedule(service, name, newest, now, grace, problems)
    copies = _copies(service, name, completed, listings, problems, now, grace)
    drill = _drills(service, name, problems) if listings[primary].reachable else None
    pitr = _pitr(service, name, listings[primary], problems, now)

    moments = [t for t in (newest["finished"] if newest else None, pitr["window_end"] if pitr else None) if t]
    restorable = max(moments, key=parse_iso_utc) if moments else None
    return {
        "deployment": name,
        "policy": policy_name,
        "last_backup": _last_backup(newest, now),
        "last_run": {
            "id": last["id"],
            "status": last["status"],
            "started": last["started"],
            "error": last["error"],
        }
        if last
        else None,
        "failures": len(failed),
        "failures_since_success": len(since_success),
        "next_run": next_run,
        "last_drill": drill,
        "pitr": pitr,
        "newest_restorable": restorable,
        "rpo_s": _seconds(now, restorable),
        "destinations": copies,
        "problems": problems,
    }


def _run_problems(
    service: Service,
    name: str,
    listings: dict[str, _Listing],
    unreadable: str | None,
    newest: BackupSummary | None,
    last: BackupSummary | None,
) -> list[Problem]:
    """What is wrong with the deployment's destinations, catalog and runs: unreachable
    destinations, an unreadable catalog, no completed backup, a failed last run."""
    problems: list[Problem] = []
    for dest_name in service.config.deployments[name].destinations:
        listing = listings[dest_name]
        if not listing.reachable:
            problems.append(
                {
                    "kind": "destination_unreachable",
                    "message": f"destination {dest_name} is unreachable: {listing.error}",
                }
            )
    if unreadable:
        problems.append({"kind": "repository_unreadable", "message": f"cannot list backups: {unreadable}"})
    if newest is None and not unreadable and listings[service.primary_destination(name)].reachable:
        problems.append({"kind": "never_backed_up", "message": "no completed backup"})
    if last is not None and last["status"] == "Failed":
        why = f": {last['error']}" if last["error"] else ""
        problems.append(
            {
                "kind": "last_run_failed",
                "message": f"the last run ({last['short_id']}, {last['started']}) failed{why}",
            }
        )
    return problems


def _schedule(
    service: Service,
    name: str,
    newest: BackupSummary | None,
    now: dt.datetime,
    grace: dt.timedelta,
    problems: list[Problem],
) -> tuple[str | None, str | None]:
    """(the deployment's policy, its next run); a missed slot is an `overdue` problem.
    No policy (`policy: none`, or one that cannot be resolved): (None, None)."""
    last_success = parse_iso_utc(newest["started"]) if newest else None
    try:
        found = effective_policy(service.config, name)
    except BackupctlError:
        found = None
    if found is None:
        return None, None
    policy_name, policy = found
    runs = next_runs(policy, now, 1, last_success)
    missed = missed_slot(policy, last_success, now, grace)
    if missed is not None and newest is not None:
        problems.append(
            {
                "kind": "overdue",
                "message": f"no backup since the slot of {iso_ms(missed)} (last completed backup "
                f"started {newest['started']}, policy {policy_name})",
            }
        )
    return policy_name, iso_ms(runs[0].slot) if runs else None


def _last_backup(newest: BackupSummary | None, now: dt.datetime) -> LastBackup | None:
    if newest is None:
        return None
    return {
        "id": newest["id"],
        "type": newest["type"],
        "started": newest["started"],
        "finished": newest["finished"],
        "duration_s": newest["duration_s"],
        "size_bytes": newest["size_bytes"],
        "stored_bytes": newest["stored_bytes"],
        "age_s": _seconds(now, newest["finished"] or newest["started"]),
    }


def _copies(
    service: Service,
    name: str,
    completed: list[BackupSummary],
    listings: dict[str, _Listing],
    problems: list[Problem],
    now: dt.datetime,
    grace: dt.timedelta,
) -> list[DeploymentCopy]:
    """Per destination of the deployment: its newest copy (a manifest in the listing) and the
    upload state of the newest Completed backup there; upload problems of that backup.
    `completed`: the deployment's Completed backups, newest first."""
    dep = service.config.deployments[name]
    primary = service.primary_destination(name)
    newest = completed[0] if completed else None
    out: list[DeploymentCopy] = []
    for dest_name in dep.destinations:
        listing = listings[dest_name]
        copy = next((r for r in completed if r["id"] in listing.snapshots), None)
        state = None
        if newest is not None:
            state = (newest.get("destinations") or {}).get(dest_name, {}).get("state")
            if dest_name == primary:
                state = "stored"
            elif listing.reachable and newest["id"] in listing.snapshots:
                state = state if state in _COPIED else "uploaded"
            elif listing.reachable and state in _COPIED:
                # Recorded as copied, but the destination does not hold it: emptied, an
                # unmounted disk under a local path, or another repository there now.
                state = "missing"
                problems.append(
                    {
                        "kind": "copy_missing",
                        "message": f"backup {newest['short_id']} is recorded as uploaded to {dest_name}, "
                        f"but {dest_name} does not hold it (emptied, unmounted or replaced?); check it, "
                        f"then `backupctl backup upload {newest['short_id']} --destination {dest_name}`",
                    }
                )
        out.append(
            {
                "destination": dest_name,
                "reachable": listing.reachable,
                "last_backup_id": copy["id"] if copy else None,
                "last_backup_finished": copy["finished"] if copy else None,
                "upload_state": state,
            }
        )
        if newest is None or dest_name == primary or not listing.reachable or state in (*_COPIED, "missing"):
            continue
        if state == "failed":
            error = (newest.get("destinations") or {}).get(dest_name, {}).get("error")
            why = f": {error}" if error else ""
            problems.append(
                {
                    "kind": "upload_failed",
                    "message": f"upload of {newest['short_id']} to {dest_name} failed{why}",
                }
            )
        elif (_seconds(now, newest["finished"] or newest["started"]) or 0) > grace.total_seconds():
            problems.append(
                {
                    "kind": "upload_pending",
                    "message": f"backup {newest['short_id']} is not on {dest_name} yet ({state or 'not uploaded'}); "
                    f"run `backupctl backup upload {newest['short_id']}`",
                }
            )
    return out


def _drills(service: Service, name: str, problems: list[Problem]) -> LastDrill | None:
    """The newest successful drill of the deployment; a newest drill that failed is a problem.
    No drill machinery or no drill yet: None."""
    try:
        from backupctl.drill.base import drill_history
    except ImportError:  # drills not installed in this build
        return None
    try:
        history = list(drill_history(service, name))
    except (ImportError, BackupctlError):
        return None
    if not history:
        return None
    history.sort(key=lambda d: d.get("started") or "", reverse=True)
    newest = history[0]
    if not newest.get("passed"):
        failed = [c.get("name", "") for c in newest.get("checks", []) if not c.get("passed")]
        problems.append(
            {
                "kind": "drill_failed",
                "message": f"the last drill ({newest.get('started')}, backup {str(newest.get('backup_id'))[:8]}) "
                f"failed: {', '.join(failed) or 'see backup show'}",
            }
        )
    good = next((d for d in history if d.get("passed")), None)
    if good is None:
        return None
    return {
        "id": good["id"],
        "backup_id": good["backup_id"],
        "started": good["started"],
        "seconds": good.get("seconds"),
        "restore_seconds": good.get("restore_seconds"),
    }


def _pitr(
    service: Service, name: str, primary: _Listing, problems: list[Problem], now: dt.datetime
) -> Pitr | None:
    """Window end and archive lag of a deployment that archives WAL or binary logs (None
    otherwise). The lag is now - the upload time of the newest archived log object."""
    family = dispatch.family_for(service.config.deployments[name])
    if family is None or not primary.reachable:
        return None
    if family == "postgres":
        archived = primary.under(wal_prefix(name))
    else:
        archived = primary.under(binlog_prefix(name), binlog_partial_prefix(name))
    if not archived:
        return None
    mtimes = [m for _, _, m in archived if m is not None]
    newest_at = dt.datetime.fromtimestamp(max(mtimes), dt.UTC) if mtimes else None
    window_end: str | None = None
    gaps = 0
    try:
        window = dispatch.show(service, name)
        window_end = window["latest"]
        # Missing segments / binary logs; a timeline change is not a gap in the archive.
        gaps = sum(1 for g in window["gaps"] if str(g.get("kind", "")).startswith("missing"))
    except BackupctlError as exc:
        problems.append({"kind": "archive_gap", "message": f"cannot read the PITR window: {exc.message}"})
    if gaps:
        problems.append(
            {
                "kind": "archive_gap",
                "message": f"{gaps} gap(s) in the archived logs (see `backupctl pitr show {name}`)",
            }
        )
    return {
        "family": family,
        "window_end": window_end,
        "archive_lag_s": round((now - newest_at).total_seconds(), 3) if newest_at else None,
        "newest_archived": iso_ms(newest_at) if newest_at else None,
        "gaps": gaps,
    }
