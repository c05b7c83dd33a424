"""The engine's façade: every CLI command calls one method here and renders its result.

Results are plain dicts with the stable keys of backups.summary (or documented per
method); nothing here prints or imports a UI library. Progress and warnings go to the
Reporter given at construction.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
from pathlib import Path
from typing import Any

from backupctl.backups import catalog, creating, restoring, uploading
from backupctl.backups.browse import RestoreSelection
from backupctl.backups.context import reading
from backupctl.backups.damage import DamageMemory
from backupctl.backups.restorer import Prefetcher
from backupctl.backups.state import StateDB
from backupctl.config.models import Config, DeploymentConfig
from backupctl.config.paths import state_dir as default_state_dir
from backupctl.destinations.base import Destination, open_destination
from backupctl.errors import BackupctlError, IntegrityError, NoRepositoryError, NotFoundError
from backupctl.events import NullReporter, Reporter, WarningEvent
from backupctl.records import BackupSummary, Manifest, SourceRecord
from backupctl.repo.crypto import KeyMaterial
from backupctl.repo.opening import key_material, primary_destination, wrap_destination
from backupctl.repo.repository import Repository
from backupctl.sources.base import Source, source_class
from backupctl.timefmt import utcnow


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
                repo.index_cache_dir = self.state.path.parent / "index-cache"
                repo_id = repo.id
                repo.on_damage = functools.partial(self.damage.remember, repo_id)  # type: ignore[method-assign]
                self._repos[dest_name] = repo
            return self._repos[dest_name]

    def build_source(self, options: Any, reporter: Reporter | None = None) -> Source:
        return source_class(options.type)(options, reporter or self.reporter)

    # ---- backup (backups/creating.py, uploading.py) ------------------------------

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
        return creating.create_backup(
            self,
            deployment,
            type=type,
            comment=comment,
            created_by=created_by,
            backup_id=backup_id,
            safety=safety,
            type_requested=type_requested,
        )

    def upload_backup(
        self, id_prefix: str, destinations: list[str] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Copy a completed backup from its primary repository to remote destinations, in parallel.

        Sends only the objects a destination lacks. Returns each destination's state;
        the states are also recorded for `backup show`.
        """
        return uploading.upload_backup(self, id_prefix, destinations)

    # ---- catalog (backups/catalog.py) ---------------------------------------------

    def list_backups(
        self, deployment: str | None = None, destination: str | None = None, *, expiries: bool = True
    ) -> list[BackupSummary]:
        """Completed backups from the repositories, plus queued/running/failed jobs; newest first.

        `expiries=False` skips the `expires` dates (each walks the policy's future runs, which
        costs far more than the listing: the scheduler and lookups by ID do not need them).
        """
        return catalog.list_backups(self, deployment, destination, expiries=expiries)

    def location_of(self, dest_name: str) -> str | None:
        """Where a destination points (recorded with each job); None when it cannot be opened."""
        try:
            return self.destination(dest_name).location
        except Exception:
            return None

    def find_backup(
        self, id_prefix: str, destination: str | None = None, *, expiries: bool = True
    ) -> BackupSummary:
        return catalog.find_backup(self, id_prefix, destination, expiries=expiries)

    def completed_backup(
        self, id_prefix: str, destination: str | None = None
    ) -> tuple[BackupSummary, Repository, Manifest]:
        """(record, opened repository, manifest) of a backup that can be restored from: Completed,
        or a usable copy on the given `destination`; raises BackupFailedError otherwise (as
        restore does). For callers outside Service (clone)."""
        return catalog.completed(self, id_prefix, destination)

    def restore_source(self, src: SourceRecord, dep: DeploymentConfig | None, position: int) -> Source:
        """The source that receives stored source `src` (number `position` in the manifest) on
        restore: the configured one it came from, or one rebuilt from the manifest."""
        return restoring.restore_source(self, src, dep, position)

    def _completed(
        self, id_prefix: str, destination: str | None
    ) -> tuple[BackupSummary, Repository, Manifest]:
        return catalog.completed(self, id_prefix, destination)

    def show_backup(self, id_prefix: str, destination: str | None = None) -> BackupSummary:
        return catalog.show_backup(self, id_prefix, destination)

    # ---- restore (backups/restoring.py) -------------------------------------------

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
        return restoring.restore_backup(
            self,
            id_prefix,
            target_dir=target_dir,
            to_deployment=to_deployment,
            destination=destination,
            safety_backup=safety_backup,
            extra_info=extra_info,
            selection=selection,
        )

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
        restoring.restore_stored_source(
            self, repo, manifest, src, source, prefetcher, target_dir, extra_info, selection
        )

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
        with reading(self, repo, f"verify {record['id'][:8]}"):
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
        with reading(self, repo, f"download {record['id'][:8]}"):
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
