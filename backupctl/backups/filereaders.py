"""Small regular files read, hashed, compressed and encrypted in reader processes.

Why processes: the walking thread reads small files itself (backups/readqueue.py says why
not threads), so on a tree of many small files one thread does everything and the backup
runs on one core. A reader process has a GIL of its own: it takes a batch of small files
(paths, sizes and mtimes from the walk) and returns each file's blob encoded as it is stored
(repo/codec.py), so the backup's own thread only walks, packs and writes the item stream.

Protocol: the parent runs `python -m backupctl.backups.filereaders` with a scrubbed
environment (no credentials of the parent's: docs/design.md), sends the key material and
the compression level as the first frame on the child's stdin (never in argv or the
environment), then batches; each batch's results come back on the child's stdout, in
order. A frame is a 4-byte big-endian length and a pickle (both ends are this module, run
by the same user). The child ignores SIGINT (the parent decides what an interrupt stops)
and exits at EOF on stdin, so a parent killed with -9 leaves no reader behind. A child
that dies or answers out of protocol fails every batch it holds, and so the backup.

One result per file, in the batch's order:
  (OK, size, blob_id, encoded, warning)  blob_id and encoded are None for an empty file;
                                         warning: it changed while read (stored as read)
  (SKIP, warning)                        could not be opened or read: left out, a warning
  (LARGE,)                               grew past one chunk since the walk: the parent
                                         reads it itself, as a large file

A blob is encoded even when the repository already has it (the reader does not see the
index): the parent drops the duplicate, as BlobWriter.add does.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import IO, Any

from backupctl.errors import BackupFailedError

OK, SKIP, LARGE = 0, 1, 2
Job = tuple[str, int, int, int]  # (absolute path, size, mtime_ns, inode) as the walk saw them
Result = tuple[Any, ...]

_HEADER = struct.Struct(">I")
_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Environment variables a reader keeps: what finds the interpreter and this package.
_KEEP_ENV = ("PATH", "HOME", "PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "LANG", "LC_ALL", "LC_CTYPE")


def _send(out: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def _recv(inp: IO[bytes]) -> Any:
    """The next frame, or None at a clean EOF; EOFError if a frame is cut short."""
    head = inp.read(_HEADER.size)
    if not head:
        return None
    if len(head) < _HEADER.size:
        raise EOFError("truncated frame header")
    (length,) = _HEADER.unpack(head)
    data = inp.read(length)
    if len(data) < length:
        raise EOFError("truncated frame")
    return pickle.loads(data)


class ReaderDied(BackupFailedError):
    """A reader process exited or broke the protocol; the batches it held are lost."""


class _Reader:
    """One reader process: batches go out on its stdin, results come back on its stdout to
    a thread that completes the batches' futures in order."""

    def __init__(self, hello: tuple[bytes, bytes, int, int]) -> None:
        env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV}
        # The reader imports this very package, wherever the parent found it.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (_PACKAGE_ROOT, env.get("PYTHONPATH"))))
        self.proc = subprocess.Popen(
            # -P and cwd="/": nothing from the caller's working directory is ever imported
            # (a json.py or pickle.py there would run with the keys in memory).
            [sys.executable, "-P", "-m", "backupctl.backups.filereaders"],
            cwd="/",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # a reader's failure is reported by the parent (ReaderDied)
            env=env,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin: IO[bytes] = self.proc.stdin
        self._stdout: IO[bytes] = self.proc.stdout
        self._waiting: deque[Future[list[Result]]] = deque()
        self._lock = threading.Lock()
        self._dead: str | None = None
        _send(self._stdin, hello)
        self._thread = threading.Thread(target=self._receive, name="filereader", daemon=True)
        self._thread.start()

    @property
    def backlog(self) -> int:
        return len(self._waiting)

    def submit(self, jobs: list[Job]) -> Future[list[Result]]:
        fut: Future[list[Result]] = Future()
        # Running from the start: a batch sent cannot be called back, so cancel() must not
        # succeed (the receiving thread completes the future whatever the caller did).
        fut.set_running_or_notify_cancel()
        with self._lock:
            if self._dead is not None:
                fut.set_exception(ReaderDied(self._dead))
                return fut
            self._waiting.append(fut)
        try:
            _send(self._stdin, jobs)
        except OSError:  # the child is gone; the receiving thread fails what it held
            pass
        return fut

    def _receive(self) -> None:
        why = "a file reader process exited unexpectedly"
        try:
            while True:
                results = _recv(self._stdout)
                if results is None:
                    break
                with self._lock:
                    fut = self._waiting.popleft() if self._waiting else None
                if fut is None:
                    why = "a file reader process sent a result nobody asked for"
                    break
                fut.set_result(results)
        except (OSError, EOFError, pickle.UnpicklingError, IndexError) as exc:
            why = f"a file reader process broke off: {exc}"
        why += self._exit_status()
        with self._lock:
            self._dead = why
            waiting, self._waiting = self._waiting, deque()
        for fut in waiting:
            fut.set_exception(ReaderDied(why))

    def _exit_status(self) -> str:
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            return ""
        if code < 0:
            return f" (killed by signal {-code})"
        return f" (exit status {code}; run `{sys.executable} -P -m backupctl.backups.filereaders` to see why)"

    def close(self, timeout: float) -> None:
        try:
            self._stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._thread.join(timeout)
        self._stdout.close()


class FileReaders:
    """A few reader processes, started at construction; `submit` goes to the one with the
    shortest backlog. `close()` ends them (kill() after a grace period when aborting)."""

    def __init__(self, enc_key: bytes, id_key: bytes, level: int, limit: int, processes: int) -> None:
        hello = (enc_key, id_key, level, limit)
        self._readers: list[_Reader] = []
        try:
            for _ in range(processes):
                self._readers.append(_Reader(hello))
        except BaseException:
            self.close(abort=True)
            raise

    def submit(self, jobs: list[Job]) -> Future[list[Result]]:
        reader = min(self._readers, key=lambda r: r.backlog)
        return reader.submit(jobs)

    def close(self, abort: bool = False) -> None:
        for reader in self._readers:
            reader.close(timeout=0.5 if abort else 30)
        self._readers = []


# ---- the reader process ----------------------------------------------------------------


def _read_one(codec: Any, limit: int, path: str, size: int, mtime_ns: int, inode: int) -> Result:
    """One small file as the archiver reads it (Archiver._store_content, small branch)."""
    from backupctl.repo.chunker import read_full
    from backupctl.sources.regular import Unreadable, changed_since, open_regular

    try:
        fh = open_regular(path, inode)
    except Unreadable as exc:
        return (SKIP, str(exc))
    try:
        data = read_full(fh, limit + 1)
    except OSError as exc:
        return (SKIP, f"read failed: {exc}")
    finally:
        fh.close()
    if len(data) > limit:
        return (LARGE,)
    warning = changed_since(path, size, mtime_ns)
    if not data:
        return (OK, 0, None, None, warning)
    blob_id = codec.cipher.blob_id(data)
    return (OK, len(data), blob_id, codec.encode_blob(blob_id, data), warning)


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    from backupctl.repo.codec import Codec
    from backupctl.repo.crypto import Cipher, MasterKeys

    hello = _recv(inp)
    if hello is None:
        return
    enc_key, id_key, level, limit = hello
    codec = Codec(Cipher(MasterKeys(enc_key, id_key)), level)
    while (jobs := _recv(inp)) is not None:
        _send(out, [_read_one(codec, limit, *job) for job in jobs])


def _die_with_parent() -> None:
    """SIGKILL when the parent dies (Linux), even while blocked outside a read of stdin."""
    parent = os.getppid()
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: EOF on stdin still ends the reader
    if os.getppid() != parent:  # the parent died before prctl
        os._exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer)
    except BrokenPipeError:  # the parent is gone
        pass
