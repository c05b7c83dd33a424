"""The progress/event interface between the engine and whatever shows progress.

The engine, sources and destinations never print. They call `Reporter.emit(event)`;
the CLI supplies a reporter that draws Rich progress bars on a terminal and stays
silent in pipes. Events are plain dataclasses so a JSON renderer can dump them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Started:
    """An operation began. `total_bytes` / `total_files` are estimates, 0 if unknown."""

    operation: str  # "backup", "restore", "verify", "upload", "download", "prune", "check", ...
    subject: str  # backup ID or deployment name
    total_bytes: int = 0
    total_files: int = 0


@dataclass(frozen=True)
class Progress:
    """Cumulative counters for the running operation (not deltas)."""

    bytes_done: int
    files_done: int
    total_bytes: int = 0
    total_files: int = 0
    current: str = ""
    # True while the totals are still growing (the walk ahead of a backup has not finished):
    # a display shows them but computes no percent or ETA from them.
    estimate: bool = False


@dataclass(frozen=True)
class WarningEvent:
    """Something was skipped or is suspicious; the operation goes on."""

    message: str
    path: str = ""


@dataclass(frozen=True)
class InfoEvent:
    """A line the user should see (e.g. "took a full backup: no parent found")."""

    message: str


@dataclass(frozen=True)
class Finished:
    operation: str
    subject: str
    ok: bool = True
    extra: dict[str, object] = field(default_factory=dict)


Event = Started | Progress | WarningEvent | InfoEvent | Finished


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...


# Set to stop running backups at their next progress point (the daemon's second signal).
# A cancelled backup raises InterruptedError_ and ends Failed; nothing is half-visible.
CANCEL = threading.Event()


def draws_progress(reporter: Reporter) -> bool:
    """Whether anything shows this reporter's Progress events.

    The engine skips work that is done only for the display (the walk ahead that counts a
    tree's totals, backups/walkahead.py) when nothing shows it: in cron jobs and pipes that
    walk was a second lstat of every file. A reporter says so with a `draws_progress`
    attribute; one without it is assumed to show them.
    """
    return bool(getattr(reporter, "draws_progress", True))


class NullReporter:
    draws_progress = False

    def emit(self, event: Event) -> None:
        return None


class WarningsAsInfo:
    """Forwards every event, turning warnings into info lines with a prefix.

    For work done on the side of an operation (the safety backup before an in-place
    restore): its warnings are shown, but they are not the operation's own, so they must not
    turn its outcome into "completed with warnings" (exit code 3).
    """

    def __init__(self, forward: Reporter, prefix: str) -> None:
        self._forward = forward
        self._prefix = prefix

    @property
    def draws_progress(self) -> bool:
        return draws_progress(self._forward)

    def emit(self, event: Event) -> None:
        if isinstance(event, WarningEvent):
            where = f" ({event.path})" if event.path else ""
            event = InfoEvent(f"{self._prefix}{event.message}{where}")
        self._forward.emit(event)


class CollectingReporter:
    """Keeps every event; used by tests and to gather warnings for a result."""

    def __init__(self, forward: Reporter | None = None) -> None:
        self.events: list[Event] = []
        self._forward = forward
        self._lock = threading.Lock()

    @property
    def draws_progress(self) -> bool:
        return self._forward is None or draws_progress(self._forward)

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
        if self._forward is not None:
            self._forward.emit(event)

    @property
    def warnings(self) -> list[WarningEvent]:
        return [e for e in self.events if isinstance(e, WarningEvent)]
