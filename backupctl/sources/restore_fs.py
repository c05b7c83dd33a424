"""Writing restored entries to a filesystem: shared by the `files` and `sqlite` sources.

Each entry lands at `<root>/<entry path>`, where root is the restore target or `/` for an
in-place restore. Guarantees (docs/design.md, "Restore"):

* Nothing is written outside root. Paths are walked one component at a time from a file
  descriptor of root (openat with O_NOFOLLOW | O_DIRECTORY, as tar and restic do), and
  every change is made relative to the descriptor of its directory, so a symlink below
  root is never followed: not one left in a non-empty --target, not one the backup itself
  holds (a Capistrano `current` link), not one that replaced a directory after the backup.
  Where the backup needs a directory (a directory entry, or the parent of other entries),
  whatever else stands there - a symlink, a file - is replaced by a directory; a symlink
  from the backup itself that is replaced this way is named in a warning. The one
  exception, in place only: a symlink the backup does not replace - one this restore has
  just recreated from the backup, or one above the backed-up paths that the backup does not
  describe (`/var -> /private/var`) - is followed, because that is where the backup read
  the entries below it from.
* Every regular file, symlink, hard link and special file is made under a short temporary
  name in its directory (`.bkctl-<random>.tmp`, created O_EXCL 0600, so any name up to
  NAME_MAX restores) and renamed over the old one: a reader, an interrupted or a failed
  restore sees the old or the new version, never a truncated one. On failure the temporary
  file is removed; a kill -9 can leave one, recognisable by that name.
* A restore that stops part-way raises RestoreIncompleteError saying how many entries were
  written (`written`): the engine turns it into "N of M entries".
* Owner is restored when running as root (by name if the name exists here, else by
  number); directory metadata is applied last, deepest first, so writing files does not
  bump their mtimes.

To restore a new kind of entry, add a `_restore_<kind>` method (see `_handlers`); open
paths only through `_parent_fd`/`_open_dir` and set metadata only in `_set_meta`.

Beside this module: the writer thread (restore_fs_writers.py), temporary names and renames
over (restore_fs_names.py), the error of a restore that stops (restore_fs_errors.py).
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from backupctl.errors import BackupctlError
from backupctl.events import Progress, Reporter, WarningEvent
from backupctl.sources.base import RestoreEntry
from backupctl.sources.restore_fs_errors import EntryFailed, stopped_error
from backupctl.sources.restore_fs_names import create_temp, rename_over, temp_name, unlink_quietly
from backupctl.sources.restore_fs_writers import FileWriters
from backupctl.sources.restore_meta import SPECIAL_KINDS, apply_xattrs, make_special, write_content

# Regular files up to this size are written here, in the thread that reads the item stream,
# and larger ones by the writer thread. Handing a small file to another thread cost about
# three times writing it (GIL and future hand-offs: 30 futex calls per file); a large file's
# writes overlap with reading the next entries. docs/performance.md, "Many small files".
INLINE_BYTES = 2 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
# Raised by openat(O_NOFOLLOW | O_DIRECTORY) on a symlink or on something not a directory.
_NOT_A_DIR = (errno.ELOOP, errno.ENOTDIR)


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


class FsRestorer:
    def __init__(self, target_dir: Path | None, reporter: Reporter, exact_xattrs: bool = False) -> None:
        # exact_xattrs: the backup recorded every object's xattrs, so ones it lacks are removed
        self.exact_xattrs = exact_xattrs
        self.root = Path(target_dir) if target_dir is not None else Path("/")
        self.in_place = target_dir is None
        self.reporter = reporter
        self.is_root = os.geteuid() == 0
        self.files = 0  # non-directory entries written (progress)
        self.bytes = 0
        self.written = 0  # entries of every kind written completely
        self._count_lock = threading.Lock()
        self._stop = threading.Event()  # set when the restore stops: the writer abandons its file
        self._interrupted = False  # SIGINT/SIGTERM came: stop at the next entry (_defer_signals)
        self._old_handlers: dict[int, Any] = {}
        self._root_fd = -1
        # The open directories of the current path: _chain_fds[0] is root, _chain_fds[i + 1]
        # is the directory _chain_names[i]. Entries come in tree order, so most entries
        # reuse the whole chain and a path costs one openat per new directory.
        self._chain_names: list[str] = []
        self._chain_fds: list[int] = []
        self._dirs: set[str] = set()  # directory entries of this backup seen so far
        self._links: set[str] = set()  # symlinks recreated from this backup
        self._dir_entries: list[tuple[list[str], RestoreEntry]] = []
        # Each returns whether it wrote the entry (False: skipped with a warning).
        self._handlers: dict[str, Callable[[list[str], RestoreEntry], bool]] = {
            "dir": self._restore_dir,
            "symlink": self._restore_symlink,
            "hardlink": self._restore_hardlink,
            **{kind: self._restore_special for kind in SPECIAL_KINDS},
        }

    # ---- the restore loop ------------------------------------------------------------

    def restore(self, entries: Iterator[RestoreEntry]) -> None:
        """Write entries; regular files over INLINE_BYTES go to the writer thread (so writing
        them overlaps with reading the item stream), everything else is done in order here. Raises
        RestoreIncompleteError if it stops before the last entry."""
        self._defer_signals()
        writers = FileWriters()
        current = ""
        try:
            self._root_fd = self._open_root()
            self._chain_fds = [self._root_fd]
            for entry in entries:
                if self._interrupted:  # a safe point: no entry is half-made or uncounted
                    raise KeyboardInterrupt
                current = entry.path
                if self._restore_entry(entry, writers):
                    self.reporter.emit(Progress(self.bytes, self.files, current=entry.path))
            writers.settle(0)
            current = ""
            self._finish_dirs()
        except BaseException as exc:
            self._stop.set()
            writers.abandon()
            why = KeyboardInterrupt() if self._interrupted else exc  # a writer stopped for it
            raise stopped_error(why, current, self.root, self.in_place, self.written) from exc
        finally:
            self._restore_signals()
            writers.shutdown()
            self._close_chain(0)
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1

    def _defer_signals(self) -> None:
        """In the main thread, SIGINT and SIGTERM stop the restore at the next entry, so that
        the count of entries written is exact (small files are written in this thread: a
        KeyboardInterrupt between a rename and its count would make it one short). The
        writer thread sees the stop and abandons its file. A second signal stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._interrupted:
            raise KeyboardInterrupt
        self._interrupted = True
        self._stop.set()

    def _restore_signals(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)
        self._old_handlers.clear()

    def _restore_entry(self, entry: RestoreEntry, writers: FileWriters) -> bool:
        """Write one entry (a regular file: hand it to the writer); False if its path is unsafe."""
        parts = self._parts(entry.path)
        if parts is None:
            return False
        try:
            if entry.kind == "file" and entry.size <= INLINE_BYTES:
                self._write_file_in(self._parent_fd(parts), parts, entry)
            elif entry.kind == "file":
                writers.submit(self._write_file, os.dup(self._parent_fd(parts)), parts, entry)
            elif entry.kind not in self._handlers:
                self._warn(f"skipped: cannot restore a {entry.kind} entry", entry.path)
            else:
                if entry.kind == "hardlink":
                    writers.settle(0)  # the first link must be written before linking to it
                if self._handlers[entry.kind](parts, entry):
                    self._count_entry(entry.kind != "dir")
        except OSError as exc:
            raise EntryFailed(entry.path, exc) from exc
        return True

    def _count_entry(self, is_file: bool) -> None:
        with self._count_lock:
            self.written += 1
            if is_file:
                self.files += 1

    def _count_bytes(self, n: int) -> None:
        with self._count_lock:
            self.bytes += n
            done, files = self.bytes, self.files
        # Per chunk, from the writer threads: a large file's progress moves while it is written
        # (the display throttles; the reporter is thread-safe).
        self.reporter.emit(Progress(done, files))

    def _warn(self, message: str, path: str) -> None:
        self.reporter.emit(WarningEvent(message, path))

    # ---- walking paths without following symlinks ------------------------------------

    def _parts(self, rel: str) -> list[str] | None:
        parts = rel.split("/")
        if rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
            self._warn("skipped: unsafe path in backup", rel)
            return None
        return parts

    def _open_root(self) -> int:
        if not self.in_place:
            os.makedirs(self.root, exist_ok=True)  # the target itself is the user's choice
        return os.open(self.root, _DIR_FLAGS)

    def _close_chain(self, keep: int) -> None:
        """Close the chain's directories deeper than its first `keep` names."""
        while len(self._chain_names) > keep:
            self._chain_names.pop()
            os.close(self._chain_fds.pop())

    def _parent_fd(self, parts: list[str], create: bool = True) -> int:
        """The fd of the directory that holds parts[-1], creating missing directories.
        Owned by the chain: valid until the next call; dup it to keep it."""
        dirs = parts[:-1]
        names = self._chain_names
        n = 0
        while n < len(dirs) and n < len(names) and names[n] == dirs[n]:
            n += 1
        self._close_chain(n)
        for i in range(n, len(dirs)):
            fd = self._step(self._chain_fds[-1], dirs[i], "/".join(dirs[: i + 1]), create=create)
            self._chain_names.append(dirs[i])
            self._chain_fds.append(fd)
        return self._chain_fds[-1]

    def _open_dir(self, parts: list[str]) -> int:
        """A new fd of the existing directory `parts` (root for []), walked like _parent_fd
        but outside the chain; the caller closes it."""
        fd = os.dup(self._root_fd)
        for i, name in enumerate(parts):
            try:
                nxt = self._step(fd, name, "/".join(parts[: i + 1]), create=False)
            finally:
                os.close(fd)
            fd = nxt
        return fd

    def _step(self, dir_fd: int, name: str, rel: str, *, create: bool) -> int:
        """Open the directory `name` in dir_fd. Never follows a symlink, except in place one
        the backup does not replace by a directory (the module docstring says which)."""
        if create and not self.in_place:  # a target is usually empty: mkdir first
            try:
                os.mkdir(name, 0o777, dir_fd=dir_fd)
                return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)
            except FileExistsError:
                pass
        follow = self.in_place and rel not in self._dirs
        flags = _DIR_FLAGS if follow else _DIR_FLAGS | os.O_NOFOLLOW
        try:
            return os.open(name, flags, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ENOENT and create:
                try:
                    os.mkdir(name, 0o777, dir_fd=dir_fd)
                except FileExistsError:  # a dangling symlink
                    self._make_dir_over(dir_fd, name, rel)
            elif exc.errno in _NOT_A_DIR and create:
                self._make_dir_over(dir_fd, name, rel)
            else:
                raise
        return os.open(name, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=dir_fd)

    def _make_dir_over(self, dir_fd: int, name: str, rel: str) -> None:
        """Replace the non-directory at `name` (a symlink, a file) by a new directory."""
        if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            return
        if rel in self._links:
            self._links.discard(rel)
            self._warn(
                "restored as a directory: this backup holds a symlink here and also entries "
                "below it (read through the link); the link is not followed",
                rel,
            )
        os.unlink(name, dir_fd=dir_fd)
        os.mkdir(name, 0o777, dir_fd=dir_fd)
        self._dirs.add(rel)  # from now on it must stay a directory: never followed

    # ---- one method per kind of entry ------------------------------------------------

    def _restore_dir(self, parts: list[str], entry: RestoreEntry) -> bool:
        parent = self._parent_fd(parts)
        self._dirs.add(entry.path)
        fd = self._step(parent, parts[-1], entry.path, create=True)
        self._chain_names.append(parts[-1])  # its entries come next
        self._chain_fds.append(fd)
        self._dir_entries.append((parts, entry))
        return True

    def _finish_dirs(self) -> None:
        """Directory metadata, deepest first, after everything inside was written."""
        # Reversed tree order still shares long prefixes: the chain keeps this cheap, and
        # every descendant of a directory comes before it (nothing is opened through a
        # directory whose mode was already set).
        for parts, entry in reversed(self._dir_entries):
            try:
                parent = self._parent_fd(parts, create=False)
                fd = os.open(parts[-1], _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=parent)
                try:
                    self._set_meta(entry, parent, parts[-1], fd=fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise EntryFailed(entry.path, exc) from exc
        self._dir_entries.clear()

    def _write_file(self, dir_fd: int, parts: list[str], entry: RestoreEntry) -> None:
        """In the writer thread: _write_file_in, then close dir_fd (a dup of the chain's)."""
        try:
            self._write_file_in(dir_fd, parts, entry)
        finally:
            os.close(dir_fd)

    def _write_file_in(self, dir_fd: int, parts: list[str], entry: RestoreEntry) -> None:
        """Content to a temporary file in dir_fd, renamed over; dir_fd stays open."""
        try:
            name = parts[-1]
            tmp, fd = create_temp(dir_fd)
            try:
                try:
                    write_content(fd, self._until_stopped(entry.chunks()), entry.sparse, self._count_bytes)
                    self._set_meta(entry, dir_fd, tmp, fd=fd)
                finally:
                    os.close(fd)
                rename_over(dir_fd, tmp, name)
            except BaseException:
                unlink_quietly(dir_fd, tmp)
                raise
            self._count_entry(True)
        except (OSError, BackupctlError) as exc:
            raise EntryFailed(entry.path, exc) from exc

    def _until_stopped(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        """The chunks, until the restore stops (Ctrl-C need not wait for a large file)."""
        for chunk in chunks:
            if self._stop.is_set():
                raise InterruptedError("restore stopped")
            yield chunk

    def _restore_symlink(self, parts: list[str], entry: RestoreEntry) -> bool:
        if entry.path in self._dirs:
            self._warn("skipped: this backup holds both a directory and a symlink here", entry.path)
            return False
        parent = self._parent_fd(parts)
        made = self._make_temp(
            parent, parts[-1], entry, lambda tmp: os.symlink(entry.target, tmp, dir_fd=parent), keep_dirs=True
        )
        if made:
            self._links.add(entry.path)
        return made

    def _restore_hardlink(self, parts: list[str], entry: RestoreEntry) -> bool:
        first = self._parts(entry.target)
        if first is None:
            return False
        source = self._open_dir(first[:-1])
        try:
            parent = self._parent_fd(parts)
            return self._make_temp(
                parent,
                parts[-1],
                None,
                lambda tmp: os.link(
                    first[-1], tmp, src_dir_fd=source, dst_dir_fd=parent, follow_symlinks=False
                ),
            )
        finally:
            os.close(source)

    def _restore_special(self, parts: list[str], entry: RestoreEntry) -> bool:
        parent = self._parent_fd(parts)
        try:
            return self._make_temp(
                parent, parts[-1], entry, lambda tmp: make_special(tmp, entry, dir_fd=parent)
            )
        except PermissionError as exc:  # device nodes need root
            self._warn(f"cannot create {entry.kind}: {exc.strerror}", entry.path)
            return False

    # ---- temporary names, renames, metadata ------------------------------------------

    def _make_temp(
        self,
        dir_fd: int,
        name: str,
        entry: RestoreEntry | None,
        make: Callable[[str], None],
        keep_dirs: bool = False,
    ) -> bool:
        """make(tmp) creates a non-regular entry at a new temporary name in dir_fd; its
        metadata is set (unless entry is None: a hard link shares its first path's) and it
        is renamed over `name`. With keep_dirs, a non-empty directory at `name` is kept
        (returns False, with a warning)."""
        while True:
            tmp = temp_name()
            try:
                make(tmp)
                break
            except FileExistsError:
                continue
        try:
            if entry is not None:
                self._set_meta(entry, dir_fd, tmp)
            if rename_over(dir_fd, tmp, name, keep_dirs):
                return True
            self._warn(
                "not replaced: a directory with content stands where the backup has a "
                f"{entry.kind if entry else 'hard link'}; remove it and restore again",
                entry.path if entry else name,
            )
            unlink_quietly(dir_fd, tmp)
            return False
        except BaseException:
            unlink_quietly(dir_fd, tmp)
            raise

    def _set_meta(self, entry: RestoreEntry, dir_fd: int, name: str, fd: int | None = None) -> None:
        """Owner, mode, xattrs and mtime of the entry just made at `name` in dir_fd (through
        `fd` when open); never through a symlink. The one place metadata is applied."""
        symlink = entry.kind == "symlink"
        if self.is_root:
            try:
                if fd is not None:
                    os.chown(fd, _uid_of(entry.user, entry.uid), _gid_of(entry.group, entry.gid))
                else:
                    os.chown(
                        name,
                        _uid_of(entry.user, entry.uid),
                        _gid_of(entry.group, entry.gid),
                        dir_fd=dir_fd,
                        follow_symlinks=False,
                    )
            except OSError as exc:
                self._warn(f"cannot set owner: {exc.strerror}", entry.path)
        if fd is not None:
            os.chmod(fd, entry.mode)
        elif not symlink:  # a FIFO or device node just made here: not a symlink
            os.chmod(name, entry.mode, dir_fd=dir_fd)
        if entry.xattrs or self.exact_xattrs:  # after chown and chmod: capabilities survive
            # /proc/self/fd/N/name: the entry itself, reached through its directory's fd.
            for problem in apply_xattrs(f"/proc/self/fd/{dir_fd}/{name}", entry, exact=self.exact_xattrs):
                self._warn(problem, entry.path)
        try:
            if fd is not None:
                os.utime(fd, ns=(entry.mtime_ns, entry.mtime_ns))
            else:
                os.utime(name, ns=(entry.mtime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
        except (OSError, NotImplementedError):
            pass
