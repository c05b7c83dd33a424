"""Copying a backup from the primary repository to other destinations.

Every destination holds a complete, self-sufficient repository: the same config and
key slots (so the same master keys and therefore byte-identical objects), the packs a
backup needs, an index file for them, and the manifest. Upload order mirrors a
backup's: packs -> index -> manifest, so an interrupted upload is invisible at the
destination and a retry sends only what is still missing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blake3

from backupctl.destinations.base import Destination
from backupctl.engine.items import read_items
from backupctl.errors import IntegrityError
from backupctl.events import Progress, Reporter
from backupctl.repo.index import index_doc
from backupctl.repo.pack import BlobEntry, pack_name
from backupctl.repo.repository import Repository


def needed_packs(repo: Repository, manifest: dict[str, Any]) -> dict[str, list[BlobEntry]]:
    """Pack ID -> all of that pack's entries, for every pack holding a blob of the backup."""
    wanted: set[bytes] = set()
    for src in manifest.get("sources", []):
        tree = [bytes.fromhex(b) for b in src.get("tree", [])]
        wanted.update(tree)
        for item in read_items(repo, tree):
            wanted.update(item.chunks)
    pack_ids: set[str] = set()
    for blob_id in wanted:
        loc = repo.index.lookup(blob_id)
        if loc is None:
            raise IntegrityError(
                f"blob {blob_id.hex()[:16]} of backup {manifest['id'][:8]} is not in the index"
            )
        pack_ids.add(loc.pack_id)
    by_pack = repo.index.blobs_by_pack()
    return {pid: by_pack[pid] for pid in pack_ids}


def upload_backup(
    repo: Repository, manifest: dict[str, Any], target: Destination, reporter: Reporter, connections: int = 4
) -> dict[str, Any]:
    """Make `target` hold this backup. Returns counts; raises DestinationError on failure."""
    t0 = time.monotonic()
    repo.copy_identity_to(target)
    manifest_name = f"snapshots/{manifest['id']}"
    if target.exists(manifest_name):
        return {"state": "uploaded", "objects_sent": 0, "bytes_sent": 0, "duration_s": 0.0}
    packs = needed_packs(repo, manifest)
    present = {info.name for info in target.list("data/")}
    missing = [pid for pid in sorted(packs) if pack_name(pid) not in present]
    sent_bytes = 0
    sent = 0

    def send(pack_id: str) -> int:
        data = repo.dest.get(pack_name(pack_id))
        if blake3.blake3(data).hexdigest() != pack_id:
            raise IntegrityError(f"{pack_name(pack_id)}: damaged in the source repository; not uploaded")
        target.put(pack_name(pack_id), data)
        return len(data)

    with ThreadPoolExecutor(max_workers=max(1, connections), thread_name_prefix="upload") as pool:
        for size in pool.map(send, missing):
            sent += 1
            sent_bytes += size
            reporter.emit(Progress(sent_bytes, sent, current=target.name))
    # One index file for exactly this backup's packs, then the manifest: the commit point.
    data = repo.codec.encode_doc(index_doc(packs), b"index")
    index_name = f"index/{blake3.blake3(data).hexdigest()}"
    if not target.exists(index_name):
        target.put_metadata(index_name, data)
    target.put_metadata(manifest_name, repo.dest.get(manifest_name))
    return {
        "state": "uploaded",
        "objects_sent": sent + 2,
        "bytes_sent": sent_bytes + len(data),
        "duration_s": round(time.monotonic() - t0, 3),
    }
