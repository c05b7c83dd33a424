"""Pack files: many encrypted blobs in one object, with an encrypted header at the end.

Layout of ``data/<id[0:2]>/<id>`` where id = hex BLAKE3 of the whole pack::

    blob_0 || blob_1 || ... || header || u32 little-endian len(header)

header = encode_doc([[type, blob_id_hex, offset, length, raw_length], ...], aad=b"pack-header").
The index files repeat the header's entries, so a reader needs the header only to
rebuild a lost index.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import blake3

from backupctl.errors import IntegrityError
from backupctl.repo.codec import Codec

DATA = "d"
TREE = "t"


@dataclass(frozen=True)
class BlobEntry:
    type: str
    blob_id: bytes
    offset: int
    length: int
    raw_length: int


@dataclass
class PackBuilder:
    type: str
    parts: list[bytes] = field(default_factory=list)
    entries: list[BlobEntry] = field(default_factory=list)
    size: int = 0

    def add(self, blob_id: bytes, encoded: bytes, raw_length: int) -> None:
        self.entries.append(BlobEntry(self.type, blob_id, self.size, len(encoded), raw_length))
        self.parts.append(encoded)
        self.size += len(encoded)

    def finish(self, codec: Codec) -> tuple[str, bytes]:
        """(pack id, pack bytes)."""
        header = codec.encode_doc(
            [[e.type, e.blob_id.hex(), e.offset, e.length, e.raw_length] for e in self.entries],
            b"pack-header",
            plain=True,
        )
        self.parts.append(header)
        self.parts.append(struct.pack("<I", len(header)))
        data = b"".join(self.parts)
        self.parts = []
        return blake3.blake3(data).hexdigest(), data


def pack_name(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


def header_entries(codec: Codec, header: bytes, what: str) -> list[BlobEntry]:
    """Authenticate and decode an encrypted pack header; IntegrityError names `what`."""
    doc = codec.decode_doc(header, b"pack-header", what)
    try:
        return [BlobEntry(str(t), bytes.fromhex(i), int(o), int(ln), int(r)) for t, i, o, ln, r in doc]
    except (TypeError, ValueError):
        raise IntegrityError(f"{what}: malformed header entries") from None


def read_pack_header(codec: Codec, data: bytes, what: str) -> list[BlobEntry]:
    """The header of a whole pack held in memory (see Repository.read_pack_header for range reads)."""
    if len(data) < 4:
        raise IntegrityError(f"{what}: truncated pack ({len(data)} bytes)")
    (hlen,) = struct.unpack("<I", data[-4:])
    if hlen + 4 > len(data):
        raise IntegrityError(f"{what}: damaged pack header (length {hlen} > pack size {len(data)})")
    entries = header_entries(codec, data[-4 - hlen : -4], what)
    for e in entries:
        if e.offset < 0 or e.length < 0 or e.offset + e.length > len(data) - 4 - hlen:
            raise IntegrityError(f"{what}: header lists a blob outside the pack")
    return entries
