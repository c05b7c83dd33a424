"""The one place that maps a deployment to its point-in-time recovery family.

`family_for(dep)` says whether a deployment recovers with PostgreSQL WAL ("postgres") or
MariaDB binary logs ("mariadb"); every command that works on either (restore to a moment,
`pitr show`, `pitr verify`, `pitr sync`, the windows of `policy show`, the CLI) asks it
instead of inspecting the deployment's sources itself. A deployment with a postgres source
is a PostgreSQL one even if it also has a mariadb source (the order this rule always had).

Sits above pitr.postgres, pitr.mariadb and pitr.common; nothing in pitr imports it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from backupctl.errors import BackupctlError
from backupctl.pitr import mariadb, mariadb_restore, postgres, postgres_restore
from backupctl.pitr.common import PitrError, Target, TargetError, base_deployment
from backupctl.pitr.logarchive import binlog_prefix, copy_to_others, wal_prefix

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.config.models import DeploymentConfig

Family = Literal["postgres", "mariadb"]


def family_for(dep: DeploymentConfig) -> Family | None:
    """The log family of a deployment: "postgres" (WAL), "mariadb" (binary logs) or None."""
    types = {o.type for o in dep.sources}
    if "postgres" in types:
        return "postgres"
    if "mariadb" in types:
        return "mariadb"
    return None


def restore_to_moment(
    service: Service,
    *,
    deployment: str | None,
    backup_id: str | None,
    target: Target,
    target_dir: Path | None,
    safety_backup: bool = True,
) -> dict[str, Any]:
    deployment = base_deployment(service, backup_id, deployment)
    family = family_for(service.deployment(deployment))
    if family == "postgres":
        if target.position is not None:
            raise TargetError("--to-position is for MariaDB/MySQL; use --to-lsn for PostgreSQL")
        return postgres_restore.restore_postgres_to(
            service,
            deployment,
            target,
            backup_id=backup_id,
            target_dir=target_dir,
            safety_backup=safety_backup,
        )
    if family == "mariadb":
        if target.lsn or target.name:
            raise TargetError(
                "--to-lsn and --to-name are for PostgreSQL; use --to-time or --to-position for MariaDB"
            )
        return mariadb_restore.restore_mariadb_to(
            service,
            deployment,
            target,
            backup_id=backup_id,
            target_dir=target_dir,
            safety_backup=safety_backup,
        )
    raise PitrError(
        f"deployment {deployment!r} has no PostgreSQL or MariaDB source: no point-in-time recovery"
    )


def show(service: Service, deployment: str) -> dict[str, Any]:
    family = family_for(service.deployment(deployment))
    if family == "postgres":
        return postgres.wal_window(service, deployment)
    if family == "mariadb":
        return mariadb.binlog_window(service, deployment)
    raise PitrError(f"deployment {deployment!r} has no PostgreSQL or MariaDB source")


def verify(service: Service, deployment: str) -> dict[str, Any]:
    family = family_for(service.deployment(deployment))
    if family == "postgres":
        return postgres.verify_wal(service, deployment)
    if family == "mariadb":
        return mariadb.verify_binlogs(service, deployment)
    raise PitrError(f"deployment {deployment!r} has no PostgreSQL or MariaDB source")


def sync_copies(service: Service, deployment: str) -> dict[str, Any]:
    """Copy archived log objects the deployment's other destinations lack."""
    dep = service.deployment(deployment)
    primary = service.primary_destination(deployment)
    repo = service.repository(primary)
    others = [service.destination(n) for n in dep.destinations if n != primary]
    counts: dict[str, dict[str, int]] = {o.name: {} for o in others}
    for prefix in (wal_prefix(deployment), binlog_prefix(deployment)):
        for info in repo.dest.list(prefix):
            for dest_name, state in copy_to_others(repo, info.name, others).items():
                key = state.split(":", 1)[0]
                counts[dest_name][key] = counts[dest_name].get(key, 0) + 1
    return {"deployment": deployment, "destinations": counts}


def has_archive(service: Service, deployment: str) -> bool:
    """True when the deployment's primary destination holds archived WAL or binlogs."""
    try:
        family = family_for(service.deployment(deployment))
        if family is None:
            return False
        repo = service.repository(service.primary_destination(deployment))
    except BackupctlError:
        return False
    prefix = wal_prefix(deployment) if family == "postgres" else binlog_prefix(deployment)
    return any(True for _ in repo.dest.list(prefix))


def deployment_windows(service: Service, deployments: list[str]) -> dict[str, dict[str, Any]]:
    """deployment -> {"earliest", "latest", "gaps"} for those with archived WAL/binlogs."""
    out: dict[str, dict[str, Any]] = {}
    for name in deployments:
        if not has_archive(service, name):
            continue
        try:
            window = show(service, name)
        except BackupctlError as exc:  # the policy must still be shown
            out[name] = {"earliest": None, "latest": None, "gaps": 0, "error": exc.message}
            continue
        out[name] = {
            "earliest": window["earliest"],
            "latest": window["latest"],
            "gaps": len(window["gaps"]),
        }
    return out
