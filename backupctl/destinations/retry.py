"""RetryingDestination: retries transient failures of any destination.

Retrying lives here, not in each destination (whose SDK retries are turned off), so
every type behaves alike: a ``Transient`` error is retried with exponential backoff and
full jitter (sleep a random time in [0, min(max_delay, base_delay * 2**n)]), bounded by a
number of attempts and by total time; every other error passes through at once.

Two retries need care because the failed attempt may have succeeded on the server with
only its reply lost: an exclusive put that then meets ``AlreadyExists`` succeeded if the
stored bytes are ours, and a delete that then meets ``NotFound`` succeeded.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from backupctl.destinations.base import AlreadyExists, Destination, NotFound, ObjectInfo, Transient

T = TypeVar("T")


class RetryingDestination(Destination):
    def __init__(
        self,
        inner: Destination,
        *,
        attempts: int | None = None,
        max_seconds: float = 120.0,
        base_delay: float = 0.5,
        max_delay: float = 20.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(inner.name, inner.options)
        if attempts is None:  # the destination's `retries` option, plus the first attempt
            attempts = inner.options.retries + 1
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.inner = inner
        self.capabilities = inner.capabilities  # type: ignore[misc]  # a wrapper has its inner's
        self.attempts = attempts
        self.max_seconds = max_seconds
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()

    @property
    def location(self) -> str:
        return self.inner.location

    def _call(self, op: Callable[[], T], on_retry_error: Callable[[Exception], T | None] | None = None) -> T:
        """Run `op`, retrying Transient. `on_retry_error` may turn an error met on a retry
        (never on the first attempt) into a result."""
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                return op()
            except Transient as exc:
                attempt += 1
                elapsed = time.monotonic() - start
                delay = self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
                if attempt >= self.attempts or elapsed + delay > self.max_seconds:
                    raise Transient(
                        f"{exc.message} (gave up after {attempt} attempt{'s' if attempt > 1 else ''} "
                        f"in {elapsed:.1f}s)",
                        hint=exc.hint or "the destination kept failing; check it and run the command again",
                    ) from None
                self._sleep(delay)
            except Exception as exc:
                if attempt and on_retry_error is not None:
                    result = on_retry_error(exc)
                    if result is not None:
                        return result
                raise

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._call(lambda: self.inner.put(name, data, exclusive=exclusive), self._ours(name, data, exclusive))

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._call(
            lambda: self.inner.put_metadata(name, data, exclusive=exclusive),
            self._ours(name, data, exclusive),
        )

    def _ours(self, name: str, data: bytes, exclusive: bool) -> Callable[[Exception], bool | None] | None:
        if not exclusive:
            return None

        def check(exc: Exception) -> bool | None:
            # AlreadyExists after a lost reply: the earlier attempt stored it if the bytes match.
            if isinstance(exc, AlreadyExists) and self._call(lambda: self.inner.get(name)) == data:
                return True
            return None

        return check

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        return self._call(lambda: self.inner.get(name, offset, length))

    def stat(self, name: str) -> ObjectInfo:
        return self._call(lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # A listing that fails midway starts again; names already yielded are skipped.
        seen: set[str] = set()
        start = time.monotonic()
        attempt = 0
        while True:
            try:
                for info in self.inner.list(prefix):
                    if info.name not in seen:
                        seen.add(info.name)
                        yield info
                return
            except Transient as exc:
                attempt += 1
                elapsed = time.monotonic() - start
                delay = self._rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))
                if attempt >= self.attempts or elapsed + delay > self.max_seconds:
                    raise Transient(
                        f"{exc.message} (gave up after {attempt} attempts in {elapsed:.1f}s)", hint=exc.hint
                    ) from None
                self._sleep(delay)

    def delete(self, name: str) -> None:
        def gone(exc: Exception) -> bool | None:
            return True if isinstance(exc, NotFound) else None  # an earlier attempt deleted it

        self._call(lambda: self.inner.delete(name), gone)

    def exists(self, name: str) -> bool:
        return self._call(lambda: self.inner.exists(name))

    def temporaries(self) -> Iterator[ObjectInfo]:
        return self.inner.temporaries()

    def delete_temporary(self, name: str) -> None:
        self._call(lambda: self.inner.delete_temporary(name))

    def close(self) -> None:
        self.inner.close()
