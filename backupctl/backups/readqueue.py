"""The items of one source on their way into its item stream, in scan order.

For the archiver (backups/archiver.py). Each scanned entry becomes one slot: an item already
known (a directory, a symlink, a file unchanged since the parent backup, a small file the
scanning thread has just read) or a read of a large regular file by the reader pool. A stream
is read by the calling thread after everything before it, because a dump's pipes must be
drained in the order the source opened them. Items reach the stream in scan order whatever
finishes first.

Why small files are not handed to the pool: every hand-off to a thread, and every system call
made while another thread wants the GIL, is a GIL transfer through a futex. Reading 100,000
small files in two reader threads beside the walking thread made 26 futex calls per file and
took 12 s; read by the scanning thread itself, the same backup took 7.2 s on less than half
the CPU time (docs/performance.md, "Small files read by the walk").

Memory: the caller bounds the queue with `drain(keep)`; items hold chunk IDs, never content.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from backupctl.repo.items import Item, ItemStreamWriter
from backupctl.sources.base import Entry

Read = Callable[[Entry], Item | None]
_Slot = Item | None | Future[Item | None]


class InScanOrder:
    """The slots of one source not yet in its item stream, oldest first.

    `emit` is called, in scan order and in the calling thread, with each item that entered
    the stream (None slots, skipped files, are dropped)."""

    def __init__(
        self,
        stream: ItemStreamWriter,
        pool: ThreadPoolExecutor,
        read: Read,
        emit: Callable[[Item], None],
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._read = read
        self._emit = emit
        self._queue: deque[_Slot] = deque()

    def known(self, item: Item | None) -> None:
        """An item that needs no read by the pool (None: nothing to store)."""
        if self._queue:
            self._queue.append(item)
        else:  # nothing waits before it: straight into the stream
            self._add(item)

    def read_large(self, entry: Entry) -> None:
        """A regular file of several chunks: read by the pool."""
        self._queue.append(self._pool.submit(self._read, entry))

    def read_here(self, entry: Entry) -> None:
        """A stream: read now, in this thread, after everything scanned before it."""
        self.drain(0)
        self._add(self._read(entry))

    def drain(self, keep: int) -> None:
        """Add items to the stream until at most `keep` slots wait (waiting for their reads)."""
        while len(self._queue) > keep:
            head = self._queue.popleft()
            self._add(head.result() if isinstance(head, Future) else head)

    def cancel(self) -> None:
        """The backup stops: reads not started are dropped."""
        for slot in self._queue:
            if isinstance(slot, Future):
                slot.cancel()
        self._queue.clear()

    def _add(self, item: Item | None) -> None:
        if item is not None:
            self._stream.add(item)
            self._emit(item)
