"""What the `backupctl policy create / edit` flags ask for, as policy mappings.

ScheduleFlags and PolicyFlags hold the flags as given (every field optional, None meaning
"not given"); this module turns them into the `schedules:` entries and changed keys that
backupctl.policy.editor writes. Every mapping is validated with the pydantic models before
it is returned, so a bad flag combination fails with ConfigError (exit 4) before the file
is touched. Times and cron expressions are written double-quoted because YAML 1.1 reads
`05:00` as a sexagesimal number.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from pydantic import ValidationError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from backupctl.errors import ConfigError
from backupctl.policy.models import Policy, Schedule

RECURRENCE_KEYS = ("cron", "hourly", "daily", "monthly", "interval")
RETENTION_FLAGS = (
    "keep_last",
    "keep_within",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "include_manual",
)


def _quoted(text: str) -> str:
    """Written with quotes: `at: "05:00"` (sexagesimal in YAML 1.1), `cron: "0 5 * * *"`."""
    return cast(str, DoubleQuotedScalarString(text.strip()))  # a str subclass; str() would drop the quotes


@dataclass
class ScheduleFlags:
    """One schedule as given on the command line; every field optional."""

    type: str | None = None
    cron: str | None = None
    hourly: int | None = None
    minute: int | None = None
    daily_at: str | None = None
    days: str | None = None
    monthly_day: str | None = None
    at: str | None = None
    interval: str | None = None
    timezone: str | None = None

    def recurrence(self) -> dict[str, Any] | None:
        """{"hourly": {...}} etc., or None when no recurrence flag was given."""
        given = [
            flag
            for flag, value in (
                ("--cron", self.cron),
                ("--hourly", self.hourly),
                ("--daily-at", self.daily_at),
                ("--monthly-day", self.monthly_day),
                ("--interval", self.interval),
            )
            if value is not None
        ]
        if len(given) > 1:
            raise ConfigError(f"give one recurrence, not {' and '.join(given)}")
        for flag, value, needs in (
            ("--minute", self.minute, self.hourly),
            ("--days", self.days, self.daily_at),
            ("--at", self.at, self.monthly_day),
        ):
            if value is not None and needs is None:
                partner = {"--minute": "--hourly", "--days": "--daily-at", "--at": "--monthly-day"}[flag]
                raise ConfigError(f"{flag} only goes with {partner}")
        if self.cron is not None:
            return {"cron": _quoted(self.cron)}
        if self.hourly is not None:
            return {"hourly": {"every": self.hourly, "minute": self.minute or 0}}
        if self.daily_at is not None:
            daily: dict[str, Any] = {"at": _quoted(self.daily_at)}
            if self.days:
                daily["days"] = [d.strip() for d in self.days.split(",") if d.strip()]
            return {"daily": daily}
        if self.monthly_day is not None:
            day: int | str = self.monthly_day.strip().lower()
            if str(day).isdigit():
                day = int(day)
            return {"monthly": {"day": day, "at": _quoted(self.at or "00:00")}}
        if self.interval is not None:
            return {"interval": self.interval}
        return None

    def given(self) -> bool:
        return any(v is not None for v in vars(self).values())


@dataclass
class PolicyFlags:
    schedule: ScheduleFlags = field(default_factory=ScheduleFlags)
    retention: dict[str, Any] = field(default_factory=dict)  # keep_* -> value (None: not given)
    deployments: list[str] = field(default_factory=list)
    status: str | None = None  # "active" | "paused" | None
    description: str | None = None

    def retention_changes(self) -> dict[str, Any]:
        return {k: v for k, v in self.retention.items() if v is not None}

    def given(self) -> bool:
        return (
            self.schedule.given()
            or bool(self.retention_changes())
            or bool(self.deployments)
            or self.status is not None
            or self.description is not None
        )


def _validation_message(exc: ValidationError, prefix: str = "") -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    where = ".".join(p for p in (prefix, loc) if p)
    return f"{where}: {msg}" if where else msg


def validate_policy(name: str, mapping: dict[str, Any]) -> Policy:
    try:
        return Policy.model_validate(mapping)
    except ValidationError as exc:
        raise ConfigError(f"policy {name!r}: {_validation_message(exc)}") from None


def schedule_entry(flags: ScheduleFlags, base: dict[str, Any] | None) -> dict[str, Any]:
    """A schedule mapping: `base` (an existing entry) with the flags' changes applied."""
    entry = dict(base or {})
    recurrence = flags.recurrence()
    if recurrence is not None:
        for key in RECURRENCE_KEYS:
            entry.pop(key, None)
    ordered: dict[str, Any] = {}
    ordered["type"] = flags.type or entry.pop("type", None) or "full"
    entry.pop("type", None)
    if "name" in entry:
        ordered["name"] = entry.pop("name")
    if recurrence is not None:
        ordered.update(recurrence)
    ordered.update({k: v for k, v in entry.items() if k != "timezone"})
    timezone = flags.timezone or entry.get("timezone")
    if timezone is not None:
        ordered["timezone"] = timezone
    elif base is None:
        ordered["timezone"] = "UTC"
    try:
        Schedule.model_validate(ordered)
    except ValidationError as exc:
        raise ConfigError(f"schedule: {_validation_message(exc)}") from None
    return ordered


def _changed_schedules(current: list[dict[str, Any]], flags: ScheduleFlags) -> list[dict[str, Any]] | None:
    """The new `schedules` list for `policy edit`, or None if the flags leave it alone.

    The schedule of the given --type is replaced (the first one of that type), or added
    if the policy has none of that type. Without --type, a policy with exactly one
    schedule has that one changed.
    """
    if not flags.given():
        return None
    recurrence = flags.recurrence()
    if flags.type is not None:
        index = next((i for i, s in enumerate(current) if s.get("type", "full") == flags.type), None)
    elif len(current) == 1:
        index = 0
    elif not current:
        index = None
    else:
        types = ", ".join(sorted({str(s.get("type", "full")) for s in current}))
        raise ConfigError(
            f"the policy has {len(current)} schedules ({types}): pass --type to say which one to change"
        )
    if index is None:
        if recurrence is None:
            what = f"a {flags.type} schedule" if flags.type else "a schedule"
            raise ConfigError(
                f"the policy has no {what} to change; give a recurrence (--cron, --hourly, --daily-at, "
                "--monthly-day or --interval) to add one"
            )
        return [*current, schedule_entry(flags, None)]
    if recurrence is None and flags.timezone is None:
        raise ConfigError("--type only picks the schedule to change; give a recurrence or --timezone as well")
    out = list(current)
    out[index] = schedule_entry(flags, current[index])
    return out


def edit_changes(current: dict[str, Any], flags: PolicyFlags) -> dict[str, Any]:
    """The keys `policy edit` flags change, for yaml_edit.update_policy_fields."""
    changes: dict[str, Any] = {}
    schedules = _changed_schedules(list(current.get("schedules") or []), flags.schedule)
    if schedules is not None:
        changes["schedules"] = schedules
    if flags.status is not None:
        changes["status"] = flags.status
    if flags.description is not None:
        changes["description"] = flags.description
    retention = flags.retention_changes()
    if retention:
        changes["retention"] = retention
    return changes


def merged_policy(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out
