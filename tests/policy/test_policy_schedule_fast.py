"""Expiry dates without walking every cron slot (issue 13 item 5): same results as before.

`cron_next` used to scan every slot within three hours of the asked time (360 croniter steps
for an every-minute schedule) for each of the hundreds of next-run questions an expiry
computation asks; `backup list` spent seconds there. Now it takes two croniter steps where
the UTC offset is steady (`_cron_next_steady`), and `retention.expiries` asks each question
once. These tests hold the fast path to the old computation: slot by slot near and far
from DST changes in many zones, and expiry by expiry on many policies, every-minute ones
included.
"""

from __future__ import annotations

import random
import zoneinfo
import zoneinfo._zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from backupctl.policy import schedule
from backupctl.policy.models import Policy, Retention
from backupctl.policy.resolve import backup_expiries, last_success_of
from backupctl.policy.retention import (
    BackupRecord,
    NextRun,
    _by_deployment,
    _Deployment,
    _expiry,
    _tz,
    apply_retention,
)

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "America/St_Johns",  # -3:30, DST
    "America/Sao_Paulo",  # DST abolished in 2019
    "Australia/Lord_Howe",  # 30-minute DST
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kolkata",
    "Pacific/Apia",  # skipped 2011-12-30 entirely
]
EXPRESSIONS = [
    "* * * * *",
    "*/7 * * * *",
    "0 * * * *",
    "30 2 * * *",  # inside the spring-forward gap in Europe
    "15,45 1-3 * * *",  # around both DST changes
    "0 5 * * mon,fri",
    "0 0 L * *",
    "59 23 31 12 *",
]


def offset_changes(key: str, years: range) -> list[datetime]:
    """The UTC instants (whole seconds) at which zone `key` changes its UTC offset within
    `years`, found by stepping six hours at a time and bisecting: public API only."""
    tz = ZoneInfo(key)

    def offset(stamp: int) -> timedelta | None:
        return datetime.fromtimestamp(stamp, UTC).astimezone(tz).utcoffset()

    out: list[datetime] = []
    t = int(datetime(years.start, 1, 1, tzinfo=UTC).timestamp())
    end = int(datetime(years.stop, 1, 1, tzinfo=UTC).timestamp())
    prev = offset(t)
    while t < end:
        nxt = t + 6 * 3600
        off = offset(nxt)
        if off != prev:
            lo, hi = t, nxt  # offset(lo) == prev != offset(hi)
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if offset(mid) == prev else (lo, mid)
            out.append(datetime.fromtimestamp(hi, UTC))
            prev = off
        t = nxt
    return out


def probe_times(key: str, seed: int) -> list[datetime]:
    """Instants near each offset change of 2025-2027 (both sides, on and off the minute)
    plus random ones."""
    rnd = random.Random(seed)
    out = []
    for change in offset_changes(key, range(2025, 2028)):
        for delta_min in (-200, -181, -180, -61, -60, -59, -30, -1, 0, 1, 29, 59, 60, 61, 179, 180, 181, 200):
            out.append(change + timedelta(minutes=delta_min))
        out.append(change + timedelta(seconds=rnd.uniform(-4 * 3600, 4 * 3600)))
    base = datetime(2026, 1, 1, tzinfo=UTC)
    out += [base + timedelta(seconds=rnd.uniform(0, 3 * 365 * 86400)) for _ in range(8)]
    out += [datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2027, 1, 1, 0, 0, 0, 1, tzinfo=UTC)]
    return out


@pytest.mark.parametrize("key", ZONES)
def test_cron_next_equals_the_full_scan(key: str) -> None:
    tz = ZoneInfo(key)
    steady = scanned = 0
    for expr in EXPRESSIONS:
        for after in probe_times(key, seed=len(expr)):
            local = after.astimezone(tz).replace(tzinfo=None)
            expected = schedule._cron_next_scan(expr, tz, after, local)
            assert schedule.cron_next(expr, tz, after) == expected, (expr, key, after)
            if schedule._cron_next_steady(expr, tz, after, local) is None:
                scanned += 1
            else:
                steady += 1
    # Both paths are exercised: the fast one away from offset changes (and for frequent
    # schedules), the scan near them.
    assert steady > 0
    if key not in ("UTC", "Asia/Kolkata"):
        assert scanned > 0


def tzdata_offset_changes(key: str) -> list[datetime]:
    """Every UTC offset change of zone `key` up to 2100, read from its tzdata (the pure-Python
    zoneinfo's transition list and its rule for later years; cross-checked against a public
    search below), keeping only transitions that change the offset."""
    pure = zoneinfo._zoneinfo.ZoneInfo.no_cache(key)
    stamps = [int(t) for t in pure._trans_utc]
    rule = pure._tz_after
    if hasattr(rule, "transitions"):  # DST by a POSIX rule after the last listed transition
        for year in range(1970, 2101):
            start, end = rule.transitions(year)
            # as zoneinfo's own fromutc: local standard / daylight time -> UTC
            stamps += [
                int(start - rule.std.utcoff.total_seconds()),
                int(end - rule.dst.utcoff.total_seconds()),
            ]
    tz = ZoneInfo(key)
    out = []
    for stamp in sorted(set(stamps)):
        at = datetime.fromtimestamp(stamp, UTC)
        if (at - timedelta(seconds=1)).astimezone(tz).utcoffset() != at.astimezone(tz).utcoffset():
            out.append(at)
    return out


@pytest.mark.parametrize("key", ZONES)
def test_tzdata_reading_finds_the_offset_changes(key: str) -> None:
    found = [t for t in tzdata_offset_changes(key) if 2025 <= t.year < 2028]
    assert found == offset_changes(key, range(2025, 2028))


def test_offset_changes_are_further_apart_than_the_steady_window() -> None:
    """`_cron_next_steady` judges a window by its ends: right only while no zone changes its
    offset twice within the window. Checked on the installed tzdata, every zone, up to 2100
    (the closest pair is days apart)."""
    limit = 2 * schedule._STEADY_WINDOW
    zones = sorted(zoneinfo.available_timezones())
    assert len(zones) > 300
    for key in zones:
        changes = tzdata_offset_changes(key)
        for a, b in zip(changes, changes[1:], strict=False):
            assert b - a > limit, (key, a, b)


# ---- expiries: the fast path against the old computation -----------------------------


def scan_next_run(policy: Policy) -> NextRun:
    """`next_runs(policy, t, 1)[0].slot` as it was computed before: the full scan per slot
    (cron schedules only), nothing remembered."""

    def next_run(t: datetime) -> datetime | None:
        if policy.paused or not policy.schedules:
            return None
        t = t.astimezone(UTC)
        slots = []
        for s in policy.schedules:
            expr = s.cron_expression()
            assert expr is not None
            after = max(t, policy.created.astimezone(UTC)) if policy.created else t
            local = after.astimezone(s.tz).replace(tzinfo=None)
            slots.append(schedule._cron_next_scan(expr, s.tz, after, local))
        return min(slots)

    return next_run


def old_expiries(
    backups: Sequence[BackupRecord], spec: Retention, now: datetime, next_run: NextRun, timezone: str
) -> dict[str, datetime | None]:
    """retention.expiries as it was (no remembered runs)."""
    now = now.astimezone(UTC)
    tz = _tz(spec, timezone)
    decisions = {id(d.backup): d for d in apply_retention(backups, spec, now, timezone=timezone)}
    out: dict[str, datetime | None] = {}
    for group in _by_deployment(backups).values():
        dep = _Deployment(group, spec, tz)
        for b in group:
            out[b.id] = _expiry(dep, b, decisions[id(b)], now, next_run)
    return out


POLICIES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    # every minute, the built-in default's retention (what bench/startup.py lists)
    (
        {"cron": "* * * * *", "timezone": "Europe/Berlin"},
        {"keep_last": 12, "keep_daily": 14, "keep_weekly": 8},
    ),
    (
        {"cron": "* * * * *", "timezone": "America/New_York"},
        {"keep_last": 5, "keep_hourly": 3, "keep_within": "10m"},
    ),
    (
        {"cron": "*/5 * * * *", "timezone": "Australia/Lord_Howe"},
        {"keep_last": 4, "keep_hourly": 6, "keep_daily": 3},
    ),
    (
        {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
        {"keep_daily": 5, "keep_weekly": 3, "keep_monthly": 2},
    ),
    (
        {"hourly": {"every": 2, "minute": 0}, "timezone": "UTC"},
        {"keep_last": 12, "keep_daily": 14, "keep_monthly": 12},
    ),
    (
        {"daily": {"at": "01:30"}, "timezone": "Europe/London"},
        {"keep_last": 3, "keep_weekly": 2, "keep_yearly": 1},
    ),
]
# Moments just before the 2026 DST changes in Europe and North America, and ordinary ones.
NOWS = [
    datetime(2026, 3, 29, 0, 58, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    datetime(2026, 3, 8, 6, 59, tzinfo=UTC),
    datetime(2026, 11, 1, 5, 45, 10, tzinfo=UTC),
    datetime(2026, 12, 3, 18, 0, 30, tzinfo=UTC),
]


@pytest.mark.parametrize("case", range(len(POLICIES)))
def test_expiries_equal_the_old_computation(case: str) -> None:
    schedule_doc, retention = POLICIES[int(case)]
    rnd = random.Random(int(case))
    for now in NOWS:
        for full_and_incremental in (False, True):
            schedules = [{"type": "full", **schedule_doc}]
            if full_and_incremental:
                schedules.append({"type": "incremental", "cron": "*/3 * * * *", "timezone": "Asia/Kolkata"})
            policy = Policy.model_validate({"schedules": schedules, "retention": retention})
            step = (
                60
                if "cron" in schedule_doc and schedule_doc["cron"].startswith("*")
                else 3600 * rnd.choice((1, 7, 30))
            )
            backups = [
                BackupRecord(
                    id=f"b{i:02d}",
                    deployment="app",
                    created=now - timedelta(seconds=step * i + rnd.uniform(0, 50)),
                    status="failed" if i == 3 else "completed",
                    created_by="manual" if i == 5 else "p",
                )
                for i in range(18)
            ]
            new = backup_expiries(policy, backups, now, last_success_of(backups, "app"))
            old = old_expiries(
                backups, policy.retention, now, scan_next_run(policy), policy.retention_timezone()
            )
            assert new == old, (case, now, full_and_incremental)
            assert any(v is not None and v > now for v in new.values())
