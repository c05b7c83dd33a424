"""Reading a backup back: item streams -> RestoreEntry objects with prefetched content.

Blobs are loaded (read, authenticated, decompressed, ID-checked) by a thread pool
ahead of the consumer, bounded by a byte window, and handed over in order. Sources
consume entries strictly in order; content not consumed is simply dropped.

The one chunk of each small file is loaded in a batch with its neighbours' (up to
_BATCH_BLOBS chunks or _BATCH_BYTES bytes), by the thread that first asks for one of them,
not by the pool: handing small files between threads cost three times the work itself
(GIL and future hand-offs; docs/performance.md, "Many small files"). A chunk that fails to
load fails only the file that needs it, as an unbatched one would.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from backupctl.errors import ExitCode, RestoreIncompleteError
from backupctl.records import SourceRecord
from backupctl.repo.items import Item, read_items
from backupctl.repo.repository import Repository
from backupctl.sources.base import RestoreEntry

_WINDOW_BYTES = 48 << 20
_PER_FILE_AHEAD = 8
_BATCH_BLOBS = 64
_BATCH_BYTES = 2 << 20


class _Batch:
    """Chunks of consecutive small files, loaded together on the first `get` (in the calling
    thread; thread-safe) and dropped once every file of the batch has taken its chunk."""

    __slots__ = ("ids", "size", "_load", "_loaded", "_taken", "_lock")

    def __init__(self, load: Callable[[bytes], bytes]) -> None:
        self.ids: list[bytes] = []
        self.size = 0
        self._load = load
        self._loaded: list[bytes | BaseException] | None = None
        self._taken = 0
        self._lock = threading.Lock()

    def get(self, index: int) -> bytes | BaseException:
        with self._lock:
            if self._loaded is None:
                self._loaded = _load_all(self._load, self.ids)
            loaded = self._loaded[index]
            self._taken += 1
            if self._taken == len(self.ids):
                self._loaded = None  # every file has its chunk: free the batch's memory
                self._taken = 0
            return loaded


class _Batched:
    """One file's chunk in a batch; `result()` as of a future of that chunk alone."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index

    def result(self) -> bytes:
        loaded = self.batch.get(self.index)
        if isinstance(loaded, BaseException):
            raise loaded
        return loaded


def _load_all(load: Callable[[bytes], bytes], ids: list[bytes]) -> list[bytes | BaseException]:
    """In a pool thread: each chunk, or the error loading it (raised for its own file only)."""
    out: list[bytes | BaseException] = []
    for blob_id in ids:
        try:
            out.append(load(blob_id))
        except Exception as exc:  # handed to the one file that needs this chunk
            out.append(exc)
    return out


class Prefetcher:
    def __init__(self, repo: Repository, workers: int = 0) -> None:
        self.repo = repo
        # One decoding thread per core: zstd, AES-GCM and BLAKE3 release the GIL, so more
        # threads than cores only add GIL hand-offs (measured: 4 threads on 2 cores restored
        # about 12% slower than 2, with twice the futex calls; docs/performance.md).
        self.pool = ThreadPoolExecutor(
            max_workers=workers or max(2, min(8, os.cpu_count() or 1)), thread_name_prefix="restore"
        )

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def entries(
        self,
        tree: list[bytes],
        select: Callable[[Callable[[], Iterator[Item]]], Iterator[Item]] | None = None,
    ) -> Iterator[RestoreEntry]:
        """RestoreEntry objects for a source's item stream, content loaded ahead; `select`
        (backups/browse.py RestoreSelection.select) filters the items before any content loads."""
        pending: deque[tuple[Item, list[Future[bytes] | _Batched]]] = deque()
        inflight = 0
        batch = _Batch(self.repo.load_blob)
        stream = select(lambda: read_items(self.repo, tree)) if select else read_items(self.repo, tree)
        for item in stream:
            futures: list[Future[bytes] | _Batched]
            if len(item.chunks) == 1 and 0 <= item.size <= _BATCH_BYTES:
                futures = [_Batched(batch, len(batch.ids))]
                batch.ids.append(item.chunks[0])
                batch.size += item.size
                if len(batch.ids) >= _BATCH_BLOBS or batch.size >= _BATCH_BYTES:
                    batch = self._next_batch(batch)
            elif not item.chunks:  # a directory, link or empty file: nothing to load
                futures = []
            else:
                batch = self._next_batch(batch)
                futures = [self.pool.submit(self.repo.load_blob, c) for c in item.chunks[:_PER_FILE_AHEAD]]
            pending.append((item, futures))
            inflight += min(item.size, _PER_FILE_AHEAD * (8 << 20))
            while inflight > _WINDOW_BYTES or len(pending) > 512:
                batch = self._next_batch(batch)  # the head may wait in it
                done_item, done_futs = pending.popleft()
                inflight -= min(done_item.size, _PER_FILE_AHEAD * (8 << 20))
                yield self._entry(done_item, done_futs)
        self._next_batch(batch)
        while pending:
            done_item, done_futs = pending.popleft()
            yield self._entry(done_item, done_futs)

    def _next_batch(self, batch: _Batch) -> _Batch:
        """Close `batch` (if it holds anything: it loads when first asked); the batch to fill next."""
        if not batch.ids:
            return batch
        return _Batch(self.repo.load_blob)

    def _entry(self, item: Item, futures: list[Future[bytes] | _Batched]) -> RestoreEntry:
        def chunks() -> Iterator[bytes]:
            window: deque[Future[bytes] | _Batched] = deque(futures)
            next_no = len(futures)
            while window:
                fut = window.popleft()
                if next_no < len(item.chunks):
                    window.append(self.pool.submit(self.repo.load_blob, item.chunks[next_no]))
                    next_no += 1
                yield fut.result()

        return RestoreEntry(
            path=item.path,
            kind=item.kind,  # type: ignore[arg-type]
            mode=item.mode,
            uid=item.uid,
            gid=item.gid,
            user=item.user,
            group=item.group,
            mtime_ns=item.mtime_ns,
            size=item.size,
            target=item.target,
            chunks=chunks,
            xattrs=item.xattrs,
            rdev=item.rdev,
            sparse=item.sparse,
        )


def entry_count(src: SourceRecord) -> int:
    """How many entries a stored source holds (its files and directories)."""
    return int(src.get("files", 0) or 0) + int(src.get("dirs", 0) or 0)


def restore_stopped(
    exc: RestoreIncompleteError,
    written_before: int,
    total: int,
    target_dir: Path | None,
    safety_id: str | None,
) -> RestoreIncompleteError:
    """The one-line error for a restore that stopped part-way: what was written, where, why,
    and what state that leaves (the target is incomplete; in place, each file old or new)."""
    written = written_before + exc.written
    verb = "interrupted" if exc.exit_code == ExitCode.INTERRUPTED else "stopped"
    if target_dir is not None:
        message = (
            f"restore {verb} after writing {written} of {total} entries into {target_dir}: "
            f"{exc.cause}; the target is incomplete"
        )
        hint = f"fix the cause and restore again, or remove {target_dir}"
    else:
        message = (
            f"restore {verb} after writing {written} of {total} entries in place: {exc.cause}; "
            "the rest is as it was (every file written is whole)"
        )
        hint = (
            f"undo with `backupctl backup restore {safety_id[:8]} --yes`, or fix the cause and restore again"
            if safety_id
            else "fix the cause and restore again"
        )
    return RestoreIncompleteError(
        message, hint=hint, written=written, cause=exc.cause, exit_code=exc.exit_code
    )
