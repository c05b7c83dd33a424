"""docs/design.md "Blobs and chunking": chunk boundaries of a fixed input, and the one
algorithm behind the three entry points (chunk_bytes, PushChunker, chunk_stream)."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from typing import IO, cast

import pytest
from fastcdc.fastcdc_py import GEAR

from backupctl.repo.chunker import (
    DATA_CHUNKS,
    TREE_CHUNKS,
    ChunkParams,
    PushChunker,
    chunk_bytes,
    chunk_stream,
)

from .fixed import chunker_input, load

PARAMS = {"data": DATA_CHUNKS, "tree": TREE_CHUNKS}


def test_the_input_is_the_documented_one() -> None:
    assert hashlib.sha256(chunker_input()).hexdigest() == load("chunker")["input_sha256"]


@pytest.mark.parametrize("kind", ["data", "tree"])
def test_sizes_are_the_documented_ones(kind: str) -> None:
    v = load("chunker")[kind]
    p = PARAMS[kind]
    assert (p.min_size, p.avg_size, p.max_size) == (v["min"], v["avg"], v["max"])


@pytest.mark.parametrize("kind", ["data", "tree"])
def test_chunk_bytes_gives_the_fixed_boundaries(kind: str) -> None:
    buf = chunker_input()
    lengths = load("chunker")[kind]["lengths"]
    chunks = list(chunk_bytes(buf, PARAMS[kind]))
    assert [len(c) for c in chunks] == lengths
    assert b"".join(chunks) == buf


def test_the_data_vector_covers_min_and_max_cuts() -> None:
    """The zero run is never cut by the hash: the vector exercises the max_size rule."""
    lengths = load("chunker")["data"]["lengths"]
    assert DATA_CHUNKS.max_size in lengths
    assert all(n >= DATA_CHUNKS.min_size for n in lengths[:-1])


def _pieces(buf: bytes, sizes: list[int]) -> Iterator[bytes]:
    i = k = 0
    while i < len(buf):
        n = sizes[k % len(sizes)]
        yield buf[i : i + n]
        i += n
        k += 1


@pytest.mark.parametrize("kind", ["data", "tree"])
def test_push_chunker_fed_odd_pieces_gives_the_same_boundaries(kind: str) -> None:
    buf = chunker_input()
    chunker = PushChunker(PARAMS[kind])
    chunks: list[bytes] = []
    # piece sizes below and above max_size, none aligned to anything
    for piece in _pieces(buf, [1, 4093, 3 * 1024 * 1024 + 17, 65537, 9 * 1024 * 1024 + 3]):
        chunks += chunker.feed(piece)
    chunks += chunker.close()
    assert [len(c) for c in chunks] == load("chunker")[kind]["lengths"]
    assert b"".join(chunks) == buf


class _ShortReads(io.RawIOBase):
    """A pipe-like stream: every read returns at most 1000 + (k mod 7) * 50_000 bytes."""

    def __init__(self, data: bytes) -> None:
        self._data, self._pos, self._k = data, 0, 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        self._k += 1
        n = 1000 + (self._k % 7) * 50_000
        if size is not None and size >= 0:
            n = min(n, size)
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out


@pytest.mark.parametrize("kind", ["data", "tree"])
def test_chunk_stream_with_short_reads_gives_the_same_boundaries(kind: str) -> None:
    buf = chunker_input()
    chunks = list(
        chunk_stream(cast(IO[bytes], _ShortReads(buf)), PARAMS[kind], read_size=5 * 1024 * 1024 + 11)
    )
    assert [len(c) for c in chunks] == load("chunker")[kind]["lengths"]


def test_small_and_empty_inputs() -> None:
    """Up to min_size bytes are one chunk; nothing is no chunk (all three entry points)."""
    for p in (DATA_CHUNKS, TREE_CHUNKS):
        for buf in (b"", b"x", bytes(p.min_size)):
            want = [buf] if buf else []
            assert list(chunk_bytes(buf, p)) == want
            assert list(chunk_stream(io.BytesIO(buf), p)) == want
            pc = PushChunker(p)
            assert pc.feed(buf) + pc.close() == want


# ---- the algorithm as docs/design.md states it, written from the text ---------------


def test_the_gear_table_is_the_documented_one() -> None:
    table = b"".join(struct.pack("<I", g) for g in GEAR)
    assert len(GEAR) == 256
    assert hashlib.sha256(table).hexdigest() == load("chunker")["gear_table_sha256"]


def _reference_cuts(buf: bytes, p: ChunkParams, count: int) -> list[int]:
    """The first `count` chunk lengths, from docs/design.md's description alone."""
    bits = round(p.avg_size.bit_length() - 1)
    mask_s, mask_l = (1 << (bits + 1)) - 1, (1 << (bits - 1)) - 1
    center = p.avg_size - min(p.min_size + (p.min_size + 1) // 2, p.avg_size)
    out: list[int] = []
    start = 0
    while start < len(buf) and len(out) < count:
        size = min(len(buf) - start, p.max_size)
        i, h, cut = min(p.min_size, size), 0, 0
        while i < size:
            h = (h >> 1) + GEAR[buf[start + i]]
            if not h & (mask_s if i < center else mask_l):
                cut = i + 1
                break
            i += 1
        n = cut or size
        out.append(n)
        start += n
    return out


@pytest.mark.parametrize(("kind", "count"), [("tree", 24), ("data", 2)])
def test_a_reader_written_from_the_docs_finds_the_same_boundaries(kind: str, count: int) -> None:
    """Pure Python, so only the first chunks (a second or so)."""
    lengths = load("chunker")[kind]["lengths"]
    assert _reference_cuts(chunker_input(), PARAMS[kind], count) == lengths[:count]
