"""The items of one source on their way into its item stream: in scan order, small reads batched.

For the archiver (backups/archiver.py). Each scanned entry becomes one slot: an item already
known (a directory, a symlink, a file unchanged since the parent backup) or a read of a
regular file. Reads of small files (one chunk at most) are grouped, up to BATCH_READS files or
BATCH_BYTES bytes, into one task of the reader pool; a larger file is a task of its own, and a
stream is read by the calling thread, because a dump's pipes must be drained in the order the
source opened them. Items reach the stream in scan order whatever finishes first.

Why batches: handing one small file to a thread (a future, a condition variable, two thread
switches under the GIL) cost more than reading it. Profiled on 20,000 files of a few KiB,
submits, futures and condition variables took about a quarter of the backup's CPU time
(docs/performance.md, "Many small files").

Memory: a group holds at most GROUP_SLOTS slots (known items wait in it behind its reads), and
the caller bounds the queue with `drain(keep)`; items hold chunk IDs, never content.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from backupctl.repo.items import Item, ItemStreamWriter
from backupctl.sources.base import Entry

BATCH_READS = 64  # small files read by one task
BATCH_BYTES = 2 << 20  # ... or this many bytes of them
GROUP_SLOTS = 512  # known items waiting behind a group's reads

Read = Callable[[Entry], Item | None]
_Slot = Item | None | Future[list[Item | None]]


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
        self._group: list[Entry | Item | None] = []  # the open batch: reads and what follows them
        self._group_reads = 0
        self._group_bytes = 0

    def known(self, item: Item | None) -> None:
        """An item that needs no read (None: nothing to store)."""
        if self._group_reads:
            self._group.append(item)
            if len(self._group) >= GROUP_SLOTS:
                self._submit_group()
        else:
            self._queue.append(item)

    def read_small(self, entry: Entry) -> None:
        """A regular file of at most one chunk: read by the pool, batched with its neighbours."""
        self._group.append(entry)
        self._group_reads += 1
        self._group_bytes += max(entry.size, 0)
        if self._group_reads >= BATCH_READS or self._group_bytes >= BATCH_BYTES:
            self._submit_group()

    def read_large(self, entry: Entry) -> None:
        """A regular file of several chunks: one task of its own."""
        self._submit_group()
        self._queue.append(self._pool.submit(_one, self._read, entry))

    def read_here(self, entry: Entry) -> None:
        """A stream: read now, in this thread, after everything scanned before it."""
        self.drain(0)
        self._queue.append(self._read(entry))

    def drain(self, keep: int) -> None:
        """Add items to the stream until at most `keep` slots wait (waiting for their reads)."""
        if keep == 0:
            self._submit_group()
        while len(self._queue) > keep:
            head = self._queue.popleft()
            if isinstance(head, Future):
                for item in head.result():
                    self._add(item)
            else:
                self._add(head)

    def cancel(self) -> None:
        """The backup stops: reads not started are dropped."""
        self._group.clear()
        self._group_reads = self._group_bytes = 0
        for slot in self._queue:
            if isinstance(slot, Future):
                slot.cancel()

    def _add(self, item: Item | None) -> None:
        if item is not None:
            self._stream.add(item)
            self._emit(item)

    def _submit_group(self) -> None:
        if not self._group:
            return
        group = self._group
        self._group = []
        self._group_reads = self._group_bytes = 0
        self._queue.append(self._pool.submit(_group, self._read, group))


def _one(read: Read, entry: Entry) -> list[Item | None]:
    return [read(entry)]


def _group(read: Read, slots: list[Entry | Item | None]) -> list[Item | None]:
    """In a reader thread: the group's items, reading its entries in order."""
    return [read(slot) if isinstance(slot, Entry) else slot for slot in slots]
