"""Backup overdue: no completed backup within the policy's interval plus a grace.

The rule is policy/overdue.py's `missed_slot` (the one `status` uses too), with the newest
completed backup of any kind (manual included) as the last success. Each missed slot is reported once (a mark in the notification queue's database), so
a scheduler that runs every minute does not repeat it; the next missed slot reports again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.notify.dispatch import notify_event, rules_for, state_dir_of
from backupctl.notify.event import NotificationEvent
from backupctl.notify.queue import Queue
from backupctl.policy.models import parse_duration
from backupctl.policy.overdue import missed_slot
from backupctl.policy.resolve import effective_policy, last_success_of
from backupctl.policy.retention import BackupRecord
from backupctl.timefmt import iso_ms, iso_s, parse_iso_utc

if TYPE_CHECKING:
    from backupctl.config.models import Config
    from backupctl.events import Reporter


def check_overdue(
    config: Config,
    backups: Sequence[BackupRecord],
    now: dt.datetime,
    *,
    reporter: Reporter | None = None,
    state_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Notify `backup_overdue` for each deployment newly overdue; returns the events sent."""
    section = getattr(config, "notifications", None)
    if section is None or not section.channels:
        return []
    grace = parse_duration(section.overdue_grace)
    directory = state_dir or state_dir_of(config)
    sent: list[dict[str, Any]] = []
    queue = Queue(directory)
    todo: list[NotificationEvent] = []
    try:
        for deployment in config.deployments:
            if not rules_for(config, deployment):
                continue
            resolved = effective_policy(config, deployment)
            if resolved is None:
                continue
            name, policy = resolved
            seen_key = f"seen/{deployment}"
            if queue.mark(seen_key) is None:
                queue.set_mark(seen_key, iso_ms(now))
            first_seen = parse_iso_utc(queue.mark(seen_key) or iso_ms(now))
            last = last_success_of(backups, deployment)
            slot = missed_slot(policy, last, now, grace, first_seen)
            if slot is None or queue.mark(f"overdue/{deployment}") == iso_s(slot):
                continue
            queue.set_mark(f"overdue/{deployment}", iso_s(slot))
            age = f"the last completed backup is from {iso_s(last)}" if last else "no backup has completed"
            todo.append(
                NotificationEvent(
                    kind="backup_overdue",
                    deployment=deployment,
                    status="Overdue",
                    message=f"no backup completed for the slot of {iso_s(slot)} (policy {name}, "
                    f"grace {section.overdue_grace}); {age}",
                    time=now,
                    details={
                        "policy": name,
                        "missed_slot": iso_s(slot),
                        "last_completed": iso_s(last) if last else None,
                        "grace": section.overdue_grace,
                    },
                )
            )
    finally:
        queue.close()
    for event in todo:
        notify_event(config, event, reporter=reporter, state_dir=directory)
        sent.append(event.to_doc())
    return sent
