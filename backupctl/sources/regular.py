"""A regular file of a files source: opening it safely by path, and checking it after the read.

Shared by the files source (its entries' `open` and `check_unchanged`) and the engine's
reader processes (backups/filereaders.py), which open small files by path well after the
walk saw them: both must apply the same checks and word the same warnings. Light on imports
(no pydantic): a reader process loads it.

What the walk saw may have been replaced since: a symlink is never followed (O_NOFOLLOW),
a FIFO never blocks the open (O_NONBLOCK) and anything but a regular file, or a different
inode than the walk's, is left out with a warning instead of being stored under this path.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import IO

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Unreadable(Exception):
    """The file cannot be stored: str(exc) is the warning (the file is left out)."""


def unreadable(exc: OSError) -> str:
    """The warning for a file that could not be opened (it is left out of the backup)."""
    return f"vanished or unreadable: {exc.strerror}"


def open_regular(path: str, inode: int) -> IO[bytes]:
    """The file the walk saw at `path` (inode `inode`), opened for reading, unbuffered.
    Unreadable if it is gone, cannot be opened, or was replaced by something else."""
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Unreadable("replaced by a symlink since the scan: skipped") from None
        raise Unreadable(unreadable(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Unreadable("replaced by something other than a regular file since the scan: skipped")
        if st.st_ino != inode:
            raise Unreadable("replaced by another file since the scan: skipped")
        return open(fd, "rb", buffering=0, closefd=True)  # noqa: SIM115 - the caller closes it
    except BaseException:
        os.close(fd)
        raise


def changed_since(path: str, size: int, mtime_ns: int) -> str | None:
    """After a read: a warning text if the file's size or mtime differ from the walk's
    lstat (the content was stored as read), or if it is gone; None if unchanged."""
    try:
        now = os.lstat(path)
    except OSError:
        return "vanished while being read"
    if now.st_size != size or now.st_mtime_ns != mtime_ns:
        return "changed while being read; stored as read"
    return None
