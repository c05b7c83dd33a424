"""When a policy's backups are due: next runs, due slots, and the clock they are measured by.

Cron recurrences are wall-clock times in the schedule's time zone. Across DST changes:

* a wall-clock time that does not exist (the spring-forward gap, e.g. 02:30 in
  Europe/Berlin on the last Sunday of March) runs at the same offset after the gap
  (03:30 local), following PEP 495 fold=0; if that coincides with another slot, once;
* a wall-clock time that happens twice (the fall-back hour) runs once, at its first
  occurrence. An hourly schedule therefore has one two-hour gap per year.

Made up once: `due()` only ever returns the newest slot at or before `now`, so a scheduler
that was off for a week runs each schedule once when it comes back, not once per missed slot.

All datetimes in and out are timezone-aware; results are in UTC.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Protocol
from zoneinfo import ZoneInfo

from backupctl.policy.models import Policy, Schedule

# Wider than any DST shift, so a search window around a wall-clock time never misses a slot.
_DST_MARGIN = timedelta(hours=3)


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware (UTC)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds))


class FakeClock:
    """A clock tests move by hand; `sleep` advances it instantly."""

    def __init__(self, start: datetime) -> None:
        self._now = _aware(start)

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        self.advance(timedelta(seconds=max(0.0, seconds)))

    def advance(self, delta: timedelta) -> datetime:
        self._now += delta
        return self._now

    def set(self, when: datetime) -> None:
        self._now = _aware(when)


class PlannedRun(NamedTuple):
    """A run of one schedule at one slot; `key` is what to record it under in last_runs."""

    schedule: Schedule
    slot: datetime
    key: str


def _aware(t: datetime) -> datetime:
    if t.tzinfo is None:
        raise ValueError(f"naive datetime {t.isoformat()}: pass a timezone-aware time")
    return t.astimezone(UTC)


def _to_utc(local_naive: datetime, tz: ZoneInfo) -> datetime:
    return local_naive.replace(tzinfo=tz, fold=0).astimezone(UTC)


def recurrence_text(schedule: Schedule) -> str:
    """'TZ=Europe/Berlin 0 5 * * *', or 'every 24h after the last backup' for an interval."""
    expr = schedule.cron_expression()
    if expr is None:
        return f"every {schedule.interval} after the last successful backup"
    return f"TZ={schedule.timezone} {expr}"


def cron_next(expr: str, tz: ZoneInfo, after: datetime) -> datetime:
    """First slot strictly after `after` (UTC), with the DST rules of the module docstring.

    The same result as `_cron_next_scan` (tests/policy/test_policy_schedule_fast.py compares
    them): `_cron_next_steady` when no UTC offset change is near, else the scan.
    """
    after = _aware(after)
    local = after.astimezone(tz).replace(tzinfo=None)
    steady = _cron_next_steady(expr, tz, after, local)
    return steady if steady is not None else _cron_next_scan(expr, tz, after, local)


# The longest local-time window `_cron_next_steady` judges by its two ends. Two changes of
# a zone's UTC offset are always further apart than this (the closest in tzdata are four
# days apart; tests/policy/test_policy_schedule_fast.py checks every installed zone), so a window
# this short whose ends have the same offset contains no change at all.
_STEADY_WINDOW = timedelta(hours=12)


def _cron_next_steady(expr: str, tz: ZoneInfo, after: datetime, local: datetime) -> datetime | None:
    """`_cron_next_scan` in two croniter steps where the UTC offset is constant, else None.

    The scan looks at every slot from `local - _DST_MARGIN` up to the first one past
    `local + _DST_MARGIN` (360 slots for an every-minute schedule) and keeps the earliest
    one after `after` in UTC. Where the offset is the same over that whole window, local
    to UTC is a plain shift: a slot is after `after` exactly when it is after `local`, and
    the earliest such is the first slot after `local`.
    """
    from croniter import croniter  # imported on first use, see policy/models.check_cron

    first = croniter(expr, local).get_next(datetime)
    last = max(first, croniter(expr, local + _DST_MARGIN).get_next(datetime))
    start = local - _DST_MARGIN
    if last - start > _STEADY_WINDOW:
        return None  # a sparse schedule: the scan takes few steps anyway
    offset = after.astimezone(tz).utcoffset()
    for end in (start, last):
        for fold in (0, 1):  # an end inside a gap or a repeated hour: offsets differ
            if end.replace(tzinfo=tz, fold=fold).utcoffset() != offset:
                return None
    assert offset is not None
    return (first - offset).replace(tzinfo=UTC)


def _cron_next_scan(expr: str, tz: ZoneInfo, after: datetime, local: datetime) -> datetime:
    """The definition of cron_next: scan every slot within _DST_MARGIN of `local`."""
    from croniter import croniter  # imported on first use, see policy/models.check_cron

    it = croniter(expr, local - _DST_MARGIN)
    best: datetime | None = None
    while True:
        cand = it.get_next(datetime)
        utc = _to_utc(cand, tz)
        if utc > after and (best is None or utc < best):
            best = utc
        if best is not None and cand > local + _DST_MARGIN:
            return best


def cron_prev(expr: str, tz: ZoneInfo, at_or_before: datetime) -> datetime:
    """Newest slot at or before `at_or_before` (UTC)."""
    from croniter import croniter  # imported on first use, see policy/models.check_cron

    t = _aware(at_or_before)
    local = t.astimezone(tz).replace(tzinfo=None)
    it = croniter(expr, local + _DST_MARGIN + timedelta(minutes=1))
    best: datetime | None = None
    while True:
        cand = it.get_prev(datetime)
        utc = _to_utc(cand, tz)
        if utc <= t and (best is None or utc > best):
            best = utc
        if best is not None and cand < local - _DST_MARGIN:
            return best


def _interval_base(
    policy: Policy, key: str, last_runs: Mapping[str, datetime], last_success: datetime | None
) -> datetime | None:
    known = [t for t in (last_success, last_runs.get(key), policy.created) if t is not None]
    return max(_aware(t) for t in known) if known else None


def _slot_due(
    policy: Policy,
    schedule: Schedule,
    key: str,
    now: datetime,
    last_runs: Mapping[str, datetime],
    last_success: datetime | None,
) -> datetime | None:
    """The slot this schedule should run for now, or None."""
    expr = schedule.cron_expression()
    if expr is None:
        delta = schedule.interval_delta
        assert delta is not None
        base = _interval_base(policy, key, last_runs, last_success)
        if base is None:
            return now  # never backed up: run now
        slot = base + delta
        return slot if slot <= now else None
    slot = cron_prev(expr, schedule.tz, now)
    last = last_runs.get(key)
    if last is not None and slot <= _aware(last):
        return None
    if policy.created is not None and slot <= _aware(policy.created):
        return None  # a new policy starts with its first slot after creation
    return slot


def due(
    policy: Policy,
    now: datetime,
    last_runs: Mapping[str, datetime],
    last_success: datetime | None = None,
) -> list[PlannedRun]:
    """Schedules of `policy` due at `now`, each with the slot it runs for.

    `last_runs` maps `Policy.schedule_keys()` to the slot (or start time) of the last run
    the scheduler *attempted* for that schedule, successful or not (a failed slot is not
    retried every minute; the next slot tries again). After starting a PlannedRun, record
    `last_runs[run.key] = run.slot`; then calling `due` again at the same `now` returns
    nothing (idempotent).

    `last_success`: the newest successful backup of the deployment of any kind, manual
    included; only `interval` schedules use it.

    A full and an incremental due at the same slot: only the full is returned, and a
    full run at or after an incremental's slot satisfies that incremental slot too.
    A paused policy is never due.
    """
    if policy.paused:
        return []
    now = _aware(now)
    full_runs = [
        _aware(last_runs[k])
        for k, s in zip(policy.schedule_keys(), policy.schedules, strict=True)
        if s.type == "full" and k in last_runs
    ]
    found: list[PlannedRun] = []
    for key, schedule in zip(policy.schedule_keys(), policy.schedules, strict=True):
        slot = _slot_due(policy, schedule, key, now, last_runs, last_success)
        if slot is None:
            continue
        if schedule.type == "incremental" and any(t >= slot for t in full_runs):
            continue
        found.append(PlannedRun(schedule, slot, key))
    full_slots = {r.slot for r in found if r.schedule.type == "full"}
    return [r for r in found if not (r.schedule.type == "incremental" and r.slot in full_slots)]


def _schedule_runs(
    policy: Policy, schedule: Schedule, key: str, after: datetime, last_success: datetime | None
) -> Iterator[PlannedRun]:
    expr = schedule.cron_expression()
    if expr is not None:
        t = after
        if policy.created is not None and _aware(policy.created) > t:
            t = _aware(policy.created)
        while True:
            t = cron_next(expr, schedule.tz, t)
            yield PlannedRun(schedule, t, key)
    delta = schedule.interval_delta
    assert delta is not None
    base = _interval_base(policy, key, {}, last_success)
    t = after if base is None else max(base + delta, after)
    while True:
        yield PlannedRun(schedule, t, key)
        t = t + delta


def next_runs(
    policy: Policy, after: datetime, n: int = 5, last_success: datetime | None = None
) -> list[PlannedRun]:
    """The next `n` runs strictly after `after` (interval: at or after), merged and sorted.

    A full and an incremental at the same instant count once, as the full. Interval
    schedules assume every run succeeds (the estimate restarts from `last_success`,
    or from `after` when nothing is known). Paused policies have no next runs.
    """
    if policy.paused or not policy.schedules or n <= 0:
        return []
    after = _aware(after)
    iters = [
        _schedule_runs(policy, s, k, after, last_success)
        for k, s in zip(policy.schedule_keys(), policy.schedules, strict=True)
    ]
    heads = [next(it) for it in iters]
    out: list[PlannedRun] = []
    while len(out) < n:
        t = min(h.slot for h in heads)
        at_t = [i for i, h in enumerate(heads) if h.slot == t]
        chosen = next((heads[i] for i in at_t if heads[i].schedule.type == "full"), heads[at_t[0]])
        out.append(chosen)
        for i in at_t:
            heads[i] = next(iters[i])
    return out
