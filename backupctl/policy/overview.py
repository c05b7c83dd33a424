"""Policies as `backupctl policy list` and `policy show` see them: one row per policy and
the details of one (schedules, next runs, retention, and what retention would do to each
backup). Read-only: nothing here writes the config or touches a backup.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from backupctl.config.models import Config
from backupctl.errors import BackupctlError
from backupctl.policy.models import DEFAULT_POLICY_NAME, Policy, Schedule
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
