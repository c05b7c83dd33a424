"""The typed records that cross module boundaries: the stored manifest, its source records,
the backup summary of `backup list/show -o json`, and the PITR window of `backup show`.

They are TypedDicts, so at runtime they stay the plain dicts that are encoded to the
repository and printed as JSON: typing them changes no byte of either (pinned by
tests/backups/test_record_format.py), and mypy checks every key that code reads or writes.
Keys are only ever added, never renamed (docs/design.md, docs/cli.md). `NotRequired`
marks keys an older manifest or record may lack; readers use `.get()` for those.

A leaf module: it imports nothing but `typing`, so every layer may use it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class PitrWindow(TypedDict):
    """The moments one physical backup can be rolled forward to (pitr/window.backup_pitr)."""

    earliest: str | None
    latest: str | None
    gaps: int
    reason: NotRequired[str | None]


class PhysicalBackup(TypedDict):
    """A completed pg_basebackup / mariabackup backup as the PITR code reads it
    (pitr.common.physical_backups, pitr.window): where replay can start."""

    id: str
    method: str
    started: str
    finished: str | None
    info: dict[str, Any]  # the source's recorded info(): WAL/binlog positions, timeline
    deployment: NotRequired[str]


class SourceSummary(TypedDict):
    """One source of a backup as `backup show` lists it: a stored source without its tree."""

    type: str
    method: str
    describe: dict[str, Any]
    info: dict[str, Any]
    files: int
    dirs: int
    bytes: int
    reused_files: int
    warnings: list[dict[str, str]]


class SourceRecord(SourceSummary):
    """One source of a backup as stored in its manifest (archiver.SourceResult.to_doc)."""

    tree: list[str]  # hex IDs of the item-stream blobs


class Manifest(TypedDict):
    """The repository's `snapshots/<id>` document; its existence makes a backup Completed.

    Written in this key order by backups/creating.py; the codec stores it with sorted keys."""

    format: int
    id: str
    deployment: str
    method: str
    type: str
    created_by: NotRequired[str]
    started: str  # timefmt.iso_ms
    finished: NotRequired[str]
    duration_s: NotRequired[float]
    comment: NotRequired[str]
    hostname: NotRequired[str]
    backupctl_version: NotRequired[str]
    parent: NotRequired[str | None]
    sources: list[SourceRecord]
    source_bytes: NotRequired[int]
    stored_bytes: NotRequired[int]
    new_blobs: NotRequired[int]


class BackupSummary(TypedDict):
    """The stable record of one backup in `backup list/show -o json` (backups/summary.py).

    Built from a manifest (Completed) or from the local job state (Running, Failed...)."""

    id: str
    short_id: str
    deployment: str
    method: str
    type: str
    status: str
    created_by: str
    started: str
    finished: str | None
    duration_s: float | None
    size_bytes: int
    stored_bytes: int
    files: int
    expires: str | None
    comment: str
    warnings: int
    error: str | None
    parent: str | None
    depends_on: str | None
    source_versions: dict[str, Any]
    hostname: str
    destinations: dict[str, dict[str, Any]]
    repository_id: str
    failed_uploads: list[str]
    # `backup show` appends the manifest's sources, `backup list` the PITR column, and
    # `backup create` the warnings its sources reported.
    sources: NotRequired[list[SourceSummary]]
    recoverable_until: NotRequired[str | None]
    warning_list: NotRequired[list[dict[str, str]]]
    pitr: NotRequired[PitrWindow]  # `backup show` of a physical backup with archived logs
    # Restore drills (backupctl/drill): `backup list` adds the start of the newest passed
    # drill and the verdict of the newest drill (None: never drilled); `backup show` adds
    # the drill records, newest first (drill.base.DrillRecord).
    verified_at: NotRequired[str | None]
    drill_passed: NotRequired[bool | None]
    drills: NotRequired[list[dict[str, Any]]]
