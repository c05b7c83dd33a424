"""FaultyDestination: injects failures into any destination, for tests and for checking
that a setup survives a flaky network (as kopia's fault-injecting storage does).

Modes:

* ``"503"``: a share (``fail_ratio``) of calls fail with ``Transient`` *before* reaching
  the inner destination, like a server answering 503 Slow Down.
* ``"reset"``: a share of calls fail with ``Transient`` either before or *after* the inner
  call ran, like a connection reset that loses the reply of a request that succeeded.
* ``"die_after=N"``: the first N calls pass, every later one fails with ``Transient``, like
  a destination that becomes unreachable in the middle of an upload.

Seeded, so a failing test replays the same faults. Thread-safe.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from backupctl.destinations.base import Destination, ObjectInfo, Transient

T = TypeVar("T")


class FaultyDestination(Destination):
    def __init__(self, inner: Destination, fail_ratio: float = 0.3, seed: int = 0, mode: str = "503") -> None:
        super().__init__(inner.name, inner.options)
        if not 0.0 <= fail_ratio <= 1.0:
            raise ValueError("fail_ratio must be between 0 and 1")
        self.inner = inner
        self.capabilities = inner.capabilities  # type: ignore[misc]  # a wrapper has its inner's
        self.fail_ratio = fail_ratio
        self.mode = mode
        self.die_after: int | None = None
        if mode.startswith("die_after="):
            self.die_after = int(mode.partition("=")[2])
        elif mode not in ("503", "reset"):
            raise ValueError(f"unknown fault mode {mode!r}: 503, reset or die_after=N")
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.calls = 0  # calls made to this wrapper
        self.injected = 0  # faults injected

    @property
    def location(self) -> str:
        return self.inner.location

    def _decide(self) -> str:
        """'ok', 'before' (fail without calling inner) or 'after' (call inner, then fail)."""
        with self._lock:
            self.calls += 1
            if self.die_after is not None:
                fault = "before" if self.calls > self.die_after else "ok"
            elif self._rng.random() >= self.fail_ratio:
                fault = "ok"
            elif self.mode == "reset":
                fault = self._rng.choice(("before", "after"))
            else:
                fault = "before"
            if fault != "ok":
                self.injected += 1
            return fault

    def _fail(self, op: str) -> Transient:
        what = {"503": "HTTP 503 Slow Down", "reset": "connection reset by peer"}.get(
            self.mode, "unreachable"
        )
        return Transient(f"destination {self.name!r} ({self.location}): {op}: injected fault: {what}")

    def _run(self, op: str, call: Callable[[], T]) -> T:
        fault = self._decide()
        if fault == "before":
            raise self._fail(op)
        result = call()
        if fault == "after":
            raise self._fail(op)
        return result

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._run("put", lambda: self.inner.put(name, data, exclusive=exclusive))

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._run("put", lambda: self.inner.put_metadata(name, data, exclusive=exclusive))

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._run("get", lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> ObjectInfo:
        return self._run("stat", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # The listing is fetched whole, so a fault cannot leave the caller half-way.
        return iter(self._run("list", lambda: [*self.inner.list(prefix)]))

    def delete(self, name: str) -> None:
        self._run("delete", lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()
