"""Destination `local`: a directory on a mounted filesystem.

Writes go to a temporary file in the target directory, are fsynced, then renamed into
place (and the directory fsynced), so a crash never leaves a partial object visible.
Conditional create uses ``os.link`` of the finished temp file, which fails atomically
with EEXIST when the name is taken.

Ownership: every file and directory created below the repository root stays usable by the
root directory's owner. Run as root (euid 0), new objects take the root's owner and group
(fchown before they become visible), so a repository given to another user (docs/pitr.md:
`postgres` runs archive_command) keeps working for that user after root wrote into it. For
everyone, modes follow the root's group bits: files 0600, plus group read when the root is
group-readable; directories 0700 plus the root's group bits.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from pydantic import Field

from backupctl.destinations.base import (
    AlreadyExists,
    Capabilities,
    Destination,
    DestinationOptions,
    NotFound,
    ObjectInfo,
    PermissionDenied,
    StorageFull,
)
from backupctl.errors import DestinationError

_TMP_SUFFIX = ".tmp-backupctl"
_MAX_OPEN_PACKS = 32


class LocalOptions(DestinationOptions):
    type: Literal["local"] = "local"
    path: Path = Field(description="Directory holding the repository; created if missing.")
    fsync: bool = Field(
        True, description="fsync every object before it becomes visible (off only for tests)."
    )


class LocalDestination(Destination):
    Options = LocalOptions
    capabilities = Capabilities(conditional_create=True, range_reads=True)

    def __init__(self, name: str, options: DestinationOptions) -> None:
        super().__init__(name, options)
        assert isinstance(options, LocalOptions)
        self.root = Path(os.path.expanduser(str(options.path)))
        self._fsync = options.fsync
        self._made_dirs: set[str] = set()
        self._fds: dict[str, list[int]] = {}  # name -> [fd, readers using it]
        self._fd_lock = threading.Lock()
        self._owner: tuple[int, int, int, int] | None = None  # uid, gid, file mode, dir mode

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, name: str) -> Path:
        if name.startswith("/") or ".." in name.split("/"):
            raise DestinationError(f"invalid object name {name!r}")
        return self.root / name

    def _os_error(self, exc: OSError, name: str) -> Exception:
        where = f"destination {self.name!r} ({self._path(name)})"
        if exc.errno == errno.ENOENT:
            return NotFound(f"{where}: no such object")
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return PermissionDenied(
                f"{where}: permission denied", hint="check the directory's owner and mode"
            )
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return StorageFull(f"{where}: no space left on device", hint="free space or choose another path")
        return DestinationError(f"{where}: {exc.strerror or exc}")

    def _ownership(self) -> tuple[int, int, int, int]:
        """(uid, gid, file mode, directory mode) for new objects; uid/gid -1 = keep ours."""
        if self._owner is None:
            self.root.mkdir(parents=True, exist_ok=True)
            st = os.stat(self.root)
            group = st.st_mode & 0o070
            file_mode = 0o600 | (group & 0o040)
            # The set-group-ID bit too: mkdir inherits it and a plain chmod would clear it.
            dir_mode = 0o700 | group | (st.st_mode & stat.S_ISGID)
            if os.geteuid() == 0 and (st.st_uid, st.st_gid) != (0, 0):
                self._owner = (st.st_uid, st.st_gid, file_mode, dir_mode)
            else:
                self._owner = (-1, -1, file_mode, dir_mode)
        return self._owner

    def _ensure_dir(self, directory: Path) -> None:
        key = str(directory)
        if key in self._made_dirs:
            return
        uid, gid, _file_mode, dir_mode = self._ownership()
        missing: list[Path] = []
        probe = directory
        while probe != self.root and not probe.is_dir():
            missing.append(probe)
            probe = probe.parent
        for path in reversed(missing):
            try:
                os.mkdir(path, dir_mode)
            except FileExistsError:
                continue  # made by a concurrent writer, who set it up
            os.chmod(path, dir_mode)  # mkdir applies the umask
            if uid != -1:
                os.chown(path, uid, gid, follow_symlinks=False)
        self._made_dirs.add(key)

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        path = self._path(name)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{_TMP_SUFFIX}")
        try:
            self._ensure_dir(path.parent)
            uid, gid, file_mode, _dir_mode = self._ownership()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                if uid != -1:
                    os.fchown(fd, uid, gid)
                if file_mode != 0o600:
                    os.fchmod(fd, file_mode)
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if exclusive:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise AlreadyExists(f"destination {self.name!r}: {name} already exists") from None
                finally:
                    os.unlink(tmp)
            else:
                os.replace(tmp, path)
            if self._fsync:
                self._fsync_dir(path.parent)
        except (AlreadyExists, DestinationError):
            raise
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise self._os_error(exc, name) from None

    def _fsync_dir(self, directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        try:
            if length is not None and name.startswith("data/"):
                # Range reads of packs (restore, verify) reuse an open descriptor: packs are
                # immutable, and pread is safe from several threads.
                fd = self._pack_fd(name)
                try:
                    return os.pread(fd, length, offset)
                finally:
                    self._release_fd(name)
            with open(self._path(name), "rb", buffering=0) as fh:
                if length is None:
                    fh.seek(offset)
                    return fh.read()
                return os.pread(fh.fileno(), length, offset)
        except OSError as exc:
            raise self._os_error(exc, name) from None

    def _pack_fd(self, name: str) -> int:
        """An open descriptor for a pack, held (not closable) until _release_fd."""
        with self._fd_lock:
            entry = self._fds.pop(name, None)
            if entry is None:
                entry = [os.open(self._path(name), os.O_RDONLY), 0]
                self._evict()
            entry[1] += 1
            self._fds[name] = entry  # most recently used last
            return entry[0]

    def _release_fd(self, name: str) -> None:
        with self._fd_lock:
            entry = self._fds.get(name)
            if entry is not None:
                entry[1] -= 1

    def _evict(self) -> None:
        """Close least recently used descriptors that no reader holds (caller has the lock)."""
        idle = [n for n, (_fd, users) in self._fds.items() if users == 0]
        for victim in idle[: max(0, len(self._fds) - _MAX_OPEN_PACKS + 1)]:
            os.close(self._fds.pop(victim)[0])

    def _forget_fd(self, name: str) -> None:
        with self._fd_lock:
            entry = self._fds.get(name)
            if entry is not None and entry[1] == 0:
                del self._fds[name]
                os.close(entry[0])

    def close(self) -> None:
        with self._fd_lock:
            entries, self._fds = list(self._fds.values()), {}
        for fd, _users in entries:
            os.close(fd)

    def stat(self, name: str) -> ObjectInfo:
        try:
            st = os.stat(self._path(name))
        except OSError as exc:
            raise self._os_error(exc, name) from None
        return ObjectInfo(name, st.st_size)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory that can hold the prefix.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root / base_dir if base_dir else self.root
        if not start.is_dir():
            if not self.root.exists():
                return
            return
        for dirpath, _dirnames, filenames in os.walk(start):
            rel_dir = os.path.relpath(dirpath, self.root)
            for filename in filenames:
                if filename.endswith(_TMP_SUFFIX):
                    continue
                rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                if not rel.startswith(prefix):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue
                yield ObjectInfo(rel, st.st_size, st.st_mtime)

    def temporaries(self) -> Iterator[ObjectInfo]:
        # put()'s temp names: ".<final name>.<12 hex>.tmp-backupctl" next to the final name.
        if not self.root.is_dir():
            return
        for dirpath, _dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            for filename in filenames:
                if not filename.endswith(_TMP_SUFFIX):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue
                rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
                yield ObjectInfo(rel, st.st_size, st.st_mtime)

    def delete_temporary(self, name: str) -> None:
        if not name.endswith(_TMP_SUFFIX):
            raise DestinationError(f"{name}: not a temporary file")
        try:
            os.unlink(self._path(name))
        except OSError as exc:
            raise self._os_error(exc, name) from None

    def delete(self, name: str) -> None:
        self._forget_fd(name)
        try:
            os.unlink(self._path(name))
        except OSError as exc:
            raise self._os_error(exc, name) from None
