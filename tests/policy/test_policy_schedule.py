"""Next runs and due slots: time zones across DST, month ends, 29 February, intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backupctl.policy.models import Policy, Schedule
from backupctl.policy.schedule import FakeClock, due, next_runs, recurrence_text

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def policy(*schedules: dict[str, Any], **kw: Any) -> Policy:
    return Policy.model_validate({"schedules": list(schedules), **kw})


def local_times(p: Policy, after: datetime, n: int, tz: ZoneInfo) -> list[str]:
    return [r.slot.astimezone(tz).strftime("%Y-%m-%d %H:%M %z") for r in next_runs(p, after, n)]


def test_recurrence_text_of_each_form() -> None:
    assert recurrence_text(Schedule(cron="5 * * * *")) == "TZ=UTC 5 * * * *"
    assert recurrence_text(
        Schedule.model_validate({"daily": {"at": "05:00"}, "timezone": "Europe/Berlin"})
    ) == ("TZ=Europe/Berlin 0 5 * * *")
    assert recurrence_text(Schedule.model_validate({"daily": {"at": "5:30", "days": ["Monday", "fri"]}})) == (
        "TZ=UTC 30 5 * * mon,fri"
    )
    assert (
        recurrence_text(Schedule.model_validate({"hourly": {"every": 2, "minute": 15}}))
        == "TZ=UTC 15 */2 * * *"
    )
    assert recurrence_text(Schedule.model_validate({"monthly": {"day": "last", "at": "23:00"}})) == (
        "TZ=UTC 0 23 L * *"
    )
    assert recurrence_text(Schedule(interval="24h")) == "every 24h after the last successful backup"


def test_daily_berlin_keeps_wall_clock_time_across_both_dst_changes() -> None:
    p = policy({"daily": {"at": "05:00"}, "timezone": "Europe/Berlin"})
    runs = next_runs(p, utc(2026, 3, 27), 4)
    assert [r.slot for r in runs] == [
        utc(2026, 3, 27, 4),
        utc(2026, 3, 28, 4),
        utc(2026, 3, 29, 3),
        utc(2026, 3, 30, 3),
    ]
    runs = next_runs(p, utc(2026, 10, 24), 3)
    assert [r.slot for r in runs] == [utc(2026, 10, 24, 3), utc(2026, 10, 25, 4), utc(2026, 10, 26, 4)]


def test_spring_forward_gap_runs_once_right_after_the_gap_berlin() -> None:
    # 2026-03-29: 02:00 CET -> 03:00 CEST; 02:30 does not exist that day.
    p = policy({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert local_times(p, utc(2026, 3, 28, 12), 3, BERLIN) == [
        "2026-03-29 03:30 +0200",
        "2026-03-30 02:30 +0200",
        "2026-03-31 02:30 +0200",
    ]


def test_spring_forward_gap_hourly_new_york_has_no_duplicate_or_reordered_slot() -> None:
    # 2026-03-08: 02:00 EST -> 03:00 EDT.
    p = policy({"cron": "*/30 * * * *", "timezone": "America/New_York"})
    assert local_times(p, utc(2026, 3, 8, 6, 15), 4, NEW_YORK) == [
        "2026-03-08 01:30 -0500",
        "2026-03-08 03:00 -0400",
        "2026-03-08 03:30 -0400",
        "2026-03-08 04:00 -0400",
    ]


def test_fall_back_repeated_hour_runs_once_berlin() -> None:
    # 2026-10-25: 03:00 CEST -> 02:00 CET; 02:30 happens twice, runs at the first.
    p = policy({"cron": "30 2 * * *", "timezone": "Europe/Berlin"})
    assert local_times(p, utc(2026, 10, 24, 12), 2, BERLIN) == [
        "2026-10-25 02:30 +0200",
        "2026-10-26 02:30 +0100",
    ]
    hourly = policy({"cron": "0 * * * *", "timezone": "Europe/Berlin"})
    slots = [r.slot for r in next_runs(hourly, utc(2026, 10, 24, 23, 30), 3)]
    assert slots == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 2), utc(2026, 10, 25, 3)]  # 02:00 CET skipped


def test_fall_back_new_york_due_during_the_repeated_hour_does_not_rerun() -> None:
    # 2026-11-01: 02:00 EDT -> 01:00 EST; 01:30 EDT is 05:30 UTC, 01:30 EST is 06:30 UTC.
    p = policy({"cron": "30 1 * * *", "timezone": "America/New_York"})
    first = due(p, utc(2026, 11, 1, 5, 31), {})
    assert [r.slot for r in first] == [utc(2026, 11, 1, 5, 30)]
    assert due(p, utc(2026, 11, 1, 6, 31), {"full": first[0].slot}) == []
    assert [r.slot for r in next_runs(p, utc(2026, 11, 1, 5, 30), 1)] == [utc(2026, 11, 2, 6, 30)]


def test_month_end_last_day_and_day_31() -> None:
    last = policy({"monthly": {"day": "last", "at": "23:00"}})
    assert [r.slot.date().isoformat() for r in next_runs(last, utc(2028, 1, 15), 3)] == [
        "2028-01-31",
        "2028-02-29",
        "2028-03-31",
    ]
    day31 = policy({"monthly": {"day": 31, "at": "00:00"}})
    assert [r.slot.month for r in next_runs(day31, utc(2026, 1, 1), 4)] == [1, 3, 5, 7]


def test_29_february_runs_only_in_leap_years() -> None:
    p = policy({"cron": "0 5 29 2 *", "timezone": "Europe/Berlin"})
    assert [r.slot for r in next_runs(p, utc(2026, 1, 1), 2)] == [utc(2028, 2, 29, 4), utc(2032, 2, 29, 4)]
    # A scheduler started in 2029 makes up the 2028 slot once.
    assert [r.slot for r in due(p, utc(2029, 6, 1), {})] == [utc(2028, 2, 29, 4)]


def test_missed_slots_are_made_up_once_not_once_per_slot() -> None:
    p = policy({"hourly": {"every": 2}})
    clock = FakeClock(utc(2026, 11, 20, 10, 1))
    last: dict[str, datetime] = {}
    runs = due(p, clock.now(), last)
    assert [r.slot for r in runs] == [utc(2026, 11, 20, 10)]
    last[runs[0].key] = runs[0].slot
    assert due(p, clock.now(), last) == []  # twice in the same minute starts nothing twice
    clock.advance(timedelta(days=3))  # machine off for three days: 36 missed slots
    runs = due(p, clock.now(), last)
    assert [r.slot for r in runs] == [utc(2026, 11, 23, 10)]
    last[runs[0].key] = runs[0].slot
    clock.advance(timedelta(minutes=30))
    assert due(p, clock.now(), last) == []


def test_new_policy_waits_for_its_first_slot_and_paused_is_never_due() -> None:
    p = policy({"daily": {"at": "05:00"}}, created="2026-11-20T10:00:00Z")
    assert due(p, utc(2026, 11, 20, 12), {}) == []
    assert [r.slot for r in due(p, utc(2026, 11, 21, 5, 1), {})] == [utc(2026, 11, 21, 5)]
    paused = policy({"daily": {"at": "05:00"}}, status="paused")
    assert due(paused, utc(2026, 11, 21, 5, 1), {}) == []
    assert next_runs(paused, utc(2026, 11, 21), 5) == []


def test_full_and_incremental_at_the_same_slot_run_the_full_only() -> None:
    p = policy(
        {"type": "full", "cron": "0 0 * * sun"},
        {"type": "incremental", "cron": "0 * * * *"},
    )
    sunday = utc(2026, 11, 22, 0, 1)
    runs = due(p, sunday, {})
    assert [(r.schedule.type, r.slot) for r in runs] == [("full", utc(2026, 11, 22, 0))]
    # After the full ran, the incremental is not due for that same slot either.
    assert due(p, sunday, {"full": utc(2026, 11, 22, 0)}) == []
    monday = utc(2026, 11, 23, 0, 1)
    runs = due(p, monday, {"full": utc(2026, 11, 22, 0), "incremental": utc(2026, 11, 22, 23)})
    assert [(r.schedule.type, r.key) for r in runs] == [("incremental", "incremental")]
    planned = next_runs(p, utc(2026, 11, 21, 22, 30), 3)
    assert [(r.schedule.type, r.slot.hour) for r in planned] == [
        ("incremental", 23),
        ("full", 0),
        ("incremental", 1),
    ]


def test_interval_counts_from_the_last_successful_backup_of_any_kind() -> None:
    p = policy({"interval": "24h"})
    clock = FakeClock(utc(2026, 11, 20, 9))
    assert [r.slot for r in due(p, clock.now(), {})] == [clock.now()]  # never backed up: now
    last_success = utc(2026, 11, 20, 9)
    runs = {"full": last_success}
    clock.advance(timedelta(hours=20))
    assert due(p, clock.now(), runs, last_success) == []
    # A manual backup at 05:00 the next day pushes the next automatic one to 24h after it.
    manual = utc(2026, 11, 21, 5)
    clock.set(utc(2026, 11, 21, 9, 30))
    assert due(p, clock.now(), runs, manual) == []
    assert [r.slot for r in next_runs(p, clock.now(), 2, manual)] == [
        utc(2026, 11, 22, 5),
        utc(2026, 11, 23, 5),
    ]
    clock.set(utc(2026, 11, 22, 5))
    assert [r.slot for r in due(p, clock.now(), runs, manual)] == [utc(2026, 11, 22, 5)]


def test_schedule_keys_are_stable_names() -> None:
    p = policy({"cron": "0 1 * * *"}, {"type": "incremental", "cron": "0 * * * *"}, {"cron": "0 13 * * *"})
    assert p.schedule_keys() == ["full", "incremental", "full-2"]
    named = policy({"name": "nightly", "cron": "0 1 * * *"})
    assert named.schedule_keys() == ["nightly"]


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        due(policy({"cron": "0 1 * * *"}), datetime(2026, 1, 1), {})
