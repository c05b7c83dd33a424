"""A read-only pack ID -> blob entries view over the in-memory index's columns.

Used by prune, repack, check and repair (via Index.blobs_by_pack) to see which blobs each
pack holds without building a dict of lists: one array of row numbers ordered by pack
(4 bytes a blob), each pack's list built only when asked for (issue 14, docs/performance.md).
It is given the index's columns rather than the index itself, so that repo/index.py can
build it without the two modules importing each other.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Mapping

from backupctl.repo.index_rows import DEAD, KEY, Hit
from backupctl.repo.pack import BlobEntry


class PackMap(Mapping[str, list[BlobEntry]]):
    """pack ID -> its entries, read from an Index's columns through one array of row
    numbers ordered by pack (a counting sort: 4 bytes a blob, built once). The rows are
    those indexed when it was made; each pack's list is built on access, entries in the
    order the blobs were first indexed, a blob's further copies at its position."""

    def __init__(
        self,
        keys: bytearray,
        pack: array[int],
        columns: tuple[array[int], array[int], array[int], bytearray],
        packs: list[str],
        types: list[str],
        pack_no: dict[str, int],
        more: Iterable[tuple[int, bytes, Hit]],
    ) -> None:
        """The index's columns as they are now (keys, pack numbers, (offset, length, raw
        length, type number)), its pack IDs, type names and pack numbers, and its further
        copies as (row of the blob, blob ID, hit) in the index's order."""
        self._keys, self._pack = keys, pack
        self._cols = columns
        self._types = types
        npacks = len(packs)
        start = array("Q", bytes(8 * (npacks + 1)))
        # further copies: pack number -> [(row of the blob, hit)], in row order
        self._more: dict[int, list[tuple[int, bytes, Hit]]] = {}
        for no in self._pack:
            if no != DEAD:
                start[no + 1] += 1
        for r, blob_id, h in more:
            self._more.setdefault(h[0], []).append((r, blob_id, h))
        for lst in self._more.values():
            lst.sort(key=lambda x: x[0])
        for no in range(npacks):
            start[no + 1] += start[no]
        order = array("I", bytes(4 * start[npacks]))
        pos = array("Q", start)
        for r, no in enumerate(self._pack):
            if no != DEAD:
                order[pos[no]] = r
                pos[no] += 1
        self._start, self._order = start, order
        self._ids = [pid for no, pid in enumerate(packs) if start[no + 1] > start[no] or no in self._more]
        self._pack_no = pack_no

    def __len__(self) -> int:
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __contains__(self, pack_id: object) -> bool:
        no = self._pack_no.get(pack_id)  # type: ignore[call-overload]
        return no is not None and (self._start[no + 1] > self._start[no] or no in self._more)

    def __getitem__(self, pack_id: str) -> list[BlobEntry]:
        no = self._pack_no.get(pack_id)
        if no is None or pack_id not in self:
            raise KeyError(pack_id)
        keys, types = self._keys, self._types
        off, len_, raw, type_ = self._cols
        primary = [
            (r, BlobEntry(types[type_[r]], bytes(keys[r * KEY : (r + 1) * KEY]), off[r], len_[r], raw[r]))
            for r in self._order[self._start[no] : self._start[no + 1]]
        ]
        further = [
            (r, BlobEntry(h[4], blob_id, h[1], h[2], h[3])) for r, blob_id, h in self._more.get(no, ())
        ]
        if not further:
            return [e for _r, e in primary]
        return [e for _r, e in sorted(primary + further, key=lambda x: x[0])]
