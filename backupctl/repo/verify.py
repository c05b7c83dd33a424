"""Reading back every blob of a backup: authentication, decompression and ID checks,
and the authenticated header of every pack the backup uses (a pack whose header is
damaged cannot be re-indexed, so it is reported even when its blobs still read back).

Every damaged or missing object is named; verification does not stop at the first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backupctl.errors import IntegrityError
from backupctl.events import Finished, Progress, Reporter, Started
from backupctl.records import Manifest
from backupctl.repo.items import read_items
from backupctl.repo.pack import pack_name
from backupctl.repo.repository import Repository


def verify_manifest(repo: Repository, manifest: Manifest, reporter: Reporter) -> dict[str, Any]:
    errors: list[str] = []
    checked = 0
    checked_bytes = 0
    seen: set[bytes] = set()
    used: set[bytes] = set()  # every blob (tree and data) the backup needs

    def check(blob_id: bytes) -> tuple[int, str | None]:
        try:
            return len(repo.load_blob(blob_id)), None
        except IntegrityError as exc:
            return 0, exc.message

    # Progress counts blobs (files_done/total_files) and their bytes; the total grows as each
    # source's item stream is read, so it is an estimate until the last source.
    sources = manifest.get("sources", [])
    subject = str(manifest.get("id", ""))[:12]
    reporter.emit(Started("verify", subject, total_files=0))
    total_blobs = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        for n_src, src in enumerate(sources, 1):
            tree = [bytes.fromhex(b) for b in src.get("tree", [])]
            used.update(tree)
            try:
                items = list(read_items(repo, tree))
            except IntegrityError as exc:
                errors.append(f"tree of source {src.get('method')}: {exc.message}")
                continue
            checked += len(tree)
            chunks = []
            for item in items:
                for c in item.chunks:
                    if c not in seen:
                        seen.add(c)
                        chunks.append(c)
            used.update(chunks)
            total_blobs = checked + len(chunks)
            last_source = n_src == len(sources)
            reporter.emit(Progress(checked_bytes, checked, 0, total_blobs, estimate=not last_source))
            for size, problem in pool.map(check, chunks):
                checked += 1
                checked_bytes += size
                if problem:
                    errors.append(problem)
                if checked % 64 == 0:
                    reporter.emit(Progress(checked_bytes, checked, 0, total_blobs, estimate=not last_source))
        reporter.emit(Progress(checked_bytes, checked, 0, checked))
        errors.extend(_check_headers(repo, used, pool))
    reporter.emit(Finished("verify", subject, ok=not errors))
    return {"ok": not errors, "blobs_checked": checked, "bytes_checked": checked_bytes, "errors": errors}


def _check_headers(repo: Repository, blobs: set[bytes], pool: ThreadPoolExecutor) -> list[str]:
    """Authenticate the header of every pack holding one of `blobs`, and check that it lists
    each of them where the index says."""
    wanted: dict[str, list[tuple[bytes, int, int]]] = {}
    for blob_id in blobs:
        loc = repo.index.lookup(blob_id)
        if loc is not None:  # a blob missing from the index is already reported
            wanted.setdefault(loc.pack_id, []).append((blob_id, loc.offset, loc.length))

    def one(pack_id: str) -> str | None:
        try:
            entries = repo.read_pack_header(pack_id)
        except IntegrityError as exc:
            return exc.message
        listed = {(e.blob_id, e.offset, e.length) for e in entries}
        absent = [b for b in wanted[pack_id] if b not in listed]
        if absent:
            return f"{pack_name(pack_id)}: header does not list blob {absent[0][0].hex()[:16]} where the index has it"
        return None

    return [p for p in pool.map(one, sorted(wanted)) if p]
