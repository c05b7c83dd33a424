"""The write pipeline: deduplicate, compress, encrypt and pack blobs in parallel.

Callers hand chunks to `add()`; it hashes them (keyed BLAKE3), drops
the ones the repository or this session already has, and passes the rest to a pool of
worker threads that compress and encrypt (both release the GIL) and append to the
open pack of the blob's type (small chunks may be encoded by the calling thread instead,
see `add(inline=True)`). A full pack is written to the destination by the worker
that filled it. Every FLUSH_PACKS packs (or FLUSH_BLOBS blobs) an index file is written, so blobs of an
interrupted backup are found again by the next one. `finish()` writes the remaining
packs and the last index file; only then may a manifest reference the blobs.

Blobs enter the repository's shared in-memory index (`repo.index`, used for dedup by
every backup of the process) only once an index file listing them is written; until
then only this writer dedups against them. So a backup that fails between a pack and
its index file never lets another backup reference a blob that no index lists.

Memory is bounded: at most _INFLIGHT_BYTES of chunks are in flight, plus one open
pack per blob type.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from backupctl.repo.pack import DATA, TREE, BlobEntry, PackBuilder, pack_name
from backupctl.repo.repository import Repository

FLUSH_PACKS = 8
# ... or once the written packs hold this many blobs: packs of small files hold tens of
# thousands each, and an index file's decoded JSON costs ~1 KB of Python objects per blob
# while it is built (here) and while it is read back (repo/index_files.py). Without this
# bound one index file listed a whole 500,000-file backup: 470 MiB peak RSS for the
# backup, 420 MiB for the next one, which read it.
FLUSH_BLOBS = 20_000
# A pack holds at most this many blobs (tiny files compress to a few hundred bytes: a 16 MiB
# pack would list ~100,000), so that one pack's entries, and the index file listing it, stay
# within the bound above.
PACK_BLOBS = 20_000
_INFLIGHT_BYTES = 24 << 20


@dataclass
class WriteStats:
    blobs_new: int = 0
    blobs_dedup: int = 0
    raw_new: int = 0  # plaintext bytes of new blobs
    stored: int = 0  # bytes written to the destination (packs and index files)
    packs: int = 0


class BlobWriter:
    def __init__(self, repo: Repository, *, workers: int = 0, pack_size: int = 16 << 20) -> None:
        self.repo = repo
        self.pack_size = pack_size
        self.workers = workers or max(1, os.cpu_count() or 1)
        self.stats = WriteStats()
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="pack")
        # Bytes of chunks handed to workers and not yet encoded: bounds memory whatever the
        # chunk sizes (a single chunk larger than the budget still goes through alone).
        self._budget = _INFLIGHT_BYTES
        self._inflight = 0
        self._room = threading.Condition()
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()  # blobs handed to workers but not yet in a written pack
        # Blobs in written packs that no written index file lists yet. Deduplicated against
        # within this writer only: if this backup fails, no other may reference them.
        self._written: set[bytes] = set()
        self._open: dict[str, PackBuilder] = {DATA: PackBuilder(DATA), TREE: PackBuilder(TREE)}
        self._unindexed: dict[str, list[BlobEntry]] = {}
        self._unindexed_blobs = 0  # blobs in _unindexed
        self._futures: list[Future[None]] = []
        self._error: BaseException | None = None
        self.index_ids: list[str] = []

    def add(self, data: bytes, blob_type: str = DATA, *, inline: bool = False) -> bytes:
        """Store a chunk unless it is already stored; returns its ID. Raises a worker's error.

        inline=True compresses, encrypts and packs in the calling thread instead of a
        worker: for small chunks added from several reader threads at once, where handing
        each one over (a future, a condition, two thread switches) costs more than the work.
        """
        blob_id = self.repo.cipher.blob_id(data)
        if not self._claim(blob_id, len(data)):
            return blob_id
        if inline:
            self._encode(blob_id, data, blob_type)
        else:
            self._submit(len(data), self._encode, blob_id, data, blob_type)
        return blob_id

    def add_encoded(self, blob_id: bytes, raw_len: int, encoded: bytes, blob_type: str = DATA) -> None:
        """Store a blob encoded elsewhere (codec.encode_blob of `raw_len` bytes whose ID is
        `blob_id`: backups/filereaders.py) unless it is already stored. Packed by the calling
        thread; a full pack is written by a worker, so the caller goes on meanwhile. Raises a
        worker's error."""
        if not self._claim(blob_id, raw_len):
            return
        full = self._pack(blob_id, encoded, raw_len, blob_type)
        if full is not None:  # the pack counts against the in-flight budget until written
            self._submit(full.size, self._write_pack, full)

    def _claim(self, blob_id: bytes, raw_len: int) -> bool:
        """Whether this blob is new (then it is pending from now on); a duplicate is counted.
        Raises a worker's error."""
        if self._error is not None:
            raise self._error
        with self._lock:
            if blob_id in self._pending or blob_id in self._written or blob_id in self.repo.index:
                self.stats.blobs_dedup += 1
                return False
            self._pending.add(blob_id)
            self.stats.blobs_new += 1
            self.stats.raw_new += raw_len
        return True

    def _submit(self, size: int, fn: Callable[..., None], *args: object) -> None:
        """Run fn(*args) in a worker once `size` bytes fit the in-flight budget."""
        with self._room:
            while self._inflight and self._inflight + size > self._budget:
                self._room.wait()
            self._inflight += size
        fut = self._pool.submit(fn, *args)
        fut.add_done_callback(lambda f: self._done(f, size))
        with self._lock:
            self._futures.append(fut)
            if len(self._futures) > 256:
                self._futures = [f for f in self._futures if not f.done()]

    def _done(self, fut: Future[None], size: int) -> None:
        with self._room:
            self._inflight -= size
            self._room.notify_all()
        if fut.cancelled():  # abort() cancels queued work; fut.exception() would raise CancelledError
            return
        exc = fut.exception()
        if exc is not None and self._error is None:
            self._error = exc

    def _encode(self, blob_id: bytes, data: bytes, blob_type: str) -> None:
        full = self._pack(blob_id, self.repo.codec.encode_blob(blob_id, data), len(data), blob_type)
        if full is not None:
            self._write_pack(full)

    def _pack(self, blob_id: bytes, encoded: bytes, raw_len: int, blob_type: str) -> PackBuilder | None:
        """Append an encoded blob to the open pack of its type; the pack if that filled it
        (the caller writes it)."""
        full: PackBuilder | None = None
        with self._lock:
            builder = self._open[blob_type]
            builder.add(blob_id, encoded, raw_len)
            if builder.size >= self.pack_size or len(builder.entries) >= PACK_BLOBS:
                full = builder
                self._open[blob_type] = PackBuilder(blob_type)
        return full

    def _write_pack(self, builder: PackBuilder) -> None:
        entries = list(builder.entries)
        pack_id, data = builder.finish(self.repo.codec)
        self.repo.dest.put(pack_name(pack_id), data)
        flush: dict[str, list[BlobEntry]] | None = None
        with self._lock:
            for e in entries:
                self._written.add(e.blob_id)
                self._pending.discard(e.blob_id)
            self.stats.stored += len(data)
            self.stats.packs += 1
            self._unindexed[pack_id] = entries
            self._unindexed_blobs += len(entries)
            if len(self._unindexed) >= FLUSH_PACKS or self._unindexed_blobs >= FLUSH_BLOBS:
                flush, self._unindexed = self._unindexed, {}
                self._unindexed_blobs = 0
        if flush:
            self._write_index(flush)

    def _write_index(self, packs: dict[str, list[BlobEntry]]) -> None:
        index_id = self.repo.write_index(packs)
        # Only now are these blobs durable and findable by anyone: publish them to the
        # repository's shared index (other backups of this process dedup against it).
        for pack_id, entries in packs.items():
            self.repo.index.add_pack(pack_id, entries)
        with self._lock:
            self.index_ids.append(index_id)
            for entries in packs.values():
                for e in entries:
                    self._written.discard(e.blob_id)

    def finish(self) -> WriteStats:
        """Wait for the workers, write the open packs and the last index file."""
        try:
            for fut in list(self._futures):
                fut.result()
        finally:
            self._pool.shutdown(wait=True)
        if self._error is not None:
            raise self._error
        for blob_type in (DATA, TREE):
            builder = self._open[blob_type]
            if builder.entries:
                self._open[blob_type] = PackBuilder(blob_type)
                self._write_pack(builder)
        if self._unindexed:
            flush, self._unindexed = self._unindexed, {}
            self._unindexed_blobs = 0
            self._write_index(flush)
        return self.stats

    def abort(self) -> None:
        """Stop without writing anything more (already written packs stay, unreferenced)."""
        for fut in self._futures:
            fut.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)
