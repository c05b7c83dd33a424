"""Which backups a retention spec keeps, why, and when each one will expire.

Rules (each computed independently on the same input; a backup is kept if any keeps it):

* keep_within D: every counted backup created in the last D before `now`.
* keep_last N: the N newest counted backups.
* keep_hourly / keep_daily / keep_weekly / keep_monthly / keep_yearly N: the calendar is cut
  into periods (in the retention time zone): hours, days, weeks starting on `weekly_day`,
  months starting on the 1st (`first_of_month`) or on their first `weekly_day`
  (`first_weekday`, Mendix "first Sunday of the month"), years. Of the N newest periods
  *that contain a counted backup*, the FIRST (earliest) backup of each period is kept.
  Counting periods that hold backups, not calendar slots, means a long pause never wipes
  out old backups. Keeping the earliest (restic keeps the newest) makes a keeper stable:
  the weekly keeper is the Sunday backup the moment it exists, and never changes as the
  week goes on; weekly keepers are also daily keepers, monthly ones also weekly ones.

Always kept: the newest completed backup of each deployment; manual backups (unless
`include_manual`); backups in progress; a failed backup until a newer one completes;
the parent chain (`parent`) of every kept backup. Only completed backups are counted by
the rules; failed backups never keep a slot.

Expiry (see `expiries`): the time of the scheduled run whose retention pass will delete the
backup, assuming every future run of the schedule succeeds. None when the backup is
exempt (manual, in progress) or kept indefinitely (a count rule keeps it and the schedule
has no future runs, e.g. paused). Parent dependencies are not considered.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from backupctl.policy.models import MANUAL, Retention, weekday_index

COMPLETED = "completed"
FAILED = "failed"
PERIOD_RULES = ("hourly", "daily", "weekly", "monthly", "yearly")
_TICK = timedelta(microseconds=1)
_MAX_STEPS = 100_000

# First scheduled run strictly after the given time, or None if the schedule has no more.
NextRun = Callable[[datetime], datetime | None]


@dataclass(frozen=True)
class BackupRecord:
    id: str
    deployment: str
    created: datetime  # timezone-aware
    status: str = COMPLETED  # completed | failed | running | queued
    created_by: str = MANUAL  # "manual" or the name of the policy that made it
    type: str = "full"  # full | incremental
    parent: str | None = None  # backup this one depends on (incremental chains)

    @property
    def manual(self) -> bool:
        return self.created_by == MANUAL


@dataclass
class Decision:
    backup: BackupRecord
    keep: bool
    reasons: list[str] = field(default_factory=list)


# ---- calendar periods ---------------------------------------------------------------


def _first_weekday(year: int, month: int, wd: int) -> date:
    d = date(year, month, 1)
    return d + timedelta(days=(wd - d.weekday()) % 7)


def _prev_month(year: int, month: int) -> tuple[int, int]:
    return (year - 1, 12) if month == 1 else (year, month - 1)


def _next_month(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def period_start(rule: str, local: datetime, spec: Retention) -> datetime:
    """Start (naive local) of the `rule` period containing naive local time `local`."""
    d = local.date()
    if rule == "hourly":
        return local.replace(minute=0, second=0, microsecond=0)
    if rule == "daily":
        start = d
    elif rule == "weekly":
        start = d - timedelta(days=(d.weekday() - weekday_index(spec.weekly_day)) % 7)
    elif rule == "monthly" and spec.monthly_rule == "first_of_month":
        start = d.replace(day=1)
    elif rule == "monthly":
        wd = weekday_index(spec.weekly_day)
        start = _first_weekday(d.year, d.month, wd)
        if d < start:
            start = _first_weekday(*_prev_month(d.year, d.month), wd)
    elif rule == "yearly":
        start = date(d.year, 1, 1)
    else:
        raise ValueError(f"unknown period rule {rule!r}")
    return datetime(start.year, start.month, start.day)


def next_period_start(rule: str, start: datetime, spec: Retention) -> datetime:
    if rule == "hourly":
        return start + timedelta(hours=1)
    if rule == "daily":
        return start + timedelta(days=1)
    if rule == "weekly":
        return start + timedelta(days=7)
    if rule == "yearly":
        return datetime(start.year + 1, 1, 1)
    # monthly: the period containing the start of next calendar month's period
    y, m = _next_month(start.year, start.month)
    probe = datetime(y, m, 28)  # day 28 is on/after any month's first weekday
    return period_start("monthly", probe, spec)


def period_label(rule: str, start: datetime) -> str:
    if rule == "hourly":
        return start.strftime("%Y-%m-%d %H:00")
    if rule == "daily":
        return start.strftime("%Y-%m-%d")
    if rule == "weekly":
        return f"week of {start:%Y-%m-%d}"
    if rule == "monthly":
        return start.strftime("%Y-%m")
    return start.strftime("%Y")


# ---- analysis of one deployment -----------------------------------------------------


class _Deployment:
    """The counted backups of one deployment and which of them each rule keeps."""

    def __init__(self, backups: Sequence[BackupRecord], spec: Retention, tz: ZoneInfo) -> None:
        self.spec = spec
        self.tz = tz
        self.counted = sorted(
            (b for b in backups if b.status == COMPLETED and (spec.include_manual or not b.manual)),
            key=lambda b: (b.created, b.id),
            reverse=True,
        )
        completed = [b for b in backups if b.status == COMPLETED]
        self.newest_completed = max(completed, key=lambda b: (b.created, b.id)) if completed else None
        # rule -> period starts newest first, and the keeper of each
        self.periods: dict[str, list[datetime]] = {}
        self.keepers: dict[str, dict[datetime, BackupRecord]] = {}
        for rule in PERIOD_RULES:
            if not getattr(spec, f"keep_{rule}"):
                continue
            earliest: dict[datetime, BackupRecord] = {}
            for b in self.counted:  # newest first, so the last write is the earliest
                earliest[self.period_of(rule, b.created)] = b
            self.periods[rule] = sorted(earliest, reverse=True)
            self.keepers[rule] = earliest

    def local(self, t: datetime) -> datetime:
        return t.astimezone(self.tz).replace(tzinfo=None)

    def period_of(self, rule: str, t: datetime) -> datetime:
        return period_start(rule, self.local(t), self.spec)

    def reasons(self, b: BackupRecord, now: datetime) -> list[str]:
        spec, out = self.spec, []
        if b is self.newest_completed:
            out.append("newest completed backup")
        if b.status != COMPLETED or (b.manual and not spec.include_manual):
            return out
        within = spec.within_delta
        if within is not None and b.created > now - within:
            out.append(f"keep_within {spec.keep_within}")
        if spec.keep_last:
            rank = self.counted.index(b)
            if rank < spec.keep_last:
                out.append(f"keep_last {rank + 1}/{spec.keep_last}")
        for rule, periods in self.periods.items():
            limit = getattr(spec, f"keep_{rule}")
            start = self.period_of(rule, b.created)
            if self.keepers[rule].get(start) is b and periods.index(start) < limit:
                out.append(f"keep_{rule} {period_label(rule, start)}")
        return out


def _tz(spec: Retention, timezone: str) -> ZoneInfo:
    return ZoneInfo(spec.timezone or timezone)


def _by_deployment(backups: Iterable[BackupRecord]) -> dict[str, list[BackupRecord]]:
    groups: dict[str, list[BackupRecord]] = defaultdict(list)
    for b in backups:
        groups[b.deployment].append(b)
    return groups


def apply_retention(
    backups: Sequence[BackupRecord], spec: Retention, now: datetime, *, timezone: str = "UTC"
) -> list[Decision]:
    """Keep or delete, with reasons, for every backup (same order as `backups`).

    Pure: deletes nothing. `timezone` is the calendar for the period rules unless the
    spec names its own (Policy.retention_timezone() gives the right one for a policy).
    """
    now = now.astimezone(UTC)
    tz = _tz(spec, timezone)
    decisions: dict[int, Decision] = {}
    for group in _by_deployment(backups).values():
        dep = _Deployment(group, spec, tz)
        newer_completed = dep.newest_completed.created if dep.newest_completed else None
        by_id = {b.id: b for b in group}
        for b in group:
            reasons = dep.reasons(b, now)
            if b.status == COMPLETED and b.manual and not spec.include_manual:
                reasons.append("manual backup (no retention)")
            elif b.status in ("running", "queued"):
                reasons.append("in progress")
            elif b.status == FAILED and (newer_completed is None or newer_completed < b.created):
                reasons.append("failed; kept until a newer backup completes")
            decisions[id(b)] = Decision(b, bool(reasons), reasons)
        # Keep whatever a kept backup depends on.
        for b in group:
            child = b
            while decisions[id(child)].keep and child.parent in by_id:
                parent = by_id[child.parent]
                d = decisions[id(parent)]
                d.reasons.append(f"parent of {child.id}")
                if d.keep:
                    break
                d.keep = True
                child = parent
    for d in decisions.values():
        if not d.keep:
            d.reasons = ["failed backup" if d.backup.status == FAILED else "no rule keeps it"]
    return [decisions[id(b)] for b in backups]


# ---- expiry --------------------------------------------------------------------------


def _remembered(next_run: NextRun) -> NextRun:
    """`next_run` computing each answer once. The expiries of one deployment ask for the
    same runs again and again (keep_last N: the N runs after now, for each of the N newest
    backups; every period rule starts from now), and `next_run` is pure."""
    seen: dict[datetime, datetime | None] = {}

    def remembered(t: datetime) -> datetime | None:
        if t not in seen:
            seen[t] = next_run(t)
        return seen[t]

    return remembered


def _nth_run(next_run: NextRun, after: datetime, n: int) -> datetime | None:
    t: datetime | None = after
    for _ in range(n):
        assert t is not None
        t = next_run(t)
        if t is None:
            return None
    return t


def _run_opening_nth_period(
    dep: _Deployment, rule: str, next_run: NextRun, now: datetime, n: int
) -> datetime | None:
    """The future run that brings the n-th period newer than the newest existing one."""
    newest = dep.periods[rule][0]
    t, count = now, 0
    for _ in range(_MAX_STEPS):
        run = next_run(t)
        if run is None:
            return None
        start = dep.period_of(rule, run)
        if start > newest:
            count += 1
            newest = start
            if count == n:
                return run
        nxt = next_period_start(rule, newest, dep.spec).replace(tzinfo=dep.tz, fold=0).astimezone(UTC)
        t = max(run, nxt - _TICK)
    return None


def _expiry(
    dep: _Deployment, b: BackupRecord, decision: Decision, now: datetime, next_run: NextRun
) -> datetime | None:
    spec = dep.spec
    if not decision.keep:
        return now
    if b.status != COMPLETED or (b.manual and not spec.include_manual):
        return None
    ends: list[datetime] = []
    within = spec.within_delta
    if within is not None and b.created > now - within:
        ends.append(b.created + within)
    rank = dep.counted.index(b)
    counted_ends: list[datetime | None] = []
    if spec.keep_last and rank < spec.keep_last:
        counted_ends.append(_nth_run(next_run, now, spec.keep_last - rank))
    for rule, periods in dep.periods.items():
        start = dep.period_of(rule, b.created)
        limit = getattr(spec, f"keep_{rule}")
        if dep.keepers[rule].get(start) is b and periods.index(start) < limit:
            counted_ends.append(
                _run_opening_nth_period(dep, rule, next_run, now, limit - periods.index(start))
            )
    if b is dep.newest_completed:
        counted_ends.append(next_run(now))
    if any(e is None for e in counted_ends):
        return None  # the schedule stops before a count rule lets go
    ends.extend(e for e in counted_ends if e is not None)
    if not ends:
        return None  # kept only as a parent
    last = max(ends)
    run = next_run(last - _TICK)
    return run or last


def expiries(
    backups: Sequence[BackupRecord],
    spec: Retention,
    now: datetime,
    next_run: NextRun,
    *,
    timezone: str = "UTC",
    only: Iterable[str] | None = None,
) -> dict[str, datetime | None]:
    """Backup id -> expiry (see module docstring). `next_run(t)`: first run after t.

    `only`: compute just these ids (each expiry walks the future schedule, so ask only
    for what will be shown).
    """
    now = now.astimezone(UTC)
    tz = _tz(spec, timezone)
    wanted = None if only is None else set(only)
    next_run = _remembered(next_run)
    decisions = {id(d.backup): d for d in apply_retention(backups, spec, now, timezone=timezone)}
    out: dict[str, datetime | None] = {}
    for group in _by_deployment(backups).values():
        dep = _Deployment(group, spec, tz)
        for b in group:
            if wanted is None or b.id in wanted:
                out[b.id] = _expiry(dep, b, decisions[id(b)], now, next_run)
    return out


def expiry(
    backup: BackupRecord,
    backups: Sequence[BackupRecord],
    spec: Retention,
    now: datetime,
    next_run: NextRun,
    *,
    timezone: str = "UTC",
) -> datetime | None:
    """Expiry of one backup, judged among all `backups` of its deployment."""
    same = [b for b in backups if b.deployment == backup.deployment]
    if backup not in same:
        same.append(backup)
    return expiries(same, spec, now, next_run, timezone=timezone, only=[backup.id])[backup.id]


def describe_retention(spec: Retention) -> list[str]:
    """The rules in words, one line each, for `policy show`."""
    day = spec.weekly_day.capitalize()
    if len(day) == 3:
        day = {"Mon": "Monday", "Tue": "Tuesday", "Wed": "Wednesday", "Thu": "Thursday",
               "Fri": "Friday", "Sat": "Saturday", "Sun": "Sunday"}[day]  # fmt: skip
    lines: list[str] = []
    if spec.keep_within:
        lines.append(f"Keep every backup made in the last {spec.keep_within}.")
    if spec.keep_last:
        lines.append(f"Keep the {spec.keep_last} newest backups.")
    if spec.keep_hourly:
        lines.append(
            f"Keep the first backup of each hour for the last {spec.keep_hourly} hours with backups."
        )
    if spec.keep_daily:
        lines.append(f"Keep the first backup of each day for the last {spec.keep_daily} days with backups.")
    if spec.keep_weekly:
        lines.append(
            f"Keep the first backup of each week (weeks start on {day}) "
            f"for the last {spec.keep_weekly} weeks with backups."
        )
    if spec.keep_monthly:
        first = f"first {day}" if spec.monthly_rule == "first_weekday" else "1st"
        lines.append(
            f"Keep the first backup on or after the {first} of each month "
            f"for the last {spec.keep_monthly} months with backups."
        )
    if spec.keep_yearly:
        lines.append(
            f"Keep the first backup of each year for the last {spec.keep_yearly} years with backups."
        )
    if spec.keeps_nothing():
        lines.append("No retention rules: only the newest completed backup is guaranteed to be kept.")
    lines.append("Always keep the newest completed backup of each deployment.")
    lines.append(
        "Manual backups are subject to these rules."
        if spec.include_manual
        else "Manual backups are never deleted by retention."
    )
    return lines
