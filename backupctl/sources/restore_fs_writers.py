"""The writer thread of a filesystem restore: regular files written beside the reading.

For FsRestorer (sources/restore_fs.py). The thread that reads the item stream hands each
regular file (with a dup'ed fd of its directory) to `FileWriters.submit`; at most a few
files wait, so memory stays bounded and a writer's error stops the restore soon after it
happens (`settle` re-raises it in the reading thread). `abandon` is for a restore that stops:
files not yet started are cancelled and their directory fds closed (a started one closes
its own); `shutdown` waits for the thread in every case.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

# One writer thread beside the thread that reads the item stream. Several writers were
# measured slower on 2 cores (3 writers: ~15% longer restores, 2x the context switches):
# creating files is serialised in the kernel per directory, and the GIL hand-offs between
# writers cost more than the overlap gains.
WRITERS = 1


class FileWriters:
    """The writer pool and the files it has not finished, each with its directory fd."""

    def __init__(self) -> None:
        self._pending: dict[Future[None], int] = {}  # a file being written -> its directory fd
        self._pool = ThreadPoolExecutor(max_workers=WRITERS, thread_name_prefix="write")

    def submit(self, write: Callable[..., None], dir_fd: int, *args: Any) -> None:
        """Run write(dir_fd, *args) in the writer (which closes dir_fd); wait while too many wait."""
        self._pending[self._pool.submit(write, dir_fd, *args)] = dir_fd
        self.settle(WRITERS * 4)

    def settle(self, limit: int) -> None:
        """Wait until at most `limit` files are unfinished; a writer's error is raised here."""
        while len(self._pending) > limit:
            done, _ = wait(self._pending, return_when=FIRST_COMPLETED)
            for fut in done:
                del self._pending[fut]
                fut.result()  # a writer's error stops the restore here

    def abandon(self) -> None:
        """The restore stops: cancel the files not started and close their directory fds."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        for fut, dir_fd in self._pending.items():
            if fut.cancelled():  # never started: its directory fd is still open
                os.close(dir_fd)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)
