"""`backupctl repository stats`: what a repository holds and how well it deduplicates.

Read-only, under a SHARED lock (a prune cannot delete anything meanwhile; backups may
run and add blobs, which are then simply not counted). Numbers:

* blobs / data_blobs / tree_blobs, and their stored (encrypted) and raw (plaintext) bytes,
  from the index; index_files; packs (indexed), pack_bytes (the size of every pack object
  listed under data/), packs_unindexed (leftovers of interrupted runs, freed by prune);
* snapshots, and from walking every backup's item stream: logical_bytes (the content of
  every backup, counted once per backup and reference, as a restore of each would write
  it), referenced_blobs and referenced_raw_bytes (each referenced blob once);
* dedup_ratio = logical_bytes / referenced_raw_bytes of the referenced data blobs (2.0 after
  backing up the same tree twice), compression_ratio = their raw / stored bytes,
  unused_bytes = stored bytes of indexed blobs no backup references (what prune frees or
  repacks away).

A backup that cannot be read raises IntegrityError (damage is named, never guessed around).
Memory: the index (compact, ~60 bytes a blob) plus one set of the referenced blob IDs, as
prune needs; the per-blob totals stream from Index.iter_entries.
"""

from __future__ import annotations

from typing import Any

from backupctl.events import Finished, Progress, Reporter, Started
from backupctl.repo.items import read_items
from backupctl.repo.pack import DATA
from backupctl.repo.repository import Repository


def repository_stats(repo: Repository, reporter: Reporter) -> dict[str, Any]:
    with repo.lock(exclusive=False, operation="stats"):
        repo.load_index(reload=True)
        index = repo.index
        blobs = data_blobs = stored = raw = 0
        for _pack_id, e in index.iter_entries():  # every copy, one at a time: no per-pack lists
            blobs += 1
            data_blobs += e.type == DATA
            stored += e.length
            raw += e.raw_length
        indexed_packs = index.packs()
        listed = {info.name.rsplit("/", 1)[-1]: info.size for info in repo.dest.list("data/")}
        snapshots = repo.manifest_ids()
        reporter.emit(Started("stats", repo.id[:12], total_files=len(snapshots)))
        referenced: set[bytes] = set()
        logical = 0
        for n, backup_id in enumerate(snapshots, 1):
            manifest = repo.load_manifest(backup_id)
            for src in manifest.get("sources", []):
                tree = [bytes.fromhex(b) for b in src.get("tree", [])]
                referenced.update(tree)
                for item in read_items(repo, tree):
                    for chunk in item.chunks:
                        loc = index.lookup(chunk)
                        logical += loc.raw_length if loc is not None else 0
                    referenced.update(item.chunks)
            reporter.emit(Progress(0, n, 0, len(snapshots), backup_id[:12]))
        ref_raw = ref_data_raw = ref_data_stored = 0
        for blob_id in referenced:
            loc = index.lookup(blob_id)
            if loc is None:
                continue
            ref_raw += loc.raw_length
            if loc.type == DATA:
                ref_data_raw += loc.raw_length
                ref_data_stored += loc.length
        reporter.emit(Finished("stats", repo.id[:12]))
        return {
            "snapshots": len(snapshots),
            "index_files": len(repo.index_ids),
            "blobs": blobs,
            "data_blobs": data_blobs,
            "tree_blobs": blobs - data_blobs,
            "blob_bytes": stored,
            "raw_bytes": raw,
            "packs": len(indexed_packs),
            "pack_bytes": sum(listed.values()),
            "packs_unindexed": len(set(listed) - indexed_packs),
            "referenced_blobs": len(referenced),
            "referenced_raw_bytes": ref_raw,
            "logical_bytes": logical,
            "unused_bytes": stored
            - sum(loc.length for b in referenced if (loc := index.lookup(b)) is not None),
            "dedup_ratio": round(logical / ref_data_raw, 4) if ref_data_raw else None,
            "compression_ratio": round(ref_data_raw / ref_data_stored, 4) if ref_data_stored else None,
        }
