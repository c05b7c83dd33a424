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

Restore to a moment (choosing the backup, replaying through a temporary server) is in
pitr.mariadb_restore; the binary log file format in pitr.binlog_format.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from backupctl.destinations.base import NotFound
from backupctl.errors import ConfigError, SourceError
from backupctl.pitr.binlog_format import scan_binlog
from backupctl.pitr.common import PitrError, method_warnings, physical_backups
from backupctl.pitr.logarchive import (
    BINLOG_RE,
    binlog_object,
    binlog_partial_prefix,
    binlog_sort_key,
    copy_to_others,
    list_binlog_partials,
    list_binlogs,
    read_meta,
    store_log,
    verify_archive,
)
from backupctl.records import PhysicalBackup
from backupctl.sources.dbutil import Secrets, run
from backupctl.sources.mariadb_server import binlog_tool
from backupctl.timefmt import parse_iso_utc

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository
    from backupctl.sources.mariadb import MariaDBSource


class BinlogError(PitrError):
    """Binary log archiving or replay failed."""

    kind = "binlog"


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
        self.lead, self.env = source.client_setup(self.secrets)

    def query(self, sql: str) -> list[list[str]]:
        return self.source.query(self.secrets, self.lead, self.env, sql)

    def read_binlog(self, name: str) -> bytes:
        """One binary log file, exactly as the server has it (remote raw read)."""
        if not BINLOG_RE.match(name):
            raise BinlogError(f"the server reported an unexpected binary log name {name!r}")
        out = self.secrets.dir / "binlogs"
        out.mkdir(mode=0o700, exist_ok=True)
        argv = [binlog_tool(), *self.lead, "--read-from-remote-server", "--raw", *self.source.conn_args()]
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
            f"{deployment!r} already holds {binlog_file_name(current_key[0], newest, current)}; its new logs would "
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


def binlog_file_name(stem: str, num: int, like: str) -> str:
    width = len(like.rsplit(".", 1)[-1])
    return f"{stem}.{num:0{width}d}"


def run_from(files: dict[int, str], start: int) -> tuple[list[int], int | None]:
    """Consecutive numbers from `start`, and the first missing number when later files exist."""
    run: list[int] = []
    n = start
    while n in files:
        run.append(n)
        n += 1
    later = any(k > n for k in files)
    return run, (n if later else None)


def cached_meta(repo: Repository, obj: str, cache: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if obj not in cache:
        cache[obj] = read_meta(repo, obj)[1]
    return cache[obj]


def backup_range(
    repo: Repository,
    archive: dict[str, dict[int, str]],
    b: PhysicalBackup,
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
    run, gap = run_from(files, start)
    out.update(start_file=start_file, start_position=int(info["binlog_pos"]))
    out["last_file"] = files[run[-1]].rsplit("/", 1)[-1] if run else None
    out["missing_file"] = binlog_file_name(stem, gap, start_file) if gap is not None else None
    if not run:
        out["reason"] = f"binary log {start_file} needed by this backup is not in the archive"
        if gap is None:
            out["reason"] += f" (run `backupctl binlog sync {b['deployment']} --flush`)"
        return out
    last = cached_meta(repo, files[run[-1]], cache)
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
    to = max(to, b["finished"], key=parse_iso_utc)
    out.update(usable=True, **{"from": b["finished"], "to": to})
    return out


def mariabackups(service: Service, deployment: str) -> list[PhysicalBackup]:
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
                        "first": binlog_file_name(stem, prev + 1, like),
                        "last": binlog_file_name(stem, cur - 1, like),
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
