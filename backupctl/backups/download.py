"""Exporting a backup in standard formats that need no backupctl to open.

* files part: a POSIX tar of every file-tree entry (paths as stored, i.e. absolute
  paths without the leading '/'), with modes, owners, mtimes, symlinks, hard links;
* database part: each database source's native artefact (an SQLite database file,
  a pg_dump SQL script, a mariadb-dump script...). A single database artefact with
  `--part database` is written as itself; several go into one tar;
* all: one tar holding both.

The tar is written as a stream (`tarfile` mode "w|"), so `--output -` can feed a pipe.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from typing import IO, Any

from backupctl.backups.restorer import Prefetcher
from backupctl.errors import NotFoundError
from backupctl.events import Finished, NullReporter, Progress, Reporter, Started
from backupctl.records import Manifest, SourceRecord
from backupctl.repo.repository import Repository
from backupctl.sources.base import RestoreEntry

FILE_SOURCES = {"files"}


class _ChunkReader(io.RawIOBase):
    """A file object over an iterator of chunks (what tarfile.addfile reads from)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            nxt = next(self._chunks, None)
            if nxt is None:
                break
            self._buf += nxt
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


_SPECIAL_TYPES = {"fifo": tarfile.FIFOTYPE, "chardev": tarfile.CHRTYPE, "blockdev": tarfile.BLKTYPE}


def _tar_info(entry: RestoreEntry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.mode = entry.mode
    info.uid, info.gid = entry.uid, entry.gid
    info.uname, info.gname = entry.user, entry.group
    seconds, nanos = divmod(entry.mtime_ns, 1_000_000_000)
    info.mtime = seconds
    if nanos:  # PAX keeps nanosecond mtimes exactly; GNU tar restores them
        info.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type, info.linkname = tarfile.SYMTYPE, entry.target
    elif entry.kind == "hardlink":
        info.type, info.linkname = tarfile.LNKTYPE, entry.target
    elif entry.kind in _SPECIAL_TYPES:  # FIFOs and device nodes (xattrs are not exported)
        info.type = _SPECIAL_TYPES[entry.kind]
        info.devmajor, info.devminor = entry.rdev or (0, 0)
    else:
        info.size = entry.size
    return info


def _sources(manifest: Manifest, part: str) -> list[SourceRecord]:
    if part == "all":
        return list(manifest["sources"])
    want_files = part == "files"
    chosen = [s for s in manifest["sources"] if (s["type"] in FILE_SOURCES) == want_files]
    if not chosen:
        raise NotFoundError(
            f"backup {manifest['id'][:8]} has no {part} part",
            hint="its sources are: " + ", ".join(s["method"] for s in manifest["sources"]),
        )
    return chosen


class _Counter:
    """Counts the content bytes and files written and reports them (byte-accurate: per chunk)."""

    def __init__(self, reporter: Reporter, total_bytes: int, total_files: int) -> None:
        self.reporter, self.total_bytes, self.total_files = reporter, total_bytes, total_files
        self.bytes = self.files = 0

    def chunks(self, entry: RestoreEntry) -> Iterator[bytes]:
        for chunk in entry.chunks():
            self.bytes += len(chunk)
            self.reporter.emit(
                Progress(self.bytes, self.files, self.total_bytes, self.total_files, entry.path)
            )
            yield chunk
        self.files += 1


def download(
    repo: Repository, manifest: Manifest, part: str, out: IO[bytes], reporter: Reporter | None = None
) -> dict[str, Any]:
    """Write the chosen part to `out`; returns {"format": "tar"|"raw", "files": N, "bytes": N}."""
    sources = _sources(manifest, part)
    reporter = reporter or NullReporter()
    subject = manifest["id"][:12]
    counter = _Counter(
        reporter,
        sum(int(s.get("bytes", 0) or 0) for s in sources),
        sum(int(s.get("files", 0) or 0) for s in sources),
    )
    reporter.emit(Started("download", subject, counter.total_bytes, counter.total_files))
    reporter.emit(Progress(0, 0, counter.total_bytes, counter.total_files))
    prefetcher = Prefetcher(repo)
    try:
        entries = (e for s in sources for e in prefetcher.entries([bytes.fromhex(b) for b in s["tree"]]))
        single = sum(s.get("files", 0) for s in sources) == 1 and not any(s.get("dirs") for s in sources)
        if part == "database" and single:
            entry = next(entries)
            written = 0
            for chunk in counter.chunks(entry):
                out.write(chunk)
                written += len(chunk)
            reporter.emit(Finished("download", subject))
            return {"format": "raw", "name": entry.path, "files": 1, "bytes": written}
        total = 0
        files = 0
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            for entry in entries:
                info = _tar_info(entry)
                if entry.kind == "file":
                    tar.addfile(info, _ChunkReader(counter.chunks(entry)))
                    total += entry.size
                    files += 1
                else:
                    tar.addfile(info)
        reporter.emit(Finished("download", subject))
        return {"format": "tar", "files": files, "bytes": total}
    finally:
        prefetcher.close()
