"""stderr that a closed reader cannot break: progress and warnings are never worth a backup.

`backupctl --progress json backup create app 2>&1 >/dev/null | head -1` closes the pipe
after one line; every later progress line then raises BrokenPipeError inside the engine's
reporter callback, which used to fail the backup. `guard_stderr()` replaces `sys.stderr`
with a wrapper that, on the first EPIPE (or EBADF: stderr closed by the caller), points
file descriptor 2 at /dev/null and drops the rest quietly, so the command's work and its
result on stdout (and its exit code) are what they would have been.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import Any, TextIO

_GONE = (errno.EPIPE, errno.EBADF)


class _SafeStderr:
    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self.gone = False

    def _drop(self) -> None:
        self.gone = True
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self._stream.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass

    def write(self, text: str) -> int:
        if self.gone:
            return len(text)
        try:
            return self._stream.write(text)
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._drop()
            return len(text)

    def flush(self) -> None:
        if self.gone:
            return
        try:
            self._stream.flush()
        except OSError as exc:
            if exc.errno not in _GONE:
                raise
            self._drop()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding... of the real stream
        return getattr(self._stream, name)


def guard_stderr() -> None:
    """Install the wrapper once (idempotent; tests call main() many times in one process)."""
    if not isinstance(sys.stderr, _SafeStderr) and sys.stderr is not None:
        sys.stderr = _SafeStderr(sys.stderr)
