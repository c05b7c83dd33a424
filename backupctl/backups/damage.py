"""What this host has seen damaged in a repository, so that no later backup reuses it.

A backup deduplicates against the index: a blob the index lists is not stored again. If
the copy the index points at is lost or damaged, a new backup that reuses it is listed
Completed and yet cannot be restored - the one thing backupctl must never do. Missing and
truncated packs are found by one listing at the start of every backup
(Repository.exclude_unusable). A flipped byte inside a pack cannot be seen without reading
it; every read that finds one (restore, verify, `repository check --read-data`, drills)
reports it through Repository.on_damage, and this module keeps it in the local state
database, keyed by repository ID, so that the next backup on this host stores that blob
again. Damage that nothing has read yet is found by `repository check --read-data` (or a
subset of it on a schedule): docs/design.md, "What Completed means".
"""

from __future__ import annotations

import json
import threading

from backupctl.backups.state import StateDB


class DamageMemory:
    """Blob ID -> the packs where a copy of it was found damaged, per repository."""

    def __init__(self, state: StateDB) -> None:
        self._state = state
        self._lock = threading.Lock()

    @staticmethod
    def _key(repository_id: str) -> str:
        return f"damaged-blobs:{repository_id}"

    def remember(self, repository_id: str, blob_id: bytes, pack_id: str) -> None:
        with self._lock:
            known = self._load(repository_id)
            packs = known.setdefault(blob_id.hex(), [])
            if pack_id not in packs:
                packs.append(pack_id)
                self._state.set(self._key(repository_id), json.dumps(known, sort_keys=True))

    def damaged(self, repository_id: str) -> dict[bytes, list[str]]:
        with self._lock:
            return {bytes.fromhex(blob): packs for blob, packs in self._load(repository_id).items()}

    def _load(self, repository_id: str) -> dict[str, list[str]]:
        raw = self._state.get(self._key(repository_id))
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:  # a damaged record only forgets what it remembered
            return {}
        return doc if isinstance(doc, dict) else {}
