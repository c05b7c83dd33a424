"""The row layout of the in-memory index, shared by the index (repo/index.py) and its
read-only pack view (repo/packmap.py).

A row is one indexed copy of a blob: its KEY-byte ID in one bytearray and its pack number,
offset, lengths and type in parallel columns. These names live in their own module so that
both the index and the view read the same constants without importing each other; the
index copies them into its own globals at import, so its lookups cost no extra indirection.
`ID_HASH` is the table's hash; `key_batches` and `hash_batches` copy IDs and hashes of many
rows out of the ID column at once (building the table).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from operator import itemgetter

Hit = tuple[int, int, int, int, str]  # (pack number, offset, length, raw length, type)

KEY = 32  # bytes of a blob ID
DEAD = 0xFFFFFFFF  # pack number of a row that is no longer a blob's primary copy
KEY_FORMAT = f"{KEY}s"

# The hash table's hash of a blob ID: its first 8 bytes as a native-order integer. Blob IDs
# are keyed BLAKE3 digests, uniformly distributed and not choosable by whoever writes the
# files (no crafted collisions). Unlike hash(), which is salted per process, it is the same
# in every process, so the table can be cached on disk (repo/index_cache.py: the cache is
# used only on a machine of the same byte order); and a batch of rows is hashed in C by
# viewing the ID column as 8-byte integers (every fourth is an ID's first 8 bytes).
ID_HASH = struct.Struct("=Q").unpack_from

BATCH = 1 << 16  # rows whose IDs are copied out at once when the table is built


def key_batches(keys: bytearray, lo: int, hi: int) -> Iterator[tuple[int, list[bytes], list[int]]]:
    """(first row, the IDs of rows [first, first + BATCH) as bytes, their ID_HASH values)
    for rows [lo, hi): the copies are made in C (struct.iter_unpack, a strided memoryview),
    a batch at a time so that building the table of 10M blobs does not hold 10M objects."""
    for first in range(lo, hi, BATCH):
        last = min(hi, first + BATCH)
        with memoryview(keys) as view, view[first * KEY : last * KEY] as part:
            ids = list(map(itemgetter(0), struct.iter_unpack(KEY_FORMAT, part)))
            with part.cast("Q") as words:
                hashes = words[:: KEY // 8].tolist()
        yield first, ids, hashes


def hash_batches(keys: bytearray, lo: int, hi: int) -> Iterator[tuple[int, list[int]]]:
    """(first row, the ID_HASH values of rows [first, first + BATCH)) for rows [lo, hi)."""
    for first in range(lo, hi, BATCH):
        last = min(hi, first + BATCH)
        with memoryview(keys) as view, view[first * KEY : last * KEY].cast("Q") as words:
            yield first, words[:: KEY // 8].tolist()
