"""The items of one source on their way into its item stream, in scan order.

For the archiver (backups/archiver.py). Each scanned entry becomes one slot: an item already
known (a directory, a symlink, a file unchanged since the parent backup, a small file the
scanning thread has just read), a read of a large regular file by the reader pool, or a
place in a batch of small files read elsewhere (backups/filereaders.py: reader processes).
A stream is read by the calling thread after everything before it, because a dump's pipes
must be drained in the order the source opened them. Items reach the stream in scan order
whatever finishes first.

Why small files are not handed to reader threads: every hand-off to a thread, and every
system call made while another thread wants the GIL, is a GIL transfer through a futex.
Reading 100,000 small files in two reader threads beside the walking thread made 26 futex
calls per file and took 12 s; read by the scanning thread itself, the same backup took
7.4 s on half the CPU time (docs/performance.md, "Small files without hand-offs").

A batch holds up to BATCH_READS reads or BATCH_BYTES bytes of them, and the known items
scanned between them (up to GROUP_SLOTS slots in all), so that order is kept without a slot
per file. Memory: the caller bounds the queue with `drain(keep)`, and `drain` also keeps at
most BATCHES_AHEAD batches (whose encoded blobs wait in memory) ahead; items hold chunk IDs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from backupctl.repo.items import Item, ItemStreamWriter
from backupctl.sources.base import Entry

BATCH_READS = 64  # small files in one batch
BATCH_BYTES = 2 << 20  # ... or this many bytes of them
GROUP_SLOTS = 512  # slots in one batch, known items included
BATCHES_AHEAD = 8  # batches submitted and not yet in the stream: their results wait in memory

Read = Callable[[Entry], Item | None]
# A batch of entries -> a future of one result per entry, and (entry, result) -> its item;
# the second is called in the draining thread, in scan order.
SubmitBatch = Callable[[list[Entry]], "Future[list[Any]]"]
FinishRead = Callable[[Entry, Any], Item | None]


@dataclass
class _Batch:
    slots: list[Entry | Item | None]
    future: Future[list[Any]]


_Slot = Item | None | Future[Item | None] | _Batch


class InScanOrder:
    """The slots of one source not yet in its item stream, oldest first.

    `emit` is called, in scan order and in the calling thread, with each item that entered
    the stream (None slots, skipped files, are dropped). `submit_batch` and `finish_read`
    are needed only if `read_batched` is used."""

    def __init__(
        self,
        stream: ItemStreamWriter,
        pool: ThreadPoolExecutor,
        read: Read,
        emit: Callable[[Item], None],
        submit_batch: SubmitBatch | None = None,
        finish_read: FinishRead | None = None,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._read = read
        self._emit = emit
        self._submit_batch = submit_batch
        self._finish_read = finish_read
        self._queue: deque[_Slot] = deque()
        self._group: list[Entry | Item | None] = []  # the open batch: reads and what follows them
        self._group_reads = 0
        self._group_bytes = 0
        self._batches = 0  # _Batch slots in the queue

    def known(self, item: Item | None) -> None:
        """An item that needs no read by anyone else (None: nothing to store)."""
        if self._group_reads:
            self._group.append(item)
            if len(self._group) >= GROUP_SLOTS:
                self._close_group()
        elif self._queue:
            self._queue.append(item)
        else:  # nothing waits before it: straight into the stream
            self._add(item)

    def read_batched(self, entry: Entry) -> None:
        """A small regular file, read with its neighbours by `submit_batch`."""
        self._group.append(entry)
        self._group_reads += 1
        self._group_bytes += max(entry.size, 0)
        if (
            self._group_reads >= BATCH_READS
            or self._group_bytes >= BATCH_BYTES
            or len(self._group) >= GROUP_SLOTS
        ):
            self._close_group()

    def read_large(self, entry: Entry) -> None:
        """A regular file of several chunks: read by the pool."""
        self._close_group()
        self._queue.append(self._pool.submit(self._read, entry))

    def read_here(self, entry: Entry) -> None:
        """A stream: read now, in this thread, after everything scanned before it."""
        self.drain(0)
        self._add(self._read(entry))

    def drain(self, keep: int) -> None:
        """Add items to the stream until at most `keep` slots wait (waiting for their reads)."""
        if keep == 0:
            self._close_group()
        while len(self._queue) > keep or self._batches > BATCHES_AHEAD:
            head = self._queue.popleft()
            if isinstance(head, _Batch):
                self._batches -= 1
                self._add_batch(head)
            else:
                self._add(head.result() if isinstance(head, Future) else head)

    def cancel(self) -> None:
        """The backup stops: reads not started are dropped."""
        self._group.clear()
        self._group_reads = self._group_bytes = 0
        for slot in self._queue:
            if isinstance(slot, Future):
                slot.cancel()
            elif isinstance(slot, _Batch):
                slot.future.cancel()
        self._queue.clear()
        self._batches = 0

    def _close_group(self) -> None:
        if not self._group:
            return
        group = self._group
        self._group = []
        self._group_reads = self._group_bytes = 0
        assert self._submit_batch is not None
        reads = [slot for slot in group if isinstance(slot, Entry)]
        self._queue.append(_Batch(group, self._submit_batch(reads)))
        self._batches += 1

    def _add_batch(self, batch: _Batch) -> None:
        assert self._finish_read is not None
        results = iter(batch.future.result())
        for slot in batch.slots:
            self._add(self._finish_read(slot, next(results)) if isinstance(slot, Entry) else slot)

    def _add(self, item: Item | None) -> None:
        if item is not None:
            self._stream.add(item)
            self._emit(item)
