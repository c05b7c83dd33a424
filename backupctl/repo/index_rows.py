"""The row layout of the in-memory index, shared by the index (repo/index.py) and its
read-only pack view (repo/packmap.py).

A row is one indexed copy of a blob: its KEY-byte ID in one bytearray and its pack number,
offset, lengths and type in parallel columns. These names live in their own module so that
both the index and the view read the same constants without importing each other; the
index copies them into its own globals at import, so its lookups cost no extra indirection.
"""

from __future__ import annotations

Hit = tuple[int, int, int, int, str]  # (pack number, offset, length, raw length, type)

KEY = 32  # bytes of a blob ID
DEAD = 0xFFFFFFFF  # pack number of a row that is no longer a blob's primary copy
