"""docs/design.md "Packs": layout, pack ID and name, header parsing, on a fixed pack."""

from __future__ import annotations

import json
import struct
from typing import Any

import blake3
import pytest
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupctl.errors import IntegrityError
from backupctl.repo.codec import Codec
from backupctl.repo.crypto import Cipher
from backupctl.repo.pack import (
    DATA,
    TREE,
    BlobEntry,
    PackBuilder,
    header_entries,
    pack_name,
    read_pack_header,
)

from .fixed import load, master_keys


def _codec() -> Codec:
    return Codec(Cipher(master_keys()))


def _independent_header(pack: bytes) -> list[list[Any]]:
    (hlen,) = struct.unpack("<I", pack[-4:])
    header = pack[-4 - hlen : -4]
    packed = AESGCM(master_keys().enc_key).decrypt(header[:12], header[12:], b"pack-header")
    result: list[list[Any]] = json.loads(zstandard.ZstdDecompressor().decompress(packed))
    return result


def test_the_fixed_pack() -> None:
    v = load("pack")
    pack = bytes.fromhex(v["pack"])
    assert blake3.blake3(pack).hexdigest() == v["pack_id"]
    assert pack_name(v["pack_id"]) == v["name"] == f"data/{v['pack_id'][:2]}/{v['pack_id']}"
    # an independent reader: u32 LE header length at the end, header = encrypted document
    assert _independent_header(pack) == v["header"]
    codec = _codec()
    entries = read_pack_header(codec, pack, v["name"])
    assert [[e.type, e.blob_id.hex(), e.offset, e.length, e.raw_length] for e in entries] == v["header"]
    # blobs back to back from offset 0, then the header
    end = 0
    for e, plain in zip(entries, v["blobs"], strict=True):
        assert e.offset == end
        end += e.length
        data = bytes.fromhex(plain)
        assert e.raw_length == len(data)
        assert codec.decode_blob(e.blob_id, pack[e.offset : e.offset + e.length], e.raw_length, "b") == data
    (hlen,) = struct.unpack("<I", pack[-4:])
    assert end + hlen + 4 == len(pack)


@pytest.mark.parametrize("kind", [DATA, TREE])
def test_pack_builder_finish_layout(kind: str) -> None:
    codec = _codec()
    builder = PackBuilder(kind)
    chunks = [b"alpha" * 100, bytes(5000), b"omega"]
    encoded = []
    for c in chunks:
        bid = codec.cipher.blob_id(c)
        encoded.append(codec.encode_blob(bid, c))
        builder.add(bid, encoded[-1], len(c))
    pack_id, pack = builder.finish(codec)
    assert pack_id == blake3.blake3(pack).hexdigest()
    body = b"".join(encoded)
    assert pack.startswith(body)
    header = _independent_header(pack)
    offsets = [0, len(encoded[0]), len(encoded[0]) + len(encoded[1])]
    assert header == [
        [kind, codec.cipher.blob_id(c).hex(), off, len(e), len(c)]
        for c, e, off in zip(chunks, encoded, offsets, strict=True)
    ]
    (hlen,) = struct.unpack("<I", pack[-4:])
    assert len(body) + hlen + 4 == len(pack)
    assert header_entries(codec, pack[len(body) : -4], "h") == read_pack_header(codec, pack, "p")
    assert read_pack_header(codec, pack, "p")[1] == BlobEntry(
        kind, codec.cipher.blob_id(chunks[1]), offsets[1], len(encoded[1]), len(chunks[1])
    )


def test_a_damaged_pack_header_is_named() -> None:
    codec = _codec()
    pack = bytes.fromhex(load("pack")["pack"])
    with pytest.raises(IntegrityError, match="truncated pack"):
        read_pack_header(codec, pack[-3:], "data/xx/p")
    with pytest.raises(IntegrityError, match="damaged pack header"):
        read_pack_header(codec, pack[:-4] + struct.pack("<I", len(pack)), "data/xx/p")
    flipped = bytearray(pack)
    flipped[-10] ^= 1
    with pytest.raises(IntegrityError, match="data/xx/p: authentication failed"):
        read_pack_header(codec, bytes(flipped), "data/xx/p")
    # a header listing a blob beyond the blobs' area
    bad = codec.encode_doc([["d", "00" * 32, 0, 10**6, 1]], b"pack-header")
    with pytest.raises(IntegrityError, match="outside the pack"):
        read_pack_header(codec, b"x" * 100 + bad + struct.pack("<I", len(bad)), "data/xx/p")
