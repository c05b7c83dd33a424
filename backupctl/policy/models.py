"""Pydantic models of a backup policy: schedules, status, retention and overrides.

A policy lives under `policies:` in the configuration file; a deployment names it with
`policy: NAME`. A deployment without `policy:` gets DEFAULT_POLICY (or the user's own
policy called `default`, if the file defines one); `policy: none` means no schedule.

All validation errors are one line that names the offending value (bad cron expression,
unknown time zone, bad duration), so the config loader can prefix it with the key path.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from backupctl.config.notifications import NotifyRule

DEFAULT_POLICY_NAME = "default"
NO_POLICY = "none"
# `created_by` of a backup somebody started by hand (policies put their own name there).
MANUAL = "manual"

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WEEKDAY_ALIASES = {
    **{d: d for d in WEEKDAYS},
    "monday": "mon",
    "tuesday": "tue",
    "wednesday": "wed",
    "thursday": "thu",
    "friday": "fri",
    "saturday": "sat",
    "sunday": "sun",
}
_DURATION_PART = re.compile(r"(\d+)\s*([wdhms])")
_DURATION_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse_duration(text: str) -> timedelta:
    """'90d', '24h', '1h30m', '2w' -> timedelta. Raises ValueError with a readable message."""
    s = str(text).strip().lower().replace(" ", "")
    pos = 0
    total = timedelta()
    for m in _DURATION_PART.finditer(s):
        if m.start() != pos:
            break
        total += timedelta(**{_DURATION_UNITS[m.group(2)]: int(m.group(1))})
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(f"bad duration {text!r}: use a number and a unit, e.g. 90d, 24h, 30m, 2w, 1h30m")
    if total <= timedelta():
        raise ValueError(f"bad duration {text!r}: must be longer than zero")
    return total


def check_timezone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}: use an IANA name such as UTC, Europe/Berlin, America/New_York"
        ) from None


def weekday_index(name: str) -> int:
    """'sun' / 'Sunday' -> 6 (Monday is 0, as in datetime.weekday())."""
    return WEEKDAYS.index(_normalise_weekday(name))


def _normalise_weekday(name: str) -> str:
    key = str(name).strip().lower()
    if key not in _WEEKDAY_ALIASES:
        raise ValueError(f"unknown weekday {name!r}: use mon, tue, wed, thu, fri, sat or sun")
    return _WEEKDAY_ALIASES[key]


def _check_hhmm(value: str) -> str:
    m = _HHMM.match(str(value).strip())
    if not m:
        raise ValueError(f"bad time {value!r}: use HH:MM on a 24-hour clock, e.g. 05:00 or 21:30")
    return f"{int(m.group(1)):02d}:{m.group(2)}"


def check_cron(expr: str) -> str:
    from croniter import croniter  # on first use: importing it runs `file` (platform.architecture)

    expr = " ".join(str(expr).split())
    if len(expr.split(" ")) != 5 or not croniter.is_valid(expr):
        raise ValueError(
            f"bad cron expression {expr!r}: need five fields 'minute hour day-of-month month day-of-week', "
            "e.g. '0 5 * * *'"
        )
    try:  # valid syntax that never matches (e.g. 30 February) is an error too
        croniter(expr, datetime(2000, 1, 1)).get_next(datetime)
    except Exception:
        raise ValueError(f"bad cron expression {expr!r}: it never matches any date") from None
    return expr


class Hourly(_Strict):
    """`hourly: {every: N, minute: M}`: cron `M */N * * *`."""

    every: int = Field(1, ge=1, le=12, description="Every N hours; N divides 24 (1, 2, 3, 4, 6, 8, 12).")
    minute: int = Field(0, ge=0, le=59, description="Minute past the hour (0-59).")

    @field_validator("every")
    @classmethod
    def _divides_day(cls, v: int) -> int:
        if 24 % v:
            raise ValueError(
                f"every: {v} hours does not divide a day evenly; use 1, 2, 3, 4, 6, 8 or 12, "
                f"or `interval: {v}h`"
            )
        return v


class Daily(_Strict):
    """`daily: {at: "05:00", days: [mon, fri]}`: cron `0 5 * * mon,fri`."""

    at: str = Field("00:00", description='Time of day, HH:MM on a 24-hour clock (quote it: "05:00").')
    # Empty/None: every day.
    days: list[str] | None = Field(
        None, description="Weekdays (mon..sun or full names); omitted or empty: every day."
    )

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        return _check_hhmm(v)

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[str] | None) -> list[str] | None:
        return None if not v else [_normalise_weekday(d) for d in v]


class Monthly(_Strict):
    """`monthly: {day: D, at: "05:00"}`: cron `0 5 D * *`."""

    # 1..31 or "last". A day the month lacks (31 in April) is skipped, as in cron.
    day: int | Literal["last"] = Field(
        1, description="Day of the month, 1-31 or `last`; a day the month lacks is skipped, as in cron."
    )
    at: str = Field("00:00", description="Time of day, HH:MM on a 24-hour clock.")

    @field_validator("at")
    @classmethod
    def _at(cls, v: str) -> str:
        return _check_hhmm(v)

    @field_validator("day")
    @classmethod
    def _day(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= 31:
            raise ValueError(f"day {v}: use 1..31 or 'last'")
        return v


class Schedule(_Strict):
    """One recurrence. Exactly one of cron / hourly / daily / monthly / interval."""

    type: Literal["full", "incremental"] = Field(
        "full",
        description="`full`, or `incremental` (files: unchanged files are reused from the last backup).",
    )
    # Optional stable name; the scheduler records the last run under `Policy.schedule_key`.
    name: str | None = Field(
        None,
        description="Stable name the scheduler records last runs under (default: the type, then type-2...).",
    )
    cron: str | None = Field(
        None,
        description='Five-field cron expression in `timezone`, e.g. "0 5 * * *" (`L`: last day of month).',
    )
    hourly: Hourly | None = Field(None, description="`{every: N, minute: M}`: every N hours at minute M.")
    daily: Daily | None = Field(
        None, description='`{at: "HH:MM", days: [mon, ...]}`: every day (or the given weekdays) at a time.'
    )
    monthly: Monthly | None = Field(
        None, description='`{day: 1-31 or last, at: "HH:MM"}`: once a month on that day.'
    )
    # Time after the last successful backup of any kind (a manual backup resets it).
    interval: str | None = Field(
        None,
        description="Duration after the last successful backup of any kind, e.g. 24h (a manual backup resets it).",
    )
    timezone: str = Field("UTC", description="IANA time zone the recurrence is read in, e.g. Europe/Berlin.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        check_timezone(v)
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        return None if v is None else check_cron(v)

    @field_validator("interval")
    @classmethod
    def _interval(cls, v: str | None) -> str | None:
        if v is not None and parse_duration(v) < timedelta(minutes=1):
            raise ValueError(f"interval {v!r} is shorter than one minute")
        return v

    @model_validator(mode="after")
    def _exactly_one(self) -> Schedule:
        given = [
            k for k in ("cron", "hourly", "daily", "monthly", "interval") if getattr(self, k) is not None
        ]
        if len(given) != 1:
            found = ", ".join(given) or "none"
            raise ValueError(
                f"a schedule needs exactly one of cron, hourly, daily, monthly, interval (found {found})"
            )
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def interval_delta(self) -> timedelta | None:
        return None if self.interval is None else parse_duration(self.interval)

    def cron_expression(self) -> str | None:
        """The five-field cron equivalent (None for `interval`)."""
        if self.cron is not None:
            return self.cron
        if self.hourly is not None:
            hours = "*" if self.hourly.every == 1 else f"*/{self.hourly.every}"
            return f"{self.hourly.minute} {hours} * * *"
        if self.daily is not None:
            hh, mm = self.daily.at.split(":")
            days = ",".join(self.daily.days) if self.daily.days else "*"
            return f"{int(mm)} {int(hh)} * * {days}"
        if self.monthly is not None:
            hh, mm = self.monthly.at.split(":")
            day = "L" if self.monthly.day == "last" else str(self.monthly.day)
            return f"{int(mm)} {int(hh)} {day} * *"
        return None


class Retention(_Strict):
    """What to keep; everything no rule keeps is deleted. See docs/scheduling.md."""

    keep_within: str | None = Field(
        None, description="Keep every backup younger than this duration, e.g. 90d."
    )
    keep_last: int | None = Field(None, ge=0, description="Keep the N newest backups.")
    keep_hourly: int | None = Field(
        None,
        ge=0,
        description="Keep the first backup of each hour, for the N newest hours that have backups.",
    )
    keep_daily: int | None = Field(
        None, ge=0, description="Keep the first backup of each day, for the N newest days that have backups."
    )
    keep_weekly: int | None = Field(
        None,
        ge=0,
        description="Keep the first backup of each week (from `weekly_day`), for N weeks with backups.",
    )
    keep_monthly: int | None = Field(
        None,
        ge=0,
        description="Keep the first backup of each month (see `monthly_rule`), for N months with backups.",
    )
    keep_yearly: int | None = Field(
        None,
        ge=0,
        description="Keep the first backup of each year, for the N newest years that have backups.",
    )
    # Weeks start on this day; the first backup of each week is its weekly keeper.
    weekly_day: str = Field(
        "sunday", description="Day weeks start on (its first backup is the weekly keeper)."
    )
    # first_weekday: months start on their first `weekly_day` (Mendix "first Sunday");
    # first_of_month: months start on the 1st.
    monthly_rule: Literal["first_weekday", "first_of_month"] = Field(
        "first_weekday",
        description="`first_weekday`: months start on their first `weekly_day`; `first_of_month`: on the 1st.",
    )
    include_manual: bool = Field(
        False, description="Apply retention to manual backups too (default: never deleted)."
    )
    # Calendar for days/weeks/months; None = the time zone of the policy's first schedule.
    timezone: str | None = Field(
        None, description="Calendar for days, weeks, months; default: the time zone of the first schedule."
    )

    @field_validator("keep_within")
    @classmethod
    def _within(cls, v: str | None) -> str | None:
        if v is not None:
            parse_duration(v)
        return v

    @field_validator("weekly_day")
    @classmethod
    def _weekday(cls, v: str) -> str:
        _normalise_weekday(v)
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            check_timezone(v)
        return v

    @property
    def within_delta(self) -> timedelta | None:
        return None if self.keep_within is None else parse_duration(self.keep_within)

    def keeps_nothing(self) -> bool:
        return self.keep_within is None and not any(
            getattr(self, k)
            for k in ("keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly")
        )


# `drills.every` words and the interval each stands for.
DRILL_INTERVALS = {"daily": timedelta(days=1), "weekly": timedelta(days=7), "monthly": timedelta(days=30)}


class Drills(_Strict):
    """Restore drills the scheduler runs (`backup drill`, docs/monitoring.md)."""

    every: str = Field(
        "weekly", description="How often: daily, weekly, monthly, or a duration such as 3d or 12h."
    )
    older: int = Field(
        0, ge=0, le=10, description="Each time, also drill this many randomly chosen older completed backups."
    )

    @field_validator("every")
    @classmethod
    def _every(cls, v: str) -> str:
        if v not in DRILL_INTERVALS:
            parse_duration(v)
        return v

    @property
    def interval(self) -> timedelta:
        return DRILL_INTERVALS.get(self.every) or parse_duration(self.every)


class Policy(_Strict):
    schedules: list[Schedule] = Field(
        default_factory=list,
        description="When to back up; several schedules may run side by side (see Schedule).",
    )
    status: Literal["active", "paused"] = Field(
        "active", description="`active`, or `paused`: nothing runs and nothing is pruned; backups are kept."
    )
    created: datetime | None = Field(
        None,
        description="When the policy was made (ISO 8601 with offset); slots before it are never made up.",
    )
    retention: Retention = Field(
        default_factory=Retention, description="Which backups to keep (see Retention)."
    )
    # None: each deployment's own `upload` / `destinations` apply.
    upload: bool | None = Field(None, description="Overrides each deployment's `upload` when set.")
    destinations: list[str] | None = Field(
        None, description="Overrides each deployment's `destinations` when set."
    )
    description: str = Field("", description="Free text shown by `policy show`.")
    drills: Drills | None = Field(
        None,
        description="Restore drills run by `schedule run-due` and the daemon: `{every: weekly, older: 1}` "
        "drills the newest completed backup and one random older one (docs/monitoring.md).",
    )
    notify: list[NotifyRule] = Field(
        default_factory=list,
        description="Channels told about every deployment under this policy: "
        "`[{channel: NAME, on: failure|always}]` (docs/monitoring.md).",
    )

    @field_validator("created")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("created: give a time zone offset, e.g. 2026-11-20T05:00:00Z")
        return v

    @property
    def paused(self) -> bool:
        return self.status == "paused"

    def schedule_keys(self) -> list[str]:
        """Stable keys the scheduler stores last runs under, one per schedule.

        A schedule's `name` if given; else its type ("full", "incremental"), numbered
        from the second schedule of the same type on ("full-2"). Editing a schedule's
        recurrence keeps its key, so the run history carries over.
        """
        keys: list[str] = []
        seen: dict[str, int] = {}
        for s in self.schedules:
            if s.name:
                keys.append(s.name)
                continue
            seen[s.type] = seen.get(s.type, 0) + 1
            keys.append(s.type if seen[s.type] == 1 else f"{s.type}-{seen[s.type]}")
        return keys

    def retention_timezone(self) -> str:
        if self.retention.timezone:
            return self.retention.timezone
        return self.schedules[0].timezone if self.schedules else "UTC"


# Every two hours (Oasis), GFS retention that survives long pauses.
DEFAULT_POLICY = Policy(
    schedules=[Schedule(type="incremental", hourly=Hourly(every=2, minute=0), timezone="UTC")],
    status="active",
    retention=Retention(keep_last=12, keep_daily=14, keep_weekly=8, keep_monthly=12),
    description="Built-in default: a backup every two hours.",
)
