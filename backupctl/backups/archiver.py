"""Backing up sources into a repository: entries -> chunks -> blobs -> item streams.

The archiver does not write the manifest; the caller (engine.backup) does that after
`run()` returned, which keeps the commit point in one place.
"""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from backupctl.backups.filereaders import LARGE, SKIP, FileReaders, Result
from backupctl.backups.readqueue import InScanOrder
from backupctl.backups.walkahead import WalkAhead
from backupctl.errors import IntegrityError, InterruptedError_
from backupctl.events import CANCEL, InfoEvent, Progress, Reporter, WarningEvent, draws_progress
from backupctl.records import SourceRecord
from backupctl.repo.chunker import DATA_CHUNKS, chunk_blocks, chunk_stream, read_full
from backupctl.repo.items import Item, ItemStreamWriter, path_key, read_items
from backupctl.repo.readahead import ReadAhead
from backupctl.repo.repository import Repository
from backupctl.repo.writer import BlobWriter
from backupctl.sources.base import Entry, SkipEntry, Source


@dataclass
class SourceResult:
    type: str
    method: str
    describe: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)
    tree: list[str] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    reused_files: int = 0
    warnings: list[dict[str, str]] = field(default_factory=list)

    def to_doc(self) -> SourceRecord:
        """The manifest's record of this source (keys in field order, as always)."""
        return {
            "type": self.type,
            "method": self.method,
            "describe": self.describe,
            "info": self.info,
            "tree": self.tree,
            "files": self.files,
            "dirs": self.dirs,
            "bytes": self.bytes,
            "reused_files": self.reused_files,
            "warnings": self.warnings,
        }


def source_key(type_: str, describe: dict[str, Any]) -> str:
    """Identifies "the same source" across backups, for incremental reuse."""
    import json

    return type_ + ":" + json.dumps(describe, sort_keys=True)


class _WarningTap:
    """Forwards events and keeps the warnings for the source's result."""

    def __init__(self, forward: Reporter, sink: list[dict[str, str]]) -> None:
        self.forward = forward
        self.sink = sink

    def emit(self, event: Any) -> None:
        if isinstance(event, WarningEvent):
            self.sink.append({"path": event.path, "message": event.message})
        self.forward.emit(event)


# Large files read, chunked and hashed at once, and how many slots (backups/readqueue.py) may
# wait behind an earlier, slower read before the scan pauses (bounds memory: items hold only
# chunk IDs).
_FILE_READERS = 2
_READ_AHEAD = 512
# Small files are read by reader processes (backups/filereaders.py) once a backup has read
# this many itself (the processes take ~0.1 s to start), on a machine with several cores.
READERS_AFTER = 2000
READER_PROCESSES = 2


class Archiver:
    def __init__(
        self, repo: Repository, writer: BlobWriter, reporter: Reporter, total_bytes: int = 0
    ) -> None:
        self.repo = repo
        self.writer = writer
        self.reporter = reporter
        self.total_bytes = total_bytes
        self.bytes_done = 0
        self.files_done = 0
        self._last_emit = 0.0
        self._count_lock = threading.Lock()
        self._zero_ids: dict[int, bytes] = {}  # length -> ID of an all-zero chunk (holes)
        # The walk ahead of the current files source (backups/walkahead.py) and the counters
        # at its start: the totals reported are those plus the walk's.
        self._walk: WalkAhead | None = None
        self._walk_base = (0, 0)
        self._walk_announced = False
        self._small_read = 0  # small files read by this thread, this backup
        self._readers: FileReaders | None = None

    def _progress(self, current: str, force: bool = False) -> None:
        if CANCEL.is_set():
            raise InterruptedError_("interrupted: the backup was cancelled")
        now = time.monotonic()
        walk = self._walk
        if walk is not None and not self._walk_announced and walk.done.is_set():
            self._walk_announced = force = True  # the totals are final: say so at once
        if force or now - self._last_emit > 0.2:
            self._last_emit = now
            if walk is None:  # not a file tree: the parent's size, if any, as an estimate
                self.reporter.emit(
                    Progress(self.bytes_done, self.files_done, self.total_bytes, 0, current, estimate=True)
                )
                return
            base_bytes, base_files = self._walk_base
            total_bytes, total_files = base_bytes + walk.bytes, base_files + walk.files
            self.reporter.emit(
                Progress(
                    self.bytes_done,
                    self.files_done,
                    total_bytes,
                    total_files,
                    current,
                    estimate=not walk.done.is_set(),
                )
            )

    def backup_source(self, source: Source, parent: SourceRecord | None) -> SourceResult:
        """Store one source; `parent` is the parent backup's record of the same source.

        Files larger than one chunk are read, chunked and hashed by a small pool of threads
        (several at once keep both cores busy while zstd and AES run in the writer's pool);
        small files are read by this thread as the walk reaches them, and streams are read
        here too, in order, because a dump's pipes must be drained in the order the source
        opened them. Items reach the item stream in scan order either way.
        """
        result = SourceResult(source.options.type, source.method, source.describe())
        source.reporter = _WarningTap(self.reporter, result.warnings)
        previous = self._parent_cursor(parent) if parent and source.supports_incremental else None
        stream = ItemStreamWriter(self.writer)
        self._start_walk(source)
        pool = ThreadPoolExecutor(max_workers=_FILE_READERS, thread_name_prefix="read")
        pending = InScanOrder(
            stream,
            pool,
            lambda entry: self._store_entry(entry, result, source),
            lambda item: self._count(item, result),
            self._submit_batch,
            lambda entry, read: self._finish_read(entry, read, result, source),
        )
        try:
            for entry in source.scan():
                self._queue_entry(entry, source, previous, result, pending)
                pending.drain(_READ_AHEAD)
                self._progress(entry.path)
            pending.drain(0)
            source.finish()
            if previous is not None:
                previous.report()
        except BaseException:
            self._end_walk()
            pending.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
            self._close_readers(abort=True)
            source.abort()
            raise
        pool.shutdown(wait=True)
        self._close_readers()
        result.info = source.info()
        result.tree = [b.hex() for b in stream.close()]
        self._progress("", force=True)
        self._end_walk()
        return result

    def _queue_entry(
        self,
        entry: Entry,
        source: Source,
        previous: ParentCursor | None,
        result: SourceResult,
        pending: InScanOrder,
    ) -> None:
        """Queue one scanned entry: an unchanged file is reused from the parent, a small file
        (one chunk) read here at once, a larger one by the pool, a stream here in scan order."""
        reused = self._reuse(entry, previous, result)
        if reused is not None or entry.kind != "file":
            pending.known(reused or Item.from_entry(entry, 0, []))
        elif not entry.reusable:
            pending.read_here(entry)
        elif entry.sparse or not 0 <= entry.size <= DATA_CHUNKS.min_size:
            pending.read_large(entry)
        elif entry.local_path and self._use_readers():
            pending.read_batched(entry)
        else:  # no hand-off to a thread: see readqueue.py for why
            self._small_read += 1
            pending.known(self._store_entry(entry, result, source))

    def _use_readers(self) -> bool:
        """Whether small files go to reader processes (started here, on first use)."""
        if self._readers is None:
            if self._small_read < READERS_AFTER or len(os.sched_getaffinity(0)) < 2:
                return False
            keys = self.repo.cipher.keys
            self._readers = FileReaders(
                keys.enc_key, keys.id_key, self.repo.codec.level, DATA_CHUNKS.min_size, READER_PROCESSES
            )
        return True

    def _close_readers(self, abort: bool = False) -> None:
        if self._readers is not None:
            self._readers.close(abort=abort)
            self._readers = None

    def _submit_batch(self, entries: list[Entry]) -> Future[list[Result]]:
        assert self._readers is not None
        return self._readers.submit([(e.local_path, e.size, e.mtime_ns, e.inode) for e in entries])

    def _finish_read(self, entry: Entry, read: Result, result: SourceResult, source: Source) -> Item | None:
        """A small file read by a reader process (filereaders.py lists the results), in
        scan order: its blob is packed here and its item made as _store_entry would."""
        if read[0] == SKIP:
            source.reporter.emit(WarningEvent(read[1], "/" + entry.path))
            return None
        if read[0] == LARGE:  # grew past one chunk since the walk: read here, in full
            return self._store_entry(entry, result, source)
        _, size, blob_id, encoded, warning = read
        chunks: list[bytes] = []
        if blob_id is not None:
            self.writer.add_encoded(blob_id, size, encoded)
            chunks.append(blob_id)
        with self._count_lock:
            result.bytes += size
            self.bytes_done += size
        if warning:
            source.reporter.emit(WarningEvent(warning, "/" + entry.path))
        return Item.from_entry(entry, size, chunks)

    def _count(self, item: Item, result: SourceResult) -> None:
        """An item entered the stream (in scan order, in the scanning thread)."""
        if item.kind == "dir":
            result.dirs += 1
        else:
            result.files += 1
            self.files_done += 1

    def _start_walk(self, source: Source) -> None:
        # Only for the display: skipped when nothing shows progress (cron, pipes).
        if WalkAhead.supports(source) and draws_progress(self.reporter):
            self._walk_base = (self.bytes_done, self.files_done)
            self._walk_announced = False
            self._walk = WalkAhead(source).start()

    def _end_walk(self) -> None:
        if self._walk is not None:
            self._walk.stop()
            self._walk = None

    def _parent_cursor(self, parent: SourceRecord) -> ParentCursor:
        tree = [bytes.fromhex(h) for h in parent.get("tree", [])]
        return ParentCursor(read_items(self.repo, tree), self.reporter)

    def _reuse(self, entry: Entry, previous: ParentCursor | None, result: SourceResult) -> Item | None:
        """The parent's item for an unchanged file (same path, size, mtime, ctime, inode), else None."""
        if previous is None or entry.kind != "file" or not entry.reusable:
            return None
        old = previous.find(entry.path)
        if (
            old is not None
            and old.kind == "file"
            and old.path == entry.path
            and old.size == entry.size
            and old.mtime_ns == entry.mtime_ns
            and old.ctime_ns == entry.ctime_ns
            and old.inode == entry.inode
            and all(c in self.repo.index for c in old.chunks)
        ):
            with self._count_lock:
                result.reused_files += 1
                result.bytes += entry.size
                self.bytes_done += entry.size
            new = Item.from_entry(entry, entry.size, old.chunks)
            return old if new == old else new  # the same: its stored line is written again
        return None

    def _store_entry(self, entry: Entry, result: SourceResult, source: Source) -> Item | None:
        """Read, chunk and store one file's content."""
        assert entry.open is not None
        try:
            fh = entry.open()
        except SkipEntry as exc:
            source.reporter.emit(WarningEvent(str(exc), "/" + entry.path if entry.reusable else entry.path))
            return None
        if entry.size < 0:  # a dump tool's pipe: any failure fails the backup, see _store_stream
            size, chunks = self._store_stream(fh, entry)
        else:
            try:
                size, chunks = self._store_content(fh, entry, small=0 <= entry.size <= DATA_CHUNKS.min_size)
            except (OSError, SkipEntry) as exc:
                if not entry.reusable:  # a source's own file (a SQLite snapshot): fail the backup
                    raise
                source.reporter.emit(WarningEvent(f"read failed: {exc}", "/" + entry.path))
                return None
            finally:
                fh.close()
        if entry.check_unchanged is not None and (problem := entry.check_unchanged()):
            source.reporter.emit(WarningEvent(problem, "/" + entry.path))
        with self._count_lock:
            result.bytes += size
        return Item.from_entry(entry, size, chunks)

    def _store_stream(self, fh: IO[bytes], entry: Entry) -> tuple[int, list[bytes]]:
        """A stream (a dump tool's stdout): a ReadAhead drains the pipe while this thread
        chunks and hashes, so the tool never waits for the chunker. Any failure is raised:
        a dump cannot be skipped with a warning like an unreadable file. The ReadAhead owns
        `fh` and closes it."""
        reader = ReadAhead(fh)
        try:
            return self._store_pieces(chunk_blocks(reader.blocks()), entry.path, small=False)
        finally:
            reader.close()

    def _store_content(self, fh: IO[bytes], entry: Entry, small: bool) -> tuple[int, list[bytes]]:
        pieces: Iterator[bytes | int]
        if entry.sparse:
            pieces = self._sparse_pieces(fh, entry.size)
        elif small:
            data = read_full(fh, DATA_CHUNKS.min_size + 1)
            if len(data) > DATA_CHUNKS.min_size:  # grew since stat: fall back to streaming
                pieces = chunk_stream(_Prepend(data, fh))  # type: ignore[arg-type]
            else:
                pieces = iter([data] if data else [])
        else:
            pieces = chunk_stream(fh)
        return self._store_pieces(pieces, entry.path, small)

    def _store_pieces(self, pieces: Iterator[bytes | int], path: str, small: bool) -> tuple[int, list[bytes]]:
        """Store each chunk (an int: a hole of that many zero bytes); (size, chunk IDs)."""
        chunks: list[bytes] = []
        size = 0
        for piece in pieces:
            if isinstance(piece, int):  # a hole of `piece` bytes: an all-zero chunk, never read
                chunks.append(self._zero_chunk(piece))
                size += piece
                with self._count_lock:
                    self.bytes_done += piece
                continue
            chunks.append(self.writer.add(piece, inline=small))
            size += len(piece)
            with self._count_lock:
                self.bytes_done += len(piece)
            if len(chunks) % 16 == 0:
                self._progress(path)
        return size, chunks

    def _zero_chunk(self, length: int) -> bytes:
        blob_id = self._zero_ids.get(length)
        if blob_id is None:  # stored once per length and backup; later holes only refer to it
            blob_id = self._zero_ids[length] = self.writer.add(bytes(length))
        return blob_id

    @staticmethod
    def _sparse_pieces(fh: IO[bytes], size: int) -> Iterator[bytes | int]:
        """Chunks of a file with holes: each data extent (SEEK_DATA/SEEK_HOLE) is chunked on
        its own and each hole becomes all-zero chunks of at most max_size bytes, given as
        their length and never read. The content is the same bytes a plain read gives, so
        any reader restores it; the item's sparse flag lets restore seek over the zero
        chunks. Bytes past `size` (the file grew) are read plainly."""
        fd = fh.fileno()
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:  # no SEEK_DATA here: read the rest plainly
                    break
                data = size  # only a hole remains
            data = min(data, size)
            while pos < data:  # the hole before the data
                n = min(data - pos, DATA_CHUNKS.max_size)
                yield n
                pos += n
            if pos >= size:
                break
            end = min(os.lseek(fd, data, os.SEEK_HOLE), size)
            yield from chunk_stream(_Range(fd, data, end))  # type: ignore[arg-type]
            pos = end
        os.lseek(fd, pos, os.SEEK_SET)
        yield from chunk_stream(fh)


class ParentCursor:
    """The parent backup's items of one source, read in step with the walk: a merge join.

    The item stream is stored in scan order, and the files source scans in path_key order
    (items.py), so both sides advance together and the parent is never held in memory
    (issue 14: a dict of the whole parent cost ~900 bytes per file). `find(path)` skips
    parent items that sort before `path` and returns the parent item only if it has that
    exact path; the caller still compares size, mtime, ctime and inode.

    Order is checked, not trusted: where the walk goes back (a path sorting before one
    already looked up) or the parent's stream does (written by an older version, whose
    roots were ordered by depth), a lookup can miss. A miss only means the file is read
    again (its chunks still deduplicate): a wrong order never makes a file reuse another
    path's item. A parent that cannot be read (IntegrityError) is dropped the same way.
    """

    def __init__(self, items: Iterator[Item], reporter: Reporter) -> None:
        self._items: Iterator[Item] | None = items
        self._reporter = reporter
        self._head: Item | None = None
        self._head_key = ""
        self._last_key = ""  # the last walked key looked up
        self.parent_disorder = 0  # parent items found out of order
        self.walk_disorder = 0  # lookups that went back
        self._advance()

    def _advance(self) -> None:
        if self._items is None:
            self._head = None
            return
        try:
            item = next(self._items, None)
        except IntegrityError as exc:  # a damaged parent (index, pack) must not stop new backups
            self._reporter.emit(
                InfoEvent(f"the parent backup cannot be read ({exc.message}): reading the remaining files")
            )
            self._items = self._head = None
            return
        if item is None:
            self._items = self._head = None
            return
        key = path_key(item.path)
        if self._head is not None and key < self._head_key:
            self.parent_disorder += 1
        self._head, self._head_key = item, key

    def find(self, path: str) -> Item | None:
        key = path_key(path)
        if key < self._last_key:
            self.walk_disorder += 1
        self._last_key = key
        while self._head is not None and self._head_key < key:
            self._advance()
        if self._head is not None and self._head.path == path:
            found = self._head
            self._advance()
            return found
        return None

    def report(self) -> None:
        if self.parent_disorder or self.walk_disorder:
            self._reporter.emit(
                InfoEvent(
                    "the parent backup's items and this scan were not in the same path order "
                    f"({self.parent_disorder} parent and {self.walk_disorder} scan steps back): "
                    "some unchanged files were read again"
                )
            )


class _Range:
    """A stream of bytes [start, end) of a file descriptor (pread: no shared offset)."""

    def __init__(self, fd: int, start: int, end: int) -> None:
        self.fd, self.pos, self.end = fd, start, end

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        self.pos += len(data)
        return data


class _Prepend:
    """A stream that first returns `head`, then the rest of `tail`."""

    def __init__(self, head: bytes, tail: IO[bytes]) -> None:
        self.head = head
        self.tail = tail

    def read(self, n: int = -1) -> bytes:
        if self.head:
            out, self.head = self.head[:n] if n >= 0 else self.head, self.head[n:] if n >= 0 else b""
            return out
        return self.tail.read(n)
