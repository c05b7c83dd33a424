"""Glue the CLI and the scheduler call: which policy a deployment uses, and the questions
`policy list/show`, `schedule run-due` and `backup prune` ask of it. Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from backupctl.errors import NotFoundError
from backupctl.policy.models import DEFAULT_POLICY, DEFAULT_POLICY_NAME, NO_POLICY, Policy
from backupctl.policy.retention import BackupRecord, Decision, NextRun, apply_retention, expiries
from backupctl.policy.schedule import next_runs

if TYPE_CHECKING:
    from backupctl.config.models import Config


def policies(config: Config) -> dict[str, Policy]:
    """Every policy by name: the file's own plus the built-in `default` unless overridden."""
    out: dict[str, Policy] = {DEFAULT_POLICY_NAME: DEFAULT_POLICY}
    out.update(_validated(config.policies))
    return out


def _validated(raw: dict[str, Any]) -> dict[str, Policy]:
    return {name: p if isinstance(p, Policy) else Policy.model_validate(p) for name, p in raw.items()}


def get_policy(config: Config, name: str) -> Policy:
    found = policies(config)
    if name not in found:
        known = ", ".join(sorted(found))
        raise NotFoundError(f"no policy named {name!r} (defined: {known})")
    return found[name]


def effective_policy(config: Config, deployment: str) -> tuple[str, Policy] | None:
    """(name, policy) that schedules `deployment`; None for `policy: none`."""
    dep = config.deployments.get(deployment)
    if dep is None:
        raise NotFoundError(f"no deployment named {deployment!r}")
    name = dep.policy or DEFAULT_POLICY_NAME
    if name == NO_POLICY:
        return None
    return name, get_policy(config, name)


def deployments_using(config: Config, policy_name: str) -> list[str]:
    return sorted(
        d for d, dep in config.deployments.items() if (dep.policy or DEFAULT_POLICY_NAME) == policy_name
    )


def policies_in_use(config: Config) -> dict[str, Policy]:
    """Policies at least one deployment runs under (what `schedule export` emits)."""
    all_ = policies(config)
    used = {dep.policy or DEFAULT_POLICY_NAME for dep in config.deployments.values()} - {NO_POLICY}
    return {name: all_[name] for name in sorted(used) if name in all_}


def next_run_fn(policy: Policy, last_success: datetime | None = None) -> NextRun:
    """`t -> first run after t` for expiry computations."""

    def next_run(t: datetime) -> datetime | None:
        runs = next_runs(policy, t, 1, last_success)
        return runs[0].slot if runs else None

    return next_run


def plan_prune(policy: Policy, backups: Sequence[BackupRecord], now: datetime) -> list[Decision]:
    """Keep/delete with reasons for the backups of deployments under `policy` (dry run)."""
    return apply_retention(backups, policy.retention, now, timezone=policy.retention_timezone())


def backup_expiries(
    policy: Policy,
    backups: Sequence[BackupRecord],
    now: datetime,
    last_success: datetime | None = None,
    only: Sequence[str] | None = None,
) -> dict[str, datetime | None]:
    """Backup id -> expiry (None: never, by retention) for `list`/`show`."""
    return expiries(
        backups,
        policy.retention,
        now,
        next_run_fn(policy, last_success),
        timezone=policy.retention_timezone(),
        only=only,
    )


def last_success_of(backups: Sequence[BackupRecord], deployment: str) -> datetime | None:
    """Newest completed backup of any kind (what `interval` schedules count from)."""
    times = [b.created for b in backups if b.deployment == deployment and b.status == "completed"]
    return max(times) if times else None


def last_of_type(backups: Sequence[BackupRecord], deployment: str, type_: str) -> BackupRecord | None:
    """Newest completed backup of a type ("full"/"incremental"), for `policy list`."""
    found = [b for b in backups if b.deployment == deployment and b.status == "completed" and b.type == type_]
    return max(found, key=lambda b: b.created) if found else None
