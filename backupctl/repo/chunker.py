"""Content-defined chunking of files and streams (FastCDC).

Chunk boundaries depend only on content, so an insertion early in a file moves only
the chunks around it, and the rest deduplicate. Streams (pipes from pg_dump) are
chunked through a sliding buffer: every boundary found before the buffer's last
`max_size` bytes is final; the tail is carried over to the next read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from fastcdc import fastcdc


@dataclass(frozen=True)
class ChunkParams:
    min_size: int
    avg_size: int
    max_size: int


# File and dump data: restic-like sizes (512 KiB .. 8 MiB, about 1 MiB on average).
DATA_CHUNKS = ChunkParams(512 * 1024, 1024 * 1024, 8 * 1024 * 1024)
# Metadata (the item stream of a backup): small chunks so one changed file costs little.
TREE_CHUNKS = ChunkParams(16 * 1024, 64 * 1024, 256 * 1024)

_READ_SIZE = 4 * 1024 * 1024


def _boundaries(buf: bytes, params: ChunkParams) -> list[tuple[int, int]]:
    return [
        (c.offset, c.length)
        for c in fastcdc(buf, params.min_size, params.avg_size, params.max_size, fat=False)
    ]


def chunk_bytes(buf: bytes, params: ChunkParams = DATA_CHUNKS) -> Iterator[bytes]:
    """Chunk an in-memory buffer."""
    if len(buf) <= params.min_size:
        if buf:
            yield buf
        return
    view = memoryview(buf)
    for offset, length in _boundaries(buf, params):
        yield bytes(view[offset : offset + length])


class PushChunker:
    """Chunker fed with pieces of a stream: `feed()` returns the chunks that are final.

    Every chunk FastCDC finds in a buffer except the last one is final: its end was
    decided by the rolling hash or by max_size, both within data already seen. Only the
    last chunk may have been cut by the end of the buffer, so it is carried over.
    """

    def __init__(self, params: ChunkParams) -> None:
        self.params = params
        self._carry = b""

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._carry + data if self._carry else data
        if len(buf) <= self.params.max_size:
            self._carry = buf
            return []
        bounds = _boundaries(buf, self.params)
        view = memoryview(buf)
        out = [bytes(view[offset : offset + length]) for offset, length in bounds[:-1]]
        last_offset = bounds[-1][0]
        self._carry = bytes(view[last_offset:])
        return out

    def close(self) -> list[bytes]:
        buf, self._carry = self._carry, b""
        return list(chunk_bytes(buf, self.params))


def chunk_stream(
    stream: IO[bytes], params: ChunkParams = DATA_CHUNKS, read_size: int = _READ_SIZE
) -> Iterator[bytes]:
    """Chunk a stream of unknown length with bounded memory (about read_size + max_size)."""
    return chunk_blocks(_blocks(stream, read_size), params)


def chunk_blocks(blocks: Iterable[bytes], params: ChunkParams = DATA_CHUNKS) -> Iterator[bytes]:
    """Chunk a stream given as consecutive blocks of any sizes (e.g. ReadAhead.blocks())."""
    chunker = PushChunker(params)
    for data in blocks:
        yield from chunker.feed(data)
    yield from chunker.close()


def _blocks(stream: IO[bytes], read_size: int) -> Iterator[bytes]:
    while True:
        data = read_full(stream, read_size)
        if data:
            yield data
        if len(data) < read_size:
            return


def read_full(stream: IO[bytes], size: int) -> bytes:
    """Read exactly `size` bytes unless EOF comes first (pipes return short reads)."""
    first = stream.read(size)
    if not first or len(first) == size:
        return first or b""
    parts = [first]
    got = len(first)
    while got < size:
        more = stream.read(size - got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)
