"""MariaDB/MySQL point-in-time recovery: binary log archiving, the window, restore to a moment.

Archiving (`backupctl binlog sync DEPLOYMENT`): the server's binary logs are listed with
SHOW BINARY LOGS; every CLOSED one (all but the file SHOW MASTER STATUS names) that is not in
the archive yet is read with `mariadb-binlog --read-from-remote-server --raw` into a private
temporary directory (credentials through the source's 0600 option file, never argv), its
events are scanned (first/last event time and position, server id) and it is stored as
`binlog/<deployment>/<file>` through pitr.logarchive (write-once, idempotent). Files older
than the one the oldest retained mariabackup backup starts from are not needed and skipped
(`pitr prune` deletes them from the archive). `--flush` first closes the current file
(FLUSH BINARY LOGS) so that everything written until now is archived.

The window: a mariabackup backup records the binary log position of its consistent point
(mariabackup's `binlog_pos`, in the source info as binlog_file/binlog_pos). From that file on
the archive must hold every binary log without a hole; the backup is then recoverable from
its end time to the last event of that continuous run.

Restore to a moment: the newest mariabackup backup ending before the target is restored into
an empty data directory, then a temporary `mariadbd` (own socket, no networking, no binary
log, grant tables skipped until the first statement reloads them) is started on it and
`mariadb-binlog --start-position=<recorded> FILES... [--stop-datetime|--stop-position]` is
piped into `mariadb` over that socket; the server is shut down cleanly and the data directory
is ready. Event times in a binary log have one-second resolution: a time target replays
every event whose time (whole seconds, UTC) is before the target.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.destinations.base import NotFound
from backupctl.errors import ConfigError, NotFoundError, SourceError
from backupctl.events import InfoEvent
from backupctl.pitr.binlog_format import scan_binlog
from backupctl.pitr.common import (
    PitrError,
    Target,
    emptied_on_failure,
    method_warnings,
    parse_iso,
    physical_backups,
)
from backupctl.pitr.logarchive import (
    BINLOG_RE,
    binlog_object,
    binlog_partial_prefix,
    binlog_sort_key,
    copy_to_others,
    fetch_log,
    list_binlog_partials,
    list_binlogs,
    read_meta,
    store_log,
    verify_archive,
)
from backupctl.sources.dbutil import Secrets, ToolProcess, child_env, run
from backupctl.sources.mariadb_server import TemporaryServer, binlog_tool
from backupctl.tempdir import make_dir

if TYPE_CHECKING:
    from backupctl.engine.service import Service
    from backupctl.repo.repository import Repository
    from backupctl.sources.mariadb import MariaDBSource


class BinlogError(PitrError):
    """Binary log archiving or replay failed."""

    kind = "binlog"


# ---- reading a binary log -----------------------------------------------------------------


# ---- the source ---------------------------------------------------------------------------


def mariadb_source(service: Service, deployment: str) -> MariaDBSource:
    dep = service.deployment(deployment)
    for opts in dep.sources:
        if opts.type == "mariadb":
            return service.build_source(opts)  # type: ignore[return-value]
    raise ConfigError(f"deployment {deployment!r} has no mariadb source")


class ServerSession:
    """SQL and binary log reads against the deployment's server with the source's credentials."""

    def __init__(self, source: MariaDBSource) -> None:
        self.source = source
        self.secrets = Secrets("backupctl-binlog-")
        self.lead, self.env = source._prepare(self.secrets)

    def query(self, sql: str) -> list[list[str]]:
        return self.source._query(self.secrets, self.lead, self.env, sql)

    def read_binlog(self, name: str) -> bytes:
        """One binary log file, exactly as the server has it (remote raw read)."""
        if not BINLOG_RE.match(name):
            raise BinlogError(f"the server reported an unexpected binary log name {name!r}")
        out = self.secrets.dir / "binlogs"
        out.mkdir(mode=0o700, exist_ok=True)
        argv = [binlog_tool(), *self.lead, "--read-from-remote-server", "--raw", *self.source._conn()]
        argv += [f"--result-file={out}/", name]
        run(argv, env=self.env, secrets=self.secrets, what=f"mariadb-binlog (reading {name})")
        path = out / name
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BinlogError(f"mariadb-binlog wrote no file for {name}") from None
        finally:
            with contextlib.suppress(OSError):
                path.unlink()

    def close(self) -> None:
        self.secrets.cleanup()


def _binary_logs(session: ServerSession) -> tuple[list[tuple[str, int]], str]:
    """[(file, size)] in server order, and the current (open) file."""
    try:
        rows = session.query("SHOW BINARY LOGS")
        status = session.query("SHOW MASTER STATUS")
    except SourceError as exc:
        if "not using binary logging" in exc.message.lower():
            raise BinlogError(
                "the server does not write binary logs, so there is nothing to archive",
                hint="start it with log_bin (e.g. log_bin = mariadb-bin in [mariadb]) and server_id set",
            ) from None
        raise
    if not status or not status[0]:
        raise BinlogError("SHOW MASTER STATUS returned nothing: binary logging is off")
    logs = [(r[0], int(r[1])) for r in rows if len(r) >= 2 and r[1].isdigit()]
    return logs, status[0][0]


def oldest_needed(service: Service, deployment: str) -> tuple[str | None, str | None]:
    """(binary log file, backup id) the oldest retained mariabackup backup starts from."""
    mb = [b for b in physical_backups(service, deployment) if b["method"] == "mariabackup"]
    mb = [b for b in mb if b["info"].get("binlog_file")]
    if not mb:
        return None, None
    oldest = min(mb, key=lambda b: b["started"])
    return oldest["info"]["binlog_file"], oldest["id"]


def sync(service: Service, deployment: str, *, flush: bool = False) -> dict[str, Any]:
    """Archive every closed binary log of the deployment's server that is not archived yet."""
    source = mariadb_source(service, deployment)
    dep = service.deployment(deployment)
    primary = service.primary_destination(deployment)
    repo = service.repository(primary, create=True)
    others = [service.destination(n) for n in dep.destinations if n != primary]
    t0 = time.monotonic()
    session = ServerSession(source)
    stored: list[dict[str, Any]] = []
    already: list[str] = []
    skipped: list[str] = []
    copies_failed: dict[str, str] = {}
    try:
        if flush:
            session.query("FLUSH BINARY LOGS")
        logs, current = _binary_logs(session)
        archived = {n.rsplit("/", 1)[-1] for n in list_binlogs(repo.dest, deployment)}
        needed_from, needed_by = oldest_needed(service, deployment)
        need_key = binlog_sort_key(needed_from) if needed_from else None
        current_key = binlog_sort_key(current)
        _refuse_numbering_gone_back(deployment, current, current_key, archived)
        for name, size in logs:
            key = binlog_sort_key(name)
            if name == current or (key[0] == current_key[0] and key[1] > current_key[1]):
                continue  # still being written
            if name in archived:
                already.append(name)
                continue
            if need_key and key[0] == need_key[0] and key[1] < need_key[1]:
                skipped.append(name)
                continue
            data = session.read_binlog(name)
            if len(data) != size:
                raise BinlogError(
                    f"{name}: read {len(data)} bytes but the server lists {size}; not archived",
                    hint="run the sync again",
                )
            meta = {"binlog": name, **scan_binlog(data, name)}
            obj = binlog_object(deployment, name)
            result = store_log(repo, obj, data, meta)
            copies = copy_to_others(repo, obj, others) if others else {}
            copies_failed.update({f"{n}:{name}": s for n, s in copies.items() if s.startswith("failed")})
            stored.append(
                {
                    "file": name,
                    "state": result.state,
                    "size": size,
                    "first_event_time": meta["first_event_time"],
                    "last_event_time": meta["last_event_time"],
                    "end_position": meta["end_position"],
                    "copies": copies,
                }
            )
        # A partial copy streamed while the file was written is superseded by the whole file.
        whole = set(already) | {f["file"] for f in stored}
        for obj in list_binlog_partials(repo.dest, deployment):
            if obj.rsplit("/", 1)[-1] in whole:
                with contextlib.suppress(NotFound):
                    repo.dest.delete(obj)
    finally:
        session.close()
    return {
        "deployment": deployment,
        "destination": primary,
        "current": current,
        "archived": stored,
        "already_archived": already,
        "skipped_not_needed": skipped,
        "not_needed_before": {"file": needed_from, "backup": needed_by} if needed_from else None,
        "copy_failures": copies_failed,
        "flushed": flush,
        "seconds": round(time.monotonic() - t0, 3),
    }


def _refuse_numbering_gone_back(
    deployment: str, current: str, current_key: tuple[str, int], archived: set[str]
) -> None:
    """Archived names are write-once and a name already archived is skipped, so a server whose
    log numbering started again (logs inside a data directory that was restored, RESET MASTER)
    would have its new logs silently never archived under the old names: refuse loudly."""
    newest = max(
        (binlog_sort_key(n)[1] for n in archived if binlog_sort_key(n)[0] == current_key[0]), default=None
    )
    if newest is not None and newest >= current_key[1]:  # the file being written is never archived yet
        raise BinlogError(
            f"the server's binary log numbering went back: it writes {current}, but the archive of "
            f"{deployment!r} already holds {_file_name(current_key[0], newest, current)}; its new logs would "
            "collide with archived ones (the server was restored, or RESET MASTER ran)",
            hint="give the server a new log_bin base name (e.g. log_bin = mariadb-bin2) and restart it, "
            "then take a new full backup; the old archive stays for the older backups",
        )


# ---- the window ---------------------------------------------------------------------------


def archived_binlogs(repo: Repository, deployment: str) -> dict[str, dict[int, str]]:
    """{stem: {number: object name}} of the archived binary logs, with the partial copy of the
    file being written (`binlog sync --follow --stream`) as the tail when it comes after the
    last whole file: recovery may replay it like any other, it only ends earlier."""
    out: dict[str, dict[int, str]] = {}
    for obj in list_binlogs(repo.dest, deployment):
        stem, num = binlog_sort_key(obj)
        if num >= 0:
            out.setdefault(stem, {})[num] = obj
    for obj in list_binlog_partials(repo.dest, deployment):
        stem, num = binlog_sort_key(obj)
        files = out.setdefault(stem, {})
        if num > max(files, default=-1):
            files[num] = obj
    return out


def _file_name(stem: str, num: int, like: str) -> str:
    width = len(like.rsplit(".", 1)[-1])
    return f"{stem}.{num:0{width}d}"


def _run_from(files: dict[int, str], start: int) -> tuple[list[int], int | None]:
    """Consecutive numbers from `start`, and the first missing number when later files exist."""
    run: list[int] = []
    n = start
    while n in files:
        run.append(n)
        n += 1
    later = any(k > n for k in files)
    return run, (n if later else None)


def _meta(repo: Repository, obj: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if obj not in cache:
        cache[obj] = read_meta(repo, obj)[1]
    return cache[obj]


def backup_range(
    repo: Repository,
    archive: dict[str, dict[int, str]],
    b: dict[str, Any],
    cache: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    info = b["info"]
    out: dict[str, Any] = {
        "id": b["id"],
        "finished": b["finished"],
        "usable": False,
        "from": None,
        "to": None,
    }
    if not info.get("binlog_file") or info.get("binlog_pos") is None:
        out["reason"] = "the backup recorded no binary log position (binary logging off when it ran?)"
        return out
    start_file = info["binlog_file"]
    stem, start = binlog_sort_key(start_file)
    files = archive.get(stem, {})
    run, gap = _run_from(files, start)
    out.update(start_file=start_file, start_position=int(info["binlog_pos"]))
    out["last_file"] = files[run[-1]].rsplit("/", 1)[-1] if run else None
    out["missing_file"] = _file_name(stem, gap, start_file) if gap is not None else None
    if not run:
        out["reason"] = f"binary log {start_file} needed by this backup is not in the archive"
        if gap is None:
            out["reason"] += f" (run `backupctl binlog sync {b['deployment']} --flush`)"
        return out
    last = _meta(repo, files[run[-1]], cache)
    to = last.get("last_event_time")
    # Whether the archive reaches the backup's consistent point is a question of positions:
    # event times have whole seconds, so the last event can read as slightly before a backup
    # that ended in the same second although the archive holds everything after it.
    covered = len(run) > 1 or int(last.get("end_position") or 0) >= int(info["binlog_pos"])
    if to is None or not covered:
        out["reason"] = (
            f"the archived binary logs end at {to}, before the backup finished; "
            f"run `backupctl binlog sync {b['deployment']} --flush`"
        )
        return out
    to = max(to, b["finished"], key=parse_iso)
    out.update(usable=True, **{"from": b["finished"], "to": to})
    return out


def mariabackups(service: Service, deployment: str) -> list[dict[str, Any]]:
    out = [b for b in physical_backups(service, deployment) if b["method"] == "mariabackup"]
    for b in out:
        b["deployment"] = deployment
    return out


def binlog_window(service: Service, deployment: str) -> dict[str, Any]:
    primary = service.primary_destination(deployment)
    repo = service.repository(primary)
    archive = archived_binlogs(repo, deployment)
    gaps: list[dict[str, Any]] = []
    for stem, files in sorted(archive.items()):
        nums = sorted(files)
        for prev, cur in zip(nums, nums[1:], strict=False):
            if cur != prev + 1:
                like = files[prev].rsplit("/", 1)[-1]
                gaps.append(
                    {
                        "kind": "missing_binlogs",
                        "after": like,
                        "before": files[cur].rsplit("/", 1)[-1],
                        "first": _file_name(stem, prev + 1, like),
                        "last": _file_name(stem, cur - 1, like),
                        "count": cur - prev - 1,
                    }
                )
    cache: dict[str, dict[str, Any]] = {}
    ranges = [backup_range(repo, archive, b, cache) for b in mariabackups(service, deployment)]
    usable = [r for r in ranges if r["usable"]]
    newest = max(
        ((stem, n) for stem, files in archive.items() for n in files),
        default=None,
        key=lambda k: (k[1], k[0]),
    )
    partial_prefix = binlog_partial_prefix(deployment)
    return {
        "deployment": deployment,
        "engine": "mariadb",
        "destination": primary,
        "earliest": min((r["from"] for r in usable), default=None),
        "latest": max((r["to"] for r in usable if r["to"]), default=None),
        "binlogs": sum(len(f) for f in archive.values()),
        "newest_binlog": archive[newest[0]][newest[1]].rsplit("/", 1)[-1] if newest else None,
        "partial_binlog": next(
            (
                o.rsplit("/", 1)[-1]
                for f in archive.values()
                for o in f.values()
                if o.startswith(partial_prefix)
            ),
            None,
        ),
        "backups": ranges,
        "gaps": gaps,
    }


def verify_binlogs(service: Service, deployment: str) -> dict[str, Any]:
    """Decrypt and hash-check every archived binary log; continuity from each backup on."""
    window = binlog_window(service, deployment)
    repo = service.repository(window["destination"])
    return verify_archive(
        repo,
        [*list_binlogs(repo.dest, deployment), *list_binlog_partials(repo.dest, deployment)],
        window,
        check=scan_binlog,
        unusable_kind="backup_without_binlog",
    )


# ---- restore to a moment ------------------------------------------------------------------


def _stop_datetime(moment: dt.datetime) -> str:
    """mariadb-binlog --stop-datetime (whole seconds, read in TZ=UTC): the target rounded up,
    so that every event whose whole-second time is before the target is replayed."""
    ts = math.ceil(moment.timestamp())
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def choose_backup(
    service: Service, deployment: str, target: Target, backup_id: str | None
) -> tuple[dict[str, Any], dict[str, Any], list[str], dict[str, Any]]:
    """(backup, its range, the archived objects to replay in order, replay options) or PitrError."""
    repo = service.repository(service.primary_destination(deployment))
    archive = archived_binlogs(repo, deployment)
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
    position_file = target.position_file
    if target.position is not None and position_file is None:
        newest = max(
            ((stem, n) for stem, files in archive.items() for n in files),
            default=None,
            key=lambda k: (k[1], k[0]),
        )
        if newest is None:
            raise PitrError(f"no binary log of {deployment!r} is archived (run `backupctl binlog sync`)")
        position_file = archive[newest[0]][newest[1]].rsplit("/", 1)[-1]
    candidates = []
    for b in reversed(with_pos):
        info = b["info"]
        if target.time is not None and parse_iso(b["finished"]) >= target.time:
            continue
        if target.position is not None:
            assert position_file is not None
            here = (binlog_sort_key(info["binlog_file"]), int(info["binlog_pos"]))
            if here > (binlog_sort_key(position_file), target.position):
                continue
        candidates.append(b)
    desc = target.describe() if target.position is None else f"position {position_file}:{target.position}"
    if not candidates:
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
    b = candidates[0]
    cache: dict[str, dict[str, Any]] = {}
    rng = backup_range(repo, archive, b, cache)
    stem, start = binlog_sort_key(b["info"]["binlog_file"])
    files = archive.get(stem, {})
    run, gap = _run_from(files, start)
    if not run:
        raise PitrError(f"cannot restore to {desc} from backup {b['id'][:8]}: {rng.get('reason')}")
    last_to = _meta(repo, files[run[-1]], cache).get("last_event_time")
    gap_text = (
        f"binary log {_file_name(stem, gap, b['info']['binlog_file'])} is missing from the archive, so from "
        f"backup {b['id'][:8]} recovery can only reach {last_to} (the last event before the gap)"
        if gap is not None
        else None
    )
    options: dict[str, Any] = {
        "start_file": b["info"]["binlog_file"],
        "start_position": int(b["info"]["binlog_pos"]),
    }
    if target.time is not None:
        if last_to is None or parse_iso(last_to) < target.time:
            if gap_text:
                raise PitrError(f"refusing to restore to {desc}: {gap_text}")
            raise PitrError(
                f"refusing to restore to {desc}: it is after the last archived event ({last_to})",
                hint=f"run `backupctl binlog sync {deployment} --flush` to archive the current binary log, then retry",
            )
        chosen = [run[0]]
        for n in run[1:]:
            first = _meta(repo, files[n], cache).get("first_event_time")
            if first is not None and parse_iso(first) >= target.time:
                break
            chosen.append(n)
        options["stop_datetime"] = _stop_datetime(target.time)
    else:
        assert target.position is not None and position_file is not None
        pstem, pnum = binlog_sort_key(position_file)
        if pstem != stem:
            raise PitrError(
                f"refusing to restore to {desc}: the backup's binary logs are named {stem}.NNNNNN"
            )
        if pnum not in run:
            if gap_text and pnum >= (gap or 0):
                raise PitrError(f"refusing to restore to {desc}: {gap_text}")
            raise PitrError(
                f"refusing to restore to {desc}: {position_file} is not in the archive",
                hint=f"run `backupctl binlog sync {deployment} --flush`, then retry",
            )
        end = int(_meta(repo, files[pnum], cache).get("end_position", 0))
        if target.position > end:
            raise PitrError(f"refusing to restore to {desc}: {position_file} ends at position {end}")
        chosen = [n for n in run if n <= pnum]
        options["stop_position"] = target.position
        options["stop_file"] = position_file
    return b, rng, [files[n] for n in chosen], options


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


# ---- check --------------------------------------------------------------------------------


def check(service: Service, deployment: str) -> dict[str, Any]:
    """Close the current binary log (FLUSH BINARY LOGS), archive it, and confirm it arrived."""
    t0 = time.monotonic()
    source = mariadb_source(service, deployment)
    session = ServerSession(source)
    try:
        _, current = _binary_logs(session)
    finally:
        session.close()
    result = sync(service, deployment, flush=True)
    repo = service.repository(result["destination"])
    obj = binlog_object(deployment, current)
    if not repo.dest.exists(obj):
        raise BinlogError(f"binary log {current} was closed but is not in the archive")
    return {
        "deployment": deployment,
        "binlog": current,
        "object": obj,
        "ok": True,
        "seconds": round(time.monotonic() - t0, 3),
    }


def setup(service: Service, deployment: str) -> dict[str, Any]:
    """What continuous binary log archiving needs; creates the repository.

    Binary logging cannot be switched on at runtime: log_bin and server_id go into the
    server's configuration and need a restart. The archiver is `binlog sync`, run by cron or
    a timer, or as a long-running `binlog sync --follow` service."""
    source = mariadb_source(service, deployment)
    primary = service.primary_destination(deployment)
    repo = service.repository(primary, create=True)
    session = ServerSession(source)
    try:
        row = session.query("SELECT @@log_bin, @@server_id, @@binlog_format, IFNULL(@@log_bin_basename, '')")[
            0
        ]
    finally:
        session.close()
    log_bin, server_id, binlog_format, basename = row[0] == "1", row[1], row[2], row[3]
    problems = []
    if not log_bin:
        problems.append(
            "binary logging is off: set log_bin (e.g. log_bin = mariadb-bin) and restart the server"
        )
    if server_id in ("", "0"):
        problems.append("server_id is 0: set server_id to a non-zero value")
    cfg = service.config.path
    prefix = f"backupctl --config {cfg} " if cfg else "backupctl "
    return {
        "deployment": deployment,
        "repository": repo.dest.location,
        "settings": {
            "log_bin": "ON" if log_bin else "OFF",
            "server_id": server_id,
            "binlog_format": binlog_format,
        },
        "log_bin_basename": basename or None,
        "ok": not problems,
        "problems": problems,
        "warnings": method_warnings(source, deployment, "mariabackup"),
        "sync_command": f"{prefix}binlog sync {deployment}",
        "follow_command": f"{prefix}binlog sync {deployment} --follow --stream --interval 10",
    }
