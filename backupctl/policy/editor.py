"""Policies as `backupctl policy ...` sees them: rows for `list`, details for `show`, and
the checked writes of create / edit / pause / resume / delete into the user's config file.

Writes go through backupctl.policy.yaml_edit (comments, order and formatting kept; atomic;
`<file>.bak` holds the file as it was before the command). After writing, the file is
loaded again; if it no longer loads, the previous file is put back and ConfigError (exit 4)
is raised. Nothing here ever touches a backup: policies only decide future runs.

Deleting a policy that deployments still name is refused (PolicyInUseError); with
`force=True` those deployments are set to `policy: none` (no scheduled backups, no
automatic retention), never silently moved to another policy whose retention could delete
their backups.
"""

from __future__ import annotations

import difflib
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from backupctl.config.loader import load_config, read_yaml
from backupctl.config.models import Config
from backupctl.errors import BackupctlError, ConfigError, NotFoundError
from backupctl.policy import yaml_edit
from backupctl.policy.models import DEFAULT_POLICY, DEFAULT_POLICY_NAME, NO_POLICY, Policy, Schedule
from backupctl.policy.records import to_policy_records
from backupctl.policy.resolve import (
    backup_expiries,
    deployments_using,
    get_policy,
    last_of_type,
    last_success_of,
    plan_prune,
    policies,
)
from backupctl.policy.retention import BackupRecord, describe_retention
from backupctl.policy.schedule import PlannedRun, next_runs, recurrence_text
from backupctl.timefmt import iso_s, utcnow

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


class PolicyInUseError(ConfigError):
    kind = "policy_in_use"


# ---- what the flags ask for -----------------------------------------------------------


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


def _schedule_entry(flags: ScheduleFlags, base: dict[str, Any] | None) -> dict[str, Any]:
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
        return [*current, _schedule_entry(flags, None)]
    if recurrence is None and flags.timezone is None:
        raise ConfigError("--type only picks the schedule to change; give a recurrence or --timezone as well")
    out = list(current)
    out[index] = _schedule_entry(flags, current[index])
    return out


# ---- reading the file -----------------------------------------------------------------


def config_path(config: Config) -> Path:
    if config.path is None:
        raise ConfigError("the configuration was not read from a file; nothing to write to")
    return Path(config.path)


def raw_policies(config: Config) -> dict[str, dict[str, Any]]:
    """The `policies:` section as written in the file (friendly forms kept)."""
    raw = read_yaml(config_path(config)) or {}
    section = raw.get("policies") if isinstance(raw, dict) else None
    return {str(k): dict(v) for k, v in (section or {}).items() if isinstance(v, dict)}


def dump_policy(policy: Policy) -> dict[str, Any]:
    """A readable mapping of a policy (the built-in default, when it is written out)."""
    doc = policy.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    doc["schedules"] = [
        {
            "type": s.type,
            **s.model_dump(mode="json", exclude_none=True, exclude_defaults=True),
            "timezone": s.timezone,
        }
        for s in policy.schedules
    ]
    doc["status"] = policy.status
    return doc


def _in_file_or_builtin(config: Config, name: str) -> tuple[dict[str, Any], bool]:
    """(raw mapping, whether it is in the file). Unknown names: NotFoundError."""
    raw = raw_policies(config)
    if name in raw:
        return raw[name], True
    if name == DEFAULT_POLICY_NAME:
        return dump_policy(DEFAULT_POLICY), False
    get_policy(config, name)  # raises NotFoundError listing the known ones
    raise NotFoundError(f"no policy named {name!r}")


def _check_deployments(config: Config, names: Iterable[str]) -> None:
    for d in names:
        if d not in config.deployments:
            known = ", ".join(sorted(config.deployments)) or "none defined"
            raise NotFoundError(f"no deployment named {d!r} (defined: {known})")


# ---- checked writes -------------------------------------------------------------------


def _diff(path: Path, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            f"{path} (before)",
            f"{path} (after)",
        )
    )


def validate_file(path: Path) -> Config:
    """Load the file as the CLI would, including every deployment's policy reference."""
    config = load_config(path)
    for dep_name, dep in config.deployments.items():
        name = dep.policy or DEFAULT_POLICY_NAME
        if name != NO_POLICY and name not in policies(config):
            raise ConfigError(f"{path}: deployments.{dep_name}.policy: unknown policy {name!r}")
    return config


def write_checked(path: Path, steps: Sequence[Callable[[Path], str]]) -> str:
    """Run yaml_edit steps on `path`, keep the original in `.bak`, re-validate; diff.

    If a step fails or the result does not load, the original file is put back
    (ConfigError, exit 4, for an invalid result).
    """
    path = Path(path)
    original = path.read_text()
    backup = path.with_name(path.name + yaml_edit.BACKUP_SUFFIX)
    try:
        for step in steps:
            step(path)
    except BaseException:
        if path.read_text() != original:
            yaml_edit.atomic_write(path, original, keep_backup=False)
        raise
    after = path.read_text()
    if after == original:
        return ""
    # Several steps each refreshed the .bak; it must hold the file as it was before us.
    yaml_edit.atomic_write(backup, original, keep_backup=False)
    try:
        validate_file(path)
    except BackupctlError as exc:
        yaml_edit.atomic_write(path, original, keep_backup=False)
        raise ConfigError(
            f"the change would leave an invalid configuration, so {path} was restored from {backup.name}: "
            f"{exc.message}"
        ) from None
    return _diff(path, original, after)


def _assign_steps(deployments: Sequence[str], value: str) -> list[Callable[[Path], str]]:
    def step(dep: str) -> Callable[[Path], str]:
        return lambda p: yaml_edit.set_deployment_key(p, dep, "policy", value)

    return [step(d) for d in deployments]


@dataclass
class WriteResult:
    policy: str
    action: str
    diff: str
    deployments: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.diff)

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "action": self.action,
            "changed": self.changed,
            "deployments": self.deployments,
            "notes": self.notes,
            "diff": self.diff,
        }


def create_policy(config: Config, name: str, flags: PolicyFlags, now: datetime | None = None) -> WriteResult:
    name = name.strip()
    if not name or name == NO_POLICY:
        raise ConfigError(f"{name!r} cannot be a policy name")
    if name in raw_policies(config):
        raise ConfigError(
            f"a policy named {name!r} already exists", hint=f"use `backupctl policy edit {name}`"
        )
    recurrence = flags.schedule.recurrence()
    if recurrence is None:
        raise ConfigError(
            "a new policy needs a schedule: --cron, --hourly, --daily-at, --monthly-day or --interval"
        )
    _check_deployments(config, flags.deployments)
    mapping: dict[str, Any] = {}
    if flags.description:
        mapping["description"] = flags.description
    mapping["schedules"] = [_schedule_entry(flags.schedule, None)]
    mapping["status"] = flags.status or "active"
    mapping["created"] = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    retention = flags.retention_changes()
    if retention:
        mapping["retention"] = retention
    validate_policy(name, mapping)
    path = config_path(config)
    steps: list[Callable[[Path], str]] = [lambda p: yaml_edit.set_policy(p, name, mapping)]
    diff = write_checked(path, steps + _assign_steps(flags.deployments, name))
    notes = []
    if not retention:
        notes.append(
            f"no retention rules given; add them with `backupctl policy edit {name} --keep-daily N` etc."
        )
    return WriteResult(name, "created", diff, list(flags.deployments), notes)


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


def _merged(current: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = dict(current)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def edit_policy(config: Config, name: str, flags: PolicyFlags) -> WriteResult:
    """Change only what the flags give; the built-in default is written out first if needed."""
    current, in_file = _in_file_or_builtin(config, name)
    _check_deployments(config, flags.deployments)
    changes = edit_changes(current, flags)
    merged = _merged(current, changes)
    validate_policy(name, merged)
    steps: list[Callable[[Path], str]] = []
    if not in_file:
        steps.append(lambda p: yaml_edit.set_policy(p, name, merged))
    elif changes:
        steps.append(lambda p: yaml_edit.update_policy_fields(p, name, changes))
    diff = write_checked(config_path(config), steps + _assign_steps(flags.deployments, name))
    return WriteResult(name, "edited", diff, list(flags.deployments))


def set_status(config: Config, name: str, status: str) -> WriteResult:
    flags = PolicyFlags(status=status)
    result = edit_policy(config, name, flags)
    result.action = "paused" if status == "paused" else "resumed"
    return result


def plan_delete(config: Config, name: str, *, force: bool = False) -> list[str]:
    """Check that `name` can be deleted; the deployments that --force would set to `none`."""
    if name not in raw_policies(config):
        if name == DEFAULT_POLICY_NAME:
            raise ConfigError(
                "the built-in default policy cannot be deleted",
                hint="set `policy: none` on a deployment to stop its scheduled backups, or "
                "`backupctl policy pause default`",
            )
        get_policy(config, name)
        raise NotFoundError(f"no policy named {name!r}")
    if name == DEFAULT_POLICY_NAME:
        return []  # its deployments fall back to the built-in default
    users = deployments_using(config, name)
    if users and not force:
        raise PolicyInUseError(
            f"policy {name!r} is used by {', '.join(users)}",
            hint=f"give them another policy first (`backupctl policy edit OTHER --deployment {users[0]}`), "
            "or pass --force to set `policy: none` on them (no more scheduled backups)",
        )
    return users


def delete_policy(config: Config, name: str, *, force: bool = False) -> WriteResult:
    users = plan_delete(config, name, force=force)
    notes: list[str] = []
    if name == DEFAULT_POLICY_NAME:
        using = deployments_using(config, name)
        if using:
            notes.append(f"back on the built-in default policy: {', '.join(using)}")
    steps: list[Callable[[Path], str]] = _assign_steps(users, NO_POLICY)
    steps.append(lambda p: yaml_edit.delete_policy(p, name))
    diff = write_checked(config_path(config), steps)
    if users:
        notes.append(f"set `policy: none` (no scheduled backups until given a policy) on: {', '.join(users)}")
    return WriteResult(name, "deleted", diff, users, notes)


# ---- the editor flow ------------------------------------------------------------------

EDITOR_HELP = """\
# Policy {name!r} in {path}.
# Save and close to apply; you will see the change before it is written.
# Lines starting with '#' are ignored. An empty file cancels.
#
# schedules: a list; each has `type` (full | incremental), `timezone` (IANA name,
#   default UTC) and exactly one recurrence:
#     cron: "0 5 * * *"                  hourly: {{every: 2, minute: 0}}
#     daily: {{at: "05:00", days: [mon, fri]}}   monthly: {{day: 1, at: "05:00"}} (day: last)
#     interval: 24h                      (24h after the last successful backup, manual included)
# status: active | paused                (paused: nothing runs; existing backups stay)
# retention: keep_within: 90d, keep_last: N, keep_hourly / keep_daily / keep_weekly /
#   keep_monthly / keep_yearly: N, weekly_day: sunday,
#   monthly_rule: first_weekday | first_of_month, include_manual: false
# upload: true | false, destinations: [name, ...]  (override each deployment's)
# description: free text.   Details: docs/scheduling.md
"""
ERROR_PREFIX = "# ERROR: "


def editor_document(config: Config, name: str) -> str:
    """The text `policy edit NAME` opens in $EDITOR: help comments, then the policy."""
    path = config_path(config)
    body = ""
    raw_text = path.read_text()
    try:
        doc = YAML(typ="rt").load(raw_text)
        node = doc.get("policies", {}).get(name) if isinstance(doc, CommentedMap) else None
    except (YAMLError, AttributeError):
        node = None
    if isinstance(node, CommentedMap) and not node.fa.flow_style():
        y = YAML(typ="rt")
        y.width = 4096
        y.indent(mapping=2, sequence=4, offset=2)
        buf = io.StringIO()
        y.dump(node, buf)
        body = buf.getvalue()
    else:
        current, _ = _in_file_or_builtin(config, name)
        body = _dump_plain(current)
    return EDITOR_HELP.format(name=name, path=path) + body


def _dump_plain(mapping: dict[str, Any]) -> str:
    y = YAML(typ="rt")
    y.width = 4096
    y.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    y.dump(mapping, buf)
    return buf.getvalue()


def with_error(text: str, error: str) -> str:
    """The edited text again, with `error` as comment lines at the top (old ones removed)."""
    lines = [ln for ln in text.splitlines(keepends=True) if not ln.startswith(ERROR_PREFIX)]
    head = [f"{ERROR_PREFIX}{line}\n" for line in error.splitlines() or [error]]
    head.append(f"{ERROR_PREFIX}fix the policy below and save again, or empty the file to cancel.\n")
    return "".join(head + lines)


def parse_edited(name: str, text: str) -> dict[str, Any] | None:
    """The edited policy mapping (validated), or None when the file was emptied.

    ConfigError carries a one-line description for the re-opened file.
    """
    meaningful = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not meaningful:
        return None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {where}{problem}") from None
    if not isinstance(data, dict):
        raise ConfigError("the policy must be a mapping (schedules:, retention:, ...)")
    validate_policy(name, data)
    return data


def editor_diff(config: Config, name: str, mapping: dict[str, Any]) -> str:
    return yaml_edit.set_policy(config_path(config), name, mapping, dry_run=True)


def unchanged(config: Config, name: str, mapping: dict[str, Any]) -> bool:
    _, in_file = _in_file_or_builtin(config, name)
    return in_file and not editor_diff(config, name, mapping)


def write_edited(config: Config, name: str, mapping: dict[str, Any]) -> WriteResult:
    diff = write_checked(config_path(config), [lambda p: yaml_edit.set_policy(p, name, mapping)])
    return WriteResult(name, "edited", diff)


# ---- list and show --------------------------------------------------------------------


def load_records(service: Any) -> tuple[list[BackupRecord], list[str]]:
    """Every deployment's backups as policy records, and warnings for what could not be read.

    `service` is an engine Service. A destination that cannot be read only loses its
    deployments' last-backup columns; the command still works.
    """
    try:
        return to_policy_records(service.list_backups()), []
    except BackupctlError:
        pass
    records: list[BackupRecord] = []
    warnings: list[str] = []
    for dep in sorted(service.config.deployments):
        try:
            records.extend(to_policy_records(service.list_backups(dep)))
        except BackupctlError as exc:
            warnings.append(f"cannot list the backups of {dep}: {exc.message}")
    return records, warnings


def _status(policy: Policy) -> str:
    return "Paused" if policy.paused else "Active"


def _upcoming(
    policy: Policy, deployments: Sequence[str], records: Sequence[BackupRecord], now: datetime, n: int
) -> list[tuple[PlannedRun, list[str]]]:
    """The next n runs over all deployments (interval schedules differ per deployment)."""
    slots: dict[tuple[datetime, str], list[str]] = {}
    runs: dict[tuple[datetime, str], PlannedRun] = {}
    for dep in deployments or [""]:
        last = last_success_of(records, dep) if dep else None
        for run in next_runs(policy, now, n, last):
            key = (run.slot, run.key)
            runs.setdefault(key, run)
            if dep:
                slots.setdefault(key, []).append(dep)
    ordered = sorted(runs, key=lambda k: (k[0], k[1]))[:n]
    return [(runs[k], slots.get(k, [])) for k in ordered]


def _last(records: Sequence[BackupRecord], deployments: Sequence[str], type_: str) -> BackupRecord | None:
    found = [r for d in deployments if (r := last_of_type(records, d, type_)) is not None]
    return max(found, key=lambda r: r.created) if found else None


def _schedule_doc(key: str, schedule: Schedule) -> dict[str, Any]:
    return {
        "key": key,
        "type": schedule.type,
        "recurrence": recurrence_text(schedule),
        "cron": schedule.cron_expression(),
        "interval": schedule.interval,
        "timezone": schedule.timezone,
    }


def _row(
    config: Config, name: str, policy: Policy, records: Sequence[BackupRecord], now: datetime
) -> dict[str, Any]:
    deps = deployments_using(config, name)
    upcoming = _upcoming(policy, deps, records, now, 1)
    last_full = _last(records, deps, "full")
    last_incr = _last(records, deps, "incremental")
    return {
        "name": name,
        "deployments": deps,
        "types": sorted({s.type for s in policy.schedules}),
        "status": _status(policy),
        "created": iso_s(policy.created),
        "recurrence": [recurrence_text(s) for s in policy.schedules],
        "next_run": iso_s(upcoming[0][0].slot) if upcoming else None,
        "last_full": iso_s(last_full.created) if last_full else None,
        "last_incremental": iso_s(last_incr.created) if last_incr else None,
        "builtin": name == DEFAULT_POLICY_NAME and name not in config.policies,
        "description": policy.description,
    }


def policy_rows(
    config: Config, records: Sequence[BackupRecord], now: datetime | None = None
) -> list[dict[str, Any]]:
    """One row per policy for `policy list`; the built-in default only when a deployment uses it."""
    now = now or utcnow()
    rows = []
    for name, policy in sorted(policies(config).items()):
        builtin = name == DEFAULT_POLICY_NAME and name not in config.policies
        if builtin and not deployments_using(config, name):
            continue
        rows.append(_row(config, name, policy, records, now))
    return rows


def policy_detail(
    config: Config, name: str, records: Sequence[BackupRecord], now: datetime | None = None, runs: int = 5
) -> dict[str, Any]:
    """Everything `policy show` prints: the row, schedules, next runs, retention, backups."""
    now = now or utcnow()
    policy = get_policy(config, name)
    doc = _row(config, name, policy, records, now)
    deps = doc["deployments"]
    doc["schedules"] = [
        _schedule_doc(k, s) for k, s in zip(policy.schedule_keys(), policy.schedules, strict=True)
    ]
    doc["upload"] = policy.upload
    doc["destinations"] = policy.destinations
    doc["next_runs"] = [
        {"time": iso_s(run.slot), "type": run.schedule.type, "schedule": run.key, "deployments": on}
        for run, on in _upcoming(policy, deps, records, now, runs)
    ]
    doc["retention"] = policy.retention.model_dump(mode="json", exclude_none=True)
    doc["retention_timezone"] = policy.retention_timezone()
    doc["retention_rules"] = describe_retention(policy.retention)
    backups: list[dict[str, Any]] = []
    for dep in deps:
        mine = [r for r in records if r.deployment == dep]
        if not mine:
            continue
        decisions = {d.backup.id: d for d in plan_prune(policy, mine, now)}
        expiry = backup_expiries(policy, mine, now, last_success_of(mine, dep))
        for r in sorted(mine, key=lambda r: r.created, reverse=True):
            d = decisions[r.id]
            backups.append(
                {
                    "id": r.id,
                    "short_id": r.id[:8],
                    "deployment": dep,
                    "type": r.type,
                    "status": r.status.capitalize(),
                    "created_by": r.created_by,
                    "started": iso_s(r.created),
                    "expires": iso_s(expiry.get(r.id)),
                    "keep": d.keep,
                    "kept_by": d.reasons if d.keep else [],
                    "reason": "; ".join(d.reasons),
                }
            )
    doc["backups"] = backups
    doc["now"] = iso_s(now)
    return doc
