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

    def __init__(self) -> None:
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
