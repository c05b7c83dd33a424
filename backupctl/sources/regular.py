"""Warnings about a regular file of a files source, and checking it did not change while read.

Shared by the files source (its entries' `open` and `check_unchanged`) and the engine's
reader processes (backups/filereaders.py), which read small files by path: both must word
the same warnings and apply the same test. Light on imports (no pydantic): a reader process
loads it.
"""

from __future__ import annotations

import os


def unreadable(exc: OSError) -> str:
    """The warning for a file that could not be opened (it is left out of the backup)."""
    return f"vanished or unreadable: {exc.strerror}"


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
