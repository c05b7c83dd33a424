"""Private temporary files of one backupctl process, and removal of those a killed one left.

Every temporary file backupctl writes for itself (credential files for client tools, the
SQLite snapshot copy, fetched WAL and binary logs, captured stderr) lives under

    $TMPDIR/backupctl-<uid>/run-<pid>-<start>-<random>/...

(`$TMPDIR` as Python's tempfile resolves it, usually /tmp). Guarantees:

* `backupctl-<uid>` is a real directory (never a symlink) owned by the current user, mode
  0700; one that belongs to someone else is refused, never used.
* Each process has its own run directory (0700); the directories and files made through
  this module are 0700 / 0600 from the moment they exist, whatever the umask.
* A normal exit removes the process's run directory (atexit); after kill -9 it stays until
  the next backupctl command of the same user that reads the configuration (or makes a
  temporary file) runs `sweep()`, which removes every run directory whose process is gone.
  `<start>` is the process's start time (Linux /proc), so a reused pid is not mistaken
  for the dead run.

Exceptions, on purpose: a directory another OS user must enter (the data directory owner
running a temporary server) cannot live under the 0700 per-user directory: it is named with
`owner_tag()` and the next run of its kind removes those of dead processes
(`sweep_tagged`: drills' throwaway servers, MariaDB replays); atomic rewrites of a file are made next to it
(same filesystem for the rename).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from backupctl.errors import BackupctlError
from backupctl.procs import pid_alive, stat_fields

_RUN = re.compile(r"^run-(?P<pid>\d+)-(?P<start>\d+)-[A-Za-z0-9_]+$")
_lock = threading.Lock()
_run_dir: Path | None = None
_run_pid: int | None = None


def base_dir() -> Path:
    """The per-user directory `$TMPDIR/backupctl-<uid>` (created 0700, checked on every call)."""
    uid = os.getuid()
    path = Path(tempfile.gettempdir()) / f"backupctl-{uid}"
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise BackupctlError(
            f"cannot create the temporary directory {path}: {exc.strerror}",
            hint="set TMPDIR to a writable directory",
        ) from None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid:
        raise BackupctlError(
            f"temporary directory {path} is not a directory of this user (uid {uid})",
            hint="remove it, or set TMPDIR to a private directory",
        )
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot ('0' where /proc is not there)."""
    fields = stat_fields(pid)  # from field 3 on: the start time is field 22
    return fields[19].decode() if len(fields) > 19 else "0"


def _alive(pid: int, start: str) -> bool:
    """The run's process still runs: its pid is alive and, where /proc tells, started then."""
    return pid_alive(pid) and (start == "0" or _start_time(pid) in (start, "0"))


# A directory that must live outside the per-user directory (see the exceptions above) is
# named `<prefix><pid>-<start>-<random>` with owner_tag(), so that the next run of its kind
# finds those of dead processes (dead_owner) and removes them.
_TAGGED = re.compile(r"^[A-Za-z_-]*?-(?P<pid>\d+)-(?P<start>\d+)-[A-Za-z0-9_]+$")


def owner_tag() -> str:
    pid = os.getpid()
    return f"{pid}-{_start_time(pid)}"


def dead_owner(name: str) -> bool:
    """True when directory `name` carries an owner_tag() of a process that no longer runs."""
    m = _TAGGED.match(name)
    if m is None:
        return False
    return int(m["pid"]) != os.getpid() and not _alive(int(m["pid"]), m["start"])


def sweep_tagged(prefix: str, remove: Callable[[Path], None]) -> list[Path]:
    """`remove` every directory `$TMPDIR/<prefix><owner_tag>-...` whose owner no longer runs
    (it stops what the dead run left running there, then deletes the directory); returns them."""
    removed = []
    for entry in os.scandir(tempfile.gettempdir()):
        if not entry.name.startswith(prefix) or not entry.is_dir(follow_symlinks=False):
            continue
        if dead_owner(entry.name):
            remove(Path(entry.path))
            removed.append(Path(entry.path))
    return removed


def sweep() -> list[Path]:
    """Remove the run directories of processes that no longer run; return what was removed."""
    try:
        base = base_dir()
    except BackupctlError:
        return []
    removed = []
    for entry in os.scandir(base):
        if not _RUN.match(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        if not dead_owner(entry.name):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        removed.append(Path(entry.path))
    return removed


def run_dir() -> Path:
    """This process's private run directory (made on first use, after a sweep)."""
    global _run_dir, _run_pid
    with _lock:
        pid = os.getpid()
        if _run_dir is not None and _run_pid == pid and _run_dir.is_dir():
            return _run_dir
        sweep()
        path = Path(tempfile.mkdtemp(prefix=f"run-{pid}-{_start_time(pid)}-", dir=base_dir()))
        os.chmod(path, 0o700)
        if _run_pid is None:
            atexit.register(_remove_own)
        _run_dir, _run_pid = path, pid
        return path


def _remove_own() -> None:
    if _run_dir is not None and _run_pid == os.getpid():
        shutil.rmtree(_run_dir, ignore_errors=True)


def make_dir(prefix: str) -> Path:
    """A new private directory (0700) in the run directory; the caller removes it when done."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=run_dir()))
    os.chmod(path, 0o700)
    return path


@contextlib.contextmanager
def directory(prefix: str) -> Iterator[Path]:
    """`make_dir` removed at the end of the block."""
    path = make_dir(prefix)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def create_file(path: Path | str) -> int:
    """Create `path` (which must not exist) with mode 0600; return the open descriptor."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def unnamed_file() -> IO[bytes]:
    """An anonymous read/write file (removed when closed, nothing left even after kill -9
    where the system supports unnamed files) in the run directory."""
    return tempfile.TemporaryFile(dir=run_dir())  # noqa: SIM115 - the caller closes it
