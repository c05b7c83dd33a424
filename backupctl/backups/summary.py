"""The stable record of a backup shown by `list`/`show` and `-o json`.

Keys: records.BackupSummary (documented in docs/cli.md; never renamed, only added; their
order is pinned by tests/backups/test_record_format.py).

`status` is "Completed" exactly when the backup's manifest exists (it is restorable from
its primary destination); `failed_uploads` names the destinations whose copy failed
(their state and error are in `destinations`).
"""

from __future__ import annotations

from typing import Any

from backupctl.records import BackupSummary, Manifest

SHORT_ID = 8


def failed_uploads(destinations: dict[str, Any]) -> list[str]:
    """Destinations whose upload of the backup failed, sorted."""
    return sorted(n for n, st in destinations.items() if (st or {}).get("state") == "failed")


def summarize_manifest(m: Manifest, repository_id: str) -> BackupSummary:
    versions: dict[str, Any] = {}
    for src in m.get("sources", []):
        for k, v in (src.get("info") or {}).items():
            if "version" in k and v:
                versions[f"{src.get('method')}.{k}"] = v
    return {
        "id": m["id"],
        "short_id": m["id"][:SHORT_ID],
        "deployment": m["deployment"],
        "method": m["method"],
        "type": m["type"],
        "status": "Completed",
        "created_by": m.get("created_by", "manual"),
        "started": m["started"],
        "finished": m.get("finished"),
        "duration_s": m.get("duration_s"),
        "size_bytes": m.get("source_bytes", 0),
        "stored_bytes": m.get("stored_bytes", 0),
        "files": sum(s.get("files", 0) for s in m.get("sources", [])),
        "expires": None,
        "comment": m.get("comment", ""),
        "warnings": sum(len(s.get("warnings", [])) for s in m.get("sources", [])),
        "error": None,
        "parent": m.get("parent"),
        # Restore needs the parent only for physical incremental chains (mariabackup);
        # file incrementals are self-contained.
        "depends_on": m.get("parent")
        if any((s.get("info") or {}).get("backup_type") == "incremental" for s in m.get("sources", []))
        else None,
        "source_versions": versions,
        "hostname": m.get("hostname", ""),
        "destinations": {},
        "repository_id": repository_id,
        "failed_uploads": [],
    }


def summarize_job(job: dict[str, Any]) -> BackupSummary:
    return {
        "id": job["id"],
        "short_id": job["id"][:SHORT_ID],
        "deployment": job["deployment"],
        "method": job["method"],
        "type": job["type"],
        "status": job["status"],
        "created_by": job["created_by"],
        "started": job["started"],
        "finished": job["finished"],
        "duration_s": job["duration_s"],
        "size_bytes": job["size_bytes"] or 0,
        "stored_bytes": job["stored_bytes"] or 0,
        "files": 0,
        "expires": None,
        "comment": job["comment"],
        "warnings": 0,
        "error": job["error"],
        "parent": None,
        "depends_on": None,
        "source_versions": {},
        "hostname": job["hostname"],
        "destinations": job["destinations"],
        "repository_id": job["repository_id"],
        "failed_uploads": failed_uploads(job["destinations"]),
    }
