"""Repository locks: shared for backups, exclusive for anything that deletes data.

A lock is a plaintext JSON object ``locks/<random id>``: {"hostname", "pid",
"exclusive", "time"}. It is refreshed every REFRESH seconds while held. A lock is
stale, and ignored (then removed), when its time is older than STALE seconds, or when
it was taken on this host by a process that no longer exists: a `kill -9` never
leaves a repository locked for long.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from types import TracebackType

from backupctl.destinations.base import Destination, NotFound
from backupctl.errors import LockedError

STALE = 30 * 60
REFRESH = 5 * 60


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RepositoryLock:
    def __init__(self, dest: Destination, *, exclusive: bool, operation: str) -> None:
        self.dest = dest
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

    def _others(self) -> list[dict]:
        """Live locks held by others; stale ones are removed on the way."""
        live = []
        for info in self.dest.list("locks/"):
            if info.name == self.name:
                continue
            try:
                doc = json.loads(self.dest.get(info.name))
            except (NotFound, ValueError):
                continue
            if self._is_stale(doc):
                try:
                    self.dest.delete(info.name)
                except NotFound:
                    pass
                continue
            live.append(doc)
        return live

    @staticmethod
    def _is_stale(doc: dict) -> bool:
        if time.time() - float(doc.get("time", 0)) > STALE:
            return True
        return doc.get("hostname") == socket.gethostname() and not _pid_alive(int(doc.get("pid", 0)))

    def acquire(self) -> RepositoryLock:
        def conflict(others: list[dict]) -> list[dict]:
            return [o for o in others if self.exclusive or o.get("exclusive")]

        if blockers := conflict(self._others()):
            raise self._locked(blockers[0])
        self.dest.put_metadata(self.name, self._doc())
        # Re-check after writing: two processes that raced both see each other now.
        if blockers := conflict(self._others()):
            self.release()
            raise self._locked(blockers[0])
        self._thread = threading.Thread(target=self._refresh, name="lock-refresh", daemon=True)
        self._thread.start()
        return self

    def _locked(self, doc: dict) -> LockedError:
        kind = "exclusively" if doc.get("exclusive") else ""
        age = int(time.time() - float(doc.get("time", 0)))
        return LockedError(
            f"repository at {self.dest.location} is locked {kind} by {doc.get('operation', '?')} "
            f"(pid {doc.get('pid')} on {doc.get('hostname')}, {age}s ago)".replace("  ", " "),
            hint="wait for it to finish; a lock of a dead process clears itself",
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
