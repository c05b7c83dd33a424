"""The one-line calls the engine makes where events happen (backups/creating.py, scheduler.py).

Each takes the engine's Service (typed `Any`: the engine imports this module, not the other
way round) and never raises: a notification problem, even a bug here, becomes a warning
through the service's reporter and never changes the outcome of the backup. Nothing is done
(not even opening the queue) when the configuration has no channels.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from backupctl.events import WarningEvent
from backupctl.notify.dispatch import notify_event, retry_pending
from backupctl.notify.event import NotificationEvent

F = TypeVar("F", bound=Callable[..., None])


def _enabled(svc: Any) -> bool:
    section = getattr(svc.config, "notifications", None)
    return section is not None and bool(section.channels)


def _guarded(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(svc: Any, *args: Any, **kwargs: Any) -> None:
        if not _enabled(svc):
            return
        try:
            fn(svc, *args, **kwargs)
        except Exception as exc:  # never let a notification fail a backup
            svc.reporter.emit(WarningEvent(f"notifications: {type(exc).__name__}: {exc}"))

    return wrapper  # type: ignore[return-value]


def _send(svc: Any, event: NotificationEvent) -> None:
    notify_event(svc.config, event, reporter=svc.reporter, state_dir=svc.state.path.parent)


@_guarded
def backup_started(svc: Any, deployment: str, backup_id: str, safety: bool = False) -> None:
    if not safety:  # the safety backup before an in-place restore is part of the restore
        _send(
            svc, NotificationEvent("backup_started", deployment, "started", backup_id, "Running", svc.now())
        )


@_guarded
def backup_failed(svc: Any, deployment: str, backup_id: str, error: str, safety: bool = False) -> None:
    if not safety:
        _send(svc, NotificationEvent("backup_failed", deployment, error, backup_id, "Failed", svc.now()))


@_guarded
def backup_completed(svc: Any, record: Mapping[str, Any], safety: bool = False) -> None:
    if safety:
        return
    details = {
        k: record.get(k) for k in ("type", "created_by", "files", "size_bytes", "stored_bytes", "duration_s")
    }
    message = (
        f"{record.get('type', '')} backup completed: {record.get('files', 0)} files, "
        f"{record.get('size_bytes', 0)} bytes read, {record.get('stored_bytes', 0)} bytes stored, "
        f"in {record.get('duration_s', 0)} s"
    )
    event = NotificationEvent(
        "backup_completed", record["deployment"], message, record["id"], "Completed", svc.now(), details
    )
    _send(svc, event)


@_guarded
def upload_failed(svc: Any, record: Mapping[str, Any], safety: bool = False) -> None:
    if not safety:
        details = {"failed_uploads": list(record.get("failed_uploads", []))}
        message = str(record.get("error") or "upload failed")
        event = NotificationEvent(
            "upload_failed", record["deployment"], message, record["id"], "Completed", svc.now(), details
        )
        _send(svc, event)


@_guarded
def retention_failed(svc: Any, deployment: str, backup_id: str, error: str) -> None:
    message = f"retention did not run after the backup: {error}"
    _send(svc, NotificationEvent("retention_failed", deployment, message, backup_id, "Completed", svc.now()))


@_guarded
def drill_finished(svc: Any, drill: Mapping[str, Any]) -> None:
    """After a restore drill (drill/run.py): `drill_failed` or `drill_completed` from its
    DrillRecord (drill/record.py), naming the first failed check."""
    checks = list(drill.get("checks") or [])
    bad = [c for c in checks if not c.get("passed")]
    if bad:
        more = f" (and {len(bad) - 1} more failed)" if len(bad) > 1 else ""
        message = f"{bad[0].get('name')}: {bad[0].get('detail')}{more}"
    else:
        message = f"{len(checks)} checks passed; restore took {drill.get('restore_seconds')} s"
    event = NotificationEvent(
        "drill_completed" if drill.get("passed") else "drill_failed",
        str(drill.get("deployment", "")),
        message,
        drill.get("backup_id"),
        "Passed" if drill.get("passed") else "Failed",
        svc.now(),
        {
            "drill_id": drill.get("id"),
            "restore_seconds": drill.get("restore_seconds"),
            "to_time": drill.get("to_time"),
            "failed_checks": [f"{c.get('name')}: {c.get('detail')}" for c in bad],
        },
    )
    _send(svc, event)


@_guarded
def run_due_started(svc: Any, now: dt.datetime) -> None:
    """Start of `schedule run-due` / a daemon round: retry the queue, then look for overdue."""
    from backupctl.notify.overdue import check_overdue
    from backupctl.policy.records import to_policy_records

    retry_pending(svc.config, reporter=svc.reporter, state_dir=svc.state.path.parent)
    backups = to_policy_records(svc.list_backups(expiries=False))
    check_overdue(svc.config, backups, now, reporter=svc.reporter, state_dir=svc.state.path.parent)
