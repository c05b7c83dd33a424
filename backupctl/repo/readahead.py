"""Reading a stream ahead of its consumer, in a thread of its own.

A dump tool (pg_dump, mariadb-dump, mariabackup) writes into a pipe of 64 KiB to 1 MiB. When
the thread that reads the pipe also chunks, hashes and hands blocks to the writer, the tool
stands still for as long as that takes: chunking time adds to the dump's. A `ReadAhead` reads
the stream in a thread that does nothing else (its reads release the GIL), keeping up to
`depth` blocks of `block_size` bytes queued for the consumer, so the tool writes while the
consumer chunks.

Contracts:
- `blocks()` yields the stream's bytes in order, in blocks of `block_size` bytes (the last one
  shorter), then stops at end of stream; an error the reader met (OSError...) is raised there,
  after the blocks read before it.
- The ReadAhead owns the stream. `close()` never waits for a read in progress: a read blocked
  on a silent producer would hang it (and BufferedReader.close waits for a read that holds
  its lock). When the reader is still running, close() only asks it to stop; the reader
  closes the stream itself once its current read returns, which the owner of the producer
  ensures by stopping the producer (DatabaseSource.abort kills the tool, ending the read).
- Memory: at most depth + 2 blocks (the queue, one being read, one being consumed): 32 MiB.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator
from typing import IO

from backupctl.repo.chunker import read_full

# 8 MiB blocks: the chunker re-scans the chunk a block ends in (cut by the block's end, not
# by content) when the next block comes, so larger blocks waste less (292 MB pgbench dump:
# 0.31 s of chunking with 4 MiB blocks, 0.25 s with 8, 0.20 s with 16); two queued.
_BLOCK = 8 * 1024 * 1024
_END = object()  # queued after the last block


class ReadAhead:
    def __init__(self, stream: IO[bytes], block_size: int = _BLOCK, depth: int = 2) -> None:
        self._stream = stream
        self._block_size = block_size
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._done = False
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)
        self._thread.start()

    def blocks(self) -> Iterator[bytes]:
        while not self._done:
            item = self._queue.get()
            if item is _END:
                self._done = True
            elif isinstance(item, BaseException):
                self._done = True
                raise item
            else:
                assert isinstance(item, bytes)
                yield item

    def close(self) -> None:
        """Stop reading; the stream is closed now, or by the reader when its read returns."""
        self._stop.set()
        # Unblock a reader waiting for room in the queue.
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        if not self._thread.is_alive():
            self._close_stream()

    # -- the reader thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                data = read_full(self._stream, self._block_size)
                if data and not self._put(data):
                    return
                if len(data) < self._block_size:
                    self._put(_END)
                    return
        except BaseException as exc:  # handed to the consumer, raised by blocks()
            self._put(exc)
        finally:  # the stream ended, failed or is no longer wanted: nothing more is read
            self._close_stream()

    def _put(self, item: object) -> bool:
        """Queue `item` unless asked to stop first; False when stopped."""
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _close_stream(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.close()
