"""docs/design.md "Index files": the JSON of index_doc for fixed entries, a fixed index file
object, and add_doc/lookup through the public API of backupctl.repo.index."""

from __future__ import annotations

import json

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.repo.codec import Codec
from backupctl.repo.crypto import Cipher
from backupctl.repo.index import Index, Location
from backupctl.repo.index_doc import index_doc
from backupctl.repo.pack import BlobEntry

from .fixed import load, master_keys


def _packs() -> dict[str, list[BlobEntry]]:
    return {
        pid: [BlobEntry(t, bytes.fromhex(i), o, ln, r) for t, i, o, ln, r in rows]
        for pid, rows in load("index")["packs"].items()
    }


def test_index_doc_json_is_exact() -> None:
    v = load("index")
    doc = index_doc(_packs(), v["supersedes"])
    assert json.dumps(doc, separators=(",", ":"), sort_keys=True) == v["json"]
    # packs sorted by ID, blobs in pack order, supersedes sorted
    assert [p["id"] for p in doc["packs"]] == sorted(v["packs"])
    assert doc["supersedes"] == sorted(v["supersedes"])


def test_an_index_file_as_written_is_the_documented_json() -> None:
    v = load("index")
    codec = Codec(Cipher(master_keys()))
    obj = codec.encode_doc(index_doc(_packs(), v["supersedes"]), b"index")
    plain = AESGCM(master_keys().enc_key).decrypt(obj[:12], obj[12:], b"index")
    assert zstandard.ZstdDecompressor().decompress(plain).decode() == v["json"]


def test_the_fixed_index_file_loads() -> None:
    v = load("index")
    obj = bytes.fromhex(v["object"])
    assert blake3.blake3(obj).hexdigest() == v["index_id"]
    doc = Codec(Cipher(master_keys())).decode_doc(obj, b"index", f"index/{v['index_id']}")
    assert doc == json.loads(v["json"])
    index = Index()
    index.add_doc(doc)
    assert len(index) == 3
    for pid, rows in v["packs"].items():
        for t, i, o, ln, r in rows:
            assert bytes.fromhex(i) in index
            assert index.lookup(bytes.fromhex(i)) == Location(pid, o, ln, r, t)
    assert index.lookup(b"\x00" * 32) is None
    assert b"\x00" * 32 not in index


def test_a_blob_in_several_packs_keeps_every_location() -> None:
    """After an interrupted backup a blob may be listed in several packs; any is valid, the
    first one loaded is the primary."""
    bid = bytes(range(32))
    a = index_doc({"aa" * 32: [BlobEntry("d", bid, 0, 50, 22)]})
    b = index_doc({"bb" * 32: [BlobEntry("d", bid, 100, 50, 22)]})
    index = Index()
    index.add_doc(a)
    index.add_doc(b)
    index.add_doc(a)  # the same index file twice changes nothing
    assert len(index) == 1
    assert index.lookup(bid) == Location("aa" * 32, 0, 50, 22, "d")
    assert index.locations(bid) == [
        Location("aa" * 32, 0, 50, 22, "d"),
        Location("bb" * 32, 100, 50, 22, "d"),
    ]
