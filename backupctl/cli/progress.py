"""The CLI's Reporter: Rich progress bars on a terminal, nothing in pipes or cron.

Warnings and info events are printed as lines on stderr (unless --quiet), collected
so the command can summarise them and choose the exit code.
"""

from __future__ import annotations

import sys
import threading
from types import TracebackType

from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from backupctl.cli import output
from backupctl.events import Event, Finished, InfoEvent, Started, WarningEvent
from backupctl.events import Progress as ProgressEvent


class CliReporter:
    def __init__(self) -> None:
        self.warnings: list[WarningEvent] = []
        self._lock = threading.Lock()
        self._enabled = sys.stderr.isatty() and not output.OPTS.quiet and not output.structured()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> CliReporter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop()

    def _start(self, event: Started) -> None:
        if not self._enabled or self._progress is not None:
            return
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=output.stderr_console(),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(event.operation, total=event.total_bytes or None, files=0)

    def _stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def emit(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Started):
                self._start(event)
            elif isinstance(event, ProgressEvent):
                if self._progress is not None and self._task is not None:
                    total = event.total_bytes or None
                    if total is not None and event.bytes_done > total:
                        total = None
                    self._progress.update(
                        self._task, completed=event.bytes_done, total=total, files=event.files_done
                    )
            elif isinstance(event, WarningEvent):
                self.warnings.append(event)
                text = f"{event.path}: {event.message}" if event.path else event.message
                if self._progress is not None:
                    self._progress.console.print(f"[yellow]warning:[/] {text}", highlight=False)
                else:
                    output.warning(text)
            elif isinstance(event, InfoEvent):
                if self._progress is not None:
                    self._progress.console.print(event.message, highlight=False, markup=False)
                else:
                    output.message(event.message)
            elif isinstance(event, Finished):
                self._stop()
