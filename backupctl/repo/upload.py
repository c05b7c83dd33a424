"""Copying a backup from the primary repository to other destinations.

Every destination holds a complete, self-sufficient repository: the same config and
key slots (so the same master keys and therefore byte-identical objects), the packs a
backup needs, an index file for them, and the manifest. Upload order mirrors a
backup's: packs -> index -> manifest, so an interrupted upload is invisible at the
destination and a retry sends only what is still missing.

Guarantees (issue 11, item 3):
- the upload holds a shared lock on the target repository, like a backup, so a
  delete/prune there (exclusive) can never remove packs between our packs and our
  manifest; either side that meets the other's lock fails loudly and can be retried;
- "uploaded" is true: before the manifest is written, every pack the backup needs is
  confirmed on the target at the primary's size, and every blob the backup needs is
  found in the target's own index in a pack that is there;
- nothing is trusted from earlier runs: a re-upload looks at what the target really
  holds (even when the manifest is already there) and sends what is missing.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import blake3

from backupctl.destinations.base import Destination, NotFound
from backupctl.errors import IntegrityError
from backupctl.events import Finished, Progress, Reporter, Started
from backupctl.records import Manifest
from backupctl.repo.items import read_items
from backupctl.repo.pack import BlobEntry, pack_name
from backupctl.repo.repository import Repository


def needed_blobs(repo: Repository, manifest: Manifest) -> set[bytes]:
    """Every blob a backup references: its tree blobs and its files' chunks."""
    wanted: set[bytes] = set()
    for src in manifest.get("sources", []):
        tree = [bytes.fromhex(b) for b in src.get("tree", [])]
        wanted.update(tree)
        for item in read_items(repo, tree):
            wanted.update(item.chunks)
    return wanted


def needed_packs(
    repo: Repository, manifest: Manifest, wanted: set[bytes] | None = None
) -> dict[str, list[BlobEntry]]:
    """Pack ID -> all of that pack's entries, for every pack holding a blob of the backup."""
    if wanted is None:
        wanted = needed_blobs(repo, manifest)
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


def _sizes(dest: Destination) -> dict[str, int]:
    return {info.name: info.size for info in dest.list("data/")}


def _unconfirmed(
    remote: Repository, wanted: set[bytes], expected: dict[str, int], present: dict[str, int]
) -> list[str]:
    """What the target still lacks: packs absent or of the wrong size, blobs it does not index."""
    problems = [
        f"{pack_name(pid)} is {'missing' if pack_name(pid) not in present else 'of the wrong size'}"
        for pid, size in sorted(expected.items())
        if present.get(pack_name(pid)) != size
    ]
    for blob_id in sorted(wanted):
        loc = remote.index.lookup(blob_id)
        if loc is None:
            problems.append(f"blob {blob_id.hex()[:16]} is not in the target's index")
        elif pack_name(loc.pack_id) not in present:
            problems.append(
                f"blob {blob_id.hex()[:16]} is indexed in {pack_name(loc.pack_id)}, which is missing"
            )
    return problems


def upload_backup(
    repo: Repository, manifest: Manifest, target: Destination, reporter: Reporter, connections: int = 4
) -> dict[str, Any]:
    """Make `target` hold this backup, confirmed. Returns counts; raises on failure.

    Raises LockedError when a delete/prune holds the target, DestinationError when the
    target fails, IntegrityError when the copy cannot be confirmed afterwards.
    """
    t0 = time.monotonic()
    repo.copy_identity_to(target)
    # The same master keys: the target's index files decode with the primary's codec.
    remote = Repository(target, repo.cipher.keys, repo.config, repo.codec.level)
    manifest_name = f"snapshots/{manifest['id']}"
    with remote.lock(exclusive=False, operation=f"upload {manifest['id'][:8]}"):
        wanted = needed_blobs(repo, manifest)
        packs = needed_packs(repo, manifest, wanted)
        primary_sizes = _sizes(repo.dest)
        expected: dict[str, int] = {}
        for pid in packs:
            size = primary_sizes.get(pack_name(pid))
            if size is None:
                raise IntegrityError(f"{pack_name(pid)}: missing from the source repository; not uploaded")
            expected[pid] = size
        present = _sizes(target)
        missing = [pid for pid in sorted(packs) if present.get(pack_name(pid)) != expected[pid]]
        sent_bytes = 0
        sent = 0
        subject = f"{manifest['id'][:12]} to {target.name}"
        to_send = sum(expected[pid] for pid in missing)
        reporter.emit(Started("upload", subject, total_bytes=to_send, total_files=len(missing)))
        reporter.emit(Progress(0, 0, to_send, len(missing), current=target.name))

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
                reporter.emit(Progress(sent_bytes, sent, to_send, len(missing), current=target.name))
        present = _sizes(target)
        remote.load_index(reload=True)
        if _unconfirmed(remote, wanted, {}, present):
            # One index file for exactly this backup's packs (only when the target lacks one).
            index_id = remote.write_index(packs)
            sent += 1
            sent_bytes += target.stat(f"index/{index_id}").size
            remote.load_index(reload=True)
        # The confirmation: only now may the manifest (the commit point) be written.
        problems = _unconfirmed(remote, wanted, expected, present)
        if problems:
            raise IntegrityError(
                f"the copy in {target.name!r} could not be confirmed: {problems[0]}"
                + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""),
                hint="run the upload again; `backupctl backup verify ID --destination NAME` checks the copy",
            )
        data = repo.dest.get(manifest_name)
        try:
            current = target.get(manifest_name)
        except NotFound:
            current = None
        if current != data:
            target.put_metadata(manifest_name, data)
            sent += 1
            sent_bytes += len(data)
    reporter.emit(Finished("upload", subject))
    return {
        "state": "uploaded",
        "objects_sent": sent,
        "bytes_sent": sent_bytes,
        "duration_s": round(time.monotonic() - t0, 3),
    }
