"""The in-memory index of every blob in the repository: a compact hash table over columns.

Index files (their document format) are encoded and decoded in repo/index_doc.py; the
read-only pack -> blobs view over the columns is repo/packmap.py.

A blob may be stored in more than one pack: two backups racing to store the same new
blob, or a backup storing again a blob whose pack was lost or damaged (see
Repository.exclude_unusable). The index keeps every copy: the first one it read is the
primary (what `lookup` returns), the others are fallbacks for reads (`locations`) and count
as contents of their packs (so prune never deletes the healthy copy as unused).

Memory (issue 14): the index is held in flat columns, not a dict of tuples - one row per
indexed blob: its 32-byte ID in one bytearray and, in parallel arrays, the pack number,
offset, length, raw length (4 bytes each, widened to 8 when a value needs it) and a type
byte (49 bytes), plus an open-addressing hash table of row numbers (4 bytes a slot, at most
half full: 8-16 bytes a blob). About 60 bytes a blob instead of ~300; see
docs/performance.md ("The in-memory index") for the measurements.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from backupctl.repo.index_doc import doc_packs
from backupctl.repo.index_rows import DEAD, KEY, Hit
from backupctl.repo.pack import BlobEntry
from backupctl.repo.packmap import PackMap

_EMPTY = 0  # a free slot of the table; a used one holds row + 1
_TOMB = 0xFFFFFFFF  # a slot whose blob was forgotten (drop): probes go past it, nothing matches it
_MIN_SLOTS = 1 << 10


@dataclass(frozen=True)
class Location:
    pack_id: str
    offset: int
    length: int
    raw_length: int
    type: str


def _column() -> array[int]:
    return array("I")


class Index:
    """blob ID -> location. Thread-safe for concurrent add/lookup.

    Rows are appended by add_pack under the lock and only then entered into the hash table
    (lazily, by the next query, so that loading thousands of index files builds the table
    once, at its final size). `_table` is the tuple (slots, mask, keys) a query reads in one
    step: a reader holding an old tuple sees a consistent older state, and a published slot
    always points at a complete row. Rows never move except when `_compact` rebuilds every
    column (drop, or many duplicate rows), which swaps all of them under the lock; `lookup`,
    `locations` and the bulk readers take the lock, `__contains__` (every chunk of every
    backed-up file) does not and needs only the tuple.
    """

    def __init__(self) -> None:
        self._packs: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._types: list[str] = []
        self._type_no: dict[str, int] = {}
        self._keys = bytearray()
        self._pack = _column()
        self._off = _column()
        self._len = _column()
        self._raw = _column()
        self._type = bytearray()
        self._hashed = 0  # rows below this are in the table (or dead)
        self._live = 0  # blobs in the table
        self._used = 0  # slots in use, tombstones included
        self._dead = 0  # rows that are no blob's primary copy (duplicates, forgotten)
        self._slots = array("I", bytes(4 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        # what a query reads; None when rows were added since (see the class docstring)
        self._table: tuple[array[int], int, bytearray] | None = (self._slots, self._mask, self._keys)
        # blob id -> its further copies (rare, see the module docstring)
        self._more: dict[bytes, list[Hit]] = {}
        # blob id -> the pack whose copy was dropped as unusable (for error messages)
        self.dropped: dict[bytes, str] = {}
        self._lock = threading.Lock()

    # ---- the table ---------------------------------------------------------------

    def __len__(self) -> int:
        with self._lock:
            self._sync()
            return self._live

    def __contains__(self, blob_id: bytes) -> bool:
        t = self._table
        if t is None:
            with self._lock:
                t = self._sync()
        slots, mask, keys = t
        # The hot path: literals instead of KEY/_EMPTY (global lookups cost), one slot read
        # per probe; a tombstone (_TOMB) points past the end, where startswith is False.
        i = hash(blob_id) & mask
        s = slots[i]
        while s:
            if keys.startswith(blob_id, (s - 1) << 5, s << 5):
                return len(blob_id) == 32
            i = (i + 1) & mask
            s = slots[i]
        return False

    def _slot(self, blob_id: bytes) -> int:
        """The slot holding `blob_id`, or -1. Lock held, table in sync."""
        assert self._table is not None
        slots, mask, keys = self._table
        if len(blob_id) != KEY:
            return -1
        i = hash(blob_id) & mask
        while True:
            r = slots[i]
            if r == _EMPTY:
                return -1
            if keys.startswith(blob_id, (r - 1) * KEY, r * KEY):
                return i
            i = (i + 1) & mask

    def _row(self, blob_id: bytes) -> int:
        i = self._slot(blob_id)
        return -1 if i < 0 else self._table[0][i] - 1  # type: ignore[index]

    def _sync(self) -> tuple[array[int], int, bytearray]:
        """Enter the rows added since the last query into the table (lock held)."""
        t = self._table
        if t is not None:
            return t
        n = len(self._pack)
        slots, mask = self._slots, self._mask
        if 2 * (self._used + n - self._hashed) > mask + 1:
            return self._rebuild(n)
        self._insert_rows(slots, mask, self._hashed, n)
        self._hashed = n
        self._table = (slots, mask, self._keys)
        if self._dead > max(4096, self._live):
            self._compact()
        assert self._table is not None
        return self._table

    def _rebuild(self, n: int) -> tuple[array[int], int, bytearray]:
        """A new table for rows [0, n), sized to be at most half full (lock held)."""
        want = _MIN_SLOTS
        while want < 2 * (self._live + n - self._hashed):
            want *= 2
        slots = array("I", bytes(4 * want))
        mask = want - 1
        self._used = self._live = 0
        keys = self._keys
        pack = self._pack
        for r in range(self._hashed):
            if pack[r] != DEAD:
                i = hash(bytes(keys[r * KEY : (r + 1) * KEY])) & mask
                while slots[i]:
                    i = (i + 1) & mask
                slots[i] = r + 1
                self._used += 1
                self._live += 1
        self._slots, self._mask = slots, mask
        self._insert_rows(slots, mask, self._hashed, n)
        self._hashed = n
        self._table = (slots, mask, keys)
        if self._dead > max(4096, self._live):
            self._compact()
        assert self._table is not None
        return self._table

    def _insert_rows(self, slots: array[int], mask: int, lo: int, hi: int) -> None:
        """Rows [lo, hi) in order: a blob already indexed makes its row a further copy
        (or nothing, when it is the same pack) and the row dead."""
        keys, pack = self._keys, self._pack
        for r in range(lo, hi):
            key = bytes(keys[r * KEY : (r + 1) * KEY])
            i = hash(key) & mask
            while True:
                s = slots[i]
                if s == _EMPTY:
                    slots[i] = r + 1
                    self._used += 1
                    self._live += 1
                    break
                if keys.startswith(key, (s - 1) * KEY, s * KEY):
                    no = pack[r]
                    if pack[s - 1] != no:
                        more = self._more.setdefault(key, [])
                        if all(h[0] != no for h in more):
                            more.append(self._hit(r))
                    pack[r] = DEAD
                    self._dead += 1
                    break
                i = (i + 1) & mask

    def _compact(self) -> None:
        """Rebuild every column without the dead rows, and the table (lock held, in sync)."""
        old = (self._keys, self._pack, self._off, self._len, self._raw, self._type)
        keys, pack, off, len_, raw, type_ = (
            bytearray(),
            _column(),
            array(self._off.typecode),
            array(self._len.typecode),
            array(self._raw.typecode),
            bytearray(),
        )
        for r, no in enumerate(old[1]):
            if no != DEAD:
                keys += old[0][r * KEY : (r + 1) * KEY]
                pack.append(no)
                off.append(old[2][r])
                len_.append(old[3][r])
                raw.append(old[4][r])
                type_.append(old[5][r])
        self._keys, self._pack, self._off, self._len, self._raw, self._type = (
            keys,
            pack,
            off,
            len_,
            raw,
            type_,
        )
        self._dead = 0
        self._hashed = 0
        self._live = 0
        self._rebuild(len(pack))

    # ---- adding ------------------------------------------------------------------

    def add_pack(self, pack_id: str, entries: Iterable[BlobEntry]) -> None:
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is None:
                no = self._pack_no[pack_id] = len(self._packs)
                self._packs.append(pack_id)
            keys, pack, off, len_, raw, type_ = (
                self._keys,
                self._pack,
                self._off,
                self._len,
                self._raw,
                self._type,
            )
            type_no = self._type_no
            added = False
            for e in entries:
                blob_id = e.blob_id
                if len(blob_id) != KEY or not isinstance(blob_id, bytes):
                    raise ValueError(f"blob ID of {len(blob_id)} bytes, not {KEY}")
                t = type_no.get(e.type)
                if t is None:
                    if len(self._types) > 255:
                        raise ValueError("more than 256 blob types")
                    t = type_no[e.type] = len(self._types)
                    self._types.append(e.type)
                n = len(pack)
                try:
                    off.append(e.offset)
                    len_.append(e.length)
                    raw.append(e.raw_length)
                except OverflowError:
                    self._widen(n, e)
                    off, len_, raw = self._off, self._len, self._raw
                keys += blob_id
                type_.append(t)
                pack.append(no)
                added = True
            if added:
                self._table = None  # the next query enters the new rows

    def _widen(self, n: int, e: BlobEntry) -> None:
        """An offset or length past 4 GiB: the three columns become 8 bytes a value."""
        for name in ("_off", "_len", "_raw"):
            col = getattr(self, name)
            del col[n:]
            if col.typecode != "Q":
                setattr(self, name, array("Q", col))
        try:
            self._off.append(e.offset)
            self._len.append(e.length)
            self._raw.append(e.raw_length)
        except OverflowError:
            for name in ("_off", "_len", "_raw"):
                del getattr(self, name)[n:]
            raise ValueError(f"negative or huge offset/length in the index: {e}") from None

    def add_doc(self, doc: dict[str, Any]) -> None:
        for pack_id, entries in doc_packs(doc):
            self.add_pack(pack_id, entries)

    # ---- queries -----------------------------------------------------------------

    def _hit(self, r: int) -> Hit:
        return (self._pack[r], self._off[r], self._len[r], self._raw[r], self._types[self._type[r]])

    def _location(self, h: Hit) -> Location:
        return Location(self._packs[h[0]], h[1], h[2], h[3], h[4])

    def lookup(self, blob_id: bytes) -> Location | None:
        with self._lock:
            self._sync()
            r = self._row(blob_id)
            return None if r < 0 else self._location(self._hit(r))

    def locations(self, blob_id: bytes) -> list[Location]:
        """Every known copy of a blob, the primary first; [] when it is not indexed."""
        with self._lock:
            self._sync()
            r = self._row(blob_id)
            if r < 0:
                return []
            return [self._location(h) for h in (self._hit(r), *self._more.get(blob_id, ()))]

    def packs(self) -> set[str]:
        return set(self._packs)

    def iter_entries(self) -> Iterator[tuple[str, BlobEntry]]:
        """(pack ID, entry) for every copy of every blob, without building any mapping:
        memory stays constant (used by `repository stats`)."""
        with self._lock:
            self._sync()
            # the columns as they are now (a later _compact swaps in new ones; rows added
            # later are not seen); the further copies are few
            keys, pack, off, len_, raw, type_ = (
                self._keys,
                self._pack,
                self._off,
                self._len,
                self._raw,
                self._type,
            )
            n = len(pack)
            more = {k: list(v) for k, v in self._more.items()}
            packs, types = list(self._packs), list(self._types)
        for r in range(n):
            no = pack[r]
            if no == DEAD:
                continue
            blob_id = bytes(keys[r * KEY : (r + 1) * KEY])
            yield packs[no], BlobEntry(types[type_[r]], blob_id, off[r], len_[r], raw[r])
            for h in more.get(blob_id, ()):
                yield packs[h[0]], BlobEntry(h[4], blob_id, h[1], h[2], h[3])

    def blobs_by_pack(self) -> PackMap:
        """pack ID -> the blobs it holds, every copy counted (a pack holding only a second
        copy of a blob still holds live data). A read-only mapping over the columns (4
        bytes a blob, not a dict of lists): each pack's list is built when asked for."""
        with self._lock:
            self._sync()
            more = [(self._row(b), b, h) for b, hits in self._more.items() for h in hits]
            columns = (self._off, self._len, self._raw, self._type)
            return PackMap(self._keys, self._pack, columns, self._packs, self._types, self._pack_no, more)

    def pack_extents(self) -> dict[str, int]:
        """pack ID -> the end of its last indexed blob (a pack shorter than that is damaged)."""
        with self._lock:
            self._sync()
            ends = array("Q", bytes(8 * len(self._packs)))
            for no, offset, length in zip(self._pack, self._off, self._len, strict=True):
                if no != DEAD and offset + length > ends[no]:
                    ends[no] = offset + length
            for hits in self._more.values():
                for no, offset, length, _raw, _type in hits:
                    if offset + length > ends[no]:
                        ends[no] = offset + length
            return {self._packs[no]: end for no, end in enumerate(ends) if end}

    def drop(self, packs: Iterable[str] = (), copies: Mapping[bytes, Iterable[str]] | None = None) -> int:
        """Forget copies that must not be used: every copy in `packs` (missing or truncated),
        and the copies `copies` names (blob ID -> packs where it was found damaged). A blob
        keeps its healthy copies; one with none left is no longer indexed, so the next
        backup stores it again instead of deduplicating against it. Returns how many blobs
        were forgotten entirely."""
        copies = copies or {}
        with self._lock:
            self._sync()
            bad_nos = {self._pack_no[p] for p in packs if p in self._pack_no}
            bad_copies = {
                blob_id: {self._pack_no[p] for p in where if p in self._pack_no}
                for blob_id, where in copies.items()
            }
            if not bad_nos and not any(bad_copies.values()):
                return 0
            # The candidates in the order the dict model visits them: rows in order.
            # the blobs with a copy in a bad pack or named in `copies`, in row order (the
            # order the dict model visits them: it decides the order of `dropped`)
            rows = {r for b in (*bad_copies, *self._more) if (r := self._row(b)) >= 0}
            if bad_nos:
                rows.update(r for r, no in enumerate(self._pack) if no in bad_nos)
            forgotten = 0
            slots = self._table[0]  # type: ignore[index]
            for r in sorted(rows):
                blob_id = bytes(self._keys[r * KEY : (r + 1) * KEY])
                hit = self._hit(r)
                bad = bad_nos | bad_copies.get(blob_id, set())
                every = [hit, *self._more.get(blob_id, ())]
                good = [h for h in every if h[0] not in bad]
                if len(good) == len(every):
                    continue
                self._more.pop(blob_id, None)
                if not good:
                    slots[self._slot(blob_id)] = _TOMB
                    self._pack[r] = DEAD
                    self._dead += 1
                    self._live -= 1
                    self.dropped[blob_id] = self._packs[hit[0]]
                    forgotten += 1
                    continue
                no, offset, length, raw_length, type_ = good[0]
                self._pack[r] = no
                self._off[r], self._len[r], self._raw[r] = offset, length, raw_length
                self._type[r] = self._type_no[type_]
                if len(good) > 1:
                    self._more[blob_id] = good[1:]
            if self._dead > max(4096, self._live):
                self._compact()
            return forgotten
