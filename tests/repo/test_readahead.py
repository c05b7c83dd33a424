"""ReadAhead: a stream read in a thread of its own, handed over in order, stoppable at any time."""

from __future__ import annotations

import io
import os
import random
import threading
import time

import pytest

from backupctl.repo.chunker import DATA_CHUNKS, chunk_blocks, chunk_stream
from backupctl.repo.readahead import ReadAhead


class _Trickle(io.RawIOBase):
    """A stream returning short reads of random sizes, like a pipe."""

    def __init__(self, data: bytes, seed: int) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._rng = random.Random(seed)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if n < 0:
            n = len(self._data)
        take = min(n, self._rng.randint(1, 70_000))
        out = bytes(self._data[self._pos : self._pos + take])
        self._pos += len(out)
        return out


class _FailsAfter(io.RawIOBase):
    def __init__(self, good: bytes) -> None:
        self._good = good

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self._good:
            out, self._good = self._good[:n], self._good[n:]
            return out
        raise OSError(5, "Input/output error")


@pytest.mark.parametrize("size", [0, 1, 1000, 4 * 1024 * 1024, 4 * 1024 * 1024 + 1, 13_000_017])
def test_blocks_carry_the_stream_in_order(size):
    data = random.Random(size).randbytes(size)
    reader = ReadAhead(_Trickle(data, size), block_size=1 << 20, depth=2)  # type: ignore[arg-type]
    blocks = list(reader.blocks())
    reader.close()
    assert b"".join(blocks) == data
    assert all(len(b) == 1 << 20 for b in blocks[:-1])  # full blocks but the last
    assert all(blocks)


def test_chunks_of_a_read_ahead_equal_those_of_a_plain_read():
    """Chunk boundaries depend on content only, not on how the stream was read."""
    data = random.Random(7).randbytes(20 * 1024 * 1024)
    expected = list(chunk_stream(io.BytesIO(data)))
    reader = ReadAhead(_Trickle(data, 3), block_size=3 * 1024 * 1024 + 5)  # type: ignore[arg-type]
    got = list(chunk_blocks(reader.blocks(), DATA_CHUNKS))
    reader.close()
    assert got == expected


def test_a_read_error_reaches_the_consumer_after_the_blocks_before_it():
    reader = ReadAhead(_FailsAfter(b"x" * 2500), block_size=1000)  # type: ignore[arg-type]
    blocks = reader.blocks()
    assert next(blocks) == b"x" * 1000
    assert next(blocks) == b"x" * 1000
    with pytest.raises(OSError, match="Input/output error"):
        next(blocks)  # the 500 bytes before the error were one short read: not a full block
    reader.close()


def _wait_closed(fh, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if fh.closed:
            return True
        time.sleep(0.01)
    return fh.closed


def test_close_does_not_wait_for_a_read_blocked_on_a_silent_producer():
    """The consumer gives up while the producer writes nothing: close() returns at once, and the
    reader closes the pipe itself when the producer goes away (as DatabaseSource.abort does)."""
    r, w = os.pipe()
    fh = os.fdopen(r, "rb")
    reader = ReadAhead(fh, block_size=1 << 16)
    os.write(w, b"a" * (1 << 16))
    assert next(reader.blocks()) == b"a" * (1 << 16)
    started = time.monotonic()
    reader.close()  # the reader is blocked in read() now
    assert time.monotonic() - started < 1.0
    assert not fh.closed
    os.close(w)  # the producer is killed: the read returns
    assert _wait_closed(fh)


def test_close_stops_a_reader_waiting_for_room_in_the_queue():
    r, w = os.pipe()
    fh = os.fdopen(r, "rb")
    stop_writing = threading.Event()

    def produce() -> None:
        try:
            while not stop_writing.is_set():
                os.write(w, b"b" * 4096)
        except BrokenPipeError:
            pass
        finally:
            os.close(w)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    reader = ReadAhead(fh, block_size=4096, depth=2)
    time.sleep(0.2)  # the queue fills up; the reader waits for room
    reader.close()
    assert _wait_closed(fh)  # it noticed the stop and closed the stream without a consumer
    stop_writing.set()
    producer.join(5)
    assert not producer.is_alive()  # the closed pipe ended the producer (EPIPE)


def test_an_aborted_dump_tool_ends_its_reader():
    """The abort path of a database backup: the engine stops consuming (its storage failed),
    closes the ReadAhead, and DatabaseSource.abort kills the tool, which must not hang on the
    reader's read (BufferedReader.close waits for it) and must leave no reader behind."""
    from backupctl.sources.dbutil import ToolProcess

    tool = ToolProcess(["yes", "a dump line"], env={"PATH": os.environ["PATH"]})
    reader = ReadAhead(tool.stdout, block_size=1 << 20, depth=2)
    assert next(reader.blocks()).startswith(b"a dump line\n")
    reader.close()
    started = time.monotonic()
    tool.kill()
    assert time.monotonic() - started < 5
    assert tool.proc.returncode is not None
    assert _wait_closed(tool.stdout)
    for thread in threading.enumerate():
        if thread.name == "read-ahead":
            thread.join(5)
            assert not thread.is_alive()


def test_a_dump_tools_pipe_holds_a_mebibyte():
    """So the tool writes on while the reader thread waits for the GIL (Linux)."""
    import fcntl

    from backupctl.sources.dbutil import PIPE_SIZE, ToolProcess

    tool = ToolProcess(["true"], env={"PATH": os.environ["PATH"]})
    try:
        assert fcntl.fcntl(tool.stdout.fileno(), fcntl.F_GETPIPE_SZ) == PIPE_SIZE == 1 << 20
    finally:
        tool.check()
