"""The in-memory index of every blob in the repository, and index files.

Index file ``index/<hex BLAKE3 of the object>``, encoded with aad=b"index"::

    {"v": 1, "packs": [{"id": PACK_ID, "blobs": [[type, blob_id_hex, offset, length, raw_length], ...]}],
     "supersedes": [INDEX_ID, ...]}

A pack may appear in several index files; any of them is valid. `supersedes` lists
index files that this one replaces (written by prune before it deletes them).

A blob may be stored in more than one pack: two backups racing to store the same new
blob, or a backup storing again a blob whose pack was lost or damaged (see
Repository.exclude_unusable). The index keeps every copy: the first one it read is the
primary (what `lookup` returns), the others are fallbacks for reads (`locations`) and count
as contents of their packs (so prune never deletes the healthy copy as unused).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from backupctl.repo.pack import BlobEntry

_Hit = tuple[int, int, int, int, str]  # (pack number, offset, length, raw length, type)


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
        self._blobs: dict[bytes, _Hit] = {}
        # blob id -> its further copies (rare, see the module docstring)
        self._more: dict[bytes, list[_Hit]] = {}
        # blob id -> the pack whose copy was dropped as unusable (for error messages)
        self.dropped: dict[bytes, str] = {}
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
                hit = (no, e.offset, e.length, e.raw_length, e.type)
                first = self._blobs.setdefault(e.blob_id, hit)
                if first[0] != no:
                    more = self._more.setdefault(e.blob_id, [])
                    if all(h[0] != no for h in more):
                        more.append(hit)

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

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every known copy of a blob, the primary first; [] when it is not indexed."""
        hit = self._blobs.get(blob_id)
        if hit is None:
            return []
        return [Location(self._packs[h[0]], *h[1:]) for h in (hit, *self._more.get(blob_id, ()))]

    def packs(self) -> set[str]:
        return set(self._packs)

    def blobs_by_pack(self) -> dict[str, list[BlobEntry]]:
        """pack ID -> the blobs it holds, every copy counted (a pack holding only a second
        copy of a blob still holds live data)."""
        out: dict[str, list[BlobEntry]] = {}
        for blob_id, hit in self._blobs.items():
            for no, offset, length, raw_length, type_ in (hit, *self._more.get(blob_id, ())):
                out.setdefault(self._packs[no], []).append(
                    BlobEntry(type_, blob_id, offset, length, raw_length)
                )
        return out

    def pack_extents(self) -> dict[str, int]:
        """pack ID -> the end of its last indexed blob (a pack shorter than that is damaged)."""
        ends: dict[int, int] = {}
        with self._lock:
            for blob_id, hit in self._blobs.items():
                for no, offset, length, _raw, _type in (hit, *self._more.get(blob_id, ())):
                    if offset + length > ends.get(no, 0):
                        ends[no] = offset + length
        return {self._packs[no]: end for no, end in ends.items()}

    def drop(self, packs: Iterable[str] = (), copies: Mapping[bytes, Iterable[str]] | None = None) -> int:
        """Forget copies that must not be used: every copy in `packs` (missing or truncated),
        and the copies `copies` names (blob ID -> packs where it was found damaged). A blob
        keeps its healthy copies; one with none left is no longer indexed, so the next
        backup stores it again instead of deduplicating against it. Returns how many blobs
        were forgotten entirely."""
        copies = copies or {}
        with self._lock:
            bad_nos = {self._pack_no[p] for p in packs if p in self._pack_no}
            bad_copies = {
                blob_id: {self._pack_no[p] for p in where if p in self._pack_no}
                for blob_id, where in copies.items()
            }
            if not bad_nos and not any(bad_copies.values()):
                return 0
            candidates = (
                self._blobs if bad_nos else {b: self._blobs[b] for b in bad_copies if b in self._blobs}
            )
            forgotten = 0
            for blob_id, hit in list(candidates.items()):
                bad = bad_nos | bad_copies.get(blob_id, set())
                every = [hit, *self._more.get(blob_id, ())]
                good = [h for h in every if h[0] not in bad]
                if len(good) == len(every):
                    continue
                self._more.pop(blob_id, None)
                if not good:
                    del self._blobs[blob_id]
                    self.dropped[blob_id] = self._packs[hit[0]]
                    forgotten += 1
                    continue
                self._blobs[blob_id] = good[0]
                if len(good) > 1:
                    self._more[blob_id] = good[1:]
            return forgotten


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
