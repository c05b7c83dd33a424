"""Retention: which backups each rule keeps, the reasons given, expiry, and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from backupctl.policy.models import MANUAL, Policy, Retention
from backupctl.policy.resolve import backup_expiries, next_run_fn, plan_prune
from backupctl.policy.retention import BackupRecord, apply_retention, describe_retention, expiry

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)  # a Sunday


def nightly(days: int, end: datetime = NOW, dep: str = "app", by: str = "nightly") -> list[BackupRecord]:
    """One completed backup a day at 03:00 UTC, newest on `end`'s date."""
    last = end.replace(hour=3, minute=0)
    return [BackupRecord(f"{dep}-{i}", dep, last - timedelta(days=i), "completed", by) for i in range(days)]


def kept(backups: list[BackupRecord], spec: Retention, now: datetime = NOW, tz: str = "UTC") -> set[str]:
    return {d.backup.id for d in apply_retention(backups, spec, now, timezone=tz) if d.keep}


def reasons(backups: list[BackupRecord], spec: Retention, bid: str) -> list[str]:
    return next(d.reasons for d in apply_retention(backups, spec, NOW) if d.backup.id == bid)


def test_keep_daily_keeps_the_first_backup_of_each_of_the_newest_days() -> None:
    backups = nightly(10)
    extra = BackupRecord("late", "app", NOW.replace(hour=4), "completed", "nightly")
    assert kept(backups + [extra], Retention(keep_daily=3)) == {"app-0", "app-1", "app-2", "late"}
    assert reasons(backups + [extra], Retention(keep_daily=3), "app-1") == ["keep_daily 2026-11-21"]
    assert reasons(backups + [extra], Retention(keep_daily=3), "late") == ["newest completed backup"]


def test_keep_weekly_keeps_the_sunday_backup_of_each_week() -> None:
    backups = nightly(40)
    keep = kept(backups, Retention(keep_weekly=4))
    days = sorted(b.created.date().isoformat() for b in backups if b.id in keep)
    assert days == ["2026-11-01", "2026-11-08", "2026-11-15", "2026-11-22"]
    monday = Retention(keep_weekly=2, weekly_day="monday")
    assert sorted(b.created.date().isoformat() for b in backups if b.id in kept(backups, monday)) == [
        "2026-11-09",
        "2026-11-16",
        "2026-11-22",  # not a weekly keeper (the week of the 16th is), but the newest completed
    ]


def test_keep_monthly_first_sunday_or_first_of_month() -> None:
    backups = nightly(200)
    first_sunday = Retention(keep_monthly=4)
    days = sorted(b.created.date().isoformat() for b in backups if b.id in kept(backups, first_sunday))
    assert days == ["2026-08-02", "2026-09-06", "2026-10-04", "2026-11-01", "2026-11-22"]
    first_of_month = Retention(keep_monthly=3, monthly_rule="first_of_month")
    days = sorted(b.created.date().isoformat() for b in backups if b.id in kept(backups, first_of_month))
    assert days == ["2026-09-01", "2026-10-01", "2026-11-01", "2026-11-22"]
    assert "keep_monthly 2026-10" in reasons(backups, first_sunday, "app-49")  # 2026-10-04


def test_keep_yearly_and_hourly() -> None:
    backups = [
        BackupRecord(f"y{y}", "app", datetime(y, 6, 1, tzinfo=UTC), "completed", "p")
        for y in range(2020, 2027)
    ]
    assert kept(backups, Retention(keep_yearly=3)) == {"y2024", "y2025", "y2026"}
    hours = [
        BackupRecord(f"h{i}", "app", NOW - timedelta(minutes=20 * i), "completed", "p") for i in range(12)
    ]
    # 12:00, 11:40, 11:20, 11:00, ... -> first of each hour: 11:00 (h3), 10:00 (h6), 09:00 (h9)
    assert kept(hours, Retention(keep_hourly=3)) == {"h0", "h3", "h6"}


def test_calendar_follows_the_retention_time_zone() -> None:
    # 23:30 UTC on Saturday is already Sunday in Berlin.
    sat = BackupRecord("sat", "app", datetime(2026, 11, 21, 23, 30, tzinfo=UTC), "completed", "p")
    fri = BackupRecord("fri", "app", datetime(2026, 11, 20, 23, 30, tzinfo=UTC), "completed", "p")
    newer = BackupRecord("new", "app", datetime(2026, 11, 22, 11, 0, tzinfo=UTC), "completed", "p")
    spec = Retention(keep_weekly=1)
    assert kept([fri, sat, newer], spec, tz="UTC") == {"new"}
    assert kept([fri, sat, newer], spec, tz="Europe/Berlin") == {"sat", "new"}


def test_keep_within_and_keep_last() -> None:
    backups = nightly(120)
    assert len(kept(backups, Retention(keep_within="90d"))) == 90
    assert reasons(backups, Retention(keep_within="90d"), "app-5") == ["keep_within 90d"]
    assert kept(backups, Retention(keep_last=2)) == {"app-0", "app-1"}
    assert reasons(backups, Retention(keep_last=2), "app-1") == ["keep_last 2/2"]


def test_a_long_pause_never_wipes_the_old_backups() -> None:
    # A year of nothing after 30 nightly backups: count rules still keep them.
    old = nightly(30, end=NOW - timedelta(days=365))
    assert len(kept(old, Retention(keep_daily=7, keep_weekly=4))) == 7 + 3  # one Sunday is also a daily
    assert kept(old, Retention(keep_within="30d")) == {"app-0"}  # only the newest completed


def test_manual_failed_running_and_parents() -> None:
    backups = nightly(5)
    manual = BackupRecord("man", "app", NOW - timedelta(days=30), "completed", MANUAL)
    failed_old = BackupRecord("f-old", "app", NOW - timedelta(days=2, hours=1), "failed", "nightly")
    failed_new = BackupRecord("f-new", "app", NOW + timedelta(hours=1), "failed", "nightly")
    running = BackupRecord("run", "app", NOW, "running", "nightly")
    spec = Retention(keep_last=1)
    decisions = {
        d.backup.id: d
        for d in apply_retention(backups + [manual, failed_old, failed_new, running], spec, NOW)
    }
    assert decisions["man"].keep and decisions["man"].reasons == ["manual backup (no retention)"]
    assert not decisions["f-old"].keep and decisions["f-old"].reasons == ["failed backup"]
    assert decisions["f-new"].keep and decisions["run"].keep
    assert not decisions["app-3"].keep and decisions["app-3"].reasons == ["no rule keeps it"]
    with_manual = Retention(keep_last=1, include_manual=True)
    assert "man" not in kept(backups + [manual], with_manual)
    # An incremental kept keeps its full.
    full = BackupRecord("full", "app", NOW - timedelta(days=9), "completed", "p", "full")
    inc = BackupRecord("inc", "app", NOW, "completed", "p", "incremental", parent="full")
    decisions = {d.backup.id: d for d in apply_retention([full, inc], Retention(keep_last=1), NOW)}
    assert decisions["full"].keep and decisions["full"].reasons == ["parent of inc"]


def test_each_deployment_keeps_its_own_newest() -> None:
    backups = nightly(5, dep="a") + nightly(3, end=NOW - timedelta(days=100), dep="b")
    assert kept(backups, Retention(keep_within="7d")) == {f"a-{i}" for i in range(5)} | {"b-0"}


def test_expiry_of_daily_weekly_monthly_keepers() -> None:
    policy = Policy.model_validate(
        {
            "schedules": [{"cron": "0 3 * * *"}],
            "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_monthly": 3},
        }
    )
    backups = nightly(120)
    exp = backup_expiries(policy, backups, NOW)
    by_day = {b.created.date().isoformat(): exp[b.id] for b in backups}
    # Wednesday 18th: the 5th newest daily keeper of 7; two more days keep it, the third
    # new day (the 25th) pushes it out.
    assert by_day["2026-11-18"] == datetime(2026, 11, 25, 3, tzinfo=UTC)
    # Sunday 15th is the weekly keeper of its week: 3 newer weeks are needed -> 13 December.
    assert by_day["2026-11-15"] == datetime(2026, 12, 13, 3, tzinfo=UTC)
    # 1 November keeps the current month (first Sunday rule): three new months are needed,
    # December, January and February, whose first Sunday is the 7th.
    assert by_day["2026-11-01"] == datetime(2027, 2, 7, 3, tzinfo=UTC)
    # Not kept by anything: due now.
    assert by_day["2026-11-10"] == NOW
    manual = BackupRecord("m", "app", NOW, "completed", MANUAL)
    assert expiry(manual, backups, policy.retention, NOW, next_run_fn(policy)) is None
    paused = policy.model_copy(update={"status": "paused"})
    assert backup_expiries(paused, backups, NOW, only=["app-1"]) == {"app-1": None}
    within = Policy.model_validate(
        {"schedules": [{"cron": "0 3 * * *"}], "retention": {"keep_within": "90d"}}
    )
    assert backup_expiries(within, backups, NOW, only=["app-10"])["app-10"] == datetime(
        2027, 2, 10, 3, tzinfo=UTC
    )


def test_plan_prune_uses_the_policy_time_zone() -> None:
    policy = Policy.model_validate(
        {"schedules": [{"cron": "30 23 * * *", "timezone": "Europe/Berlin"}], "retention": {"keep_daily": 1}}
    )
    b1 = BackupRecord(
        "b1", "app", datetime(2026, 11, 21, 22, 30, tzinfo=UTC), "completed", "p"
    )  # 23:30 Berlin
    b2 = BackupRecord(
        "b2", "app", datetime(2026, 11, 21, 23, 30, tzinfo=UTC), "completed", "p"
    )  # 00:30 next day
    assert [d.keep for d in plan_prune(policy, [b1, b2], NOW)] == [False, True]


def test_describe_retention_in_words() -> None:
    lines = describe_retention(Retention(keep_daily=14, keep_weekly=13, keep_monthly=12))
    assert lines[:3] == [
        "Keep the first backup of each day for the last 14 days with backups.",
        "Keep the first backup of each week (weeks start on Sunday) for the last 13 weeks with backups.",
        "Keep the first backup on or after the first Sunday of each month for the last 12 months with backups.",
    ]
    assert "Manual backups are never deleted by retention." in lines
    assert describe_retention(Retention(keep_within="90d"))[0] == "Keep every backup made in the last 90d."


# ---- properties ----------------------------------------------------------------------

_RULES = ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")

backup_lists = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=60 * 24 * 400),  # minutes before NOW
        st.sampled_from(["completed", "completed", "completed", "failed", "running"]),
        st.sampled_from(["nightly", "nightly", MANUAL]),
        st.sampled_from(["a", "b"]),
    ),
    max_size=40,
).map(
    lambda items: [
        BackupRecord(f"id{i}", dep, NOW - timedelta(minutes=m), status, by)
        for i, (m, status, by, dep) in enumerate(items)
    ]
)
specs = st.builds(
    Retention,
    keep_within=st.sampled_from([None, "1d", "30d", "90d"]),
    keep_last=st.none() | st.integers(0, 5),
    keep_hourly=st.none() | st.integers(0, 5),
    keep_daily=st.none() | st.integers(0, 10),
    keep_weekly=st.none() | st.integers(0, 6),
    keep_monthly=st.none() | st.integers(0, 6),
    keep_yearly=st.none() | st.integers(0, 3),
    weekly_day=st.sampled_from(["sunday", "mon", "wed"]),
    monthly_rule=st.sampled_from(["first_weekday", "first_of_month"]),
    include_manual=st.booleans(),
)
zones = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])


@settings(max_examples=300, deadline=None)
@given(backup_lists, specs, zones)
def test_newest_completed_backup_of_each_deployment_is_always_kept(backups, spec, tz) -> None:
    keep = kept(backups, spec, tz=tz)
    for dep in ("a", "b"):
        completed = [b for b in backups if b.deployment == dep and b.status == "completed"]
        if completed:
            assert max(completed, key=lambda b: (b.created, b.id)).id in keep


@settings(max_examples=300, deadline=None)
@given(backup_lists, specs, zones)
def test_applying_retention_twice_keeps_the_same_set(backups, spec, tz) -> None:
    first = kept(backups, spec, tz=tz)
    survivors = [b for b in backups if b.id in first]
    assert kept(survivors, spec, tz=tz) == first


@settings(max_examples=300, deadline=None)
@given(backup_lists, specs, zones, st.sampled_from(_RULES), st.integers(1, 8))
def test_adding_a_keep_rule_never_deletes_more(backups, spec, tz, rule, count) -> None:
    before = kept(backups, spec, tz=tz)
    more = spec.model_copy(update={rule: (getattr(spec, rule) or 0) + count})
    assert kept(backups, more, tz=tz) >= before
    longer = spec.model_copy(update={"keep_within": "400d"})
    assert kept(backups, longer, tz=tz) >= before
