"""Bridges the engine's backup records and the policy package's BackupRecord."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from backupctl.policy.retention import BackupRecord


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def to_policy_records(records: Iterable[dict[str, Any]]) -> list[BackupRecord]:
    """`Service.list_backups()` rows -> retention/schedule records (status lower-cased)."""
    out = []
    for r in records:
        if not r.get("started"):
            continue
        out.append(
            BackupRecord(
                id=r["id"],
                deployment=r["deployment"],
                created=parse_time(r["started"]),
                status=str(r["status"]).lower(),
                created_by=r.get("created_by") or "manual",
                type=r.get("type") or "full",
                parent=r.get("parent"),
            )
        )
    return out
