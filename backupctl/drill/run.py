"""Running a restore drill: pick the backup, restore each stored source into scratch space,
run its driller, store the record. Called by `backup drill` and by scheduled drills.

Guarantees:
* The live deployment is never written: every driller restores under its own private
  scratch directory (`backupctl.tempdir`, 0700) or into a throwaway server/database.
* Each scratch directory is removed when its source's drill ends, however it ends; one
  a killed drill left behind lies in the dead process's run directory, which the next
  backupctl run sweeps (`tempdir.sweep`, called here first).
* A failure of restore or of a check is a failed check in the record (the drill itself
  "succeeds" in producing a verdict); errors before anything was drilled (unknown
  deployment, no completed backup, wrong key) and configuration errors of this host (a
  password variable not set) are raised: they say nothing about the backup.
* The record is stored in the repository (`drills/<id>`) and cached locally; failing to
  store it in the repository is a warning, never a lost verdict.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl import tempdir
from backupctl.drill.base import DrillCheck, DrillContext, Driller, driller_for
from backupctl.drill.record import DrillRecord
from backupctl.errors import BackupctlError, ConfigError, NotFoundError, RestoreIncompleteError, UsageError
from backupctl.events import Finished, Reporter, Started, WarningEvent
from backupctl.notify import hooks as notify_hooks
from backupctl.pitr.common import PHYSICAL_METHODS
from backupctl.timefmt import iso_ms

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.records import BackupSummary, Manifest, SourceRecord
    from backupctl.repo.repository import Repository


def pick_backup(
    service: Service,
    deployment: str,
    backup_id: str | None = None,
    destination: str | None = None,
    to_time: dt.datetime | None = None,
) -> BackupSummary:
    """The backup to drill: `backup_id` (a prefix), or the newest Completed backup of the
    deployment (the newest started before `to_time` when one is given)."""
    service.deployment(deployment)  # NotFound for an unknown name
    if backup_id is not None:
        record = service.find_backup(backup_id, destination, expiries=False)
        if record["deployment"] != deployment:
            raise UsageError(
                f"backup {record['short_id']} belongs to deployment {record['deployment']!r}, not {deployment!r}"
            )
        return record
    candidates = [
        r
        for r in service.list_backups(deployment, destination, expiries=False)
        if r["status"] == "Completed"
        and (to_time is None or (r.get("finished") or r["started"]) <= iso_ms(to_time))
    ]
    if not candidates:
        when = f" finished before {iso_ms(to_time)}" if to_time else ""
        raise NotFoundError(
            f"no completed backup of {deployment!r}{when} to drill",
            hint=f"take one with `backupctl backup create {deployment}`",
        )
    return max(candidates, key=lambda r: r["started"])


def run_drill(
    service: Service,
    deployment: str,
    backup_id: str | None = None,
    *,
    to_time: dt.datetime | None = None,
    destination: str | None = None,
    reporter: Reporter | None = None,
) -> DrillRecord:
    """Drill one backup of `deployment`; returns (and stores) its record."""
    reporter = reporter or service.reporter
    tempdir.sweep()  # what a killed drill left behind
    record = pick_backup(service, deployment, backup_id, destination, to_time)
    summary, repo, manifest = service.completed_backup(record["id"], destination)
    dest_name = destination or service.primary_destination(deployment)
    drillers = [driller_for(src["type"]) for src in manifest["sources"]]
    rollable = [
        d.supports_pitr and src.get("method") in PHYSICAL_METHODS
        for d, src in zip(drillers, manifest["sources"], strict=True)
    ]
    if to_time is not None and not any(rollable):
        raise UsageError(
            f"--to-time: backup {summary['short_id']} ({summary['method']}) cannot be rolled forward; "
            "point-in-time drills need a physical PostgreSQL or MariaDB backup with archived logs"
        )
    started = service.now()
    t0 = time.monotonic()
    reporter.emit(Started("drill", summary["id"], int(manifest.get("source_bytes", 0))))
    checks, restore_seconds = _drill_sources(
        service, deployment, summary, repo, manifest, drillers, to_time=to_time, reporter=reporter
    )
    passed = all(c.passed for c in checks)
    drill: DrillRecord = {
        "id": uuid.uuid4().hex,
        "backup_id": summary["id"],
        "deployment": deployment,
        "started": iso_ms(started),
        "seconds": round(time.monotonic() - t0, 3),
        "restore_seconds": round(restore_seconds, 3),
        "passed": passed,
        "to_time": iso_ms(to_time) if to_time else None,
        "checks": [c.to_doc() for c in checks],
        "host": socket.gethostname(),
    }
    _store_record(service, deployment, dest_name, repo, drill, reporter)
    reporter.emit(Finished("drill", summary["id"], ok=passed))
    notify_hooks.drill_finished(service, drill)  # drill_failed / drill_completed; never raises
    return drill


def _drill_sources(
    service: Service,
    deployment: str,
    summary: BackupSummary,
    repo: Repository,
    manifest: Manifest,
    drillers: list[Driller],
    *,
    to_time: dt.datetime | None,
    reporter: Reporter,
) -> tuple[list[DrillCheck], float]:
    """(every source's checks, named `<type>.<check>`, the seconds spent restoring), under a
    shared lock of the repository."""
    from backupctl.backups.restorer import Prefetcher

    checks: list[DrillCheck] = []
    restore_seconds = 0.0
    with repo.lock(exclusive=False, operation=f"drill {summary['id'][:8]}"):
        repo.load_index()
        prefetcher = Prefetcher(repo)
        try:
            for i, (src, driller) in enumerate(zip(manifest["sources"], drillers, strict=True)):
                scratch = tempdir.make_dir(f"drill-{i}-")
                ctx = DrillContext(
                    service=service,
                    backup=summary,
                    manifest=manifest,
                    repo=repo,
                    source=src,
                    position=i,
                    deployment=service.config.deployments.get(deployment),
                    scratch=scratch,
                    reporter=reporter,
                    to_time=to_time,
                    prefetcher=prefetcher,
                )
                t1 = time.monotonic()
                found = _drill_one(driller, ctx, src, scratch)
                restore_seconds += (
                    ctx.restore_seconds if ctx.restore_seconds is not None else time.monotonic() - t1
                )
                prefix = f"{src['type']}."
                for check in found:
                    if not check.name.startswith(prefix):
                        check.name = prefix + check.name
                checks.extend(found)
        finally:
            prefetcher.close()
    return checks, restore_seconds


def _drill_one(driller: Driller, ctx: DrillContext, src: SourceRecord, scratch: Path) -> list[DrillCheck]:
    """One source's checks; a failed restore is a failed check. Its scratch space is removed."""
    try:
        found = driller.drill(ctx)
    except ConfigError:
        # A setting of this host (a password variable not set, a tool not found)
        # says nothing about the backup: no verdict, no record, exit 4.
        raise
    except BackupctlError as exc:
        found = [DrillCheck("restore", False, f"{_label(src)}: {_reason(exc, scratch)}")]
    except Exception as exc:  # a bug or an unclassified library error: still a verdict
        found = [DrillCheck("restore", False, f"{_label(src)}: {type(exc).__name__}: {exc}")]
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if not found:
        found = [DrillCheck("checks", False, f"{_label(src)}: the driller checked nothing")]
    return found


def _store_record(
    service: Service,
    deployment: str,
    dest_name: str,
    repo: Repository,
    drill: DrillRecord,
    reporter: Reporter,
) -> None:
    """Store the record in the repository and its copies; a failure there is a warning (the
    record is then cached locally only), never a lost verdict."""
    from backupctl.drill import store

    try:
        store.save(service, dest_name, drill)
    except BackupctlError as exc:
        reporter.emit(WarningEvent(f"the drill record could not be stored in {dest_name!r}: {exc.message}"))
        store.cache_only(service, repo.id, drill)
    for problem in store.save_to_copies(service, deployment, dest_name, drill):
        reporter.emit(WarningEvent(problem))


def _reason(exc: BackupctlError, scratch: Path) -> str:
    """Why a source did not restore, in the paths of the backup (not of the scratch space)."""
    if isinstance(exc, RestoreIncompleteError) and exc.cause:
        text = f"restore failed: {exc.cause}"
    else:
        text = exc.message
    return text.replace(str(scratch / "restore"), "").replace(str(scratch), "<scratch>")


def _label(src: SourceRecord) -> str:
    """'sqlite /srv/app.db': the stored source a check belongs to, for one-line details."""
    what = src.get("describe") or {}
    target = what.get("path") or what.get("paths") or what.get("database") or what.get("databases")
    if isinstance(target, list):
        target = ", ".join(map(str, target))
    return f"{src['method']} {target}" if target else src["method"]


def first_failure(record: DrillRecord) -> str:
    """'<check name>: <detail>' of the first failed check, and how many more failed."""
    bad = [c for c in record["checks"] if not c["passed"]]
    if not bad:
        return ""
    text = f"{bad[0]['name']}: {bad[0]['detail']}"
    if len(bad) > 1:
        text += f" (and {len(bad) - 1} more failed check{'s' if len(bad) > 2 else ''})"
    return text


def verified(service: Service, records: list[BackupSummary]) -> None:
    """Add `verified_at` (start of the newest passed drill, or None) and `drill_passed` (the
    verdict of the newest drill, None when never drilled) to each backup record, from the
    repositories' drill records (every host's) and the local cache."""
    from backupctl.drill import store

    by_backup = store.latest_by_backup(service, records)
    for rec in records:
        drills = by_backup.get(rec["id"], [])
        ok = [d for d in drills if d["passed"]]
        rec["verified_at"] = ok[0]["started"] if ok else None
        rec["drill_passed"] = drills[0]["passed"] if drills else None
