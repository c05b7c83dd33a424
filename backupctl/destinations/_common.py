"""Small helpers shared by the remote destinations: key mapping, secret scrubbing, a
connection pool for protocols whose sessions are not thread-safe (SFTP, FTP)."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Generic, TypeVar

from backupctl.config.secrets import resolve_secret
from backupctl.errors import DestinationError
from backupctl.redact import url_credentials

TMP_SUFFIX = ".tmp-backupctl"
T = TypeVar("T")


def check_name(name: str) -> None:
    """Reject names that could escape the destination's prefix or are not keys at all."""
    if not name or name.startswith("/") or name.endswith("/") or ".." in name.split("/") or "//" in name:
        raise DestinationError(f"invalid object name {name!r}")


def clean_prefix(prefix: str) -> str:
    """A destination prefix normalised to '' or 'a/b/' (one trailing slash)."""
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def is_metadata(name: str) -> bool:
    """Everything outside data/ is small and read often: config, keys, index, manifests, locks."""
    return not name.startswith("data/")


def temp_name(final: str) -> str:
    """A hidden sibling of `final` to write before the atomic rename; skipped by list()."""
    head, _, tail = final.rpartition("/")
    tmp = f".{tail}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}"
    return f"{head}/{tmp}" if head else tmp


def secret(env: str | None, file: Path | str | None, what: str) -> str | None:
    return resolve_secret(env=env, file=file, what=what)


class Scrubber:
    """Removes every secret value this destination has resolved, and any password written
    inside a URL, from a message."""

    def __init__(self) -> None:
        self._values: list[str] = []

    def add(self, value: str | None) -> str | None:
        if value and len(value) >= 4:
            self._values.append(value)
        return value

    def __call__(self, text: str) -> str:
        for value in self._values:
            text = text.replace(value, "<redacted>")
        return url_credentials(text)


class ConnectionPool(Generic[T]):
    """Idle connections kept for reuse; a connection is used by one thread at a time.

    ``borrow()`` hands out an idle connection or makes a new one. After an exception the
    connection is closed unless ``healthy(conn, exc)`` says the session is still usable (a
    "no such file" reply, say): its state is otherwise unknown.
    """

    def __init__(
        self,
        factory: Callable[[], T],
        closer: Callable[[T], None],
        max_idle: int,
        healthy: Callable[[T, BaseException], bool] = lambda conn, exc: False,
    ) -> None:
        self._factory = factory
        self._closer = closer
        self._healthy = healthy
        self._max_idle = max(1, max_idle)
        self._idle: list[T] = []
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def borrow(self) -> Iterator[T]:
        with self._lock:
            if self._closed:
                raise DestinationError("destination is closed")
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = self._factory()
        try:
            yield conn
        except BaseException as exc:
            if not self._healthy(conn, exc):
                self._discard(conn)
                raise
            self._give_back(conn)
            raise
        self._give_back(conn)

    def _give_back(self, conn: T) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        self._discard(conn)

    def discard_all(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            self._discard(conn)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.discard_all()

    def _discard(self, conn: T) -> None:
        try:
            self._closer(conn)
        except Exception:
            pass
