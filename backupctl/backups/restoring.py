"""Restore orchestration behind Service.restore_backup (`backup restore`, clone, drills).

Order matters and is the contract: the selection (--include/--exclude) and every source's
refusal to restore in place are checked before anything is written; in place, a safety
backup of the deployment's current state is taken next (a failed one stops the restore,
except when there is nothing to overwrite); then, under a read lock (no prune removes packs
meanwhile), each stored source is handed to the source that receives it, its entries read
ahead by a Prefetcher (backups/restorer.py). A restore stopped part-way says what was and
was not written.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from backupctl.backups.archiver import source_key
from backupctl.backups.browse import RestoreSelection, check_selection
from backupctl.backups.catalog import completed
from backupctl.backups.context import ServiceContext, reading
from backupctl.backups.creating import create_backup
from backupctl.backups.restorer import Prefetcher, entry_count, restore_stopped
from backupctl.config.models import DeploymentConfig
from backupctl.errors import BackupctlError, BackupFailedError, IntegrityError, RestoreIncompleteError
from backupctl.events import Finished, InfoEvent, Started, WarningsAsInfo
from backupctl.records import BackupSummary, Manifest, SourceRecord
from backupctl.repo.repository import Repository
from backupctl.sources.base import NothingToBackUp, RestoreRequest, Source, source_class


def restore_backup(
    svc: ServiceContext,
    id_prefix: str,
    *,
    target_dir: Path | None = None,
    to_deployment: str | None = None,
    destination: str | None = None,
    safety_backup: bool = True,
    extra_info: dict[str, Any] | None = None,
    selection: RestoreSelection | None = None,
) -> dict[str, Any]:
    """Service.restore_backup: restore a completed backup in place or under target_dir."""
    record, repo, manifest = completed(svc, id_prefix, destination)
    counts = check_selection(repo, record, manifest, selection) if selection else None
    dep_name = to_deployment or record["deployment"]
    dep = svc.config.deployments.get(dep_name)
    if to_deployment is not None and dep is None:
        svc.deployment(to_deployment)  # raises NotFound
    if target_dir is None:  # refusals in place come before the safety backup
        for i, src in enumerate(manifest["sources"]):
            restore_source(svc, src, dep, i).check_in_place_restore(dict(src.get("info", {})))
    safety: BackupSummary | None = None
    if target_dir is None and safety_backup and dep is not None:
        safety = _safety_backup(svc, dep_name, record)
    t0 = time.monotonic()
    hold = contextlib.ExitStack()  # the read lock: no prune removes packs under this restore
    hold.enter_context(reading(svc, repo, f"restore {record['id'][:8]}"))
    prefetcher: Prefetcher | None = None
    try:
        repo.load_index()
        svc.reporter.emit(Started("restore", record["id"], int(manifest.get("source_bytes", 0))))
        prefetcher = Prefetcher(repo)
        entries = counts or [entry_count(s) for s in manifest["sources"]]  # per source
        written, total = 0, sum(entries)
        for i, src in enumerate(manifest["sources"]):
            source = restore_source(svc, src, dep, i)
            try:
                restore_stored_source(
                    svc, repo, manifest, src, source, prefetcher, target_dir, extra_info, selection
                )
            except RestoreIncompleteError as exc:  # say what was and was not written
                safety_id = safety["id"] if safety else None
                raise restore_stopped(exc, written, total, target_dir, safety_id) from exc
            written += entries[i]
    finally:
        if prefetcher is not None:
            prefetcher.close()
        hold.close()
    svc.reporter.emit(Finished("restore", record["id"]))
    return {
        "id": record["id"],
        "deployment": dep_name,
        "target": str(target_dir) if target_dir else None,
        "bytes": manifest.get("source_bytes", 0),
        "duration_s": round(time.monotonic() - t0, 3),
        "safety_backup": safety["id"] if safety else None,
    }


def _safety_backup(svc: ServiceContext, dep_name: str, record: BackupSummary) -> BackupSummary | None:
    """The safety backup of the deployment before it is overwritten; None when there is
    nothing to overwrite. Its warnings are shown as information (they are not the restore's)."""
    svc.reporter.emit(InfoEvent(f"taking a safety backup of {dep_name!r} before overwriting it"))
    restore_reporter = svc.reporter
    svc.reporter = WarningsAsInfo(restore_reporter, "safety backup: ")
    probe_id = uuid.uuid4().hex
    try:
        safety = create_backup(
            svc,
            dep_name,
            type="incremental",
            comment=f"safety backup before restoring {record['id'][:8]}",
            backup_id=probe_id,
            safety=True,
        )
    except BackupctlError as exc:
        if not isinstance(exc.__cause__, NothingToBackUp):
            raise BackupFailedError(
                f"the safety backup of {dep_name!r} failed, so nothing was restored: {exc.message}",
                hint="fix the problem, or pass --no-safety-backup to restore without one",
            ) from exc
        # A probe, not a backup: "nothing to overwrite" must not be listed as Failed.
        svc.state.delete_job(probe_id)
        svc.reporter.emit(InfoEvent(f"no safety backup: {exc.__cause__.message} (nothing to overwrite)"))
        return None
    finally:
        svc.reporter = restore_reporter
    svc.reporter.emit(InfoEvent(f"safety backup {safety['id'][:8]} taken; restore it to undo this restore"))
    return safety


def restore_stored_source(
    svc: ServiceContext,
    repo: Repository,
    manifest: Manifest,
    src: SourceRecord,
    source: Source,
    prefetcher: Prefetcher,
    target_dir: Path | None,
    extra_info: dict[str, Any] | None = None,
    selection: RestoreSelection | None = None,
) -> None:
    """Service.restore_stored_source: hand one stored source's entries to `source`."""
    info = dict(src.get("info", {}))
    info.update(extra_info or {})
    request = RestoreRequest(target_dir=target_dir, source_info=info, reporter=svc.reporter)
    if info.get("backup_type") == "incremental":
        source.restore_chain(
            [
                (c.get("info", {}), prefetcher.entries([bytes.fromhex(b) for b in c["tree"]]))
                for c in chain(repo, manifest, src)
            ],
            request,
        )
    else:
        select = selection.select if selection else None
        source.restore(prefetcher.entries([bytes.fromhex(b) for b in src["tree"]], select), request)


def chain(repo: Repository, manifest: Manifest, src: SourceRecord) -> list[SourceRecord]:
    """The stored source records from the full backup up to `src`, oldest first."""
    key = source_key(src["type"], src["describe"])
    records = [src]
    current = manifest
    while records[0].get("info", {}).get("backup_type") == "incremental":
        parent_id = current.get("parent")
        if not parent_id:
            raise IntegrityError(f"backup {current['id'][:8]} is incremental but records no parent")
        current = repo.load_manifest(parent_id)  # NotFound if the parent was deleted
        match = [s for s in current["sources"] if source_key(s["type"], s["describe"]) == key]
        if not match:
            raise IntegrityError(f"parent backup {parent_id[:8]} has no matching source for the chain")
        records.insert(0, match[0])
    return records


def restore_source(
    svc: ServiceContext, src: SourceRecord, dep: DeploymentConfig | None, position: int
) -> Source:
    """Service.restore_source: the configured source that receives a stored source, or one
    rebuilt from the manifest."""
    if dep is not None:
        same_type = [o for o in dep.sources if o.type == src["type"]]
        for opts in same_type:
            built = svc.build_source(opts)
            if built.describe() == src["describe"]:
                return built
        if len(same_type) == 1 or (same_type and position < len(dep.sources)):
            return svc.build_source(same_type[0])
    cls = source_class(src["type"])
    return cls(cls.Options.model_validate({"type": src["type"], **src["describe"]}), svc.reporter)
