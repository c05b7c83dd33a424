"""The physical path of the MariaDB source: mariabackup's files and the restore of a chain.

For `MariaDBSource` (sources/mariadb.py). At backup: `read_checkpoints` and
`read_binlog_position` read what mariabackup wrote to --extra-lsndir (the LSNs an increment
continues from, the binary log position a point-in-time restore replays from), and
`offline_files`/`read_upgrade_info` describe a stopped data directory copied offline.
At restore: `check_chain` and `check_physical_version` refuse a chain that cannot be
prepared or started here, and `restore_into_datadir` extracts each backup of a chain (full
first, then its increments) next to the destination, prepares them in order (an offline
copy needs no prepare) and moves the result into the data directory. The caller has
refused a running server on an in-place destination before anything is read.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backupctl.errors import SourceError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.sources.base import RestoreEntry, RestoreRequest
from backupctl.sources.dbutil import child_env, chown_tree, ensure_empty_dir, run
from backupctl.sources.mariadb_client import mariadb_tool, version_tuple
from backupctl.sources.postgres_physical import clear_dir

XBSTREAM = "mariadb/mariabackup.xbstream"
# Left out of an offline copy: recreated at start (temporary tablespace) or runtime leftovers.
OFFLINE_SKIP = ("ibtmp1",)
OFFLINE_SKIP_SUFFIXES = (".pid", ".sock.lock")


def restore_into_datadir(
    chain: list[tuple[dict[str, Any], Iterator[RestoreEntry]]],
    dest: Path,
    in_place: bool,
    request: RestoreRequest,
) -> None:
    """Extract, prepare and move a checked chain into `dest` (in place: its contents replaced
    once the backup is prepared; the directory itself, owner and mode, stays)."""
    existed = dest.exists()
    if not in_place:
        ensure_empty_dir(dest, what="physical restore")
    owner = dest.stat() if existed else None
    offline = bool(chain[0][0].get("offline"))
    work = Path(tempfile.mkdtemp(prefix=".backupctl-mariabackup-", dir=dest.parent))
    try:
        dirs = [extract_backup(i, entries, work) for i, (_info, entries) in enumerate(chain)]
        base = dirs[0]
        if not offline:
            prepare_chain(dirs, request)
        if in_place:
            request.reporter.emit(InfoEvent(f"replacing the contents of {dest}"))
            clear_dir(dest)
        if offline:
            for item in os.scandir(base):  # same file system: renames
                os.rename(item.path, dest / item.name)
        else:
            run(
                [
                    mariadb_tool("mariabackup", "mariadb-backup"),
                    "--move-back",
                    f"--target-dir={base}",
                    f"--datadir={dest}",
                ],
                what="mariabackup --move-back",
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not in_place:
        os.chmod(dest, 0o750)
    if owner is not None and os.geteuid() == 0:
        chown_tree(dest, owner.st_uid, owner.st_gid)
    request.reporter.emit(
        InfoEvent(
            f"restored {chain[-1][0].get('server_version', 'MariaDB')} data into {dest}; make it owned by the"
            " server's user (e.g. chown -R mysql:mysql) if needed, then start the server on it"
        )
    )


def extract_backup(i: int, entries: Iterator[RestoreEntry], work: Path) -> Path:
    """Extract backup `i` of the chain (its xbstream entry) into work/i."""
    target = work / str(i)
    target.mkdir(mode=0o700)
    found = False
    for entry in entries:
        if entry.kind == "file" and entry.path == XBSTREAM:
            run(
                [mariadb_tool("mbstream"), "-x", "-C", str(target)],
                what="mbstream",
                input_chunks=entry.chunks(),
            )
            found = True
    if not found:
        raise SourceError(f"backup {i + 1} of the chain holds no {XBSTREAM}")
    return target


def prepare_chain(dirs: list[Path], request: RestoreRequest) -> None:
    tool = mariadb_tool("mariabackup", "mariadb-backup")
    base = dirs[0]
    request.reporter.emit(InfoEvent(f"preparing the full backup ({len(dirs) - 1} increment(s) to apply)"))
    run([tool, "--prepare", f"--target-dir={base}"], what="mariabackup --prepare")
    for inc in dirs[1:]:
        run(
            [tool, "--prepare", f"--target-dir={base}", f"--incremental-dir={inc}"],
            what="mariabackup --prepare",
        )


def check_chain(infos: list[dict[str, Any]]) -> None:
    """Refuse a chain that is not one full backup followed by increments that continue it."""
    if infos[0].get("backup_type", "full") != "full":
        raise SourceError("a mariabackup chain must start with a full backup")
    for prev, cur in zip(infos, infos[1:], strict=False):
        if cur.get("backup_type") != "incremental":
            raise SourceError("only the first backup of a chain may be a full backup")
        if str(cur.get("from_lsn")) != str(prev.get("to_lsn")):
            raise SourceError(
                f"broken chain: an increment starts at LSN {cur.get('from_lsn')} but its parent ends at {prev.get('to_lsn')}"
            )


def tool_version(*names: str) -> str | None:
    """The MariaDB version of the first installed of `names` (from `--version`), else None."""
    for name in names:
        path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
        if path is None:
            continue
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            # mariabackup prints its version on stderr, mariadbd on stdout.
            done = subprocess.run(
                [path, "--version"], capture_output=True, text=True, timeout=60, env=child_env()
            )
            m = re.search(r"(\d+\.\d+\.\d+)", done.stdout + done.stderr)
            if m:
                return m.group(1)
    return None


def check_physical_version(infos: list[dict[str, Any]], reporter: Any) -> None:
    """Refuse a mariabackup chain that the tools here cannot prepare (mariabackup older than
    the backup's server) or whose data directory the server here cannot start (an older
    mariadbd); warn when they are newer. An offline copy needs no prepare; a tool or server
    that is not installed is not checked."""
    recorded = next((str(i["server_version"]) for i in reversed(infos) if i.get("server_version")), "")
    src = version_tuple(recorded)
    if src == (0, 0):
        return
    label = f"{src[0]}.{src[1]}"
    if not infos[0].get("offline"):
        tool = tool_version("mariabackup", "mariadb-backup")
        if tool is not None and version_tuple(tool) < src:
            raise SourceError(
                f"refusing to restore: the backup was taken from MariaDB {recorded}, and mariabackup {tool}"
                " here cannot prepare a backup of a newer server",
                hint=f"restore on a machine with MariaDB {label} or newer (its mariabackup and server)",
            )
        if tool is not None and version_tuple(tool) > src:
            reporter.emit(
                WarningEvent(
                    f"the backup was taken from MariaDB {recorded}; preparing it with the newer mariabackup {tool}"
                    f" (if the prepare fails, use mariabackup {label})"
                )
            )
    server = tool_version("mariadbd", "mysqld")
    if server is not None and version_tuple(server) < src:
        raise SourceError(
            f"refusing to restore: the backup was taken from MariaDB {recorded}, and the MariaDB server here"
            f" ({server}) is older and cannot start its data directory",
            hint=f"restore on a machine with MariaDB {label} or newer",
        )
    if server is not None and version_tuple(server) > src:
        reporter.emit(
            WarningEvent(
                f"the backup was taken from MariaDB {recorded}; the server here is the newer {server}:"
                " run mariadb-upgrade after starting it"
            )
        )


def offline_files(datadir: Path) -> list[str]:
    """The regular files of a stopped data directory, relative and sorted, for `mbstream -c`.

    Runtime leftovers are left out (OFFLINE_SKIP*, at the top level). Directories are not
    streamed themselves: each database directory holds at least its db.opt.
    """
    out: list[str] = []

    def fail(exc: OSError) -> None:
        raise SourceError(f"cannot read the data directory {datadir}: {exc}")

    for root, dirs, files in os.walk(datadir, onerror=fail):
        dirs.sort()
        rel = Path(root).relative_to(datadir)
        for name in sorted(files):
            if rel == Path(".") and (name in OFFLINE_SKIP or name.endswith(OFFLINE_SKIP_SUFFIXES)):
                continue
            path = Path(root) / name
            if path.is_file():  # sockets, fifos and dangling links are not data
                out.append(str(rel / name) if rel != Path(".") else name)
    return out


def read_upgrade_info(datadir: Path) -> str | None:
    """The server version that last ran on a data directory (mysql_upgrade_info), if recorded."""
    try:
        text = (datadir / "mysql_upgrade_info").read_text(errors="replace").strip("\0\n ")
    except OSError:
        return None
    return text or None


def read_checkpoints(path: Path) -> dict[str, Any]:
    """from_lsn, to_lsn, last_lsn and the backup type from mariabackup's xtrabackup_checkpoints."""
    facts: dict[str, Any] = {}
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SourceError("mariabackup wrote no xtrabackup_checkpoints; the backup is incomplete") from None
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if key in ("from_lsn", "to_lsn", "last_lsn"):
            facts[key] = int(value)
        elif key == "backup_type":
            facts["backup_type"] = "incremental" if value.startswith("incremental") else "full"
    return facts


_BINLOG_POS_RE = re.compile(
    r"filename '(?P<file>[^']+)', position '?(?P<pos>\d+)'?(?:, GTID of the last change '(?P<gtid>[^']*)')?"
)


def read_binlog_position(lsndir: Path) -> dict[str, Any]:
    """The binary log position mariabackup recorded under its backup lock (the PITR replay start).

    From `binlog_pos = filename 'mariadb-bin.000002', position '597', GTID of the last change
    '0-1-6'` in xtrabackup_info / mariadb_backup_info (written to --extra-lsndir), or from
    xtrabackup_binlog_info / mariadb_backup_binlog_info (file, position, GTID separated by tabs).
    Empty when binary logging was off.
    """
    for name in ("mariadb_backup_info", "xtrabackup_info"):
        try:
            text = (lsndir / name).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "binlog_pos":
                m = _BINLOG_POS_RE.search(value)
                if m:
                    facts: dict[str, Any] = {
                        "binlog_file": m.group("file"),
                        "binlog_pos": int(m.group("pos")),
                    }
                    if m.group("gtid"):
                        facts["binlog_gtid"] = m.group("gtid")
                    return facts
    for name in ("mariadb_backup_binlog_info", "xtrabackup_binlog_info"):
        try:
            fields = (lsndir / name).read_text().split()
        except OSError:
            continue
        if len(fields) >= 2 and fields[1].isdigit():
            facts = {"binlog_file": fields[0], "binlog_pos": int(fields[1])}
            if len(fields) > 2:
                facts["binlog_gtid"] = fields[2]
            return facts
    return {}
