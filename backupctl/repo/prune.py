"""Deleting backups and the data only they referenced; removing leftovers of failed runs.

Under an exclusive lock (no backup can be writing):
1. load the whole index and every surviving manifest and walk their trees. REFUSE
   (IntegrityError, nothing changed) when an index file is damaged, a surviving manifest
   or tree cannot be read, or a surviving backup references a blob the index does not
   have: the index is then incomplete, and packs it does not list may be live. The
   message points at `backupctl repository repair index` / `repair snapshots`;
2. delete the manifests of the backups to delete;
3. write ONE new index file listing the packs that stay, superseding all old ones;
4. delete the old index files;
5. delete packs with no referenced blob: at once those that held blobs of the deleted
   backups; packs no manifest ever referenced (leftovers of interrupted or failed backups,
   indexed or not) only when older than GRACE seconds (by the destination's modification
   time), so that a backup running despite the lock (one whose lock went stale) keeps
   its packs;
6. delete temporary files of interrupted writes (destination.temporaries()) older
   than GRACE.
With `max_unused` (a fraction; `backup prune --max-unused`, default 5%), step 3 is
preceded by a repack (repo/repack.py): the live blobs of the emptiest packs (never young
ones) are copied into new packs until at most that share of the repository is unused;
the new index file lists the new packs instead of the old ones, and the old packs are
deleted in step 5 only once every old index file is confirmed gone (else they stay, as
valid duplicates, for the next prune). Without it, packs that hold both live and dead
blobs are kept whole.
A crash between steps leaves a consistent repository: at worst unreferenced packs
or redundant index files, which the next prune removes. Destinations that do not report
modification times give no grace (the exclusive lock is then the only protection).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backupctl.destinations.base import ObjectInfo
from backupctl.errors import IntegrityError
from backupctl.events import Finished, Progress, Reporter, Started, WarningEvent
from backupctl.repo.items import read_items
from backupctl.repo.pack import BlobEntry, pack_name
from backupctl.repo.repack import choose_packs, pack_usage, repack
from backupctl.repo.repository import Repository

# Unreferenced packs and temporary files younger than this are left alone.
GRACE = 3600.0

REPAIR_INDEX_HINT = "run `backupctl repository repair index`, then `backupctl repository check`"


class PruneRefused(IntegrityError):
    """Deleting data now could lose live data: the index or a surviving manifest is damaged."""


def referenced_blobs(repo: Repository, backup_ids: list[str] | None = None) -> set[bytes]:
    """Every blob the given backups (default: all) reference; IntegrityError when one cannot be read."""
    live: set[bytes] = set()
    for backup_id in repo.manifest_ids() if backup_ids is None else backup_ids:
        manifest = repo.load_manifest(backup_id)
        for src in manifest.get("sources", []):
            tree = [bytes.fromhex(b) for b in src.get("tree", [])]
            live.update(tree)
            for item in read_items(repo, tree):
                live.update(item.chunks)
    return live


def _live_or_refuse(repo: Repository, survivors: list[str]) -> set[bytes]:
    if repo.damaged_indexes:
        names = ", ".join(sorted(repo.damaged_indexes))
        raise PruneRefused(
            f"refusing to delete data: index file(s) {names} are damaged, so packs they list may be live",
            hint=REPAIR_INDEX_HINT,
        )
    live: set[bytes] = set()
    for backup_id in survivors:
        try:
            blobs = referenced_blobs(repo, [backup_id])
        except IntegrityError as exc:
            raise PruneRefused(
                f"refusing to delete data: backup {backup_id[:12]} cannot be read ({exc.message})",
                hint="run `backupctl repository repair index`; if that does not help, "
                "`backupctl repository repair snapshots` sets the damaged backup aside",
            ) from None
        missing = [b for b in blobs if b not in repo.index]
        if missing:
            raise PruneRefused(
                f"refusing to delete data: backup {backup_id[:12]} references {len(missing)} blob(s) the index "
                f"does not have (e.g. {missing[0].hex()[:16]}); the index is incomplete",
                hint=REPAIR_INDEX_HINT,
            )
        live |= blobs
    return live


def _released_blobs(repo: Repository, backup_ids: list[str]) -> set[bytes]:
    """The blobs the backups to delete reference (readable ones only)."""
    released: set[bytes] = set()
    for backup_id in backup_ids:
        try:
            released |= referenced_blobs(repo, [backup_id])
        except IntegrityError:  # unreadable: its packs wait for the grace period
            pass
    return released


def _young_packs(
    listed: dict[str, ObjectInfo],
    by_pack: Mapping[str, list[BlobEntry]],
    released: set[bytes],
    now: float,
    grace: float,
) -> set[str]:
    """Packs within the grace period that hold no blob of a deleted backup (step 5)."""
    return {
        pid
        for pid, info in listed.items()
        if info.mtime is not None
        and now - info.mtime < grace
        and not any(e.blob_id in released for e in by_pack.get(pid, ()))
    }


def _supersede_index(
    repo: Repository, keep: dict[str, list[BlobEntry]], drop: set[str], reporter: Reporter
) -> set[str]:
    """Steps 3 and 4: one new index file listing `keep`, then the old ones deleted. Returns
    the repacked packs that may now be deleted: none when an old index file survived."""
    old_indexes = repo.index_ids
    repo.write_index(keep, supersedes=old_indexes)
    for index_id in old_indexes:
        try:
            repo.dest.delete(f"index/{index_id}")
        except Exception:
            pass
    if drop:
        remaining = {i.name.split("/", 1)[1] for i in repo.dest.list("index/")} & old_indexes
        if remaining:
            reporter.emit(
                WarningEvent(
                    f"{len(remaining)} old index file(s) could not be deleted; the {len(drop)} repacked "
                    "packs stay until the next prune"
                )
            )
            return set()
    return drop


def _delete_packs(
    repo: Repository,
    listed: dict[str, ObjectInfo],
    keep: dict[str, list[BlobEntry]],
    young: set[str],
    copied: set[str],
    drop: set[str],
    reporter: Reporter,
) -> tuple[int, int, int]:
    """Step 5: delete the packs not kept; returns (bytes freed, packs deleted, young packs kept)."""
    freed = deleted = young_kept = 0
    doomed_packs = [p for p in listed if p not in keep and p not in young and (p not in copied or p in drop)]
    to_free = sum(listed[p].size for p in doomed_packs)
    reporter.emit(Progress(0, 0, to_free, len(doomed_packs)))
    for pack_id, info in listed.items():
        if pack_id in keep:
            continue
        if pack_id in young:
            young_kept += 1
            continue
        if pack_id in copied and pack_id not in drop:
            continue  # repacked, but an old index file still lists it: keep it valid
        repo.dest.delete(pack_name(pack_id))
        freed += info.size
        deleted += 1
        reporter.emit(Progress(freed, deleted, to_free, len(doomed_packs), pack_name(pack_id)))
    return freed, deleted, young_kept


def _delete_temporaries(repo: Repository, now: float, grace: float) -> tuple[int, int]:
    """Step 6: temporary files older than the grace period; returns (bytes freed, files deleted)."""
    freed = deleted = 0
    for info in list(repo.dest.temporaries()):
        if info.mtime is None or now - info.mtime < grace:
            continue
        try:
            repo.dest.delete_temporary(info.name)
        except Exception:  # gone meanwhile, or not ours to delete: not worth failing a prune
            continue
        freed += info.size
        deleted += 1
    return freed, deleted


def delete_and_prune(
    repo: Repository,
    backup_ids: list[str],
    reporter: Reporter,
    *,
    grace: float = GRACE,
    max_unused: float | None = None,
    pack_size: int = 16 << 20,
) -> dict[str, Any]:
    """Delete `backup_ids` (may be empty: only collect garbage) and unreferenced data.

    `max_unused` (0..1, None = never): repack so that at most this share stays unused."""
    doomed = set(backup_ids)
    operation = "delete" if backup_ids else "prune"
    with repo.lock(exclusive=True, operation=operation):
        repo.load_index(reload=True)
        # Progress: the backups read to find what is live, then the packs deleted.
        reporter.emit(Started(operation, repo.id[:12]))
        survivors = [b for b in repo.manifest_ids() if b not in doomed]
        live = _live_or_refuse(repo, survivors)
        # What only the deleted backups used is freed at once, however young: no running
        # backup wrote those packs (they were referenced by a finished backup).
        released = _released_blobs(repo, backup_ids)
        for backup_id in backup_ids:
            repo.delete_manifest(backup_id)
        now = time.time()
        listed = {info.name.rsplit("/", 1)[-1]: info for info in repo.dest.list("data/")}
        by_pack = repo.index.blobs_by_pack()
        young = _young_packs(listed, by_pack, released, now, grace)
        keep = {
            pid: entries
            for pid, entries in by_pack.items()
            if pid in young or any(e.blob_id in live for e in entries)
        }
        sizes = {pid: info.size for pid, info in listed.items()}
        usage = pack_usage({p: e for p, e in keep.items() if p not in young}, live, sizes)
        chosen = choose_packs(usage, max_unused)
        repacked = repack(repo, chosen, keep, live, reporter, pack_size=pack_size) if chosen else None
        if repacked is not None:
            for pack_id in repacked.repacked:
                del keep[pack_id]
            keep.update(repacked.new_packs)
        # Old packs whose live blobs were copied: deleted only when no index file lists them.
        copied = set(repacked.repacked) if repacked is not None else set()
        drop = set(copied)
        if len(keep) < len(by_pack) or drop:  # else the index files stay as they are: no write at all
            drop = _supersede_index(repo, keep, drop, reporter)
        freed, deleted, young_kept = _delete_packs(repo, listed, keep, young, copied, drop, reporter)
        temp_freed, temp_deleted = _delete_temporaries(repo, now, grace)
        freed += temp_freed
        repo.load_index(reload=True)
        written = repacked.bytes_written if repacked is not None else 0
        deleted_bytes, freed = freed, freed - written
        reporter.emit(Finished(operation, repo.id[:12]))
        # No summary line here: the result says it all, and each command renders it once.
        return {
            "freed_bytes": freed,
            "deleted_bytes": deleted_bytes,
            "packs_deleted": deleted,
            "packs_repacked": len(copied),
            "packs_written": len(repacked.new_packs) if repacked is not None else 0,
            "blobs_repacked": repacked.blobs if repacked is not None else 0,
            "repack_written_bytes": written,
            "packs_kept": len(keep),
            "temp_files_deleted": temp_deleted,
            "young_packs_kept": young_kept,
        }


__all__ = ["GRACE", "PruneRefused", "delete_and_prune", "referenced_blobs", "pack_name"]
