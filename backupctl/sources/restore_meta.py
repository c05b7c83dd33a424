"""Restoring what a file is beyond its bytes: special files, holes, extended attributes.

Used by FsRestorer (restore_fs.py). Guarantees:

* `make_special` creates a FIFO (any user) or a device node (root only; otherwise it
  raises PermissionError, which the caller turns into a warning naming the path).
* `write_content` writes a file's chunks; for a file recorded as sparse, all-zero chunks
  are skipped with a seek and the size is set at the end, so holes come back as holes and
  the bytes read back are identical either way.
* `apply_xattrs` sets the recorded extended attributes (user.*, trusted.*, security.*,
  system.posix_acl_*) on the object itself, never through a symlink. It must be called
  after the content is written, after chown (chown clears security.capability) and after
  chmod (the ACL carries the group bits), capabilities last. With `exact`, attributes the
  object has but the backup did not record are removed (an ACL inherited from a default
  ACL in place, say), except security.selinux, which belongs to the system's policy.
  What cannot be set (trusted.* or capabilities as non-root, a filesystem without xattrs)
  is returned as problems for the caller to report; nothing is raised.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path

from backupctl.sources.base import RestoreEntry

_KIND_BITS = {"fifo": stat.S_IFIFO, "chardev": stat.S_IFCHR, "blockdev": stat.S_IFBLK}
SPECIAL_KINDS = frozenset(_KIND_BITS)

# Kept by the system, not by the backup: never removed, even with `exact`.
_SYSTEM_XATTRS = frozenset({"security.selinux"})
# Set last: chown, chmod and writing the content would clear it.
_CAPABILITY = "security.capability"


def make_special(path: str | Path, entry: RestoreEntry, dir_fd: int | None = None) -> None:
    """Create the FIFO or device node `entry` at `path` (relative to dir_fd when given)."""
    major, minor = entry.rdev or (0, 0)
    device = os.makedev(major, minor) if entry.kind != "fifo" else 0
    os.mknod(path, 0o600 | _KIND_BITS[entry.kind], device, dir_fd=dir_fd)


def write_content(
    fd: int, chunks: Iterable[bytes], sparse: bool, on_bytes: Callable[[int], None] | None = None
) -> int:
    """Write the chunks to `fd` (a new, empty file); returns the number of bytes."""
    total = 0
    for chunk in chunks:
        n = len(chunk)
        if sparse and _all_zero(chunk):
            os.lseek(fd, n, os.SEEK_CUR)
        else:
            view = memoryview(chunk)
            while view:
                written = os.write(fd, view)
                view = view[written:]
        total += n
        if on_bytes is not None:
            on_bytes(n)
    if sparse:
        os.ftruncate(fd, total)  # a trailing hole: seeking alone does not extend the file
    return total


def _all_zero(chunk: bytes) -> bool:
    # bytes(n) is calloc'd (zero pages) and == is one memcmp: ~10 GB/s, stops at the first
    # non-zero byte of a data chunk.
    return bytes(chunk) == bytes(len(chunk)) if not isinstance(chunk, bytes) else chunk == bytes(len(chunk))


def apply_xattrs(path: str | Path, entry: RestoreEntry, *, exact: bool) -> list[str]:
    """Set the entry's extended attributes on `path` itself; returns what could not be done."""
    problems: list[str] = []
    wanted = entry.xattrs or {}
    if exact:
        try:
            present = os.listxattr(path, follow_symlinks=False)
        except OSError:
            present = []
        for name in present:
            if name not in wanted and name not in _SYSTEM_XATTRS:
                try:
                    os.removexattr(path, name, follow_symlinks=False)
                except OSError as exc:
                    problems.append(f"cannot remove extended attribute {name}: {exc.strerror}")
    for name in sorted(wanted, key=lambda n: n == _CAPABILITY):
        if name in _SYSTEM_XATTRS and _current(path, name) == wanted[name]:
            continue  # the label the policy gave is already the recorded one (often not settable)
        try:
            os.setxattr(path, name, wanted[name], follow_symlinks=False)
        except OSError as exc:
            problems.append(f"cannot set extended attribute {name}: {exc.strerror}")
    return problems


def _current(path: str | Path, name: str) -> bytes | None:
    try:
        return os.getxattr(path, name, follow_symlinks=False)
    except OSError:
        return None
