"""Blob and metadata-object encoding: optional zstd compression, then AES-256-GCM.

Blob plaintext layout: one flag byte (0 = stored raw, 1 = zstd frame) + payload.
The AAD of a data or tree blob is its 32-byte ID, so a blob cannot be swapped with
another; metadata objects use their kind and name as AAD.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import orjson
import zstandard

from backupctl.errors import IntegrityError
from backupctl.repo.crypto import Cipher

FLAG_RAW = 0
FLAG_ZSTD = 1
# Compression is kept only when it saves at least this share of the size.
_MIN_SAVING = 0.03
# Larger chunks are probed on a sample first: incompressible data skips zstd entirely.
_SAMPLE = 64 * 1024


class Codec:
    """Thread-safe: each thread gets its own zstd contexts."""

    def __init__(self, cipher: Cipher, level: int = 3) -> None:
        self.cipher = cipher
        self.level = level
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "comp", None)
        if comp is None:
            comp = self._local.comp = zstandard.ZstdCompressor(level=self.level)
        return comp

    def _probe(self) -> zstandard.ZstdCompressor:
        comp = getattr(self._local, "probe", None)
        if comp is None:
            comp = self._local.probe = zstandard.ZstdCompressor(level=1)
        return comp

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        dec = getattr(self._local, "dec", None)
        if dec is None:
            dec = self._local.dec = zstandard.ZstdDecompressor()
        return dec

    def compress(self, data: bytes) -> tuple[int, bytes]:
        n = len(data)
        if n > 4 * _SAMPLE:
            sample = data[n // 2 : n // 2 + _SAMPLE]
            if len(self._probe().compress(sample)) > len(sample) * (1 - _MIN_SAVING):
                return FLAG_RAW, data
        packed = self._compressor().compress(data)
        if len(packed) > n * (1 - _MIN_SAVING):
            return FLAG_RAW, data
        return FLAG_ZSTD, packed

    def encode_blob(self, blob_id: bytes, data: bytes) -> bytes:
        flag, payload = self.compress(data)
        return self.cipher.encrypt(bytes((flag,)) + payload, blob_id)

    def decode_blob(self, blob_id: bytes, blob: bytes, raw_len: int, what: str) -> bytes:
        plain = self.cipher.decrypt(blob, blob_id, what)
        flag, payload = plain[0], memoryview(plain)[1:]
        if flag == FLAG_ZSTD:
            try:
                data = self._decompressor().decompress(payload, max_output_size=raw_len)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"{what}: cannot decompress: {exc}") from None
        elif flag == FLAG_RAW:
            data = bytes(payload)
        else:
            raise IntegrityError(f"{what}: unknown compression flag {flag}")
        if self.cipher.blob_id(data) != blob_id:
            raise IntegrityError(f"{what}: content does not match its ID")
        return data

    # ---- metadata objects (index, manifest, pack header): JSON -> zstd -> AEAD ----

    def encode_doc(self, doc: Any, aad: bytes, *, plain: bool = False) -> bytes:
        """`plain`: the document holds only dicts, lists, str, int, bool and None (an index
        document), so orjson may write it: the same bytes as json.dumps whenever its output
        is ASCII (floats are left to json: orjson writes NaN as null)."""
        raw = dump_json(doc) if plain else json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return self.cipher.encrypt(self._compressor().compress(raw), aad)

    def decode_doc(self, blob: bytes, aad: bytes, what: str) -> Any:
        packed = self.cipher.decrypt(blob, aad, what)
        try:
            raw = self._decompressor().decompressobj().decompress(packed)
            return load_json(raw)
        except (zstandard.ZstdError, ValueError) as exc:
            raise IntegrityError(f"{what}: cannot decode: {exc}") from None


def dump_json(doc: Any, *, sort_keys: bool = True) -> bytes:
    """json.dumps(doc, separators=(",", ":"), sort_keys=sort_keys) of a document without
    floats, through orjson (ten times faster) when its output is ASCII, as json's always
    is; a non-ASCII or surrogate-escaped string, or an integer beyond 64 bits, takes json."""
    try:
        raw = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except orjson.JSONEncodeError:
        pass
    else:
        if raw.isascii():
            return raw
    return json.dumps(doc, separators=(",", ":"), sort_keys=sort_keys).encode()


def load_json(raw: bytes) -> Any:
    """json.loads(raw): orjson parses every document json wrote (five times faster) except
    NaN, lone surrogate escapes and integers beyond 64 bits, which it refuses; those take
    the json module, so what is accepted and how is json's."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)
