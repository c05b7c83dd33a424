"""Index files: the document an index file holds, encoded and decoded.

Index file ``index/<hex BLAKE3 of the object>``, encoded with aad=b"index"::

    {"v": 1, "packs": [{"id": PACK_ID, "blobs": [[type, blob_id_hex, offset, length, raw_length], ...]}],
     "supersedes": [INDEX_ID, ...]}

A pack may appear in several index files; any of them is valid. `supersedes` lists
index files that this one replaces (written by prune before it deletes them).

The exact JSON is pinned by tests/repo/test_index.py (fixed vectors): packs sorted by ID,
blobs in the order given, `supersedes` sorted.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from operator import itemgetter
from typing import Any

from backupctl.repo.index_rows import KEY
from backupctl.repo.pack import BlobEntry


def index_doc(packs: dict[str, list[BlobEntry]], supersedes: Iterable[str] = ()) -> dict[str, Any]:
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


Columns = tuple[list[str], bytes, list[int], list[int], list[int]]


def doc_columns(doc: dict[str, Any]) -> Iterator[tuple[str, Columns]]:
    """(pack ID, its blobs as columns: types, the IDs as one bytes object, offsets, lengths,
    raw lengths) for each pack of a decoded index document. The transposition and the hex
    decoding run in C (map, bytes.fromhex on the joined IDs): no Python object per blob.
    A malformed entry raises ValueError, TypeError or KeyError."""
    for pack in doc.get("packs", []):
        blobs = pack["blobs"]
        if not blobs:
            yield pack["id"], ([], b"", [], [], [])
            continue
        if set(map(len, blobs)) != {5}:
            raise ValueError("an index entry does not have 5 fields")
        types, ids, offsets, lengths, raws = (list(map(itemgetter(k), blobs)) for k in range(5))
        if set(map(len, ids)) != {2 * KEY}:
            raise ValueError("a blob ID is not 32 bytes of hex")
        yield pack["id"], (types, bytes.fromhex("".join(ids)), offsets, lengths, raws)
