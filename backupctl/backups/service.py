"""The engine's façade: every CLI command calls one method here and renders its result.

Results are plain dicts with the stable keys of engine.summary (or documented per
method); nothing here prints or imports a UI library. Progress and warnings go to the
Reporter given at construction.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from backupctl import __version__
from backupctl.backups.archiver import Archiver, source_key
from backupctl.backups.browse import RestoreSelection, check_selection
from backupctl.backups.damage import DamageMemory
from backupctl.backups.restorer import Prefetcher, entry_count, restore_stopped
from backupctl.backups.state import StateDB
from backupctl.backups.summary import failed_uploads, summarize_job, summarize_manifest
from backupctl.config.models import Config, DeploymentConfig
from backupctl.config.paths import state_dir as default_state_dir
from backupctl.destinations.base import Destination, open_destination
from backupctl.errors import (
    AmbiguousIdError,
    BackupctlError,
    BackupFailedError,
    IntegrityError,
    NoRepositoryError,
    NotFoundError,
    RestoreIncompleteError,
)
from backupctl.events import (
    CollectingReporter,
    Finished,
    InfoEvent,
    NullReporter,
    Reporter,
    Started,
    WarningEvent,
    WarningsAsInfo,
)
from backupctl.notify import hooks as notify_hooks
from backupctl.policy.records import fill_expiries
from backupctl.records import BackupSummary, Manifest, SourceRecord
from backupctl.repo.crypto import KeyMaterial
from backupctl.repo.lock import reading_lock
from backupctl.repo.opening import key_material, primary_destination, wrap_destination
from backupctl.repo.repository import Repository
from backupctl.repo.writer import BlobWriter
from backupctl.sources.base import NothingToBackUp, RestoreRequest, Source, source_class
from backupctl.timefmt import iso_ms, utcnow


def _full_copy_note(methods: list[str], verb: str) -> str:
    """'<methods> has no incremental form: <verb> a full dump|copy ...': a dump for the
    logical methods (pg_dump, mariadb-dump), a copy for base backups and file copies."""
    noun, nouns = ("dump", "dumps") if all("dump" in m for m in methods) else ("copy", "copies")
    return (
        f"{', '.join(methods)} has no incremental form: {verb} a full {noun} ({nouns} are always "
        "complete; deduplication stores only new chunks)"
    )


class Service:
    def __init__(
        self,
        config: Config,
        reporter: Reporter | None = None,
        state_dir: Path | None = None,
        clock: Any = None,
    ) -> None:
        """`clock` (an object whose `now()` returns an aware datetime) stamps backups; tests
        inject a fake one so that schedules and retention can be simulated without sleeping."""
        self.config = config
        self.clock = clock
        self.reporter: Reporter = reporter or NullReporter()
        self.state = StateDB(state_dir or config.settings.state_dir or default_state_dir())
        self.damage = DamageMemory(self.state)
        self._destinations: dict[str, Destination] = {}
        self._repos: dict[str, Repository] = {}
        self._repos_lock = threading.Lock()

    def now(self) -> dt.datetime:
        return self.clock.now().astimezone(dt.UTC) if self.clock is not None else utcnow()

    # ---- configuration lookups ----------------------------------------------------

    def deployment(self, name: str) -> DeploymentConfig:
        try:
            return self.config.deployments[name]
        except KeyError:
            known = ", ".join(sorted(self.config.deployments)) or "none configured"
            raise NotFoundError(f"no deployment named {name!r}", hint=f"configured: {known}") from None

    def destination(self, name: str) -> Destination:
        if name not in self._destinations:
            try:
                options = self.config.destinations[name]
            except KeyError:
                known = ", ".join(sorted(self.config.destinations)) or "none configured"
                raise NotFoundError(f"no destination named {name!r}", hint=f"configured: {known}") from None
            self._destinations[name] = wrap_destination(open_destination(name, options))
        return self._destinations[name]

    def primary_destination(self, deployment: str) -> str:
        """Where backups of a deployment are written first (repo/opening.py)."""
        dep = self.deployment(deployment)
        return primary_destination([(n, self.config.destinations[n].type) for n in dep.destinations])

    def key_material(self) -> KeyMaterial:
        enc = self.config.encryption
        return key_material(
            key_file=enc.key_file, passphrase_env=enc.passphrase_env, passphrase_file=enc.passphrase_file
        )

    def repository(self, dest_name: str, *, create: bool = False) -> Repository:
        # One lock: the scheduler's threads must share one Repository per destination, and
        # two of them must never both create one.
        with self._repos_lock:
            if dest_name not in self._repos:
                dest = self.destination(dest_name)
                material = self.key_material()
                level = self.config.settings.compression_level
                if create and not Repository.exists(dest):
                    repo = Repository.create(dest, material, level)
                else:
                    repo = Repository.open(dest, material, level)
                repo.reporter, repo.lock_wait = self.reporter, self.lock_wait
                repo_id = repo.id
                repo.on_damage = functools.partial(self.damage.remember, repo_id)  # type: ignore[method-assign]
                self._repos[dest_name] = repo
            return self._repos[dest_name]

    def build_source(self, options: Any, reporter: Reporter | None = None) -> Source:
        return source_class(options.type)(options, reporter or self.reporter)

    # ---- backup ------------------------------------------------------------------

    def create_backup(
        self,
        deployment: str,
        *,
        type: str = "incremental",
        comment: str = "",
        created_by: str = "manual",
        backup_id: str | None = None,
        safety: bool = False,
        type_requested: bool = False,
    ) -> BackupSummary:
        """Take a backup; returns its record. Raises BackupFailedError (recorded as Failed).
        `safety`: the safety backup before an in-place restore (Source.safety_backup).
        `type_requested`: the user asked for `type` explicitly (`--type incremental`); only
        then is a source without an incremental form worth a line (a default create of a
        database deployment would say it every time)."""
        dep = self.deployment(deployment)
        primary = self.primary_destination(deployment)
        backup_id = backup_id or uuid.uuid4().hex
        started = self.now()
        t0 = time.monotonic()
        sources = [self.build_source(opts) for opts in dep.sources]
        for source in sources:
            source.safety_backup = safety
        method = ",".join(dict.fromkeys(s.method for s in sources))
        self.state.insert_job(
            id=backup_id,
            deployment=deployment,
            method=method,
            type=type,
            status="Running",
            created_by=created_by,
            started=iso_ms(started),
            comment=comment,
            destinations={name: {"state": "pending"} for name in dep.destinations},
            location=self.location_of(primary),
        )
        notify_hooks.backup_started(self, deployment, backup_id, safety)
        writer: BlobWriter | None = None
        collector = CollectingReporter(self.reporter)
        repo_warnings: list[str] = []  # damage found in the repository; this backup is still whole
        try:
            repo = self.repository(primary, create=True)
            self.state.update_job(backup_id, repository_id=repo.id)
            with repo.lock(exclusive=False, operation=f"backup {backup_id[:8]}"):
                repo.load_index()
                # Never deduplicate against a copy that cannot be read back (backups/damage.py).
                for pack_id, problem in sorted(repo.exclude_unusable(self.damage.damaged(repo.id)).items()):
                    repo_warnings.append(
                        f"pack {pack_id[:16]} is {problem}: what this backup needs from it is stored "
                        "again (run `backupctl repository check` to see which older backups it affects)"
                    )
                    collector.emit(WarningEvent(repo_warnings[-1]))
                parent = self._parent_manifest(repo, deployment) if type == "incremental" else None
                if type == "incremental" and parent is None and any(s.supports_incremental for s in sources):
                    collector.emit(InfoEvent("no earlier backup of this deployment: taking a full backup"))
                    type = "full"
                    self.state.update_job(backup_id, type=type)
                elif type == "incremental" and not any(s.supports_incremental for s in sources):
                    # Dumps and base backups are always complete copies: record what was taken.
                    if type_requested:
                        collector.emit(
                            InfoEvent(_full_copy_note(sorted({s.method for s in sources}), "taking"))
                        )
                    type = "full"
                    self.state.update_job(backup_id, type=type)
                collector.emit(
                    Started("backup", deployment, int(parent.get("source_bytes", 0)) if parent else 0)
                )
                writer = BlobWriter(
                    repo,
                    workers=self.config.settings.workers,
                    pack_size=self.config.settings.pack_size_mib << 20,
                )
                archiver = Archiver(
                    repo, writer, collector, int(parent.get("source_bytes", 0)) if parent else 0
                )
                parents = {
                    source_key(s["type"], s["describe"]): s for s in (parent["sources"] if parent else [])
                }
                results = []
                for source in sources:
                    source.reporter = collector
                    parent_src = parents.get(source_key(source.options.type, source.describe()))
                    self._announce_type(source, type, parent_src, collector, requested=type_requested)
                    results.append(archiver.backup_source(source, parent_src))
                stats = writer.finish()
                writer = None
                finished = self.now()
                manifest: Manifest = {
                    "format": 1,
                    "id": backup_id,
                    "deployment": deployment,
                    "method": method,
                    "type": type,
                    "created_by": created_by,
                    "started": iso_ms(started),
                    "finished": iso_ms(finished),
                    "duration_s": round(time.monotonic() - t0, 3),
                    "comment": comment,
                    "hostname": socket.gethostname(),
                    "backupctl_version": __version__,
                    "parent": parent["id"] if parent else None,
                    "sources": [r.to_doc() for r in results],
                    "source_bytes": sum(r.bytes for r in results),
                    "stored_bytes": stats.stored,
                    "new_blobs": stats.blobs_new,
                }
                repo.save_manifest(manifest)  # the commit point
        except BaseException as exc:
            if writer is not None:
                writer.abort()
            message = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
            self.state.update_job(
                backup_id,
                status="Failed",
                error=message,
                finished=iso_ms(self.now()),
                duration_s=round(time.monotonic() - t0, 3),
            )
            notify_hooks.backup_failed(self, deployment, backup_id, message, safety)
            collector.emit(Finished("backup", backup_id, ok=False))
            if isinstance(exc, BackupctlError) and not isinstance(exc, BackupFailedError):
                failed = BackupFailedError(f"backup of {deployment!r} failed: {exc.message}", hint=exc.hint)
                # Keep the documented exit code and kind of the cause (wrong key 12, destination 6, ...).
                failed.exit_code, failed.kind = exc.exit_code, exc.kind
                raise failed from exc
            raise
        record = summarize_manifest(manifest, repo.id)
        self.state.cache_summary(repo.id, backup_id, record)
        destinations = {name: {"state": "pending"} for name in dep.destinations}
        destinations[primary] = {"state": "stored"}
        self.state.update_job(
            backup_id,
            status="Completed",
            finished=manifest["finished"],
            duration_s=manifest["duration_s"],
            size_bytes=manifest["source_bytes"],
            stored_bytes=manifest["stored_bytes"],
            destinations=destinations,
        )
        record["destinations"] = destinations
        record["warning_list"] = [w for r in results for w in r.warnings]
        if repo_warnings:  # the backup is whole, but the operator must look (exit 3)
            record["warning_list"] = [
                *({"path": "", "message": w} for w in repo_warnings),
                *record["warning_list"],
            ]
            record["warnings"] = record.get("warnings", 0) + len(repo_warnings)
        collector.emit(Finished("backup", backup_id, ok=True))
        remotes = [n for n in dep.destinations if n != primary]
        if remotes and dep.upload:
            states = self.upload_backup(backup_id, remotes)
            record["destinations"] = self.state.get_job(backup_id)["destinations"]  # type: ignore[index]
            failed_states = {n: st for n, st in states.items() if st["state"] == "failed"}
            if failed_states:
                # Still Completed (its manifest is in the primary, restorable from there); the
                # failed copies are named per destination, and the command fails.
                record["failed_uploads"] = sorted(failed_states)
                record["error"] = "; ".join(
                    f"upload to {n} failed: {st['error']}" for n, st in failed_states.items()
                )
                notify_hooks.upload_failed(self, record, safety)
                raise BackupFailedError(
                    f"backup {backup_id[:8]} is stored in {primary!r} but {record['error']}",
                    hint=f"fix the destination, then run `backupctl backup upload {backup_id[:8]}`",
                )
        elif remotes:
            for name in remotes:
                destinations[name] = {"state": "not uploaded"}
            self.state.update_job(backup_id, destinations=destinations)
        notify_hooks.backup_completed(self, record, safety)
        return record

    def upload_backup(
        self, id_prefix: str, destinations: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Copy a completed backup from its primary repository to remote destinations, in parallel.

        Sends only the objects a destination lacks. Returns each destination's state;
        the states are also recorded for `backup show`.
        """
        from concurrent.futures import ThreadPoolExecutor

        from backupctl.repo.upload import upload_backup

        record = self.find_backup(id_prefix)
        deployment = record["deployment"]
        dep = self.deployment(deployment)
        primary = self.primary_destination(deployment)
        repo = self.repository(primary)
        repo.load_index()
        manifest = repo.load_manifest(record["id"])
        names = destinations or [n for n in dep.destinations if n != primary]
        for name in names:
            self.destination(name)  # unknown name -> NotFound before anything is sent
        job = self.state.get_job(record["id"])
        if job is None:
            self.state.insert_job(
                id=record["id"],
                deployment=deployment,
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
            job = self.state.get_job(record["id"])
        assert job is not None
        states: dict[str, dict[str, Any]] = dict(job["destinations"])

        def one(name: str) -> tuple[str, dict[str, Any]]:
            try:
                result = upload_backup(
                    repo,
                    manifest,
                    self.destination(name),
                    self.reporter,
                    self.config.destinations[name].connections,
                )
                result["uploaded_at"] = iso_ms(self.now())
                return name, result
            except BackupctlError as exc:
                return name, {"state": "failed", "error": exc.message}
            except Exception as exc:  # an SDK error that escaped classification
                return name, {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}

        with ThreadPoolExecutor(max_workers=max(1, len(names))) as pool:
            for name, state in pool.map(one, names):
                states[name] = state
        failed = [n for n, st in states.items() if st.get("state") == "failed"]
        self.state.update_job(
            record["id"],
            destinations=states,
            status="Completed",  # the manifest is in the primary: a failed copy is named, not the backup
            error="; ".join(f"upload to {n} failed: {states[n]['error']}" for n in failed) or None,
        )
        return {n: states[n] for n in names}

    @staticmethod
    def _announce_type(
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
            reporter.emit(InfoEvent(_full_copy_note([source.method], "took")))

    def _parent_manifest(self, repo: Repository, deployment: str) -> Manifest | None:
        candidates = [b for b in self._repo_records(repo) if b["deployment"] == deployment]
        if not candidates:
            return None
        newest = max(candidates, key=lambda b: b["started"])
        return repo.load_manifest(newest["id"])

    # ---- catalog -----------------------------------------------------------------

    def _repo_records(self, repo: Repository) -> list[BackupSummary]:
        records = []
        for backup_id in repo.manifest_ids():
            record = self.state.cached_summary(repo.id, backup_id)
            if record is None:
                try:
                    manifest = repo.load_manifest(backup_id)
                except IntegrityError as exc:  # one damaged manifest must not hide every other backup
                    self.reporter.emit(WarningEvent(f"skipped a damaged backup: {exc.message}"))
                    continue
                record = summarize_manifest(manifest, repo.id)
                self.state.cache_summary(repo.id, backup_id, record)
            records.append(record)
        return records

    def list_backups(
        self, deployment: str | None = None, destination: str | None = None, *, expiries: bool = True
    ) -> list[BackupSummary]:
        """Completed backups from the repositories, plus queued/running/failed jobs; newest first.

        `expiries=False` skips the `expires` dates (each walks the policy's future runs, which
        costs far more than the listing: the scheduler and lookups by ID do not need them).
        """
        if deployment is not None:
            self.deployment(deployment)
        if destination is not None:
            dest_names = [destination]
            self.destination(destination)
        else:
            deps = [deployment] if deployment else list(self.config.deployments)
            dest_names = list(dict.fromkeys(self.primary_destination(d) for d in deps))
        records: dict[str, BackupSummary] = {}
        repo_ids: dict[str, str] = {}  # destination name -> id of the repository it holds
        for name in dest_names:
            try:
                repo = self.repository(name)
            except NoRepositoryError:
                continue
            repo_ids[name] = repo.id
            for rec in self._repo_records(repo):
                rec.setdefault("failed_uploads", [])  # summaries cached before the key existed
                records[rec["id"]] = rec
        for job in self.state.jobs(deployment):
            known = records.get(job["id"])
            if known is not None:
                # The manifest is the truth: the backup is Completed whatever its row says (a
                # kill after the commit point); a contradicting row is corrected. A failed
                # upload elsewhere is reported per destination, not as the backup's status.
                primary = (
                    self.primary_destination(job["deployment"])
                    if job["deployment"] in self.config.deployments
                    else None
                )
                settled = job
                if job["status"] != "Completed" and destination in (None, primary):
                    # Corrected only from the primary's manifest (the row describes that copy).
                    settled = self.state.settle_job(job["id"], known, primary) or job
                known["destinations"] = settled["destinations"]
                known["failed_uploads"] = failed_uploads(settled["destinations"])
                if known["failed_uploads"]:
                    known["error"] = "; ".join(
                        f"upload to {n} failed: {settled['destinations'][n].get('error')}"
                        for n in known["failed_uploads"]
                    )
            elif job["status"] != "Completed" and destination is None and self._own_job(job, repo_ids):
                records[job["id"]] = summarize_job(job)
        out = [r for r in records.values() if deployment is None or r["deployment"] == deployment]
        out.sort(key=lambda r: r["started"] or "", reverse=True)
        if not expiries:
            return out
        try:
            fill_expiries(self.config, out, self.now())
        except BackupctlError as exc:  # an invalid policy must not hide the backups
            self.reporter.emit(WarningEvent(f"cannot compute expiry dates: {exc.message}"))
        return out

    def _own_job(self, job: dict[str, Any], repo_ids: dict[str, str]) -> bool:
        """Whether a job row without a manifest belongs to this config's repositories.

        The state database is per user, shared by every config file: a row is shown only
        when its deployment is configured here and it ran against this deployment's primary
        repository (by repository id, or by location when it failed before the repository
        was opened). Rows of older versions that recorded neither are shown.
        """
        if job["deployment"] not in self.config.deployments:
            return False
        primary = self.primary_destination(job["deployment"])
        if job.get("repository_id"):
            return bool(repo_ids.get(primary) == job["repository_id"])
        if job.get("location"):
            return bool(job["location"] == self.location_of(primary))
        return True

    def _reading(self, repo: Repository, operation: str) -> contextlib.AbstractContextManager[None]:
        """The shared lock of a read (repo/lock.py reading_lock)."""
        return reading_lock(
            repo.dest,
            operation=operation,
            wait=self.lock_wait,
            warn=lambda m: self.reporter.emit(WarningEvent(m)),
        )

    def location_of(self, dest_name: str) -> str | None:
        """Where a destination points (recorded with each job); None when it cannot be opened."""
        try:
            return self.destination(dest_name).location
        except Exception:
            return None

    def find_backup(
        self, id_prefix: str, destination: str | None = None, *, expiries: bool = True
    ) -> BackupSummary:
        prefix = id_prefix.strip().lower()
        if not prefix:
            raise NotFoundError("empty backup ID")
        listed = self.list_backups(destination=destination, expiries=expiries)
        matches = [r for r in listed if r["id"].startswith(prefix)]
        if not matches:
            raise NotFoundError(f"no backup with ID {id_prefix!r}", hint="see `backupctl backup list`")
        if len(matches) > 1:
            raise AmbiguousIdError(
                f"backup ID {id_prefix!r} is ambiguous ({len(matches)} backups match)",
                hint="give more characters",
            )
        return matches[0]

    def completed_backup(
        self, id_prefix: str, destination: str | None = None
    ) -> tuple[BackupSummary, Repository, Manifest]:
        """(record, opened repository, manifest) of a backup that can be restored from: Completed,
        or a usable copy on the given `destination`; raises BackupFailedError otherwise (as
        restore does). For callers outside Service (clone)."""
        return self._completed(id_prefix, destination)

    def restore_source(self, src: SourceRecord, dep: DeploymentConfig | None, position: int) -> Source:
        """The source that receives stored source `src` (number `position` in the manifest) on
        restore: the configured one it came from, or one rebuilt from the manifest."""
        return self._restore_source(src, dep, position)

    def _completed(
        self, id_prefix: str, destination: str | None
    ) -> tuple[BackupSummary, Repository, Manifest]:
        record = self.find_backup(id_prefix, destination, expiries=False)
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
            destination or self.primary_destination(record["deployment"])
            if record["deployment"] in self.config.deployments
            else destination
        )
        if dest_name is None:
            raise NotFoundError(
                f"deployment {record['deployment']!r} of backup {record['short_id']} is not configured",
                hint="pass --destination",
            )
        repo = self.repository(dest_name)
        manifest = repo.load_manifest(record["id"])
        return record, repo, manifest

    def show_backup(self, id_prefix: str, destination: str | None = None) -> BackupSummary:
        record = self.find_backup(id_prefix, destination)
        if record["status"] != "Completed":
            return record
        _, _, manifest = self._completed(id_prefix, destination)
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

    # ---- restore -----------------------------------------------------------------

    def restore_backup(
        self,
        id_prefix: str,
        *,
        target_dir: Path | None = None,
        to_deployment: str | None = None,
        destination: str | None = None,
        safety_backup: bool = True,
        extra_info: dict[str, Any] | None = None,
        selection: RestoreSelection | None = None,
    ) -> dict[str, Any]:
        """Restore a completed backup in place (target_dir None) or under target_dir.

        In place, a safety backup of the deployment's current state is taken first (unless
        `safety_backup=False`), so a mistaken restore can be undone by restoring it.
        `extra_info` is merged into each source's RestoreRequest.source_info (clone uses
        it for `rename`, `only_databases`, `skip_globals`). `selection` (--include/--exclude)
        restores only some paths of files sources (backups/browse.py); checked before anything.
        """
        record, repo, manifest = self._completed(id_prefix, destination)
        counts = check_selection(repo, record, manifest, selection) if selection else None
        dep_name = to_deployment or record["deployment"]
        dep = self.config.deployments.get(dep_name)
        if to_deployment is not None and dep is None:
            self.deployment(to_deployment)  # raises NotFound
        if target_dir is None:  # refusals in place come before the safety backup
            for i, src in enumerate(manifest["sources"]):
                self._restore_source(src, dep, i).check_in_place_restore(dict(src.get("info", {})))
        safety: BackupSummary | None = None
        if target_dir is None and safety_backup and dep is not None:
            self.reporter.emit(InfoEvent(f"taking a safety backup of {dep_name!r} before overwriting it"))
            restore_reporter = self.reporter
            self.reporter = WarningsAsInfo(restore_reporter, "safety backup: ")
            probe_id = uuid.uuid4().hex
            try:
                safety = self.create_backup(
                    dep_name,
                    type="incremental",
                    comment=f"safety backup before restoring {record['id'][:8]}",
                    backup_id=probe_id,
                    safety=True,
                )
            except BackupctlError as exc:
                if isinstance(exc.__cause__, NothingToBackUp):
                    # A probe, not a backup: "nothing to overwrite" must not be listed as Failed.
                    self.state.delete_job(probe_id)
                    self.reporter.emit(
                        InfoEvent(f"no safety backup: {exc.__cause__.message} (nothing to overwrite)")
                    )
                    safety = None
                else:
                    raise BackupFailedError(
                        f"the safety backup of {dep_name!r} failed, so nothing was restored: {exc.message}",
                        hint="fix the problem, or pass --no-safety-backup to restore without one",
                    ) from exc
            finally:
                self.reporter = restore_reporter
            if safety is not None:
                self.reporter.emit(
                    InfoEvent(f"safety backup {safety['id'][:8]} taken; restore it to undo this restore")
                )
        t0 = time.monotonic()
        hold = contextlib.ExitStack()  # the read lock: no prune removes packs under this restore
        hold.enter_context(self._reading(repo, f"restore {record['id'][:8]}"))
        prefetcher: Prefetcher | None = None
        try:
            repo.load_index()
            self.reporter.emit(Started("restore", record["id"], int(manifest.get("source_bytes", 0))))
            prefetcher = Prefetcher(repo)
            entries = counts or [entry_count(s) for s in manifest["sources"]]  # per source
            written, total = 0, sum(entries)
            for i, src in enumerate(manifest["sources"]):
                source = self._restore_source(src, dep, i)
                try:
                    self.restore_stored_source(
                        repo, manifest, src, source, prefetcher, target_dir, extra_info, selection
                    )
                except RestoreIncompleteError as exc:  # say what was and was not written
                    safety_id = safety["id"] if safety else None
                    raise restore_stopped(exc, written, total, target_dir, safety_id) from exc
                written += entries[i]
        finally:
            if prefetcher is not None:
                prefetcher.close()
            hold.close()
        self.reporter.emit(Finished("restore", record["id"]))
        return {
            "id": record["id"],
            "deployment": dep_name,
            "target": str(target_dir) if target_dir else None,
            "bytes": manifest.get("source_bytes", 0),
            "duration_s": round(time.monotonic() - t0, 3),
            "safety_backup": safety["id"] if safety else None,
        }

    def restore_stored_source(
        self,
        repo: Repository,
        manifest: Manifest,
        src: SourceRecord,
        source: Source,
        prefetcher: Prefetcher,
        target_dir: Path | None,
        extra_info: dict[str, Any] | None = None,
        selection: RestoreSelection | None = None,
    ) -> None:
        """Hand one stored source's entries to `source`; a physical incremental gets its chain."""
        info = dict(src.get("info", {}))
        info.update(extra_info or {})
        request = RestoreRequest(target_dir=target_dir, source_info=info, reporter=self.reporter)
        if info.get("backup_type") == "incremental":
            chain = self._chain(repo, manifest, src)
            source.restore_chain(
                [
                    (c.get("info", {}), prefetcher.entries([bytes.fromhex(b) for b in c["tree"]]))
                    for c in chain
                ],
                request,
            )
        else:
            select = selection.select if selection else None
            source.restore(prefetcher.entries([bytes.fromhex(b) for b in src["tree"]], select), request)

    def _chain(self, repo: Repository, manifest: Manifest, src: SourceRecord) -> list[SourceRecord]:
        """The stored source records from the full backup up to `src`, oldest first."""
        key = source_key(src["type"], src["describe"])
        chain = [src]
        current = manifest
        while chain[0].get("info", {}).get("backup_type") == "incremental":
            parent_id = current.get("parent")
            if not parent_id:
                raise IntegrityError(f"backup {current['id'][:8]} is incremental but records no parent")
            current = repo.load_manifest(parent_id)  # NotFound if the parent was deleted
            match = [s for s in current["sources"] if source_key(s["type"], s["describe"]) == key]
            if not match:
                raise IntegrityError(f"parent backup {parent_id[:8]} has no matching source for the chain")
            chain.insert(0, match[0])
        return chain

    def _restore_source(self, src: SourceRecord, dep: DeploymentConfig | None, position: int) -> Source:
        """The configured source that receives a stored source, or one rebuilt from the manifest."""
        if dep is not None:
            same_type = [o for o in dep.sources if o.type == src["type"]]
            for opts in same_type:
                built = self.build_source(opts)
                if built.describe() == src["describe"]:
                    return built
            if len(same_type) == 1 or (same_type and position < len(dep.sources)):
                return self.build_source(same_type[0])
        cls = source_class(src["type"])
        return cls(cls.Options.model_validate({"type": src["type"], **src["describe"]}), self.reporter)

    # ---- delete, verify ----------------------------------------------------------

    def delete_backup(
        self, id_prefix: str, destination: str | None = None, max_unused: float | None = None
    ) -> dict[str, Any]:
        """Delete a backup and the data only it used; `max_unused` (0..1) also repacks."""
        from backupctl.repo.prune import delete_and_prune

        record = self.find_backup(id_prefix, destination, expiries=False)
        if record["status"] != "Completed":
            self.state.delete_job(record["id"])
            return {"id": record["id"], "deleted": True, **self._free_failed(record)}
        dep = self.config.deployments.get(record["deployment"])
        names = [destination] if destination else (list(dep.destinations) if dep else [])
        freed = 0
        packs = 0
        for name in names:
            try:
                repo = self.repository(name)
            except NoRepositoryError:
                continue
            if record["id"] not in repo.manifest_ids():
                continue
            pack_size = self.config.settings.pack_size_mib << 20
            result = delete_and_prune(
                repo, [record["id"]], self.reporter, max_unused=max_unused, pack_size=pack_size
            )
            freed += result["freed_bytes"]
            packs += result["packs_deleted"]
        self.state.forget_summary(record["id"])
        self.state.delete_job(record["id"])
        return {"id": record["id"], "deleted": True, "freed_bytes": freed, "packs_deleted": packs}

    def verify_backup(self, id_prefix: str, destination: str | None = None) -> dict[str, Any]:
        from backupctl.repo.verify import verify_manifest

        record, repo, manifest = self._completed(id_prefix, destination)
        with self._reading(repo, f"verify {record['id'][:8]}"):
            repo.load_index()
            result = verify_manifest(repo, manifest, self.reporter)
        result["id"] = record["id"]
        result["destination"] = destination or self.primary_destination(record["deployment"])
        return result

    def download_backup(
        self, id_prefix: str, part: str, out: Any, destination: str | None = None
    ) -> dict[str, Any]:
        from backupctl.backups.download import download

        record, repo, manifest = self._completed(id_prefix, destination)
        with self._reading(repo, f"download {record['id'][:8]}"):
            repo.load_index()
            result = download(repo, manifest, part, out, self.reporter)
        result["id"] = record["id"]
        result["part"] = part
        return result

    # ---- destinations --------------------------------------------------------------

    def list_destinations(self) -> list[dict[str, Any]]:
        from backupctl.destinations.base import NotFound

        rows = []
        for name, options in self.config.destinations.items():
            row: dict[str, Any] = {
                "name": name,
                "type": options.type,
                "location": "",
                "reachable": False,
                "repository": False,
                "error": None,
            }
            try:
                dest = self.destination(name)
                row["location"] = dest.location
                try:
                    dest.stat("config")
                    row["repository"] = True
                except NotFound:
                    pass
                row["reachable"] = True
            except BackupctlError as exc:
                row["error"] = exc.message
            except Exception as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
            row["used_by"] = sorted(
                d for d, dep in self.config.deployments.items() if name in dep.destinations
            )
            rows.append(row)
        return rows

    def check_destination(self, name: str) -> dict[str, Any]:
        from backupctl.backups.probe import probe_destination

        return probe_destination(self.destination(name))

    # ---- repository maintenance (repo/check.py, repair.py, prune.py, repo/lock.py) ----

    # Seconds to retry a lock held by another process (`--retry-lock`); set before use.
    lock_wait: float = 0.0

    def set_lock_wait(self, seconds: float) -> None:
        self.lock_wait = seconds
        for repo in self._repos.values():
            repo.lock_wait = seconds

    def check_repository(self, destination: str, read_data: Any = None) -> dict[str, Any]:
        from backupctl.repo.check import check_repository

        return {
            "destination": destination,
            **check_repository(self.repository(destination), self.reporter, read_data),
        }

    def repair_index(self, destination: str) -> dict[str, Any]:
        from backupctl.repo.repair import repair_index

        return {"destination": destination, **repair_index(self.repository(destination), self.reporter)}

    def repair_snapshots(self, destination: str, *, delete: bool, dry_run: bool) -> dict[str, Any]:
        from backupctl.repo.repair import repair_snapshots

        repo = self.repository(destination)
        return {
            "destination": destination,
            **repair_snapshots(repo, self.reporter, delete=delete, dry_run=dry_run),
        }

    def _free_failed(self, record: BackupSummary) -> dict[str, Any]:
        """After forgetting a failed backup: prune its deployment's repositories (packs it left
        are freed once older than prune's grace period). A refusal is a warning here."""
        dep = self.config.deployments.get(record["deployment"])
        freed = packs = 0
        for name in dep.destinations if dep else []:
            try:
                result = self.prune_repository(name)
            except NoRepositoryError:
                continue
            except IntegrityError as exc:
                self.reporter.emit(WarningEvent(f"{name}: nothing freed: {exc}"))
                continue
            freed += result["freed_bytes"]
            packs += result["packs_deleted"]
        return {"freed_bytes": freed, "packs_deleted": packs}

    def prune_repository(self, destination: str, max_unused: float | None = None) -> dict[str, Any]:
        """Delete unreferenced packs and temporary files older than the grace period; with
        `max_unused` (0..1) also repack mostly-unused packs (repo/repack.py)."""
        from backupctl.repo.prune import delete_and_prune

        repo = self.repository(destination)
        pack_size = self.config.settings.pack_size_mib << 20
        result = delete_and_prune(repo, [], self.reporter, max_unused=max_unused, pack_size=pack_size)
        return {"destination": destination, **result}

    def repository_stats(self, destination: str) -> dict[str, Any]:
        """Blobs, packs, sizes and the dedup ratio of a repository (repo/stats.py)."""
        from backupctl.repo.stats import repository_stats

        return {"destination": destination, **repository_stats(self.repository(destination), self.reporter)}

    def unlock_repository(self, destination: str, *, remove_all: bool) -> dict[str, Any]:
        from backupctl.repo.lock import remove_locks

        repo = self.repository(destination)  # opening proves the key: only owners unlock
        removed = remove_locks(repo.dest, remove_all=remove_all)
        return {
            "destination": destination,
            "removed": [
                {k: d.get(k) for k in ("name", "hostname", "pid", "operation", "exclusive", "time", "stale")}
                for d in removed
            ],
        }

    def close(self) -> None:
        for dest in self._destinations.values():
            try:
                dest.close()
            except Exception:
                pass
