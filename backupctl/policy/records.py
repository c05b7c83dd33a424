"""Bridges the engine's backup summaries (records.BackupSummary) and the policy package's BackupRecord."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from backupctl.policy.retention import BackupRecord
from backupctl.records import BackupSummary
from backupctl.timefmt import iso_s, parse_iso


def to_policy_records(records: Iterable[BackupSummary]) -> list[BackupRecord]:
    """`Service.list_backups()` rows -> retention/schedule records (status lower-cased)."""
    out = []
    for r in records:
        if not r.get("started"):
            continue
        out.append(
            BackupRecord(
                id=r["id"],
                deployment=r["deployment"],
                created=parse_iso(r["started"]),
                status=str(r["status"]).lower(),
                created_by=r.get("created_by") or "manual",
                type=r.get("type") or "full",
                parent=r.get("depends_on"),
            )
        )
    return out


def fill_expiries(config: Any, records: list[BackupSummary], now: dt.datetime) -> None:
    """Set each record's `expires` from its deployment's policy (None: manual, or kept by count)."""
    from backupctl.policy.resolve import backup_expiries, effective_policy, last_success_of

    by_dep: dict[str, list[BackupSummary]] = {}
    for r in records:
        by_dep.setdefault(r["deployment"], []).append(r)
    for deployment, rows in by_dep.items():
        if deployment not in config.deployments:
            continue
        resolved = effective_policy(config, deployment)
        if resolved is None:
            continue
        policy = resolved[1]
        recs = to_policy_records(rows)
        expiries = backup_expiries(policy, recs, now, last_success_of(recs, deployment))
        for r in rows:
            when = expiries.get(r["id"])
            r["expires"] = iso_s(when)
