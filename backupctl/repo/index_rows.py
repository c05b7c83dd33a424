"""The row layout of the in-memory index, shared by the index (repo/index.py) and its
read-only pack view (repo/packmap.py).

A row is one indexed copy of a blob: its KEY-byte ID in one bytearray and its pack number,
offset, lengths and type in parallel columns. These names live in their own module so that
both the index and the view read the same constants without importing each other; the
index copies them into its own globals at import, so its lookups cost no extra indirection.
`key_batches` copies the IDs of many rows out of the ID column at once (building the table).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from operator import itemgetter

Hit = tuple[int, int, int, int, str]  # (pack number, offset, length, raw length, type)

KEY = 32  # bytes of a blob ID
DEAD = 0xFFFFFFFF  # pack number of a row that is no longer a blob's primary copy
KEY_FORMAT = f"{KEY}s"

BATCH = 1 << 16  # rows whose IDs are copied out at once when the table is built


def key_batches(keys: bytearray, lo: int, hi: int) -> Iterator[tuple[int, list[bytes]]]:
    """(first row, the IDs of rows [first, first + BATCH) as bytes) for rows [lo, hi): the
    copies are made in C (struct.iter_unpack), a batch at a time so that building the table
    of 10M blobs does not hold 10M bytes objects."""
    for first in range(lo, hi, BATCH):
        last = min(hi, first + BATCH)
        with memoryview(keys) as view:
            ids = list(map(itemgetter(0), struct.iter_unpack(KEY_FORMAT, view[first * KEY : last * KEY])))
        yield first, ids
