"""PITR archive lag and gaps: `pitr_lag` events (notifications.pitr_lag sets the threshold).

For each deployment that archives WAL or binary logs and has notification channels: the lag
is now minus the upload time of the newest archived log object in its primary destination
(as `backupctl status` computes it), and a gap is a missing segment / binary log in the
window `pitr show` reads. One event when the archive turns bad; nothing more until it has
been good again (a mark in the notification queue's database), so a scheduler running every
minute does not repeat it.

Called by the scheduler itself (one line in schedule/scheduler.py), not from notify/hooks.py:
this module imports pitr/, which imports the engine's Service, which imports the hooks.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from backupctl.errors import BackupctlError
from backupctl.events import WarningEvent
from backupctl.notify.dispatch import notify_event, rules_for
from backupctl.notify.event import NotificationEvent
from backupctl.notify.queue import Queue
from backupctl.pitr import dispatch
from backupctl.pitr.logarchive import binlog_partial_prefix, binlog_prefix, wal_prefix
from backupctl.policy.models import parse_duration
from backupctl.timefmt import iso_ms


def check_pitr(svc: Any, now: dt.datetime) -> list[dict[str, Any]]:
    """Notify deployments whose archive newly lags or has a gap; never raises."""
    section = getattr(svc.config, "notifications", None)
    if section is None or not section.channels or section.pitr_lag is None:
        return []
    try:
        return _check(svc, now, parse_duration(section.pitr_lag))
    except Exception as exc:  # a notification problem never fails the scheduler's run
        svc.reporter.emit(WarningEvent(f"notifications: PITR check: {type(exc).__name__}: {exc}"))
        return []


def _check(svc: Any, now: dt.datetime, threshold: dt.timedelta) -> list[dict[str, Any]]:
    config = svc.config
    state_dir = svc.state.path.parent
    todo: list[tuple[str, NotificationEvent | None]] = []
    for name, dep in config.deployments.items():
        family = dispatch.family_for(dep)
        if family is None or not rules_for(config, name):
            continue
        newest = _newest_archived(svc, name, family)
        if newest is None:
            continue  # nothing archived yet: PITR is not set up for it
        todo.append((name, _archive_event(svc, name, family, newest, now, threshold)))
    sent = _newly_bad(state_dir, todo)
    for name, event in todo:
        if event is not None and any(d["deployment"] == name for d in sent):
            notify_event(config, event, reporter=svc.reporter, state_dir=state_dir)
    return sent


def _newest_archived(svc: Any, name: str, family: str) -> dt.datetime | None:
    """Upload time of the newest archived log object in the primary destination."""
    dest = svc.destination(svc.primary_destination(name))
    if family == "postgres":
        prefixes = [wal_prefix(name)]
    else:
        prefixes = [binlog_prefix(name), binlog_partial_prefix(name)]
    mtimes = [o.mtime for p in prefixes for o in dest.list(p) if o.mtime is not None]
    if not mtimes:
        return None
    return dt.datetime.fromtimestamp(max(mtimes), dt.UTC)


def _archive_event(
    svc: Any, name: str, family: str, newest: dt.datetime, now: dt.datetime, threshold: dt.timedelta
) -> NotificationEvent | None:
    """The `pitr_lag` event of a deployment whose archive lags or has a gap; None when good."""
    lag = now - newest
    problems: list[str] = []
    if lag > threshold:
        problems.append(
            f"the newest archived log is {int(lag.total_seconds())} s old (threshold {threshold})"
        )
    gaps = 0
    try:
        window = dispatch.show(svc, name)
        gaps = sum(1 for g in window["gaps"] if str(g.get("kind", "")).startswith("missing"))
    except BackupctlError as exc:
        problems.append(f"cannot read the PITR window: {exc.message}")
    if gaps:
        problems.append(f"{gaps} gap(s) in the archived logs (see `backupctl pitr show {name}`)")
    if not problems:
        return None
    return NotificationEvent(
        kind="pitr_lag",
        deployment=name,
        status="Lagging" if lag > threshold else "Gap",
        message="; ".join(problems),
        time=now,
        details={
            "family": family,
            "archive_lag_s": round(lag.total_seconds(), 3),
            "newest_archived": iso_ms(newest),
            "gaps": gaps,
        },
    )


def _newly_bad(state_dir: Path, todo: list[tuple[str, NotificationEvent | None]]) -> list[dict[str, Any]]:
    """Record each deployment's archive as bad or good in the queue's marks; the events of
    those that turned bad since the last check (the ones to send)."""
    sent: list[dict[str, Any]] = []
    queue = Queue(state_dir)
    try:
        for name, event in todo:
            key = f"pitr/{name}"
            was_bad = bool(queue.mark(key))
            queue.set_mark(key, "bad" if event is not None else "")
            if event is not None and not was_bad:
                sent.append(event.to_doc())
    finally:
        queue.close()
    return sent
