"""A simulated year of hourly `due()` calls under a fake clock, with retention after each run.

Mendix-like GFS: a nightly backup at 21:00 Europe/Amsterdam; keep every day for two weeks,
every Sunday for three months (13 weeks), the first Sunday of each month for a year.
The expected set is computed here from the calendar, independently of the retention module.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from backupctl.policy.models import MANUAL, Policy
from backupctl.policy.retention import BackupRecord, apply_retention, expiry
from backupctl.policy.schedule import FakeClock, due, next_runs

AMS = ZoneInfo("Europe/Amsterdam")
GFS = Policy.model_validate(
    {
        "created": "2026-01-01T00:00:00Z",
        "schedules": [{"daily": {"at": "21:00"}, "timezone": "Europe/Amsterdam"}],
        "retention": {"keep_daily": 14, "keep_weekly": 13, "keep_monthly": 12, "weekly_day": "sunday"},
    }
)
OUTAGE = (datetime(2026, 6, 10, 0, tzinfo=UTC), datetime(2026, 6, 13, 10, tzinfo=UTC))
FAILING_DAYS = {date(2026, 3, 8), date(2026, 8, 2), date(2026, 8, 5)}  # two are Sundays
MANUAL_DAYS = {date(2026, 2, 14), date(2026, 7, 1), date(2026, 12, 24)}


def local_day(t: datetime) -> date:
    return t.astimezone(AMS).date()


def first_sunday(year: int, month: int) -> date:
    d = date(year, month, 1)
    while d.weekday() != 6:
        d += timedelta(days=1)
    return d


def expected_kept(history: list[BackupRecord]) -> set[str]:
    """GFS keepers from the whole history, by plain calendar reasoning."""
    completed = [b for b in history if b.status == "completed"]
    scheduled = sorted((b for b in completed if not b.manual), key=lambda b: b.created)

    def keepers(period_of, count: int) -> set[str]:
        first: dict[date, BackupRecord] = {}
        for b in scheduled:  # oldest first: the first one seen is the earliest of its period
            first.setdefault(period_of(local_day(b.created)), b)
        return {first[p].id for p in sorted(first, reverse=True)[:count]}

    def week(d: date) -> date:  # weeks run Sunday..Saturday
        return d - timedelta(days=(d.weekday() + 1) % 7)

    def month(d: date) -> date:  # months run from a first Sunday to the day before the next
        f = first_sunday(d.year, d.month)
        if d >= f:
            return f
        return first_sunday(d.year - 1, 12) if d.month == 1 else first_sunday(d.year, d.month - 1)

    kept = keepers(lambda d: d, 14) | keepers(week, 13) | keepers(month, 12)
    kept |= {b.id for b in completed if b.manual}
    newest = max(completed, key=lambda b: b.created)
    kept.add(newest.id)
    kept |= {b.id for b in history if b.status == "failed" and b.created > newest.created}
    return kept


def test_a_year_of_nightly_backups_keeps_exactly_the_gfs_set() -> None:
    clock = FakeClock(datetime(2026, 1, 1, 0, 7, tzinfo=UTC))
    end = datetime(2027, 1, 1, 0, 7, tzinfo=UTC)
    last_runs: dict[str, datetime] = {}
    history: list[BackupRecord] = []
    alive: list[BackupRecord] = []
    predicted: dict[str, datetime | None] = {}
    deleted_at: dict[str, datetime] = {}
    run_slots: list[datetime] = []
    tz_name = GFS.retention_timezone()

    def next_run(t: datetime) -> datetime | None:
        return next_runs(GFS, t, 1)[0].slot

    while clock.now() < end:
        now = clock.now()
        if OUTAGE[0] <= now < OUTAGE[1]:
            clock.advance(timedelta(hours=1))
            continue
        if local_day(now) in MANUAL_DAYS and now.astimezone(AMS).hour == 12:
            b = BackupRecord(f"m{len(history)}", "app", now, "completed", MANUAL)
            history.append(b)
            alive.append(b)
        for run in due(GFS, now, last_runs):
            last_runs[run.key] = run.slot
            run_slots.append(run.slot)
            status = "failed" if local_day(now) in FAILING_DAYS else "completed"
            b = BackupRecord(f"b{len(history)}", "app", now, status, "nightly")
            history.append(b)
            alive.append(b)
            decisions = apply_retention(alive, GFS.retention, now, timezone=tz_name)
            for d in decisions:
                if not d.keep:
                    deleted_at[d.backup.id] = run.slot
            alive = [d.backup for d in decisions if d.keep]
            if status == "completed":
                predicted[b.id] = expiry(b, alive, GFS.retention, now, next_run, timezone=tz_name)
            assert {b.id for b in alive} == expected_kept(history), now
        clock.advance(timedelta(hours=1))

    # Each nightly slot ran exactly once; the three days of outage were made up by one run.
    slots_by_day = [local_day(s) for s in run_slots]
    assert len(slots_by_day) == len(set(slots_by_day))
    missed = {date(2026, 6, 10), date(2026, 6, 11)}
    assert missed.isdisjoint(slots_by_day) and date(2026, 6, 12) in slots_by_day
    assert len(run_slots) == 365 - len(missed)

    kept = {b.id: b for b in alive}
    scheduled_days = sorted(local_day(b.created) for b in kept.values() if not b.manual)
    assert len([d for d in scheduled_days if d > date(2026, 12, 17)]) == 14
    sundays = [d for d in scheduled_days if d.weekday() == 6]
    assert len(sundays) >= 13
    first_sundays = {first_sunday(2026, m) for m in range(2, 13)}
    assert set(scheduled_days) >= first_sundays - FAILING_DAYS
    assert date(2026, 8, 3) in scheduled_days  # 2 August failed: the Monday after stands in
    assert all(b.id in kept for b in history if b.manual)

    # Expiry predicted at creation is the run that deleted it, whenever the schedule ran
    # as assumed (no outage or failed run in between).
    disturbances = [OUTAGE[0]] + [b.created for b in history if b.status == "failed"]
    checked = 0
    for bid, gone in deleted_at.items():
        if bid not in predicted:
            continue
        created = next(b.created for b in history if b.id == bid)
        if any(created <= t <= gone for t in disturbances):
            continue
        assert predicted[bid] == gone, bid
        checked += 1
    assert checked > 250
    for bid in kept:
        predicted_expiry = predicted.get(bid)
        if predicted_expiry is not None:
            assert predicted_expiry > end - timedelta(hours=1)
