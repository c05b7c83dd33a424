"""The record of one drill run, as stored (`drills/<id>`), cached and printed.

A leaf module (typing only), so that the store and the contract can both use it.
"""

from __future__ import annotations

from typing import TypedDict


class DrillCheckDoc(TypedDict):
    name: str
    passed: bool
    detail: str


class DrillRecord(TypedDict):
    """One drill run, stored encrypted as `drills/<id>` in the repository (docs/design.md)
    and cached in the local state database. Keys are only ever added."""

    id: str
    backup_id: str
    deployment: str
    started: str  # UTC ISO (timefmt.iso_ms)
    seconds: float  # wall time of restore + checks
    restore_seconds: float
    passed: bool
    to_time: str | None
    checks: list[DrillCheckDoc]
    host: str
