"""Temporary names and renames over: how a filesystem restore replaces one name atomically.

For FsRestorer (sources/restore_fs.py). Each entry is made under a short temporary name in
its directory (`.bkctl-<12 hex digits>.tmp`: any name up to NAME_MAX restores, and a
leftover of a kill -9 is recognisable) and renamed over the old one, so a reader sees the
old or the new version, never a half-written one. Everything works relative to a
directory fd and never follows a symlink.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import shutil

TEMP_PREFIX = ".bkctl-"  # temporary names: TEMP_PREFIX + 12 hex digits + TEMP_SUFFIX
TEMP_SUFFIX = ".tmp"


# A random start, then a counter: unpredictable like a random name per file, without a
# getrandom call per file (O_EXCL still makes any collision a retry, never an overwrite).
_next_temp = itertools.count(secrets.randbits(48))


def temp_name() -> str:
    return f"{TEMP_PREFIX}{next(_next_temp) & 0xFFFFFFFFFFFF:012x}{TEMP_SUFFIX}"


def create_temp(dir_fd: int) -> tuple[str, int]:
    """A new empty 0600 regular file at a fresh temporary name in dir_fd: (name, fd)."""
    while True:
        tmp = temp_name()
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            return tmp, os.open(tmp, flags, 0o600, dir_fd=dir_fd)
        except FileExistsError:
            continue


def rename_over(dir_fd: int, tmp: str, name: str, keep_dirs: bool = False) -> bool:
    """Rename tmp over name. A directory at name (in place: the backup has something
    else there) is removed first - only if empty with keep_dirs (a symlink may stand for
    a directory above the backed-up paths, /lib -> usr/lib, whose content the backup
    does not hold). Returns False if a directory was kept."""
    try:
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except OSError as exc:
        if exc.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
            raise
    if keep_dirs:
        try:
            os.rmdir(name, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                return False
            raise
    else:
        # rmtree with dir_fd walks by fds: never follows a symlink inside the directory.
        shutil.rmtree(name, dir_fd=dir_fd)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    return True


def unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass
