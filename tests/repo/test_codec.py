"""docs/design.md "Blobs and chunking" (flag byte, compression rule, ID check) and
"Documents" (JSON -> zstd -> AES-256-GCM with the AAD of its role), on fixed vectors."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import blake3
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.errors import IntegrityError
from backupctl.repo.codec import FLAG_RAW, FLAG_ZSTD, Codec
from backupctl.repo.crypto import Cipher

from .fixed import load, master_keys


def _codec() -> Codec:
    return Codec(Cipher(master_keys()))


def _open(obj: bytes, aad: bytes) -> bytes:
    """An independent reader: nonce(12) || AES-256-GCM(enc_key, ..., aad)."""
    return AESGCM(master_keys().enc_key).decrypt(obj[:12], obj[12:], aad)


@pytest.mark.parametrize(("which", "flag"), [("blob_zstd", FLAG_ZSTD), ("blob_raw", FLAG_RAW)])
def test_a_fixed_blob_decodes_to_its_plaintext(which: str, flag: int) -> None:
    v = load("codec")[which]
    plain = v["plaintext"].encode() if which == "blob_zstd" else bytes.fromhex(v["plaintext"])
    blob_id, obj = bytes.fromhex(v["blob_id"]), bytes.fromhex(v["object"])
    assert _codec().decode_blob(blob_id, obj, len(plain), "vector") == plain
    # independently: AAD = the raw 32-byte ID, one flag byte, then the chunk or one zstd frame
    inner = _open(obj, blob_id)
    assert inner[0] == flag
    payload = inner[1:]
    data = zstandard.ZstdDecompressor().decompress(payload) if flag == FLAG_ZSTD else payload
    assert data == plain
    assert blake3.blake3(data, key=master_keys().id_key).digest() == blob_id


def test_a_blob_under_another_id_is_damage() -> None:
    v = load("codec")["blob_zstd"]
    other = bytes.fromhex(load("codec")["blob_raw"]["blob_id"])
    with pytest.raises(IntegrityError, match="authentication failed"):
        _codec().decode_blob(other, bytes.fromhex(v["object"]), 10_000, "vector")


def test_the_reader_checks_the_id_after_decompressing() -> None:
    """A blob whose content does not hash to its ID (here: encrypted under the right AAD by
    someone with enc_key but not matching content) is refused, not returned."""
    codec = _codec()
    blob_id = bytes.fromhex(load("codec")["blob_raw"]["blob_id"])
    forged = codec.cipher.encrypt(b"\x00other content", blob_id)
    with pytest.raises(IntegrityError, match="does not match its ID"):
        codec.decode_blob(blob_id, forged, 100, "vector")
    unknown_flag = codec.cipher.encrypt(b"\x07abc", blob_id)
    with pytest.raises(IntegrityError, match="unknown compression flag"):
        codec.decode_blob(blob_id, unknown_flag, 100, "vector")


def _shake(label: str, n: int) -> bytes:
    return hashlib.shake_256(label.encode()).digest(n)


def test_incompressible_stays_raw_and_text_is_zstd() -> None:
    codec = _codec()
    rnd = _shake("random", 100_000)
    assert codec.compress(rnd) == (FLAG_RAW, rnd)
    text = b"".join(b"line %d of a log file, mostly the same\n" % i for i in range(3000))
    flag, payload = codec.compress(text)
    assert flag == FLAG_ZSTD
    assert zstandard.ZstdDecompressor().decompress(payload) == text


def test_large_chunks_are_probed_on_a_64k_sample_from_the_middle() -> None:
    """Larger than 256 KiB: a middle sample that does not shrink 3 % at level 1 keeps the
    whole chunk raw, however well the rest would compress; at exactly 256 KiB no probe."""
    codec = _codec()
    sample = _shake("sample", 64 * 1024)
    for n in (256 * 1024 + 1, 1024 * 1024):
        chunk = bytes(n // 2) + sample + bytes(n - n // 2 - len(sample))
        assert codec.compress(chunk) == (FLAG_RAW, chunk)
    n = 256 * 1024
    chunk = bytes(n // 2) + sample + bytes(n - n // 2 - len(sample))
    assert codec.compress(chunk)[0] == FLAG_ZSTD


def test_compression_is_kept_only_when_it_saves_3_percent() -> None:
    """Data over k of 256 byte values compresses by about 1 - log2(k)/8: the rule is
    checked against zstd level 3 itself on both sides of the 3 % line."""
    codec = _codec()
    seen = set()
    for k in range(170, 257, 6):
        data = bytes(b % k for b in _shake(f"alphabet {k}", 60_000))
        saves = len(zstandard.ZstdCompressor(level=3).compress(data)) <= len(data) * 0.97
        flag, _ = codec.compress(data)
        assert flag == (FLAG_ZSTD if saves else FLAG_RAW), k
        seen.add(flag)
    assert seen == {FLAG_RAW, FLAG_ZSTD}


def test_encode_decode_blob_round_trip() -> None:
    codec = _codec()
    for data in (b"", b"x", _shake("rt", 70_000), b"abc" * 50_000):
        blob_id = codec.cipher.blob_id(data)
        obj = codec.encode_blob(blob_id, data)
        assert codec.decode_blob(blob_id, obj, len(data), "rt") == data
        flag, payload = _open(obj, blob_id)[0], _open(obj, blob_id)[1:]
        assert (flag, payload if flag == FLAG_RAW else zstandard.ZstdDecompressor().decompress(payload)) == (
            codec.compress(data)[0],
            data,
        )


def test_a_fixed_document_decodes() -> None:
    v = load("codec")["doc"]
    aad, obj = v["aad"].encode(), bytes.fromhex(v["object"])
    assert _codec().decode_doc(obj, aad, "vector") == v["value"]
    assert zstandard.ZstdDecompressor().decompress(_open(obj, aad)).decode() == v["json"]


def test_document_json_is_compact_sorted_ascii() -> None:
    v = load("codec")["doc"]
    aad = v["aad"].encode()
    obj = _codec().encode_doc(v["value"], aad)
    text = zstandard.ZstdDecompressor().decompress(_open(obj, aad))
    assert text.decode("ascii") == v["json"]
    assert v["json"] == json.dumps(v["value"], separators=(",", ":"), sort_keys=True)
    assert "\\u00e9" in v["json"]


@pytest.mark.parametrize(
    "doc",
    [
        {
            "v": 1,
            "packs": [{"id": "ab" * 32, "blobs": [["d", "cd" * 32, 0, 1 << 40, 2**64 - 1]]}],
            "supersedes": [],
        },
        {"z": 1, "a": {"y": [None, True, False, -(2**63)], "b": ""}},
        {"name": "caf\u00e9 \u2603", "x": [1]},  # non-ASCII: json's \u escapes, not orjson's UTF-8
        {"p": "a\udcff"},  # a surrogate escape (a name that is not UTF-8): orjson refuses it
        {"big": 2**70, "neg": -(2**64)},  # beyond 64 bits: orjson refuses them
        [["d", "00" * 32, 0, 10, 10]],
    ],
)
def test_plain_documents_are_written_as_json_writes_them_and_read_back(doc: Any) -> None:
    """`plain=True` (index files, pack headers) goes through orjson when it can: the bytes
    must be exactly json.dumps's, and decode_doc (orjson, json for what it refuses) must
    give the document back."""
    from backupctl.repo.codec import dump_json, load_json

    assert dump_json(doc) == json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    codec = _codec()
    for plain in (True, False):
        obj = codec.encode_doc(doc, b"index", plain=plain)
        assert zstandard.ZstdDecompressor().decompress(_open(obj, b"index")) == dump_json(doc)
        assert codec.decode_doc(obj, b"index", "index/x") == doc
    assert load_json(b'{"a": NaN}')["a"] != load_json(b'{"a": NaN}')["a"]  # json's NaN, not an error


def test_a_document_is_bound_to_its_role() -> None:
    codec = _codec()
    obj = codec.encode_doc({"v": 1, "packs": [], "supersedes": []}, b"index")
    assert codec.decode_doc(obj, b"index", "index/x") == {"v": 1, "packs": [], "supersedes": []}
    for wrong in (b"snapshot:" + b"0" * 32, b"pack-header", b"drill:" + b"0" * 32):
        with pytest.raises(IntegrityError, match="authentication failed"):
            codec.decode_doc(obj, wrong, "snapshots/x")
    snap = codec.encode_doc({"id": "a" * 32}, b"snapshot:" + b"a" * 32)
    with pytest.raises(IntegrityError):
        codec.decode_doc(snap, b"snapshot:" + b"b" * 32, "snapshots/b")
