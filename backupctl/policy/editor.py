"""The checked writes of `backupctl policy create / edit / pause / resume / delete`, and
the $EDITOR flow of `policy edit` without flags.

Writes go through backupctl.policy.config_file.write_checked (yaml_edit steps, `.bak`,
re-validation, restore on failure). Nothing here ever touches a backup: policies only
decide future runs. Flag translation is in backupctl.policy.edit_flags; `list` and `show`
are in backupctl.policy.overview.

Deleting a policy that deployments still name is refused (PolicyInUseError); with
`force=True` those deployments are set to `policy: none` (no scheduled backups, no
automatic retention), never silently moved to another policy whose retention could delete
their backups.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError

from backupctl.config.models import Config
from backupctl.errors import ConfigError, NotFoundError
from backupctl.policy import yaml_edit
from backupctl.policy.config_file import (
    WriteResult,
    assign_steps,
    check_deployments,
    config_path,
    in_file_or_builtin,
    raw_policies,
    write_checked,
)
from backupctl.policy.edit_flags import (
    PolicyFlags,
    edit_changes,
    merged_policy,
    schedule_entry,
    validate_policy,
)
from backupctl.policy.models import DEFAULT_POLICY_NAME, NO_POLICY
from backupctl.policy.resolve import (
    deployments_using,
    get_policy,
)
from backupctl.timefmt import utcnow


class PolicyInUseError(ConfigError):
    kind = "policy_in_use"


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
    check_deployments(config, flags.deployments)
    mapping: dict[str, Any] = {}
    if flags.description:
        mapping["description"] = flags.description
    mapping["schedules"] = [schedule_entry(flags.schedule, None)]
    mapping["status"] = flags.status or "active"
    mapping["created"] = (now or utcnow()).astimezone(UTC).replace(microsecond=0)
    retention = flags.retention_changes()
    if retention:
        mapping["retention"] = retention
    validate_policy(name, mapping)
    path = config_path(config)
    steps: list[Callable[[Path], str]] = [lambda p: yaml_edit.set_policy(p, name, mapping)]
    diff = write_checked(path, steps + assign_steps(flags.deployments, name))
    notes = []
    if not retention:
        notes.append(
            f"no retention rules given; add them with `backupctl policy edit {name} --keep-daily N` etc."
        )
    return WriteResult(name, "created", diff, list(flags.deployments), notes)


def edit_policy(config: Config, name: str, flags: PolicyFlags) -> WriteResult:
    """Change only what the flags give; the built-in default is written out first if needed."""
    current, in_file = in_file_or_builtin(config, name)
    check_deployments(config, flags.deployments)
    changes = edit_changes(current, flags)
    merged = merged_policy(current, changes)
    validate_policy(name, merged)
    steps: list[Callable[[Path], str]] = []
    if not in_file:
        steps.append(lambda p: yaml_edit.set_policy(p, name, merged))
    elif changes:
        steps.append(lambda p: yaml_edit.update_policy_fields(p, name, changes))
    diff = write_checked(config_path(config), steps + assign_steps(flags.deployments, name))
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
    steps: list[Callable[[Path], str]] = assign_steps(users, NO_POLICY)
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
        current, _ = in_file_or_builtin(config, name)
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
    _, in_file = in_file_or_builtin(config, name)
    return in_file and not editor_diff(config, name, mapping)


def write_edited(config: Config, name: str, mapping: dict[str, Any]) -> WriteResult:
    diff = write_checked(config_path(config), [lambda p: yaml_edit.set_policy(p, name, mapping)])
    return WriteResult(name, "edited", diff)
