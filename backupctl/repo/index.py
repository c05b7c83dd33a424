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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backupctl.repo.index_doc import doc_columns
from backupctl.repo.index_rows import DEAD, ID_HASH, KEY, Hit, hash_batches, key_batches
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

    def row_count(self) -> int:
        """Rows added so far, duplicates included (0: a new, empty index)."""
        return len(self._pack)

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
        if len(blob_id) != 32:
            return False
        i = ID_HASH(blob_id)[0] & mask
        s = slots[i]
        while s:
            if keys.startswith(blob_id, (s - 1) << 5, s << 5):
                return True
            i = (i + 1) & mask
            s = slots[i]
        return False

    def _slot(self, blob_id: bytes) -> int:
        """The slot holding `blob_id`, or -1. Lock held, table in sync."""
        assert self._table is not None
        slots, mask, keys = self._table
        if len(blob_id) != KEY:
            return -1
        i: int = ID_HASH(blob_id)[0] & mask
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
        for lo, hashes in hash_batches(keys, 0, self._hashed):
            for r, h in enumerate(hashes, lo):
                if pack[r] != DEAD:
                    i = h & mask
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
        added = 0
        for first, ids, hashes in key_batches(keys, lo, hi):
            for r, key, h in zip(range(first, first + len(ids)), ids, hashes, strict=True):
                i = h & mask
                s = slots[i]
                while s:
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
                    s = slots[i]
                else:
                    slots[i] = r + 1
                    added += 1
        self._used += added
        self._live += added

    def _compact(self) -> None:
        """Rebuild every column without the dead rows, and the table (lock held, in sync)."""
        old = [getattr(self, name) for name in self._COLUMNS[:6]]
        keys, pack, type_ = bytearray(), _column(), bytearray()
        off, len_, raw = (array(column.typecode) for column in old[2:5])
        for r, no in enumerate(old[1]):
            if no != DEAD:
                keys += old[0][r * KEY : (r + 1) * KEY]
                pack.append(no)
                off.append(old[2][r])
                len_.append(old[3][r])
                raw.append(old[4][r])
                type_.append(old[5][r])
        for name, column in zip(self._COLUMNS[:6], (keys, pack, off, len_, raw, type_), strict=True):
            setattr(self, name, column)
        self._dead = 0
        self._hashed = 0
        self._live = 0
        self._rebuild(len(pack))

    # ---- the local cache (repo/index_cache.py) ------------------------------------

    _COLUMNS = ("_keys", "_pack", "_off", "_len", "_raw", "_type", "_slots")

    def export_columns(self) -> tuple[dict[str, Any], list[tuple[str, bytearray | array[int]]]]:
        """The whole state, table built: small fields as a JSON-able dict, and the columns
        (to be written as they are). The caller must not add rows until it has written them."""
        with self._lock:
            self._sync()
            state = {
                "packs": self._packs,
                "types": self._types,
                "live": self._live,
                "used": self._used,
                "dead": self._dead,
                "mask": self._mask,
                "more": [[key.hex(), [list(h) for h in hits]] for key, hits in self._more.items()],
                "dropped": [[key.hex(), pack] for key, pack in self.dropped.items()],
            }
            return state, [(name, getattr(self, name)) for name in self._COLUMNS]

    @staticmethod
    def empty_column(typecode: str, count: int) -> bytearray | array[int]:
        """A zero-filled column of `count` values, to be read into (typecode "B": bytes)."""
        if typecode == "B":
            return bytearray(count)
        if typecode not in ("I", "Q"):
            raise ValueError(f"unknown column type {typecode!r}")
        return array(typecode, (0,)) * count

    @classmethod
    def import_columns(cls, state: dict[str, Any], columns: dict[str, Any]) -> Index:
        """The index export_columns described; ValueError when the parts do not fit."""
        index = cls()
        for name in cls._COLUMNS:
            setattr(index, name, columns[name])
        n = len(index._pack)
        mask = int(state["mask"])
        if (
            len(index._keys) != n * KEY
            or not len(index._off) == len(index._len) == len(index._raw) == len(index._type) == n
            or index._pack.typecode != "I"
            or len({index._off.typecode, index._len.typecode, index._raw.typecode}) != 1
            or mask + 1 != len(index._slots)
            or mask & (mask + 1)
        ):
            raise ValueError("the cached index columns do not fit together")
        index._packs = [str(p) for p in state["packs"]]
        index._pack_no = {p: no for no, p in enumerate(index._packs)}
        index._types = [str(t) for t in state["types"]]
        index._type_no = {t: no for no, t in enumerate(index._types)}
        index._live, index._used, index._dead = int(state["live"]), int(state["used"]), int(state["dead"])
        index._hashed, index._mask = n, mask
        index._more = {
            bytes.fromhex(key): [(int(a), int(b), int(c), int(d), str(e)) for a, b, c, d, e in hits]
            for key, hits in state["more"]
        }
        index.dropped = {bytes.fromhex(key): str(pack) for key, pack in state["dropped"]}
        index._table = (index._slots, mask, index._keys)
        return index

    # ---- adding ------------------------------------------------------------------

    def add_pack(self, pack_id: str, entries: Iterable[BlobEntry]) -> None:
        rows = list(entries)
        for e in rows:
            if not isinstance(e.blob_id, bytes) or len(e.blob_id) != KEY:
                raise ValueError(f"blob ID of {len(e.blob_id)} bytes, not {KEY}")
        self.add_columns(
            pack_id,
            [e.type for e in rows],
            b"".join(e.blob_id for e in rows),
            [e.offset for e in rows],
            [e.length for e in rows],
            [e.raw_length for e in rows],
        )

    def add_columns(
        self,
        pack_id: str,
        types: Sequence[str],
        keys: bytes,
        offsets: Sequence[int],
        lengths: Sequence[int],
        raw_lengths: Sequence[int],
    ) -> None:
        """The blobs of one pack, column by column: row i is (types[i], keys[32i:32i+32],
        offsets[i], lengths[i], raw_lengths[i]). Loading an index file goes through here
        without a per-blob Python object (issue 14: 10M blobs must load in seconds). Every
        value is checked before any column grows: a malformed row raises ValueError or
        TypeError and leaves the index as it was."""
        n = len(types)
        if len(keys) != n * KEY or not (len(offsets) == len(lengths) == len(raw_lengths) == n):
            raise ValueError(f"{n} blob types for {len(keys)} bytes of IDs")
        if any(not isinstance(t, str) for t in set(types)):
            raise TypeError("a blob type is not a string")
        with self._lock:
            no = self._pack_no.get(pack_id)
            if no is None:
                no = self._pack_no[pack_id] = len(self._packs)
                self._packs.append(pack_id)
            if not n:
                return
            type_no = self._type_no
            for t in set(types) - type_no.keys():
                if len(self._types) > 255:
                    raise ValueError("more than 256 blob types")
                type_no[t] = len(self._types)
                self._types.append(t)
            first = type_no[types[0]]
            if types.count(types[0]) == n:
                type_col = bytes((first,)) * n
            else:
                type_col = bytes(map(type_no.__getitem__, types))
            numbers = self._numbers(offsets, lengths, raw_lengths)
            self._keys += keys
            self._type += type_col
            self._pack.extend(array("I", (no,)) * n)
            for col, values in zip((self._off, self._len, self._raw), numbers, strict=True):
                col.extend(values)
            self._table = None  # the next query enters the new rows

    def _numbers(self, *values: Sequence[int]) -> list[array[int]]:
        """`values` as arrays of the offset/length columns' type; a value past 4 GiB first
        widens the three columns to 8 bytes a value (lock held)."""
        try:
            return [array(self._off.typecode, v) for v in values]
        except OverflowError:
            pass
        try:
            wide = [array("Q", v) for v in values]
        except OverflowError:
            raise ValueError("negative or huge offset/length in the index") from None
        for name in ("_off", "_len", "_raw"):
            col = getattr(self, name)
            if col.typecode != "Q":
                setattr(self, name, array("Q", col))
        return wide

    def add_doc(self, doc: dict[str, Any]) -> None:
        for pack_id, columns in doc_columns(doc):
            self.add_columns(pack_id, *columns)

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
            keys, pack, off, len_, raw, type_ = (getattr(self, c) for c in self._COLUMNS[:6])
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
