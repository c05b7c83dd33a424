"""Copying a completed backup from its primary repository to remote destinations.

Run after each backup whose deployment uploads (backups/creating.py) and by `backup upload`.
Each destination gets only the objects it lacks (repo/upload.py), all destinations in
parallel; a failed copy is recorded per destination in the job's row and never changes the
backup's status (its manifest is in the primary, so it is Completed and restorable).
"""

from __future__ import annotations

from typing import Any

from backupctl.backups.catalog import find_backup
from backupctl.backups.context import ServiceContext
from backupctl.errors import BackupctlError
from backupctl.records import BackupSummary
from backupctl.repo.repository import Repository
from backupctl.timefmt import iso_ms


def upload_backup(
    svc: ServiceContext, id_prefix: str, destinations: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Service.upload_backup: each destination's state, also recorded for `backup show`."""
    # Imported here: `backup list` and the other commands that never upload stay fast.
    from concurrent.futures import ThreadPoolExecutor

    from backupctl.repo.upload import upload_backup as upload_objects

    record = find_backup(svc, id_prefix)
    deployment = record["deployment"]
    dep = svc.deployment(deployment)
    primary = svc.primary_destination(deployment)
    repo = svc.repository(primary)
    repo.load_index()
    manifest = repo.load_manifest(record["id"])
    names = destinations or [n for n in dep.destinations if n != primary]
    for name in names:
        svc.destination(name)  # unknown name -> NotFound before anything is sent
    states = _recorded_states(svc, record, repo, primary)

    def one(name: str) -> tuple[str, dict[str, Any]]:
        """Copy the backup to one destination; its state (a failure is a state, never raised)."""
        try:
            result = upload_objects(
                repo, manifest, svc.destination(name), svc.reporter, svc.config.destinations[name].connections
            )
            result["uploaded_at"] = iso_ms(svc.now())
            return name, result
        except BackupctlError as exc:
            return name, {"state": "failed", "error": exc.message}
        except Exception as exc:  # an SDK error that escaped classification
            return name, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}

    with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
        for name, state in pool.map(one, names):
            states[name] = state
    failed = [n for n, st in states.items() if st.get("state") == "failed"]
    svc.state.update_job(
        record["id"],
        destinations=states,
        status="Completed",  # the manifest is in the primary: a failed copy is named, not the backup
        error="; ".join(f"upload to {n} failed: {states[n]['error']}" for n in failed) or None,
    )
    return {n: states[n] for n in names}


def _recorded_states(
    svc: ServiceContext, record: BackupSummary, repo: Repository, primary: str
) -> dict[str, dict[str, Any]]:
    """The destination states of the backup's job row; a row is first made for a backup
    that has none (one taken with another state database)."""
    job = svc.state.get_job(record["id"])
    if job is None:
        svc.state.insert_job(
            id=record["id"],
            deployment=record["deployment"],
            method=record["method"],
            type=record["type"],
            status="Completed",
            created_by=record["created_by"],
            started=record["started"],
            finished=record["finished"],
            duration_s=record["duration_s"],
            size_bytes=record["size_bytes"],
            stored_bytes=record["stored_bytes"],
            comment=record["comment"],
            repository_id=repo.id,
            destinations={primary: {"state": "stored"}},
        )
        job = svc.state.get_job(record["id"])
    assert job is not None
    return dict(job["destinations"])
