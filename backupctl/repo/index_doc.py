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
from typing import Any

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


def doc_packs(doc: dict[str, Any]) -> Iterator[tuple[str, Iterator[BlobEntry]]]:
    """(pack ID, its entries) for each pack of a decoded index document; the entries are
    decoded lazily, as the index adds them."""
    for pack in doc.get("packs", []):
        yield pack["id"], (BlobEntry(t, bytes.fromhex(i), o, ln, r) for t, i, o, ln, r in pack["blobs"])
