"""The CLI's Reporter: progress as a bar, plain lines or JSON lines on stderr (`--progress`).

Modes (cli/progress_mode.py): `auto` draws a Rich bar when stderr is a terminal (table
output, no --quiet) and shows nothing otherwise, so cron mails only the result; `bar`
always draws it; `plain` writes a line every few seconds; `json` writes one JSON object per
line (docs/progress.md: `status` lines, then a `summary` per operation; warnings and info
lines as `warning`/`info` objects); `none` shows nothing. stdout is never touched: it keeps
the command's single result document.

Warnings and info events are collected so the command can summarise them and choose the
exit code; outside json mode they are printed as lines on stderr (unless --quiet).
"""

from __future__ import annotations

import json
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from backupctl.cli import output, progress_mode
from backupctl.events import Event, Finished, InfoEvent, Started, WarningEvent
from backupctl.events import Progress as ProgressEvent


@dataclass
class _Operation:
    name: str
    subject: str
    bytes_total: int = 0
    files_total: int = 0
    bytes_done: int = 0
    files_done: int = 0
    estimate: bool = False
    current: str = ""
    started: float = field(default_factory=time.monotonic)
    percent: float | None = None  # the last one shown: never goes back

    def update_percent(self) -> float | None:
        """Bytes if their total is known, else files; none while the totals still grow."""
        if self.estimate:
            return self.percent
        if self.bytes_total > 0:
            value = 100.0 * self.bytes_done / self.bytes_total
        elif self.files_total > 0:
            value = 100.0 * self.files_done / self.files_total
        else:
            return self.percent
        value = round(min(100.0, value), 2)
        self.percent = value if self.percent is None else max(self.percent, value)
        return self.percent

    def status(self, final: bool = False) -> dict[str, Any]:
        # No percent while the totals are an estimate or unknown (docs/progress.md).
        percent = 100.0 if final else (None if self.estimate else self.update_percent())
        elapsed = time.monotonic() - self.started
        eta = None
        if percent is not None and 0 < percent < 100:
            eta = round(elapsed * (100 - percent) / percent, 1)
        elif percent == 100:
            eta = 0.0
        return {
            "type": "status",
            "operation": self.name,
            "subject": self.subject,
            "percent": percent,
            "bytes_done": self.bytes_done,
            "bytes_total": self.bytes_total or None,
            "files_done": self.files_done,
            "files_total": self.files_total or None,
            "totals_final": final or (not self.estimate and (self.bytes_total > 0 or self.files_total > 0)),
            "elapsed_seconds": round(elapsed, 3),
            "eta_seconds": eta,
            "current": self.current,
        }


def resolve_mode() -> str:
    mode = progress_mode.mode
    if mode == "auto":
        interactive = sys.stderr.isatty() and not output.OPTS.quiet and not output.structured()
        return "bar" if interactive else "none"
    return mode


class CliReporter:
    def __init__(self) -> None:
        self.warnings: list[WarningEvent] = []
        self._lock = threading.Lock()
        self._mode = resolve_mode()
        self.draws_progress = self._mode != "none"  # events.draws_progress
        self._interval = progress_mode.interval({"plain": 3.0, "json": 1.0}.get(self._mode, 0.1))
        self._ops: list[_Operation] = []
        self._last_line = 0.0
        self._bar: Any = None  # a rich.progress.Progress while an operation runs (bar mode)
        self._task: Any = None

    def __enter__(self) -> CliReporter:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        with self._lock:
            self._stop_bar()

    # ---- output per mode -------------------------------------------------------------

    def _write(self, doc: dict[str, Any]) -> None:
        sys.stderr.write(json.dumps(doc) + "\n")
        sys.stderr.flush()

    def _plain(self, op: _Operation, final: bool = False) -> None:
        st = op.status(final)
        done = _size(op.bytes_done)
        if op.bytes_total:
            done += f"/{_size(op.bytes_total)}" + ("+" if op.estimate else "")
        files = f"{op.files_done}" + (f"/{op.files_total}" if op.files_total else "")
        parts = [f"{op.name} {op.subject}:".replace("  ", " "), done, f"{files} files"]
        if st["percent"] is not None:
            parts.append(f"{st['percent']:.0f}%")
        if st["eta_seconds"] and not final:
            parts.append(f"ETA {_duration(st['eta_seconds'])}")
        sys.stderr.write(" ".join(parts) + ("" if not final else " done") + "\n")
        sys.stderr.flush()

    def _line(self, op: _Operation, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_line < self._interval:
            return
        self._last_line = now
        if self._mode == "json":
            self._write(op.status(final))
        elif self._mode == "plain":
            self._plain(op, final)
        elif self._mode == "bar" and self._bar is not None:
            total = op.bytes_total or None
            if total is not None and op.bytes_done > total:
                total = None
            files = f"{op.files_done}/{op.files_total}" if op.files_total else str(op.files_done)
            self._bar.update(self._task, completed=op.bytes_done, total=total, files=files)

    def _start_bar(self, op: _Operation) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._stop_bar()
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[files]} files"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            # `--progress bar` asked for explicitly draws also into a pipe or a log file.
            console=output.stderr_console(force_terminal=progress_mode.mode == "bar"),
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(op.name, total=op.bytes_total or None, files="0")

    def _stop_bar(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    # ---- events ----------------------------------------------------------------------

    def emit(self, event: Event) -> None:
        with self._lock:
            if isinstance(event, Started):
                op = _Operation(event.operation, event.subject, event.total_bytes, event.total_files)
                self._ops.append(op)
                if self._mode == "bar":
                    self._start_bar(op)
                elif self._mode in ("json", "plain"):
                    self._line(op, force=True)
            elif isinstance(event, ProgressEvent):
                if not self._ops:
                    return
                op = self._ops[-1]
                op.bytes_done, op.files_done, op.current = event.bytes_done, event.files_done, event.current
                op.bytes_total = event.total_bytes or op.bytes_total
                op.files_total = event.total_files or op.files_total
                op.estimate = event.estimate
                if self._mode != "none":
                    self._line(op)
            elif isinstance(event, Finished):
                self._finish(event)
            elif isinstance(event, WarningEvent):
                self.warnings.append(event)
                self._warning(event)
            elif isinstance(event, InfoEvent):
                self._info(event)

    def _finish(self, event: Finished) -> None:
        matching = [i for i, op in enumerate(self._ops) if op.name == event.operation]
        if not matching:
            return
        op = self._ops.pop(matching[-1])
        if self._mode == "bar":
            self._stop_bar()
            return
        if self._mode not in ("json", "plain"):
            return
        if event.ok:
            # Done: the counters are the totals (a grown file or a skipped one moved them).
            op.bytes_total, op.files_total, op.estimate = (
                max(op.bytes_total, op.bytes_done),
                max(op.files_total, op.files_done),
                False,
            )
        self._line(op, force=True, final=event.ok)
        if self._mode == "json":
            summary: dict[str, Any] = {
                "type": "summary",
                "operation": op.name,
                "subject": op.subject,
                "result_id": event.subject,
                "ok": event.ok,
                "bytes_done": op.bytes_done,
                "files_done": op.files_done,
                "elapsed_seconds": round(time.monotonic() - op.started, 3),
            }
            summary.update({k: v for k, v in event.extra.items() if k not in summary})
            self._write(summary)

    def _warning(self, event: WarningEvent) -> None:
        if self._mode == "json":
            self._write({"type": "warning", "message": event.message, "path": event.path})
            return
        text = f"{event.path}: {event.message}" if event.path else event.message
        if self._bar is not None:
            self._bar.console.print(f"[yellow]warning:[/] {text}", highlight=False)
        else:
            output.warning(text)

    def _info(self, event: InfoEvent) -> None:
        if self._mode == "json":
            self._write({"type": "info", "message": event.message})
            return
        if self._bar is not None:
            self._bar.console.print(event.message, highlight=False, markup=False)
        else:
            output.message(event.message)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _duration(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
