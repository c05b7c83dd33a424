"""The backup-create pipeline behind Service.create_backup (`backup create`, the scheduler,
the safety backup before an in-place restore).

Steps: record the job as Running; under a shared lock, load the index, choose the parent
(incremental) or take a full backup, archive every source (backups/archiver.py), finish the
packs and save the manifest (the commit point: the backup exists exactly when its manifest
does); then mark the job Completed and copy it to the remote destinations
(backups/uploading.py). A failure before the commit point marks the job Failed and raises
BackupFailedError with the cause's exit code. Notifications (notify/hooks.py) are sent at
start, failure and completion.
"""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any, NoReturn

from backupctl import __version__
from backupctl.backups.archiver import Archiver, SourceResult, source_key
from backupctl.backups.catalog import repo_records
from backupctl.backups.context import ServiceContext
from backupctl.backups.summary import summarize_manifest
from backupctl.backups.uploading import upload_backup
from backupctl.errors import BackupctlError, BackupFailedError
from backupctl.events import CollectingReporter, Finished, InfoEvent, Reporter, Started, WarningEvent
from backupctl.notify import hooks as notify_hooks
from backupctl.records import BackupSummary, Manifest, SourceRecord
from backupctl.repo.repository import Repository
from backupctl.repo.writer import BlobWriter
from backupctl.sources.base import Source
from backupctl.timefmt import iso_ms


def full_copy_note(methods: list[str], verb: str) -> str:
    """'<methods> has no incremental form: <verb> a full dump|copy ...': a dump for the
    logical methods (pg_dump, mariadb-dump), a copy for base backups and file copies."""
    noun, nouns = ("dump", "dumps") if all("dump" in m for m in methods) else ("copy", "copies")
    return (
        f"{', '.join(methods)} has no incremental form: {verb} a full {noun} ({nouns} are always "
        "complete; deduplication stores only new chunks)"
    )


def announce_type(
    source: Source,
    type_: str,
    parent_src: SourceRecord | None,
    reporter: Reporter,
    *,
    requested: bool = False,
) -> None:
    """Hand an incremental-capable source its parent, and say what kind of copy is taken
    (only when the user asked for an incremental backup: `requested`)."""
    source.set_parent(parent_src.get("info") if (type_ == "incremental" and parent_src) else None)
    if (
        requested
        and type_ == "incremental"
        and not source.supports_incremental
        and source.method not in ("files", "sqlite")
    ):
        reporter.emit(InfoEvent(full_copy_note([source.method], "took")))


def parent_manifest(svc: ServiceContext, repo: Repository, deployment: str) -> Manifest | None:
    """The newest backup of the deployment in the repository (an incremental's parent)."""
    candidates = [b for b in repo_records(svc, repo) if b["deployment"] == deployment]
    if not candidates:
        return None
    newest = max(candidates, key=lambda b: b["started"])
    return repo.load_manifest(newest["id"])


def create_backup(
    svc: ServiceContext,
    deployment: str,
    *,
    type: str = "incremental",
    comment: str = "",
    created_by: str = "manual",
    backup_id: str | None = None,
    safety: bool = False,
    type_requested: bool = False,
) -> BackupSummary:
    """Service.create_backup: take a backup; returns its record."""
    run = _BackupRun(svc, deployment, type, comment, created_by, backup_id, safety, type_requested)
    run.record_start()
    try:
        repo, manifest, results = run.store()
    except BaseException as exc:
        run.fail(exc)
    record = run.complete(repo, manifest, results)
    run.copy_to_remotes(record)
    notify_hooks.backup_completed(svc, record, safety)
    return record


class _BackupRun:
    """One backup being taken: its job's identity and what its steps share."""

    def __init__(
        self,
        svc: ServiceContext,
        deployment: str,
        type_: str,
        comment: str,
        created_by: str,
        backup_id: str | None,
        safety: bool,
        type_requested: bool,
    ) -> None:
        self.svc = svc
        self.deployment = deployment
        self.dep = svc.deployment(deployment)
        self.primary = svc.primary_destination(deployment)
        self.backup_id = backup_id or uuid.uuid4().hex
        self.started = svc.now()
        self.t0 = time.monotonic()
        self.sources = [svc.build_source(opts) for opts in self.dep.sources]
        for source in self.sources:
            source.safety_backup = safety
        self.method = ",".join(dict.fromkeys(s.method for s in self.sources))
        self.type = type_
        self.comment, self.created_by = comment, created_by
        self.safety, self.type_requested = safety, type_requested
        self.collector: Reporter = svc.reporter
        self.writer: BlobWriter | None = None
        self.repo_warnings: list[str] = []  # damage found in the repository; this backup is still whole
        self.destinations: dict[str, dict[str, Any]] = {}

    def record_start(self) -> None:
        """The job's Running row, the start notification; progress is collected from here."""
        self.svc.state.insert_job(
            id=self.backup_id,
            deployment=self.deployment,
            method=self.method,
            type=self.type,
            status="Running",
            created_by=self.created_by,
            started=iso_ms(self.started),
            comment=self.comment,
            destinations={name: {"state": "pending"} for name in self.dep.destinations},
            location=self.svc.location_of(self.primary),
        )
        notify_hooks.backup_started(self.svc, self.deployment, self.backup_id, self.safety)
        self.collector = CollectingReporter(self.svc.reporter)

    def store(self) -> tuple[Repository, Manifest, list[SourceResult]]:
        """Archive every source into the primary repository and save the manifest."""
        svc = self.svc
        repo = svc.repository(self.primary, create=True)
        svc.state.update_job(self.backup_id, repository_id=repo.id)
        with repo.lock(exclusive=False, operation=f"backup {self.backup_id[:8]}"):
            repo.load_index()
            self._exclude_unusable(repo)
            parent = parent_manifest(svc, repo, self.deployment) if self.type == "incremental" else None
            self._settle_type(parent)
            parent_bytes = int(parent.get("source_bytes", 0)) if parent else 0
            self.collector.emit(Started("backup", self.deployment, parent_bytes))
            self.writer = BlobWriter(
                repo,
                workers=svc.config.settings.workers,
                pack_size=svc.config.settings.pack_size_mib << 20,
            )
            archiver = Archiver(repo, self.writer, self.collector, parent_bytes)
            results = self._archive(archiver, parent)
            stats = self.writer.finish()
            self.writer = None
            finished = svc.now()
            manifest: Manifest = {
                "format": 1,
                "id": self.backup_id,
                "deployment": self.deployment,
                "method": self.method,
                "type": self.type,
                "created_by": self.created_by,
                "started": iso_ms(self.started),
                "finished": iso_ms(finished),
                "duration_s": round(time.monotonic() - self.t0, 3),
                "comment": self.comment,
                "hostname": socket.gethostname(),
                "backupctl_version": __version__,
                "parent": parent["id"] if parent else None,
                "sources": [r.to_doc() for r in results],
                "source_bytes": sum(r.bytes for r in results),
                "stored_bytes": stats.stored,
                "new_blobs": stats.blobs_new,
            }
            repo.save_manifest(manifest)  # the commit point
        return repo, manifest, results

    def _exclude_unusable(self, repo: Repository) -> None:
        """Never deduplicate against a copy that cannot be read back (backups/damage.py)."""
        for pack_id, problem in sorted(repo.exclude_unusable(self.svc.damage.damaged(repo.id)).items()):
            self.repo_warnings.append(
                f"pack {pack_id[:16]} is {problem}: what this backup needs from it is stored "
                "again (run `backupctl repository check` to see which older backups it affects)"
            )
            self.collector.emit(WarningEvent(self.repo_warnings[-1]))

    def _settle_type(self, parent: Manifest | None) -> None:
        """An incremental becomes full without a parent, or when no source has an incremental form."""
        if self.type != "incremental":
            return
        incremental = any(s.supports_incremental for s in self.sources)
        if parent is None and incremental:
            self.collector.emit(InfoEvent("no earlier backup of this deployment: taking a full backup"))
        elif not incremental:
            # Dumps and base backups are always complete copies: record what was taken.
            if self.type_requested:
                methods = sorted({s.method for s in self.sources})
                self.collector.emit(InfoEvent(full_copy_note(methods, "taking")))
        else:
            return
        self.type = "full"
        self.svc.state.update_job(self.backup_id, type=self.type)

    def _archive(self, archiver: Archiver, parent: Manifest | None) -> list[SourceResult]:
        parents = {source_key(s["type"], s["describe"]): s for s in (parent["sources"] if parent else [])}
        results = []
        for source in self.sources:
            source.reporter = self.collector
            parent_src = parents.get(source_key(source.options.type, source.describe()))
            announce_type(source, self.type, parent_src, self.collector, requested=self.type_requested)
            results.append(archiver.backup_source(source, parent_src))
        return results

    def fail(self, exc: BaseException) -> NoReturn:
        """Record the job as Failed and raise: BackupFailedError for an error of backupctl's."""
        if self.writer is not None:
            self.writer.abort()
        message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        self.svc.state.update_job(
            self.backup_id,
            status="Failed",
            error=message,
            finished=iso_ms(self.svc.now()),
            duration_s=round(time.monotonic() - self.t0, 3),
        )
        notify_hooks.backup_failed(self.svc, self.deployment, self.backup_id, message, self.safety)
        self.collector.emit(Finished("backup", self.backup_id, ok=False))
        if isinstance(exc, BackupctlError) and not isinstance(exc, BackupFailedError):
            failed = BackupFailedError(f"backup of {self.deployment!r} failed: {exc.message}", hint=exc.hint)
            # Keep the documented exit code and kind of the cause (wrong key 12, destination 6, ...).
            failed.exit_code, failed.kind = exc.exit_code, exc.kind
            raise failed from exc
        raise exc

    def complete(self, repo: Repository, manifest: Manifest, results: list[SourceResult]) -> BackupSummary:
        """Mark the job Completed; the backup's record, with its warnings."""
        record = summarize_manifest(manifest, repo.id)
        self.svc.state.cache_summary(repo.id, self.backup_id, record)
        self.destinations = {name: {"state": "pending"} for name in self.dep.destinations}
        self.destinations[self.primary] = {"state": "stored"}
        self.svc.state.update_job(
            self.backup_id,
            status="Completed",
            finished=manifest["finished"],
            duration_s=manifest["duration_s"],
            size_bytes=manifest["source_bytes"],
            stored_bytes=manifest["stored_bytes"],
            destinations=self.destinations,
        )
        record["destinations"] = self.destinations
        record["warning_list"] = [w for r in results for w in r.warnings]
        if self.repo_warnings:  # the backup is whole, but the operator must look (exit 3)
            record["warning_list"] = [
                *({"path": "", "message": w} for w in self.repo_warnings),
                *record["warning_list"],
            ]
            record["warnings"] = record.get("warnings", 0) + len(self.repo_warnings)
        self.collector.emit(Finished("backup", self.backup_id, ok=True))
        return record

    def copy_to_remotes(self, record: BackupSummary) -> None:
        """Upload to the other destinations (when the deployment uploads); a failed copy
        fails the command, though the backup stays Completed."""
        remotes = [n for n in self.dep.destinations if n != self.primary]
        if remotes and self.dep.upload:
            states = upload_backup(self.svc, self.backup_id, remotes)
            record["destinations"] = self.svc.state.get_job(self.backup_id)["destinations"]  # type: ignore[index]
            failed_states = {n: st for n, st in states.items() if st["state"] == "failed"}
            if failed_states:
                # Still Completed (its manifest is in the primary, restorable from there); the
                # failed copies are named per destination, and the command fails.
                record["failed_uploads"] = sorted(failed_states)
                record["error"] = "; ".join(
                    f"upload to {n} failed: {st['error']}" for n, st in failed_states.items()
                )
                notify_hooks.upload_failed(self.svc, record, self.safety)
                raise BackupFailedError(
                    f"backup {self.backup_id[:8]} is stored in {self.primary!r} but {record['error']}",
                    hint=f"fix the destination, then run `backupctl backup upload {self.backup_id[:8]}`",
                )
        elif remotes:
            for name in remotes:
                self.destinations[name] = {"state": "not uploaded"}
            self.svc.state.update_job(self.backup_id, destinations=self.destinations)
