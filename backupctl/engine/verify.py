"""Reading back every blob of a backup: authentication, decompression and ID checks.

Every damaged or missing object is named; verification does not stop at the first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backupctl.engine.items import read_items
from backupctl.errors import IntegrityError
from backupctl.events import Progress, Reporter
from backupctl.repo.repository import Repository


def verify_manifest(repo: Repository, manifest: dict[str, Any], reporter: Reporter) -> dict[str, Any]:
    errors: list[str] = []
    checked = 0
    checked_bytes = 0
    seen: set[bytes] = set()

    def check(blob_id: bytes) -> tuple[int, str | None]:
        try:
            return len(repo.load_blob(blob_id)), None
        except IntegrityError as exc:
            return 0, exc.message

    with ThreadPoolExecutor(max_workers=4) as pool:
        for src in manifest.get("sources", []):
            tree = [bytes.fromhex(b) for b in src.get("tree", [])]
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
            for size, problem in pool.map(check, chunks):
                checked += 1
                checked_bytes += size
                if problem:
                    errors.append(problem)
                if checked % 64 == 0:
                    reporter.emit(Progress(checked_bytes, checked))
    return {"ok": not errors, "blobs_checked": checked, "bytes_checked": checked_bytes, "errors": errors}
