"""The in-memory index of every blob in the repository, and index files.

Index file ``index/<hex BLAKE3 of the object>``, encoded with aad=b"index"::

    {"v": 1, "packs": [{"id": PACK_ID, "blobs": [[type, blob_id_hex, offset, length, raw_length], ...]}],
     "supersedes": [INDEX_ID, ...]}

A pack may appear in several index files; any of them is valid. `supersedes` lists
index files that this one replaces (written by prune before it deletes them).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass

from backupctl.repo.pack import BlobEntry


@dataclass(frozen=True)
class Location:
    pack_id: str
    offset: int
    length: int
    raw_length: int
    type: str


class Index:
    """blob ID -> location. Thread-safe for concurrent add/lookup."""

    def __init__(self, skip_packs: Iterable[str] = ()) -> None:
        # Packs known to be missing or truncated: their entries are never added, so a blob
        # that another (healthy) pack also holds is found there.
        self._skip = frozenset(skip_packs)
        self._packs: list[str] = []
        self._pack_no: dict[str, int] = {}
        # blob id -> (pack number, offset, length, raw length, type)
        self._blobs: dict[bytes, tuple[int, int, int, int, str]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def add_pack(self, pack_id: str, entries: Iterable[BlobEntry]) -> None:
        if pack_id in self._skip:
            return
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is None:
                no = self._pack_no[pack_id] = len(self._packs)
                self._packs.append(pack_id)
            for e in entries:
                self._blobs.setdefault(e.blob_id, (no, e.offset, e.length, e.raw_length, e.type))

    def add_doc(self, doc: dict) -> None:
        for pack in doc.get("packs", []):
            self.add_pack(
                pack["id"], (BlobEntry(t, bytes.fromhex(i), o, ln, r) for t, i, o, ln, r in pack["blobs"])
            )

    def lookup(self, blob_id: bytes) -> Location | None:
        hit = self._blobs.get(blob_id)
        if hit is None:
            return None
        no, offset, length, raw_length, type_ = hit
        return Location(self._packs[no], offset, length, raw_length, type_)

    def packs(self) -> set[str]:
        return set(self._packs)

    def pack_extents(self) -> dict[str, int]:
        """pack ID -> the end of its last indexed blob (a pack shorter than that is damaged)."""
        ends: dict[int, int] = {}
        with self._lock:
            for no, offset, length, _raw, _type in self._blobs.values():
                if offset + length > ends.get(no, 0):
                    ends[no] = offset + length
        return {self._packs[no]: end for no, end in ends.items()}

    def drop_packs(self, pack_ids: Iterable[str]) -> int:
        """Forget every blob located in these packs; returns how many were forgotten.

        Used when a pack the index names is missing or truncated: its blobs must not be
        deduplicated against, so the next backup stores them again."""
        with self._lock:
            numbers = {self._pack_no[p] for p in pack_ids if p in self._pack_no}
            gone = [blob_id for blob_id, hit in self._blobs.items() if hit[0] in numbers]
            for blob_id in gone:
                del self._blobs[blob_id]
            return len(gone)

    def blobs_by_pack(self) -> dict[str, list[BlobEntry]]:
        out: dict[str, list[BlobEntry]] = {}
        for blob_id, (no, offset, length, raw_length, type_) in self._blobs.items():
            out.setdefault(self._packs[no], []).append(BlobEntry(type_, blob_id, offset, length, raw_length))
        return out


def index_doc(packs: dict[str, list[BlobEntry]], supersedes: Iterable[str] = ()) -> dict:
    return {
        "v": 1,
        "packs": [
            {
                "id": pid,
                "blobs": [[e.type, e.blob_id.hex(), e.offset, e.length, e.raw_length] for e in entries],
            }
            for pid, entries in sorted(packs.items())
        ],
        "supersedes": sorted(supersedes),
    }
