"""Writing restored entries to a filesystem: shared by the `files` and `sqlite` sources.

Each entry lands at `<root>/<entry path>`, where root is the restore target or `/`
for an in-place restore. In place, every regular file is written to a temporary name
and renamed over the old one, so a reader sees either the old or the new file. Owner
is restored when running as root (by name if the name exists here, else by number);
directory metadata is applied last, deepest first, so writing files does not bump
their mtimes.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from functools import lru_cache
from pathlib import Path

from backupctl.events import Progress, Reporter, WarningEvent
from backupctl.sources.base import RestoreEntry
from backupctl.sources.restore_meta import SPECIAL_KINDS, apply_xattrs, make_special, write_content

# One writer thread beside the thread that reads the item stream. Several writers were
# measured slower on 2 cores (3 writers: ~15% longer restores, 2x the context switches):
# creating files is serialised in the kernel per directory, and the GIL hand-offs between
# writers cost more than the overlap gains.
_WRITERS = 1


@lru_cache(maxsize=4096)
def _uid_of(user: str, uid: int) -> int:
    if user:
        try:
            return pwd.getpwnam(user).pw_uid
        except KeyError:
            pass
    return uid


@lru_cache(maxsize=4096)
def _gid_of(group: str, gid: int) -> int:
    if group:
        try:
            return grp.getgrnam(group).gr_gid
        except KeyError:
            pass
    return gid


def _uid(entry: RestoreEntry) -> int:
    return _uid_of(entry.user, entry.uid)


def _gid(entry: RestoreEntry) -> int:
    return _gid_of(entry.group, entry.gid)


class FsRestorer:
    def __init__(self, target_dir: Path | None, reporter: Reporter, exact_xattrs: bool = False) -> None:
        # exact_xattrs: the backup recorded every object's xattrs, so ones it lacks are removed
        self.exact_xattrs = exact_xattrs
        self.root = Path(target_dir) if target_dir is not None else Path("/")
        self.in_place = target_dir is None
        self.reporter = reporter
        self.is_root = os.geteuid() == 0
        self.files = 0
        self.bytes = 0
        self._count_lock = threading.Lock()
        self._made: set[str] = set()  # directories known to exist

    def _dest(self, rel: str) -> Path | None:
        parts = rel.split("/")
        if rel.startswith("/") or ".." in parts:
            self.reporter.emit(WarningEvent("skipped: unsafe path in backup", rel))
            return None
        return self.root / rel

    def restore(self, entries: Iterator[RestoreEntry]) -> None:
        """Write entries; regular files go to the writer thread (so writing overlaps with
        reading the item stream), everything else is done in order here."""
        dirs: list[tuple[Path, RestoreEntry]] = []
        pending: set[Future[None]] = set()
        pool = ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="write")

        def settle(limit: int) -> None:
            nonlocal pending
            while len(pending) > limit:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    fut.result()  # a writer's error stops the restore here

        try:
            for entry in entries:
                dest = self._dest(entry.path)
                if dest is None:
                    continue
                if entry.kind == "dir":
                    self._mkdir(dest)
                    dirs.append((dest, entry))
                    continue
                self._mkdir(dest.parent)
                if entry.kind == "file":
                    pending.add(pool.submit(self._write_file, dest, entry))
                    settle(_WRITERS * 4)
                elif entry.kind == "symlink":
                    self._replace_with(dest, lambda p, e=entry: os.symlink(e.target, p))
                    self._set_meta(dest, entry, symlink=True)
                elif entry.kind == "hardlink":
                    first = self._dest(entry.target)
                    if first is not None:
                        settle(0)  # the first link must be written before linking to it
                        self._replace_with(dest, lambda p, f=first: os.link(f, p))
                elif entry.kind in SPECIAL_KINDS:
                    self._make_special(dest, entry)
                with self._count_lock:
                    self.files += 1
                self.reporter.emit(Progress(self.bytes, self.files, current=entry.path))
            settle(0)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        for dest, entry in reversed(dirs):
            self._set_meta(dest, entry)

    def _mkdir(self, path: Path) -> None:
        key = str(path)
        if key not in self._made:
            path.mkdir(parents=True, exist_ok=True)
            self._made.add(key)

    def _replace_with(self, dest: Path, make: object) -> None:
        tmp = dest.with_name(f".{dest.name}.backupctl-restore")
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        make(tmp)  # type: ignore[operator]
        os.replace(tmp, dest)

    def _write_file(self, dest: Path, entry: RestoreEntry) -> None:
        # Written under a temporary name and renamed: an interrupted or failed restore
        # never leaves a truncated file under the real name.
        target = dest.with_name(f".{dest.name}.backupctl-restore")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_content(fd, entry.chunks(), entry.sparse, self._count_bytes)
        except BaseException:
            os.close(fd)
            target.unlink(missing_ok=True)
            raise
        os.close(fd)
        self._set_meta(target, entry)
        try:
            os.replace(target, dest)
        except IsADirectoryError:  # a directory where the backup has a file (in place)
            shutil.rmtree(dest)
            os.replace(target, dest)

    def _count_bytes(self, n: int) -> None:
        with self._count_lock:
            self.bytes += n

    def _make_special(self, dest: Path, entry: RestoreEntry) -> None:
        try:
            self._replace_with(dest, lambda p: make_special(p, entry))
        except PermissionError as exc:  # device nodes need root
            self.reporter.emit(WarningEvent(f"cannot create {entry.kind}: {exc.strerror}", entry.path))
            return
        self._set_meta(dest, entry)

    def _set_meta(self, path: Path, entry: RestoreEntry, symlink: bool = False) -> None:
        if self.is_root:
            try:
                os.chown(path, _uid(entry), _gid(entry), follow_symlinks=not symlink)
            except OSError as exc:
                self.reporter.emit(WarningEvent(f"cannot set owner: {exc.strerror}", entry.path))
        if not symlink:
            os.chmod(path, entry.mode)
        if entry.xattrs or self.exact_xattrs:  # after chown and chmod: capabilities survive
            for problem in apply_xattrs(path, entry, exact=self.exact_xattrs):
                self.reporter.emit(WarningEvent(problem, entry.path))
        try:
            os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=not symlink)
        except (OSError, NotImplementedError):
            pass
