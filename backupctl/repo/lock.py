"""Repository locks: shared for backups, exclusive for anything that deletes data.

A lock is a plaintext JSON object ``locks/<random id>``: {"hostname", "pid",
"exclusive", "time"}. It is refreshed every REFRESH seconds while held. A lock is
stale, and ignored (then removed), when its time is older than STALE seconds, or when
it was taken on this host by a process that no longer exists: a `kill -9` never
leaves a repository locked for long. A lock of a dead process on another host (a
replaced pod, a rebooted VM) cannot be told from a live one until it is STALE; the
refusal says when that is, and `backupctl repository unlock --remove-all` clears it
at once (restic's semantics: `unlock` alone removes only stale locks).

`wait` > 0 (`--retry-lock`) retries a refused acquisition for that many seconds.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

from backupctl.destinations.base import Destination, NotFound
from backupctl.errors import DestinationError, LockedError
from backupctl.procs import pid_alive

STALE = 30 * 60
REFRESH = 5 * 60


class RepositoryLock:
    def __init__(self, dest: Destination, *, exclusive: bool, operation: str, wait: float = 0.0) -> None:
        self.dest = dest
        self.wait = wait
        self.exclusive = exclusive
        self.operation = operation
        self.name = f"locks/{uuid.uuid4().hex}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _doc(self) -> bytes:
        return json.dumps(
            {
                "hostname": socket.gethostname(),
                "pid": os.getpid(),
                "exclusive": self.exclusive,
                "operation": self.operation,
                "time": time.time(),
            }
        ).encode()

    def _others(self) -> list[dict[str, Any]]:
        """Live locks held by others; stale ones are removed on the way."""
        live = []
        for info in self.dest.list("locks/"):
            if info.name == self.name:
                continue
            try:
                doc = json.loads(self.dest.get(info.name))
            except (NotFound, ValueError):
                continue
            if not isinstance(doc, dict) or self._is_stale(doc):  # stale, as list_locks says
                try:
                    self.dest.delete(info.name)
                except NotFound:
                    pass
                continue
            live.append(doc)
        return live

    @staticmethod
    def _is_stale(doc: dict[str, Any]) -> bool:
        try:
            taken, pid = float(doc.get("time", 0)), int(doc.get("pid", 0))
        except (TypeError, ValueError):
            return True  # not a lock anyone could hold
        if time.time() - taken > STALE:
            return True
        return doc.get("hostname") == socket.gethostname() and pid > 0 and not pid_alive(pid)

    def acquire(self) -> RepositoryLock:
        deadline = time.monotonic() + self.wait
        delay = 1.0
        while True:
            try:
                return self._try_acquire()
            except LockedError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                time.sleep(min(left, random.uniform(delay / 2, delay)))
                delay = min(delay * 2, 30.0)

    def _try_acquire(self) -> RepositoryLock:
        def conflict(others: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [o for o in others if self.exclusive or o.get("exclusive")]

        if blockers := conflict(self._others()):
            raise self._locked(blockers[0])
        self.dest.put_metadata(self.name, self._doc())
        # Re-check after writing: two processes that raced both see each other now.
        if blockers := conflict(self._others()):
            self.release()
            raise self._locked(blockers[0])
        self._stop = threading.Event()  # a refused earlier attempt (--retry-lock) has set the old one
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _locked(self, doc: dict[str, Any]) -> LockedError:
        kind = "exclusively" if doc.get("exclusive") else ""
        taken = float(doc.get("time", 0))
        age = int(time.time() - taken)
        stale_at = dt.datetime.fromtimestamp(taken + STALE, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        waited = f"; waited {self.wait:g}s" if self.wait > 0 else ""
        return LockedError(
            f"repository at {self.dest.location} is locked {kind} by {doc.get('operation', '?')} "
            f"(pid {doc.get('pid')} on {doc.get('hostname')}, refreshed {age}s ago; stale at {stale_at} "
            f"unless refreshed){waited}".replace("  ", " "),
            hint="wait for it, or retry with --retry-lock 30m; if that process is gone (host rebooted or "
            "replaced), clear the lock now with `backupctl repository unlock --remove-all`",
        )

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                self.dest.put_metadata(self.name, self._doc())
            except Exception:  # a failed refresh must not kill the operation
                pass

    def release(self) -> None:
        self._stop.set()
        try:
            self.dest.delete(self.name)
        except Exception:
            pass

    def __enter__(self) -> RepositoryLock:
        return self.acquire()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def list_locks(dest: Destination) -> list[dict[str, Any]]:
    """Every lock object, with its name and whether it is stale."""
    out = []
    for info in dest.list("locks/"):
        try:
            doc = json.loads(dest.get(info.name))
            if not isinstance(doc, dict):
                raise ValueError
        except NotFound:
            continue
        except ValueError:
            doc = {}  # unreadable: treated as stale (time 0)
        out.append({**doc, "name": info.name, "stale": RepositoryLock._is_stale(doc)})
    return out


def remove_locks(dest: Destination, *, remove_all: bool) -> list[dict[str, Any]]:
    """Remove stale locks, or every lock with `remove_all`; returns the removed ones."""
    removed = []
    for doc in list_locks(dest):
        if not (remove_all or doc["stale"]):
            continue
        try:
            dest.delete(doc["name"])
        except NotFound:
            continue
        removed.append(doc)
    return removed


@contextmanager
def reading_lock(
    dest: Destination, *, operation: str, wait: float, warn: Callable[[str], None]
) -> Iterator[None]:
    """A shared lock for a command that only reads (restore, verify, download, drill): delete
    and prune take the exclusive lock, so they never remove packs under a running read, and
    a read never starts while they run (LockedError, exit 11; `--retry-lock` waits).

    A repository this user cannot write to (a read-only mount, another OS user's repository,
    as in the PITR set-up) is read without a lock after a warning: a restore must never need
    write access to the repository."""
    lock = RepositoryLock(dest, exclusive=False, operation=operation, wait=wait)
    try:
        lock.acquire()
    except LockedError:
        raise
    except (DestinationError, OSError) as exc:
        warn(
            f"reading without a lock ({getattr(exc, 'message', None) or exc}): "
            "a delete or prune running meanwhile could remove what this reads"
        )
        yield
        return
    try:
        yield
    finally:
        lock.release()
