"""FaultyDestination: injects faults into any destination. A TESTING AID, never for production.

Used by the test suite (tests/test_torture.py, tests/destinations/test_destination_conformance.py) and by
bench/torture.py to check that faults and crashes never turn into a wrong Completed backup,
as kopia's fault-injecting storage and restic's test backends do.

Simple modes (the positional ``mode`` argument, kept for the older tests):

* ``"503"``: a share (``fail_ratio``) of calls fail with ``Transient`` *before* reaching
  the inner destination, like a server answering 503 Slow Down.
* ``"reset"``: a share of calls fail with ``Transient`` either before or *after* the inner
  call ran, like a connection reset that loses the reply of a request that succeeded.
* ``"die_after=N"``: the first N calls pass, every later one fails with ``Transient``, like
  a destination that becomes unreachable in the middle of an upload.

A ``FaultPlan`` mixes every kind of fault, each with its own probability per call:

* ``fail``: ``Transient`` before the inner call (503).
* ``reset``: ``Transient`` before or after the inner call (reply lost).
* ``timeout``: sleep ``timeout_s``, then ``Transient`` before or after the inner call.
* ``short_read``: ``get`` silently returns a strict prefix of the bytes asked for (a
  broken proxy, a truncated download); the reader must notice (lengths, authentication).
* ``torn``: ``put`` stores a truncated copy under the final name, then raises ``Transient``
  (a destination whose put is not atomic, e.g. a plain FTP STOR cut off).
* ``kill_at=K``: the process SIGKILLs itself at its K-th write (put or delete), counted over
  every faulty destination of the process; ``kill_how`` says when: ``before`` the write,
  ``after`` it (durable, reply never seen) or ``torn`` (a truncated object, then the kill).
  Sweeping K over 1, 2, 3... kills a command at every write it makes.
* ``die_after=N``: as above.

From the environment (how tests reach a CLI subprocess): ``BACKUPCTL_FAULTS`` holds
comma-separated ``key=value`` pairs, e.g. ``fail=0.05,torn=0.02,short_read=0.02,seed=3`` or
``kill_at=7,kill_how=torn``; ``dests=a+b`` limits the faults to those destination names and
``ops=put+get`` to those operations. ``Service`` wraps each destination it opens when the
variable is set (see ``from_env``). Nothing else reads it; unset, nothing changes.

Seeded, so a failing test replays the same faults (up to thread scheduling). Thread-safe.
"""

from __future__ import annotations

import dataclasses
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from backupctl.destinations.base import Destination, ObjectInfo, Transient

T = TypeVar("T")

ENV_VAR = "BACKUPCTL_FAULTS"
_OPS = ("put", "get", "stat", "list", "delete")
_KILL_HOW = ("before", "after", "torn")

# Writes (put, delete) made through any FaultyDestination of this process: `kill_at` counts
# over all of them, so "the K-th write of a command" means the same thing with one or
# several destinations.
_writes_lock = threading.Lock()
_writes = 0


@dataclasses.dataclass(frozen=True)
class FaultPlan:
    """What to inject; probabilities are per call, between 0 and 1."""

    fail: float = 0.0
    reset: float = 0.0
    timeout: float = 0.0
    short_read: float = 0.0
    torn: float = 0.0
    timeout_s: float = 0.05
    seed: int = 0
    kill_at: int | None = None
    kill_how: str = "before"
    die_after: int | None = None
    dests: tuple[str, ...] = ()  # empty: every destination
    ops: tuple[str, ...] = _OPS

    def __post_init__(self) -> None:
        for name in ("fail", "reset", "timeout", "short_read", "torn"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{ENV_VAR}: {name}={value}: must be between 0 and 1")
        if self.kill_how not in _KILL_HOW:
            raise ValueError(f"{ENV_VAR}: kill_how={self.kill_how!r}: one of {', '.join(_KILL_HOW)}")
        if self.kill_at is not None and self.kill_at < 1:
            raise ValueError(f"{ENV_VAR}: kill_at must be at least 1")
        unknown = set(self.ops) - set(_OPS)
        if unknown:
            raise ValueError(f"{ENV_VAR}: unknown ops {sorted(unknown)}: {', '.join(_OPS)}")

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """``key=value,key=value`` as documented in the module docstring."""
        kwargs: dict[str, object] = {}
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            key = key.strip()
            if not sep or key not in fields:
                raise ValueError(f"{ENV_VAR}: {part!r}: expected key=value with key in {', '.join(fields)}")
            if key in ("dests", "ops"):
                kwargs[key] = tuple(filter(None, value.split("+")))
            elif key == "kill_how":
                kwargs[key] = value
            elif key in ("seed", "kill_at", "die_after"):
                kwargs[key] = int(value)
            else:
                kwargs[key] = float(value)
        return cls(**kwargs)  # type: ignore[arg-type]

    def applies_to(self, dest_name: str) -> bool:
        return not self.dests or dest_name in self.dests


def from_env(dest: Destination) -> Destination:
    """`dest` behind a FaultyDestination when BACKUPCTL_FAULTS asks for it, else `dest`."""
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return dest
    plan = FaultPlan.parse(text)
    if not plan.applies_to(dest.name):
        return dest
    # One seed per destination name, so two destinations do not fail in lockstep.
    seed = plan.seed * 1_000_003 + sum(dest.name.encode())
    return FaultyDestination(dest, plan=dataclasses.replace(plan, seed=seed))


class FaultyDestination(Destination):
    def __init__(
        self,
        inner: Destination,
        fail_ratio: float = 0.3,
        seed: int = 0,
        mode: str = "503",
        *,
        plan: FaultPlan | None = None,
    ) -> None:
        super().__init__(inner.name, inner.options)
        if not 0.0 <= fail_ratio <= 1.0:
            raise ValueError("fail_ratio must be between 0 and 1")
        self.inner = inner
        self.capabilities = inner.capabilities  # type: ignore[misc]  # a wrapper has its inner's
        self.fail_ratio = fail_ratio
        self.mode = mode
        if plan is None:
            if mode.startswith("die_after="):
                plan = FaultPlan(die_after=int(mode.partition("=")[2]), seed=seed)
            elif mode == "503":
                plan = FaultPlan(fail=fail_ratio, seed=seed)
            elif mode == "reset":
                plan = FaultPlan(reset=fail_ratio, seed=seed)
            else:
                raise ValueError(f"unknown fault mode {mode!r}: 503, reset or die_after=N")
        else:
            self.mode = "plan"
        self.plan = plan
        self.die_after = plan.die_after
        self._rng = random.Random(plan.seed)
        self._lock = threading.Lock()
        self.calls = 0  # calls made to this wrapper
        self.injected = 0  # faults injected
        self.torn: list[str] = []  # names of objects stored truncated
        self.short_reads = 0

    @property
    def location(self) -> str:
        return self.inner.location

    def _roll(self, p: float) -> bool:
        return p > 0.0 and self._rng.random() < p

    def _decide(self, op: str) -> str:
        """'ok', 'before' (fail without calling inner), 'after' (call inner, then fail),
        'short' (a short read) or 'torn' (a truncated put, then fail)."""
        plan = self.plan
        with self._lock:
            self.calls += 1
            if op not in plan.ops:
                return "ok"
            if plan.die_after is not None:
                fault = "before" if self.calls > plan.die_after else "ok"
            elif self._roll(plan.fail):
                fault = "before"
            elif self._roll(plan.reset):
                fault = self._rng.choice(("before", "after"))
            elif self._roll(plan.timeout):
                fault = self._rng.choice(("timeout-before", "timeout-after"))
            elif op == "get" and self._roll(plan.short_read):
                fault = "short"
            elif op == "put" and self._roll(plan.torn):
                fault = "torn"
            else:
                fault = "ok"
            if fault != "ok":
                self.injected += 1
            return fault

    def _fail(self, op: str, what: str | None = None) -> Transient:
        what = what or {"503": "HTTP 503 Slow Down", "reset": "connection reset by peer"}.get(
            self.mode, "unreachable"
        )
        return Transient(f"destination {self.name!r} ({self.location}): {op}: injected fault: {what}")

    def _cut(self, n: int) -> int:
        """A random strict prefix length of n bytes (n > 0)."""
        with self._lock:
            return self._rng.randrange(n)

    def _count_write(self, name: str, data: bytes | None, write: Callable[[bytes], None]) -> None:
        """Count a write; if it is the kill_at-th, carry out the kill (never returns then)."""
        global _writes
        kill_at = self.plan.kill_at
        if kill_at is None:
            return
        with _writes_lock:
            _writes += 1
            if _writes != kill_at:
                return
        how = self.plan.kill_how
        if how == "after":
            write(data or b"")
        elif how == "torn" and data is not None and len(data) > 0:
            self.inner.put(name, data[: self._cut(len(data))])
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)  # SIGKILL is delivered at once; never go on writing

    def _run(self, op: str, call: Callable[[], T]) -> T:
        fault = self._decide(op)
        if fault.startswith("timeout"):
            time.sleep(self.plan.timeout_s)
            fault = fault.partition("-")[2]
            what = f"timed out after {self.plan.timeout_s:g}s"
        else:
            what = None
        if fault == "before":
            raise self._fail(op, what)
        result = call()
        if fault == "after":
            raise self._fail(op, what)
        return result

    def _put(self, name: str, data: bytes, exclusive: bool, metadata: bool) -> None:
        def write(payload: bytes) -> None:
            if metadata:
                self.inner.put_metadata(name, payload, exclusive=exclusive)
            else:
                self.inner.put(name, payload, exclusive=exclusive)

        self._count_write(name, data, write)
        fault = self._decide("put")
        if fault == "torn" and len(data) > 0:
            # Overwrites even where `exclusive` asked otherwise: a non-atomic store does that.
            self.inner.put(name, data[: self._cut(len(data))])
            with self._lock:
                self.torn.append(name)
            raise self._fail("put", "connection cut during the upload")
        if fault.startswith("timeout"):
            time.sleep(self.plan.timeout_s)
            fault = fault.partition("-")[2]
        if fault == "before":
            raise self._fail("put")
        write(data)
        if fault == "after":
            raise self._fail("put")

    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, metadata=False)

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        self._put(name, data, exclusive, metadata=True)

    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes:
        fault = self._decide("get")
        if fault == "short":
            data = self.inner.get(name, offset, length)
            if data:
                with self._lock:
                    self.short_reads += 1
                return data[: self._cut(len(data))]
            return data
        if fault.startswith("timeout"):
            time.sleep(self.plan.timeout_s)
            fault = fault.partition("-")[2]
        if fault == "before":
            raise self._fail("get")
        data = self.inner.get(name, offset, length)
        if fault == "after":
            raise self._fail("get")
        return data

    def stat(self, name: str) -> ObjectInfo:
        return self._run("stat", lambda: self.inner.stat(name))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # The listing is fetched whole, so a fault cannot leave the caller half-way.
        return iter(self._run("list", lambda: [*self.inner.list(prefix)]))

    def delete(self, name: str) -> None:
        self._count_write(name, None, lambda _data: self.inner.delete(name))
        self._run("delete", lambda: self.inner.delete(name))

    def close(self) -> None:
        self.inner.close()
