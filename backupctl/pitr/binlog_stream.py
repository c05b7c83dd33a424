"""Streaming the binary log being written: `backupctl binlog sync --follow --stream`.

A long-running `mariadb-binlog --read-from-remote-server --raw --stop-never` receives each
event as the server writes it, into a private spool directory (0700, removed at the end;
one file per binary log, named as the server names them; the tool writes every event as it
arrives). Every round of `--follow`:

1. the closed binary logs are archived whole by `mariadb.sync`, read from the server again
   and checked against the size it lists: a spool file is never archived as a whole file;
2. the newest spool file (the one being written), cut after its last complete event, is
   stored as `binlog-partial/<deployment>/<file>` when it grew since the last round
   (`logarchive.store_partial`, which replaces the previous copy);
3. spool files of logs now archived whole are deleted (`mariadb.sync` deletes their partial
   copies).

The window and restores take a partial copy as the tail of the archive: the file right after
the last whole one (`mariadb.archived_binlogs`). So the archive is at most one round (`--interval`)
behind the server without rotating its logs (`--flush` rotates them every round instead).
If the stream stops (server restart, dropped connection), the next round reports why and
starts it again from the file the server is writing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.errors import BackupctlError, ConfigError
from backupctl.pitr.binlog_format import BINLOG_MAGIC, HEADER, scan_binlog
from backupctl.pitr.logarchive import (
    BINLOG_RE,
    ArchiveConflictError,
    binlog_partial_object,
    binlog_sort_key,
    store_partial,
)
from backupctl.pitr.mariadb import mariadb_source, sync
from backupctl.sources.dbutil import Secrets, ToolProcess
from backupctl.sources.mariadb_server import binlog_tool

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.sources.mariadb import MariaDBSource


def complete_prefix(data: bytes) -> bytes:
    """`data` up to the end of its last complete event (the stream may be mid-event)."""
    if data[:4] != BINLOG_MAGIC:
        return b""
    pos = 4
    while pos + HEADER.size <= len(data):
        size = HEADER.unpack_from(data, pos)[3]
        if size < HEADER.size or pos + size > len(data):
            break
        pos += size
    return data[:pos]


class Streamer:
    """The `mariadb-binlog --stop-never` child and its spool; `close()` stops and removes both."""

    def __init__(self, source: MariaDBSource) -> None:
        self.source = source
        self.secrets = Secrets("backupctl-binlog-stream-")
        self.spool = self.secrets.dir / "spool"
        self.spool.mkdir(mode=0o700)
        self._lead, self._env = source.client_setup(self.secrets)  # the 0600 option file, once
        self.proc: ToolProcess | None = None
        self.stored: dict[str, int] = {}  # file -> bytes of its partial copy stored so far

    def ensure_running(self, current: str) -> str | None:
        """Start streaming from `current` unless the stream runs; why it had stopped, if it had."""
        stopped = None
        if self.proc is not None and self.proc.proc.poll() is not None:
            stopped = self.proc.stderr_text().strip() or f"exit code {self.proc.proc.returncode}"
            self.proc = None
        if self.proc is None:
            if not BINLOG_RE.match(current):
                return stopped
            argv = [
                binlog_tool(),
                *self._lead,
                "--read-from-remote-server",
                "--raw",
                "--stop-never",
                *self.source.conn_args(),
                f"--result-file={self.spool}/",
                current,
            ]
            self.proc = ToolProcess(
                argv, env=self._env, secrets=self.secrets, what="mariadb-binlog --stop-never", stdout=False
            )
        return stopped

    def files(self) -> list[Path]:
        return sorted(
            (p for p in self.spool.iterdir() if BINLOG_RE.match(p.name)),
            key=lambda p: binlog_sort_key(p.name),
        )

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc = None
        self.secrets.cleanup()


def stream_round(service: Service, deployment: str, streamer: Streamer, *, flush: bool) -> dict[str, Any]:
    """One `--follow --stream` round: `mariadb.sync`'s result plus `partial` (and
    `stream_restarted` with the reason when the stream had stopped)."""
    result = sync(service, deployment, flush=flush)  # also deletes superseded partial copies
    stopped = streamer.ensure_running(result["current"])
    repo = service.repository(service.primary_destination(deployment))
    whole = set(result["already_archived"]) | {f["file"] for f in result["archived"]}
    files = streamer.files()
    for path in files:
        if path.name in whole:
            path.unlink(missing_ok=True)
            streamer.stored.pop(path.name, None)
    partial = None
    writing = [p for p in files if p.name not in whole]
    if writing:
        path = writing[-1]
        data = complete_prefix(path.read_bytes())
        if len(data) > 4:
            meta = {"binlog": path.name, **scan_binlog(data, path.name)}
            grew = len(data) > streamer.stored.get(path.name, 0)
            if grew:
                store_partial(repo, binlog_partial_object(deployment, path.name), data, meta)
                streamer.stored[path.name] = len(data)
            partial = {
                "file": path.name,
                "size": len(data),
                "stored": grew,
                "end_position": meta["end_position"],
                "last_event_time": meta["last_event_time"],
            }
    result["partial"] = partial
    if stopped is not None:
        result["stream_restarted"] = stopped
    return result


def open_streamer(service: Service, deployment: str) -> Streamer:
    return Streamer(mariadb_source(service, deployment))


def follow(
    service: Service,
    deployment: str,
    *,
    interval: float,
    flush: bool,
    on_round: Callable[[dict[str, Any]], None],
    rounds: int | None = None,
    stream: bool = False,
) -> None:
    """Sync every `interval` seconds until interrupted (or `rounds` rounds, for tests); with
    `stream`, the file being written is streamed too (below).

    A failed round (server down, destination unreachable) is reported and retried later."""
    streamer = open_streamer(service, deployment) if stream else None
    n = 0
    try:
        while rounds is None or n < rounds:
            started = time.monotonic()
            try:
                if streamer is not None:
                    result = stream_round(service, deployment, streamer, flush=flush)
                else:
                    result = sync(service, deployment, flush=flush)
            except (ConfigError, ArchiveConflictError):
                raise  # retrying cannot help
            except BackupctlError as exc:
                result = {"deployment": deployment, "error": exc.message, "archived": []}
            on_round(result)
            n += 1
            if rounds is not None and n >= rounds:
                break
            time.sleep(max(0.0, interval - (time.monotonic() - started)))
    finally:
        if streamer is not None:
            streamer.close()
