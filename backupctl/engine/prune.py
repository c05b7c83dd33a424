"""Deleting backups and the data only they referenced.

Under an exclusive lock (no backup can be writing):
1. delete the manifests;
2. mark every blob referenced by the remaining manifests (tree blobs and file chunks);
3. write ONE new index file listing the packs that stay, superseding all old ones;
4. delete the old index files;
5. delete packs with no referenced blob, including packs no index lists (leftovers
   of interrupted backups).
A crash between steps leaves a consistent repository: at worst unreferenced packs
or redundant index files, which the next prune removes. Packs that hold both live
and dead blobs are kept whole (no repacking yet).
"""

from __future__ import annotations

from typing import Any

from backupctl.engine.items import read_items
from backupctl.events import InfoEvent, Reporter
from backupctl.repo.pack import pack_name
from backupctl.repo.repository import Repository


def referenced_blobs(repo: Repository) -> set[bytes]:
    live: set[bytes] = set()
    for backup_id in repo.manifest_ids():
        manifest = repo.load_manifest(backup_id)
        for src in manifest.get("sources", []):
            tree = [bytes.fromhex(b) for b in src.get("tree", [])]
            live.update(tree)
            for item in read_items(repo, tree):
                live.update(item.chunks)
    return live


def delete_and_prune(repo: Repository, backup_ids: list[str], reporter: Reporter) -> dict[str, Any]:
    with repo.lock(exclusive=True, operation="delete"):
        for backup_id in backup_ids:
            repo.delete_manifest(backup_id)
        repo.load_index(reload=True)
        live = referenced_blobs(repo)
        by_pack = repo.index.blobs_by_pack()
        keep = {pid: entries for pid, entries in by_pack.items() if any(e.blob_id in live for e in entries)}
        old_indexes = repo.index_ids
        repo.write_index(keep, supersedes=old_indexes)
        for index_id in old_indexes:
            try:
                repo.dest.delete(f"index/{index_id}")
            except Exception:
                pass
        freed = 0
        deleted = 0
        for info in list(repo.dest.list("data/")):
            pack_id = info.name.rsplit("/", 1)[-1]
            if pack_id in keep:
                continue
            repo.dest.delete(info.name)
            freed += info.size
            deleted += 1
        repo.load_index(reload=True)
        reporter.emit(InfoEvent(f"deleted {deleted} packs ({freed} bytes)"))
        return {"freed_bytes": freed, "packs_deleted": deleted, "packs_kept": len(keep)}


__all__ = ["delete_and_prune", "referenced_blobs", "pack_name"]
