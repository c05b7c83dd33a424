"""The catalog of backups: what `backup list`, `show` and every lookup by ID see.

Completed backups come from the repositories' manifests (the truth; their decoded
summaries are cached in the state database); queued, running and failed jobs come from the
state database. A row contradicting a manifest is corrected from it (a kill after the
commit point). Used by the Service façade (backups/service.py) and by the create, upload
and restore pipelines.
"""

from __future__ import annotations

from typing import Any

from backupctl.backups.context import ServiceContext
from backupctl.backups.summary import failed_uploads, summarize_job, summarize_manifest
from backupctl.errors import (
    AmbiguousIdError,
    BackupctlError,
    BackupFailedError,
    IntegrityError,
    NoRepositoryError,
    NotFoundError,
)
from backupctl.events import WarningEvent
from backupctl.policy.records import fill_expiries
from backupctl.records import BackupSummary, Manifest
from backupctl.repo.repository import Repository


def repo_records(svc: ServiceContext, repo: Repository) -> list[BackupSummary]:
    """The summaries of every backup in a repository (cached ones from the state database)."""
    records = []
    for backup_id in repo.manifest_ids():
        record = svc.state.cached_summary(repo.id, backup_id)
        if record is None:
            try:
                manifest = repo.load_manifest(backup_id)
            except IntegrityError as exc:  # one damaged manifest must not hide every other backup
                svc.reporter.emit(WarningEvent(f"skipped a damaged backup: {exc.message}"))
                continue
            record = summarize_manifest(manifest, repo.id)
            svc.state.cache_summary(repo.id, backup_id, record)
        records.append(record)
    return records


def list_backups(
    svc: ServiceContext,
    deployment: str | None = None,
    destination: str | None = None,
    *,
    expiries: bool = True,
) -> list[BackupSummary]:
    """Service.list_backups: completed backups plus queued/running/failed jobs; newest first."""
    if deployment is not None:
        svc.deployment(deployment)
    records, repo_ids = _stored_records(svc, _listed_destinations(svc, deployment, destination))
    for job in svc.state.jobs(deployment):
        known = records.get(job["id"])
        if known is not None:
            _settle_row(svc, known, job, destination)
        elif job["status"] != "Completed" and destination is None and own_job(svc, job, repo_ids):
            records[job["id"]] = summarize_job(job)
    out = [r for r in records.values() if deployment is None or r["deployment"] == deployment]
    out.sort(key=lambda r: r["started"] or "", reverse=True)
    if not expiries:
        return out
    try:
        fill_expiries(svc.config, out, svc.now())
    except BackupctlError as exc:  # an invalid policy must not hide the backups
        svc.reporter.emit(WarningEvent(f"cannot compute expiry dates: {exc.message}"))
    return out


def _listed_destinations(svc: ServiceContext, deployment: str | None, destination: str | None) -> list[str]:
    """The destinations whose repositories are listed: the one asked for, else the primaries."""
    if destination is not None:
        svc.destination(destination)
        return [destination]
    deps = [deployment] if deployment else list(svc.config.deployments)
    return list(dict.fromkeys(svc.primary_destination(d) for d in deps))


def _stored_records(
    svc: ServiceContext, dest_names: list[str]
) -> tuple[dict[str, BackupSummary], dict[str, str]]:
    """(backup ID -> summary, destination name -> id of the repository it holds) of the
    destinations that hold a repository."""
    records: dict[str, BackupSummary] = {}
    repo_ids: dict[str, str] = {}
    for name in dest_names:
        try:
            repo = svc.repository(name)
        except NoRepositoryError:
            continue
        repo_ids[name] = repo.id
        for rec in repo_records(svc, repo):
            rec.setdefault("failed_uploads", [])  # summaries cached before the key existed
            records[rec["id"]] = rec
    return records, repo_ids


def _settle_row(
    svc: ServiceContext, known: BackupSummary, job: dict[str, Any], destination: str | None
) -> None:
    """Merge a job row into the summary of its stored backup.

    The manifest is the truth: the backup is Completed whatever its row says (a kill after
    the commit point); a contradicting row is corrected. A failed upload elsewhere is
    reported per destination, not as the backup's status."""
    primary = (
        svc.primary_destination(job["deployment"]) if job["deployment"] in svc.config.deployments else None
    )
    settled = job
    if job["status"] != "Completed" and destination in (None, primary):
        # Corrected only from the primary's manifest (the row describes that copy).
        settled = svc.state.settle_job(job["id"], known, primary) or job
    known["destinations"] = settled["destinations"]
    known["failed_uploads"] = failed_uploads(settled["destinations"])
    if known["failed_uploads"]:
        known["error"] = "; ".join(
            f"upload to {n} failed: {settled['destinations'][n].get('error')}"
            for n in known["failed_uploads"]
        )


def own_job(svc: ServiceContext, job: dict[str, Any], repo_ids: dict[str, str]) -> bool:
    """Whether a job row without a manifest belongs to this config's repositories.

    The state database is per user, shared by every config file: a row is shown only
    when its deployment is configured here and it ran against this deployment's primary
    repository (by repository id, or by location when it failed before the repository
    was opened). Rows of older versions that recorded neither are shown.
    """
    if job["deployment"] not in svc.config.deployments:
        return False
    primary = svc.primary_destination(job["deployment"])
    if job.get("repository_id"):
        return bool(repo_ids.get(primary) == job["repository_id"])
    if job.get("location"):
        return bool(job["location"] == svc.location_of(primary))
    return True


def find_backup(
    svc: ServiceContext, id_prefix: str, destination: str | None = None, *, expiries: bool = True
) -> BackupSummary:
    prefix = id_prefix.strip().lower()
    if not prefix:
        raise NotFoundError("empty backup ID")
    listed = list_backups(svc, destination=destination, expiries=expiries)
    matches = [r for r in listed if r["id"].startswith(prefix)]
    if not matches:
        raise NotFoundError(f"no backup with ID {id_prefix!r}", hint="see `backupctl backup list`")
    if len(matches) > 1:
        raise AmbiguousIdError(
            f"backup ID {id_prefix!r} is ambiguous ({len(matches)} backups match)",
            hint="give more characters",
        )
    return matches[0]


def completed(
    svc: ServiceContext, id_prefix: str, destination: str | None
) -> tuple[BackupSummary, Repository, Manifest]:
    """Service.completed_backup: (record, opened repository, manifest) of a usable backup."""
    record = find_backup(svc, id_prefix, destination, expiries=False)
    usable_copy = destination is not None and record.get("repository_id")
    if record["status"] != "Completed" and not usable_copy:
        raise BackupFailedError(
            f"backup {record['short_id']} is {record['status']}"
            + (f": {record['error']}" if record.get("error") else "")
            + "; only completed backups can be used",
            hint="it stopped before its manifest was written, so nothing of it can be restored; "
            "pick a Completed backup from `backupctl backup list`"
            if record["status"] == "Failed"
            else "wait until it has finished",
        )
    dest_name = (
        destination or svc.primary_destination(record["deployment"])
        if record["deployment"] in svc.config.deployments
        else destination
    )
    if dest_name is None:
        raise NotFoundError(
            f"deployment {record['deployment']!r} of backup {record['short_id']} is not configured",
            hint="pass --destination",
        )
    repo = svc.repository(dest_name)
    manifest = repo.load_manifest(record["id"])
    return record, repo, manifest


def show_backup(svc: ServiceContext, id_prefix: str, destination: str | None = None) -> BackupSummary:
    record = find_backup(svc, id_prefix, destination)
    if record["status"] != "Completed":
        return record
    _, _, manifest = completed(svc, id_prefix, destination)
    record = record.copy()
    record["sources"] = [
        {
            "type": s["type"],
            "method": s["method"],
            "describe": s["describe"],
            "info": s.get("info", {}),
            "files": s.get("files", 0),
            "dirs": s.get("dirs", 0),
            "bytes": s.get("bytes", 0),
            "reused_files": s.get("reused_files", 0),
            "warnings": s.get("warnings", []),
        }
        for s in manifest["sources"]
    ]
    # The PITR window ("pitr") is added by the CLI (pitr.window.backup_pitr): backups/
    # never imports pitr/, which sits above it.
    return record
