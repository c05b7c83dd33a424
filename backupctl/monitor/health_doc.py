"""The health document's shape: the TypedDicts `monitor.health.compute` returns and
`status` (monitor.status) and the metrics (monitor.metrics) read.

Kept apart from the computation so that the readers depend on the keys only. Keys are
stable (only added): they are the `-f json` output of `backupctl status` and the source of
the metric names; the problem kinds are listed in monitor.health's docstring.
"""

from __future__ import annotations

from typing import TypedDict


class Problem(TypedDict):
    kind: str
    message: str


class LastBackup(TypedDict):
    id: str
    type: str
    started: str
    finished: str | None
    duration_s: float | None
    size_bytes: int
    stored_bytes: int
    age_s: float | None


class LastRun(TypedDict):
    id: str
    status: str
    started: str | None
    error: str | None


class LastDrill(TypedDict):
    id: str
    backup_id: str
    started: str
    seconds: float | None
    restore_seconds: float | None


class Pitr(TypedDict):
    family: str
    window_end: str | None
    archive_lag_s: float | None
    newest_archived: str | None
    gaps: int


class DeploymentCopy(TypedDict):
    destination: str
    reachable: bool
    last_backup_id: str | None
    last_backup_finished: str | None
    upload_state: str | None


class DeploymentHealth(TypedDict):
    deployment: str
    policy: str | None
    last_backup: LastBackup | None
    last_run: LastRun | None
    failures: int
    failures_since_success: int
    next_run: str | None
    last_drill: LastDrill | None
    pitr: Pitr | None
    newest_restorable: str | None
    rpo_s: float | None
    destinations: list[DeploymentCopy]
    problems: list[Problem]


class DestinationHealth(TypedDict):
    name: str
    type: str
    reachable: bool
    error: str | None
    objects: int
    size_bytes: int


class Health(TypedDict):
    generated: str
    ok: bool
    deployments: list[DeploymentHealth]
    destinations: list[DestinationHealth]
