"""MariaDB/MySQL restore to a moment: choose the mariabackup backup, restore it, replay the
archived binary logs up to the target through a throwaway server (sources.mariadb_server).

The newest mariabackup backup ending before the target is restored into an empty data
directory, then `mariadb-binlog --start-position=<recorded> FILES...
[--stop-datetime|--stop-position]` is piped into `mariadb` over the temporary server's
socket; the server is shut down cleanly and the data directory is ready. Event times in a
binary log have one-second resolution: a time target replays every event whose time (whole
seconds, UTC) is before the target. The window and archive code is in pitr.mariadb.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from backupctl.errors import ConfigError, NotFoundError, SourceError
from backupctl.events import InfoEvent
from backupctl.pitr.common import PitrError, Target, emptied_on_failure
from backupctl.pitr.logarchive import binlog_sort_key, fetch_log
from backupctl.pitr.mariadb import (
    BinlogError,
    archived_binlogs,
    backup_range,
    binlog_file_name,
    cached_meta,
    mariabackups,
    mariadb_source,
    run_from,
)
from backupctl.records import PhysicalBackup
from backupctl.sources.dbutil import ToolProcess, child_env, run
from backupctl.sources.mariadb_server import TemporaryServer, binlog_tool
from backupctl.tempdir import make_dir
from backupctl.timefmt import parse_iso_utc

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository


def stop_datetime(moment: dt.datetime) -> str:
    """mariadb-binlog --stop-datetime (whole seconds, read in TZ=UTC): the target rounded up,
    so that every event whose whole-second time is before the target is replayed."""
    ts = math.ceil(moment.timestamp())
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def choose_backup(
    service: Service, deployment: str, target: Target, backup_id: str | None
) -> tuple[PhysicalBackup, dict[str, Any], list[str], dict[str, Any]]:
    """(backup, its range, the archived objects to replay in order, replay options) or PitrError."""
    repo = service.repository(service.primary_destination(deployment))
    archive = archived_binlogs(repo, deployment)
    with_pos = _backups_with_position(service, deployment, backup_id)
    position_file = _position_file(archive, deployment, target)
    desc = target.describe() if target.position is None else f"position {position_file}:{target.position}"
    b = _base_backup(with_pos, deployment, target, position_file, desc)
    cache: dict[str, dict[str, Any]] = {}
    rng = backup_range(repo, archive, b, cache)
    stem, start = binlog_sort_key(b["info"]["binlog_file"])
    files = archive.get(stem, {})
    run, gap = run_from(files, start)
    if not run:
        raise PitrError(f"cannot restore to {desc} from backup {b['id'][:8]}: {rng.get('reason')}")
    last_to = cached_meta(repo, files[run[-1]], cache).get("last_event_time")
    gap_text = (
        f"binary log {binlog_file_name(stem, gap, b['info']['binlog_file'])} is missing from the archive, so from "
        f"backup {b['id'][:8]} recovery can only reach {last_to} (the last event before the gap)"
        if gap is not None
        else None
    )
    logs = _LogRun(repo, files, run, cache, stem, gap, gap_text, last_to, desc, deployment)
    options: dict[str, Any] = {
        "start_file": b["info"]["binlog_file"],
        "start_position": int(b["info"]["binlog_pos"]),
    }
    if target.time is not None:
        chosen = logs.up_to_time(target.time)
        options["stop_datetime"] = stop_datetime(target.time)
    else:
        assert target.position is not None and position_file is not None
        chosen = logs.up_to_position(position_file, target.position)
        options["stop_position"] = target.position
        options["stop_file"] = position_file
    return b, rng, [files[n] for n in chosen], options


def _backups_with_position(service: Service, deployment: str, backup_id: str | None) -> list[PhysicalBackup]:
    """The deployment's mariabackup backups (only `backup_id`'s when given) that recorded
    the binary log position they end at, oldest first; none: NotFoundError or PitrError."""
    backups = mariabackups(service, deployment)
    if backup_id:
        backups = [b for b in backups if b["id"].startswith(backup_id.lower())]
        if not backups:
            raise NotFoundError(f"no mariabackup backup {backup_id!r} of deployment {deployment!r}")
    if not backups:
        raise PitrError(
            f"deployment {deployment!r} has no completed mariabackup backup",
            hint="point-in-time recovery starts from a physical backup: set `method: mariabackup`",
        )
    with_pos = [
        b for b in backups if b["info"].get("binlog_file") and b["info"].get("binlog_pos") is not None
    ]
    if not with_pos:
        raise PitrError(
            f"no mariabackup backup of {deployment!r} recorded a binary log position",
            hint="binary logging must be on when the backup runs (log_bin)",
        )
    return with_pos


def _position_file(archive: dict[str, dict[int, str]], deployment: str, target: Target) -> str | None:
    """The binary log a position target is in: the one given, else the newest archived."""
    if target.position is None or target.position_file is not None:
        return target.position_file
    newest = max(
        ((stem, n) for stem, files in archive.items() for n in files),
        default=None,
        key=lambda k: (k[1], k[0]),
    )
    if newest is None:
        raise PitrError(f"no binary log of {deployment!r} is archived (run `backupctl binlog sync`)")
    return archive[newest[0]][newest[1]].rsplit("/", 1)[-1]


def _base_backup(
    with_pos: list[PhysicalBackup], deployment: str, target: Target, position_file: str | None, desc: str
) -> PhysicalBackup:
    """The newest backup that ends before the target (in time, or in binary log position)."""
    for backup in reversed(with_pos):
        info = backup["info"]
        if target.time is not None and parse_iso_utc(backup["finished"]) >= target.time:
            continue
        if target.position is not None:
            assert position_file is not None
            here = (binlog_sort_key(info["binlog_file"]), int(info["binlog_pos"]))
            if here > (binlog_sort_key(position_file), target.position):
                continue
        return cast("PhysicalBackup", backup)  # mypy types reversed() of TypedDicts as Any
    oldest = with_pos[0]
    where = (
        f"the oldest ends at {oldest['finished']}"
        if target.time is not None
        else f"the oldest starts at {oldest['info']['binlog_file']}:{oldest['info']['binlog_pos']}"
    )
    raise PitrError(
        f"no mariabackup backup of {deployment!r} ends before {desc}; {where}",
        hint="the earliest recoverable moment is the end of the oldest retained backup: see `backupctl pitr show`",
    )


@dataclass
class _LogRun:
    """The archived binary logs that follow a base backup without a gap (`run`, numbers into
    `files`), and what is known about them; picks those a target needs, or refuses it."""

    repo: Repository
    files: dict[int, str]
    run: list[int]
    cache: dict[str, dict[str, Any]]
    stem: str
    gap: int | None
    gap_text: str | None
    last_to: str | None
    desc: str
    deployment: str

    def up_to_time(self, moment: dt.datetime) -> list[int]:
        """The logs up to the first one that starts at or after `moment`."""
        if self.last_to is None or parse_iso_utc(self.last_to) < moment:
            if self.gap_text:
                raise PitrError(f"refusing to restore to {self.desc}: {self.gap_text}")
            raise PitrError(
                f"refusing to restore to {self.desc}: it is after the last archived event ({self.last_to})",
                hint=f"run `backupctl binlog sync {self.deployment} --flush` to archive the current binary log, "
                "then retry",
            )
        chosen = [self.run[0]]
        for n in self.run[1:]:
            first = cached_meta(self.repo, self.files[n], self.cache).get("first_event_time")
            if first is not None and parse_iso_utc(first) >= moment:
                break
            chosen.append(n)
        return chosen

    def up_to_position(self, position_file: str, position: int) -> list[int]:
        """The logs up to `position_file`, which must be archived and reach `position`."""
        pstem, pnum = binlog_sort_key(position_file)
        if pstem != self.stem:
            raise PitrError(
                f"refusing to restore to {self.desc}: the backup's binary logs are named {self.stem}.NNNNNN"
            )
        if pnum not in self.run:
            if self.gap_text and pnum >= (self.gap or 0):
                raise PitrError(f"refusing to restore to {self.desc}: {self.gap_text}")
            raise PitrError(
                f"refusing to restore to {self.desc}: {position_file} is not in the archive",
                hint=f"run `backupctl binlog sync {self.deployment} --flush`, then retry",
            )
        end = int(cached_meta(self.repo, self.files[pnum], self.cache).get("end_position", 0))
        if position > end:
            raise PitrError(f"refusing to restore to {self.desc}: {position_file} ends at position {end}")
        return [n for n in self.run if n <= pnum]


def replay(datadir: Path, files: list[Path], options: dict[str, Any], reporter: Any = None) -> dict[str, Any]:
    """Replay binary logs into the data directory through a temporary server, then stop it."""
    argv = [binlog_tool(), "--no-defaults", f"--start-position={options['start_position']}"]
    if options.get("stop_datetime"):
        argv.append(f"--stop-datetime={options['stop_datetime']}")
    if options.get("stop_position") is not None:
        argv.append(f"--stop-position={options['stop_position']}")
    argv += [str(f) for f in files]
    server = TemporaryServer(datadir, reporter)
    t0 = time.monotonic()
    try:
        server.start()
        env = child_env({"TZ": "UTC"})
        decoder = ToolProcess(argv, env=env, what="mariadb-binlog")

        def chunks() -> Iterator[bytes]:
            yield b"FLUSH PRIVILEGES;\n"
            yield from iter(lambda: decoder.stdout.read(1 << 16), b"")

        try:
            run(
                [*server.client_argv(), "--binary-mode", "--batch"],
                env=env,
                what="mariadb (replaying binary logs)",
                input_chunks=chunks(),
            )
        except SourceError as exc:
            decoder.kill()
            raise BinlogError(f"replaying the binary logs failed: {exc.message}") from None
        try:
            decoder.check()
        except SourceError as exc:
            raise BinlogError(exc.message) from None
        server.stop()
    finally:
        server.cleanup()
    return {"replay_seconds": round(time.monotonic() - t0, 3)}


def restore_mariadb_to(
    service: Service,
    deployment: str,
    target: Target,
    *,
    backup_id: str | None,
    target_dir: Path | None,
    safety_backup: bool = True,
) -> dict[str, Any]:
    b, rng, objects, options = choose_backup(service, deployment, target, backup_id)
    desc = (
        target.describe() if target.position is None else f"position {options['stop_file']}:{target.position}"
    )
    source = mariadb_source(service, deployment)
    datadir = target_dir or source.options.datadir
    if datadir is None:
        raise ConfigError(
            f"deployment {deployment!r} has no datadir; give --target NEWDATADIR",
            hint="a point-in-time restore writes a data directory",
        )
    datadir = Path(datadir)
    if target_dir is None:
        # In place: refuse a running server before the safety backup (which, with the server
        # stopped, is an offline copy of the datadir: sources/mariadb.py) and before anything
        # is written.
        source.refuse_running_server(datadir)
    repo = service.repository(service.primary_destination(deployment))
    service.reporter.emit(
        InfoEvent(
            f"restoring mariabackup backup {b['id'][:8]} (ended {b['finished']}), then replaying "
            f"{len(objects)} binary log(s) from {options['start_file']}:{options['start_position']} to {desc}"
        )
    )
    work = make_dir("binlogs-")
    try:
        files: list[Path] = []
        for obj in objects:  # fetched before anything is written: a damaged file stops here
            data, _ = fetch_log(repo, obj)
            path = work / obj.rsplit("/", 1)[-1]
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            files.append(path)
        with emptied_on_failure(target_dir):
            result = service.restore_backup(b["id"], target_dir=target_dir, safety_backup=safety_backup)
            service.reporter.emit(InfoEvent(f"replaying binary logs into {datadir}"))
            result.update(replay(datadir, files, options, service.reporter))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result.update(
        engine="mariadb",
        backup=b["id"],
        target_moment=desc,
        datadir=str(datadir),
        binlogs=[o.rsplit("/", 1)[-1] for o in objects],
        replay=options,
        window_to=rng.get("to"),
        next_step=f"start MariaDB on {datadir} (owned by the server's user, e.g. chown -R mysql:mysql {datadir}); "
        "the binary logs are already applied",
    )
    return result
