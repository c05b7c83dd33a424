"""Pins the current record format: `backup show/list -o json` and the stored manifest.

The records are typed (backupctl/records.py) but stay plain dicts at runtime; this test
fails if a refactor renames, drops, reorders or retypes a key, or changes the precision of a
timestamp. Keys are only ever added (docs/cli.md); adding one means updating this test.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helpers

BACKUP_KEYS = [
    "id",
    "short_id",
    "deployment",
    "method",
    "type",
    "status",
    "created_by",
    "started",
    "finished",
    "duration_s",
    "size_bytes",
    "stored_bytes",
    "files",
    "expires",
    "comment",
    "warnings",
    "error",
    "parent",
    "depends_on",
    "source_versions",
    "hostname",
    "destinations",
    "repository_id",
    "failed_uploads",
]

SHOW_SOURCE_KEYS = [
    "type",
    "method",
    "describe",
    "info",
    "files",
    "dirs",
    "bytes",
    "reused_files",
    "warnings",
]

MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "backupctl_version": str,
    "comment": str,
    "created_by": str,
    "deployment": str,
    "duration_s": float,
    "finished": str,
    "format": int,
    "hostname": str,
    "id": str,
    "method": str,
    "new_blobs": int,
    "parent": type(None),
    "source_bytes": int,
    "sources": list,
    "started": str,
    "stored_bytes": int,
    "type": str,
}

MANIFEST_SOURCE_TYPES: dict[str, type] = {
    "bytes": int,
    "describe": dict,
    "dirs": int,
    "files": int,
    "info": dict,
    "method": str,
    "reused_files": int,
    "tree": list,
    "type": str,
    "warnings": list,
}

# Millisecond precision, UTC, "Z" suffix: the format on disk and in JSON.
MS_ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _check_backup_record(rec: dict[str, Any], backup_id: str) -> None:
    assert rec["id"] == backup_id
    assert rec["short_id"] == backup_id[:8]
    assert (rec["deployment"], rec["method"], rec["type"], rec["status"]) == (
        "app",
        "files",
        "full",
        "Completed",
    )
    assert rec["created_by"] == "manual"
    assert MS_ISO.match(rec["started"]) and MS_ISO.match(rec["finished"])
    assert isinstance(rec["duration_s"], float)
    assert isinstance(rec["size_bytes"], int) and rec["size_bytes"] > 0
    assert isinstance(rec["stored_bytes"], int) and rec["stored_bytes"] > 0
    assert isinstance(rec["files"], int) and rec["files"] > 0
    assert rec["expires"] is None and rec["error"] is None and rec["parent"] is None
    assert rec["depends_on"] is None
    assert rec["comment"] == "" and rec["warnings"] == 0
    assert rec["source_versions"] == {}
    assert isinstance(rec["hostname"], str) and rec["hostname"]
    assert rec["destinations"] == {"local": {"state": "stored"}}
    assert re.fullmatch(r"[0-9a-f]{32}", rec["repository_id"])
    assert rec["failed_uploads"] == []


def test_backup_show_list_and_manifest_format(files_deployment: Any, sample_tree: Path) -> None:
    dep = files_deployment
    backup_id = dep.create()
    assert re.fullmatch(r"[0-9a-f]{32}", backup_id)

    show = dep.show(backup_id)
    assert list(show) == BACKUP_KEYS + ["sources", "drills"]
    assert show["drills"] == []
    _check_backup_record(show, backup_id)
    assert len(show["sources"]) == 1
    src = show["sources"][0]
    assert list(src) == SHOW_SOURCE_KEYS
    assert src["describe"] == {"exclude": [], "include": [], "paths": [str(sample_tree)]}
    assert list(src["describe"]) == ["exclude", "include", "paths"]
    assert src["info"] == {"xattrs": True}
    assert all(isinstance(src[k], int) for k in ("files", "dirs", "bytes", "reused_files"))
    assert src["warnings"] == []

    listed = dep.list()
    assert len(listed) == 1
    assert list(listed[0]) == BACKUP_KEYS + ["recoverable_until", "verified_at", "drill_passed"]
    assert listed[0]["verified_at"] is None and listed[0]["drill_passed"] is None
    _check_backup_record(listed[0], backup_id)
    assert listed[0]["recoverable_until"] is None
    assert {k: listed[0][k] for k in BACKUP_KEYS} == {k: show[k] for k in BACKUP_KEYS}

    repo = helpers.service(dep.config).repository("local")
    manifest = repo.load_manifest(backup_id)
    assert list(manifest) == list(MANIFEST_TYPES)
    for key, typ in MANIFEST_TYPES.items():
        assert isinstance(manifest[key], typ), key
    assert manifest["id"] == backup_id and manifest["format"] == 1
    assert MS_ISO.match(manifest["started"]) and MS_ISO.match(manifest["finished"])
    assert (manifest["started"], manifest["finished"]) == (show["started"], show["finished"])
    (msrc,) = manifest["sources"]
    assert list(msrc) == list(MANIFEST_SOURCE_TYPES)
    for key, typ in MANIFEST_SOURCE_TYPES.items():
        assert isinstance(msrc[key], typ), key
    assert all(re.fullmatch(r"[0-9a-f]{64}", t) for t in msrc["tree"])
