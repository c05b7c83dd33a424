"""The walk ahead of a backup: totals for the progress display before the reader gets there.

A file tree's size is unknown until it has been walked, so a first or full backup would show
`0/? bytes` and no ETA. As restic does, a separate thread walks the same tree (lstat only: no
file is opened, no xattr read, no user looked up) with the source's own rules (exclude,
include, one_file_system, hard links counted once) and publishes the running totals; the
archiver reports them with its own counters. While the walk runs the totals are marked as an
estimate (they still grow); once it is done they are the tree's totals, the same numbers the
finished backup records (files: every non-directory entry; bytes: regular files' sizes).

Costs: one lstat per entry, in a daemon thread that the backup never waits for (it is stopped
when the source is finished). Measured in docs/performance.md.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

from backupctl.sources.base import Source


class WalkAhead:
    """Totals of one files source, counted by a background thread (`start()`)."""

    def __init__(self, source: Source) -> None:
        opts = source.options
        self._paths = [Path(os.path.abspath(os.path.expanduser(str(p)))) for p in getattr(opts, "paths", [])]
        self._exclude: list[str] = list(getattr(opts, "exclude", []))
        self._include: list[str] = list(getattr(opts, "include", []))
        self._one_fs = bool(getattr(opts, "one_file_system", False))
        self.files = 0
        self.bytes = 0
        self.done = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="walk-ahead", daemon=True)

    @staticmethod
    def supports(source: Source) -> bool:
        return source.options.type == "files"

    def start(self) -> WalkAhead:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        from backupctl.sources.files import _matches

        # Only a root or a directory above one can be reached twice (as in FilesSource.scan):
        # only those are remembered, so memory does not grow with the number of directories.
        anchors: set[str] = set()
        seen_dirs: set[str] = set()
        seen_inodes: set[tuple[int, int]] = set()
        try:
            for path, st in self._roots(anchors):
                stack = [(path, st, st.st_dev)]
                while stack and not self._stop.is_set():
                    path, st, dev = stack.pop()
                    name = os.path.basename(path)
                    if self._exclude and _matches(self._exclude, path, name):
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if self._enters(path, st, dev, anchors, seen_dirs):
                            stack.extend(_children(path, dev))
                        continue
                    if self._include and not _matches(self._include, path, name):
                        continue
                    self._count(st, seen_inodes)
        finally:
            self.done.set()

    def _roots(self, anchors: set[str]) -> list[tuple[str, os.stat_result]]:
        """The roots that exist, in scan order; `anchors` gets each root and its parents."""
        roots = []
        for root in self._paths:
            try:
                roots.append((str(root), os.lstat(root)))
            except OSError:
                continue
            anchors.update(str(p) for p in (root, *root.parents))
        roots.sort(key=lambda r: r[0].replace("/", "\0"))
        return roots

    def _enters(
        self, path: str, st: os.stat_result, dev: int, anchors: set[str], seen_dirs: set[str]
    ) -> bool:
        """Whether the walk descends into a directory: not an anchor seen before, and on the
        root's file system when one_file_system is set."""
        if path in anchors:
            if path in seen_dirs:
                return False
            seen_dirs.add(path)
        return not (self._one_fs and st.st_dev != dev)

    def _count(self, st: os.stat_result, seen_inodes: set[tuple[int, int]]) -> None:
        """Add one non-directory entry to the totals (sockets are skipped, as by the backup)."""
        if stat.S_ISSOCK(st.st_mode):
            return
        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
        if not stat.S_ISLNK(st.st_mode) and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            if key in seen_inodes:  # a further hard link: no content of its own
                size = 0
            seen_inodes.add(key)
        self.files += 1
        self.bytes += size


def _children(path: str, dev: int) -> list[tuple[str, os.stat_result, int]]:
    """A directory's entries with their lstat results; unreadable ones are left out."""
    try:
        with os.scandir(path) as it:
            entries = list(it)
    except OSError:
        return []
    children = []
    for child in entries:
        try:
            children.append((child.path, child.stat(follow_symlinks=False), dev))
        except OSError:
            continue
    return children
