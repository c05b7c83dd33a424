"""The overdue rule, defined once: which scheduled slot has no backup after its grace.

Used by the `backup_overdue` notification (notify/overdue.py) and by the `overdue` problem
of `status` and the metrics (monitor/health.py), so the two never disagree.

For each schedule of the policy, the newest slot whose grace has passed is
`cron_prev(now - grace)` (calendar schedules) or `base + k * interval` for the largest k
with `base + k * interval + grace <= now` (interval schedules; `base` is the last success,
else the policy's creation, else `first_seen`). The deployment is overdue when its newest
completed backup is older than the newest such slot. A policy owes nothing for slots at or
before its `created` time; a deployment that never completed a backup owes nothing for
slots at or before `first_seen` (when this host first looked at it). Paused policies and
policies without schedules are never overdue.
"""

from __future__ import annotations

import datetime as dt

from backupctl.policy.models import Policy
from backupctl.policy.schedule import cron_prev


def missed_slot(
    policy: Policy,
    last_success: dt.datetime | None,
    now: dt.datetime,
    grace: dt.timedelta,
    first_seen: dt.datetime | None = None,
) -> dt.datetime | None:
    """The newest slot older than `grace` that no completed backup covers, or None."""
    if policy.paused or not policy.schedules:
        return None
    created = policy.created.astimezone(dt.UTC) if policy.created is not None else None
    # Slots at or before `owed_after` are not owed.
    bounds = [t for t in (created, first_seen if last_success is None else None) if t is not None]
    owed_after = max(bounds) if bounds else None
    cutoff = now - grace
    missed: list[dt.datetime] = []
    for schedule in policy.schedules:
        expr = schedule.cron_expression()
        if expr is not None:
            slot = cron_prev(expr, schedule.tz, cutoff)
        else:
            delta = schedule.interval_delta
            base = last_success or owed_after
            if delta is None or base is None:
                continue
            k = (cutoff - base) // delta
            if k < 1:
                continue
            slot = base + k * delta
        if owed_after is not None and slot <= owed_after:
            continue
        if last_success is None or last_success < slot:
            missed.append(slot)
    return max(missed) if missed else None
