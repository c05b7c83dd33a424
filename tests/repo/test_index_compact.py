"""The compact in-memory index (issue 14 item 2) behaves exactly like the plain dict it
replaced, and its memory does not grow by more than ~64 bytes per blob.

`DictModel` is the previous implementation (a dict of tuples plus the dict of further
copies), kept here as the reference: hypothesis drives both through the same
add_pack/add_doc/drop sequences, with duplicate copies, re-added packs and drops, and
compares every query after each step.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from array import array
from collections.abc import Iterable, Mapping

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from backupctl.repo.index import Index, Location
from backupctl.repo.pack import BlobEntry

_Hit = tuple[int, int, int, int, str]


class DictModel:
    """The dict-based index as it was before issue 14 (semantics: see backupctl/repo/index.py)."""

    def __init__(self) -> None:
        self._packs: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._blobs: dict[bytes, _Hit] = {}
        self._more: dict[bytes, list[_Hit]] = {}
        self.dropped: dict[bytes, str] = {}

    def __len__(self) -> int:
        return len(self._blobs)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def add_pack(self, pack_id: str, entries: Iterable[BlobEntry]) -> None:
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

    def lookup(self, blob_id: bytes) -> Location | None:
        hit = self._blobs.get(blob_id)
        return None if hit is None else Location(self._packs[hit[0]], *hit[1:])

    def locations(self, blob_id: bytes) -> list[Location]:
        hit = self._blobs.get(blob_id)
        if hit is None:
            return []
        return [Location(self._packs[h[0]], *h[1:]) for h in (hit, *self._more.get(blob_id, ()))]

    def packs(self) -> set[str]:
        return set(self._packs)

    def blobs_by_pack(self) -> dict[str, list[BlobEntry]]:
        out: dict[str, list[BlobEntry]] = {}
        for blob_id, hit in self._blobs.items():
            for no, offset, length, raw_length, type_ in (hit, *self._more.get(blob_id, ())):
                out.setdefault(self._packs[no], []).append(
                    BlobEntry(type_, blob_id, offset, length, raw_length)
                )
        return out

    def pack_extents(self) -> dict[str, int]:
        ends: dict[int, int] = {}
        for blob_id, hit in self._blobs.items():
            for no, offset, length, _raw, _type in (hit, *self._more.get(blob_id, ())):
                if offset + length > ends.get(no, 0):
                    ends[no] = offset + length
        return {self._packs[no]: end for no, end in ends.items()}

    def drop(self, packs: Iterable[str] = (), copies: Mapping[bytes, Iterable[str]] | None = None) -> int:
        copies = copies or {}
        bad_nos = {self._pack_no[p] for p in packs if p in self._pack_no}
        bad_copies = {
            b: {self._pack_no[p] for p in where if p in self._pack_no} for b, where in copies.items()
        }
        if not bad_nos and not any(bad_copies.values()):
            return 0
        candidates = self._blobs if bad_nos else {b: self._blobs[b] for b in bad_copies if b in self._blobs}
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


def bid(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(4, "little"), digest_size=32).digest()


BLOBS = [bid(n) for n in range(24)]
PACKS = [f"{n:02x}" * 32 for n in range(6)]

entry = st.builds(
    BlobEntry,
    st.sampled_from(["d", "t"]),
    st.sampled_from(BLOBS),
    # offsets and lengths past 4 GiB too: the columns widen instead of overflowing
    st.one_of(st.integers(0, 1 << 20), st.integers((1 << 32) - 2, 1 << 40)),
    st.integers(0, 1 << 20),
    st.one_of(st.integers(0, 1 << 20), st.just(1 << 33)),
)


class IndexMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.model = DictModel()
        self.index = Index()

    @rule(pack=st.sampled_from(PACKS), entries=st.lists(entry, max_size=8))
    def add_pack(self, pack: str, entries: list[BlobEntry]) -> None:
        self.model.add_pack(pack, entries)
        self.index.add_pack(pack, entries)

    @rule(pack=st.sampled_from(PACKS), entries=st.lists(entry, max_size=5))
    def add_doc(self, pack: str, entries: list[BlobEntry]) -> None:
        doc = {
            "v": 1,
            "packs": [
                {
                    "id": pack,
                    "blobs": [[e.type, e.blob_id.hex(), e.offset, e.length, e.raw_length] for e in entries],
                }
            ],
        }
        self.model.add_pack(pack, entries)
        self.index.add_doc(doc)

    @rule(
        packs=st.lists(st.sampled_from([*PACKS, "unknown"]), max_size=2),
        copies=st.dictionaries(
            st.sampled_from(BLOBS), st.lists(st.sampled_from(PACKS), max_size=2), max_size=4
        ),
    )
    def drop(self, packs: list[str], copies: dict[bytes, list[str]]) -> None:
        assert self.index.drop(packs, copies) == self.model.drop(packs, copies)

    @rule()
    def through_the_cache(self) -> None:
        # what repo/index_cache.py does: the state through JSON, each column copied into a
        # fresh empty_column; the imported index must answer like the one exported, and
        # go on growing, dropping and compacting from there
        state, columns = self.index.export_columns()
        copies = {}
        for name, column in columns:
            copy = Index.empty_column(column.typecode if isinstance(column, array) else "B", len(column))
            with memoryview(copy) as dst, dst.cast("B") as raw:
                raw[:] = memoryview(column).cast("B")
            copies[name] = copy
        self.index = Index.import_columns(json.loads(json.dumps(state)), copies)

    @rule(blob=st.sampled_from(BLOBS))
    def query(self, blob: bytes) -> None:
        # queries between adds: the table is built incrementally, not only once at the end
        assert (blob in self.index) == (blob in self.model)
        assert self.index.lookup(blob) == self.model.lookup(blob)

    @invariant()
    def same_answers(self) -> None:
        m, i = self.model, self.index
        assert len(i) == len(m)
        for b in BLOBS:
            assert (b in i) == (b in m)
            assert i.lookup(b) == m.lookup(b)
            assert i.locations(b) == m.locations(b)
        assert i.dropped == m.dropped
        assert i.packs() == m.packs()
        expected = m.blobs_by_pack()
        got = i.blobs_by_pack()
        assert {p: list(got[p]) for p in got} == expected
        assert len(got) == len(expected) and all(p in got for p in expected)
        assert sorted(i.iter_entries(), key=repr) == sorted(
            ((p, e) for p, es in expected.items() for e in es), key=repr
        )
        assert i.pack_extents() == m.pack_extents()


TestIndexEquivalence = IndexMachine.TestCase
TestIndexEquivalence.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
)


def test_many_blobs_across_table_growth_and_compaction() -> None:
    """Thousands of blobs (the table grows several times), a lost pack, blobs stored again."""
    model, index = DictModel(), Index()
    for p in range(40):
        entries = [BlobEntry("d", bid(p * 100 + k), k * 10, 10, 20) for k in range(100)]
        entries += [BlobEntry("d", bid(k), 5000 + k, 1, 1) for k in range(p, p + 3)]  # copies elsewhere
        for x in (model, index):
            x.add_pack(f"{p:064x}", entries)
        if p % 7 == 3:
            assert (bid(p * 100) in index) and (bid(10**6) not in index)
    lost = [f"{p:064x}" for p in range(0, 40, 2)]
    assert index.drop(lost) == model.drop(lost)
    for p in range(0, 40, 2):  # the next backup stores them again
        entries = [BlobEntry("t", bid(p * 100 + k), k, 3, 4) for k in range(100)]
        for x in (model, index):
            x.add_pack(f"{p + 1000:064x}", entries)
    assert len(index) == len(model)
    assert {p: list(e) for p, e in index.blobs_by_pack().items()} == model.blobs_by_pack()
    assert index.pack_extents() == model.pack_extents()
    for n in range(4100):
        assert index.locations(bid(n)) == model.locations(bid(n))
    assert index.dropped == model.dropped


def test_blob_ids_must_be_32_bytes() -> None:
    index = Index()
    try:
        index.add_pack("p" * 64, [BlobEntry("d", b"short", 0, 1, 1)])
    except ValueError:
        pass
    else:
        raise AssertionError("a malformed blob ID was indexed")
    assert b"short" not in index and len(index) == 0


_MEMORY_PROBE = textwrap.dedent(
    """
    import gc, hashlib, os, sys
    from backupctl.repo.index import Index
    from backupctl.repo.pack import BlobEntry

    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    n = int(sys.argv[1])
    per_pack = 1000
    seed = os.urandom(16)
    ids = lambda p: [hashlib.blake2b((p * per_pack + k).to_bytes(8, "little"), key=seed, digest_size=32).digest()
                     for k in range(per_pack)]
    ids(0)  # warm up the allocator with one pack's temporaries
    gc.collect()
    before = rss()
    index = Index()
    for p in range(n // per_pack):
        index.add_pack(os.urandom(32).hex(), [BlobEntry("d", b, k << 16, 65536, 131072) for k, b in enumerate(ids(p))])
    assert ids(0)[0] in index and len(index) == n and os.urandom(32) not in index
    gc.collect()
    # VmHWM is this process image's own high-water mark; ru_maxrss is not (on Linux it can
    # carry the parent's RSS at fork time across exec, e.g. a big pytest worker's).
    with open("/proc/self/status") as f:
        peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    print(rss() - before, peak - before)
    """
)


def test_memory_per_blob_one_million() -> None:
    """1M synthetic blobs: the index grows RSS by at most ~64 bytes a blob (80 MiB with
    the allocator's slack), the peak (a table rebuild holds two tables) by little more."""
    n = 1_000_000
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(n)], capture_output=True, text=True, check=True, timeout=300
    ).stdout.split()
    held, peak = int(out[0]), int(out[1])
    assert held < 80 << 20, f"{held / n:.1f} bytes per blob held"
    assert held / n <= 68, f"{held / n:.1f} bytes per blob held"
    assert peak < 96 << 20, f"peak {peak / n:.1f} bytes per blob"
