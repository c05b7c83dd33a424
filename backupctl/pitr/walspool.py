"""Markers for WAL files archived ahead of PostgreSQL's archive_command calls.

PostgreSQL calls archive_command once per WAL file, one file at a time, and each call
starts a Python process (imports, config, key): a third to a half of a push is start-up. So
a push that finds more files waiting (`pg_wal/archive_status/<file>.ready`) archives up to
a few of them too (pitr.logarchive.push_ahead, driven by wal.push) and leaves a marker
per file here:

    <directory of %p>/.backupctl-spool/<deployment>/<file>      (written atomically)

When PostgreSQL then asks for that file, the push finds the marker and exits 0 without
importing anything heavy. A marker is trusted only when all of these hold (else the push
archives the file the normal way, which is idempotent):

* the WAL file is the one that was archived: same device, inode, size and mtime
  (a file rewritten in place, or a data directory copied elsewhere, does not match);
* the config file is unchanged (same path, device, inode, size, mtime), so the primary
  destination is still the one the marker describes;
* the object is still in the primary destination with the stored size: a `stat` of its
  file for a local primary (here, without opening the repository); for other primaries
  wal.push opens the repository and asks the destination (`stat`, no upload).

A marker is written only after the object is durable in the primary destination, so a
lost marker costs a re-push and a stale one is never trusted. The spool lives inside pg_wal
because PostgreSQL's own tools skip pg_wal's contents (pg_basebackup) and a restore replaces
it; markers whose WAL file is gone are removed by the next full push.

This module imports only `os` and `time` and takes str or Path: it runs before anything else
is loaded, so the marker is a few "key value" lines rather than JSON (json pulls in re).
"""

from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs the fast path 4 ms
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    StrPath = str | os.PathLike[str]

SPOOL_DIR = ".backupctl-spool"
_FIELDS = ("object", "size", "stored_size", "source", "config", "local_path")


def identity(path: StrPath) -> list[int]:
    """What makes a file "the same file": device, inode, size, mtime (ns)."""
    st = os.stat(path)
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def config_identity(config: StrPath) -> str:
    return " ".join(map(str, identity(config))) + " " + os.path.abspath(config)


def spool_dir(wal_path: StrPath, deployment: str) -> str | None:
    """The marker directory for files next to `wal_path`, or None when `wal_path` is not in
    a PostgreSQL pg_wal directory (no archive_status beside it) or the name is unusable."""
    if not deployment or "/" in deployment or deployment.startswith("."):
        return None
    wal_dir = os.path.dirname(wal_path) or "."
    if not os.path.isdir(os.path.join(wal_dir, "archive_status")):
        return None
    return os.path.join(wal_dir, SPOOL_DIR, deployment)


def read_marker(spool: StrPath, filename: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(spool, filename)) as fh:
            lines = fh.read().splitlines()
        doc = dict(line.split(" ", 1) for line in lines)
        return {
            "object": doc["object"],
            "size": int(doc["size"]),
            "stored_size": int(doc["stored_size"]),
            "source": [int(v) for v in doc["source"].split()],
            "config": doc["config"],
            "local_path": doc.get("local_path") or None,
        }
    except (OSError, ValueError, KeyError):
        return None


def matching_marker(spool: StrPath, wal_path: StrPath, config: StrPath) -> dict[str, Any] | None:
    """The marker of `wal_path` when it describes this very file and this config, else None.
    Does not check the object: see `trusted_local_marker` and wal.push."""
    marker = read_marker(spool, os.path.basename(wal_path))
    if marker is None:
        return None
    try:
        if marker["source"] != identity(wal_path) or marker["config"] != config_identity(config):
            return None
    except OSError:
        return None
    return marker


def trusted_local_marker(wal_path: StrPath, deployment: str, config: StrPath) -> dict[str, Any] | None:
    """The marker of `wal_path` when it matches and its object is a file of a local primary
    destination with the stored size: the push is done. None means "push normally"."""
    spool = spool_dir(wal_path, deployment)
    if spool is None:
        return None
    marker = matching_marker(spool, wal_path, config)
    if marker is None or not marker["local_path"]:
        return None
    try:
        if os.stat(marker["local_path"]).st_size != marker["stored_size"]:
            return None
    except OSError:
        return None
    return marker


def write_marker(spool: StrPath, filename: str, marker: dict[str, Any]) -> None:
    """Atomically (temp file + rename); no fsync: a marker lost in a crash only costs a re-push.
    `marker`: object, size, stored_size, source (identity()), config (config_identity()),
    local_path (None unless the primary is local)."""
    values = {
        **marker,
        "source": " ".join(map(str, marker["source"])),
        "local_path": marker["local_path"] or "",
    }
    text = "".join(f"{key} {values[key]}\n" for key in _FIELDS)
    os.makedirs(spool, exist_ok=True)
    tmp = os.path.join(spool, f".{filename}.tmp-{os.getpid()}")
    with open(tmp, "w") as fh:
        fh.write(text)
    os.replace(tmp, os.path.join(spool, filename))


def drop_marker(spool: StrPath, filename: str) -> None:
    try:
        os.unlink(os.path.join(spool, filename))
    except OSError:
        pass


def ready_files(wal_dir: StrPath, exclude: str, is_wal_file: Callable[[str], object]) -> list[str]:
    """Files PostgreSQL has marked ready to archive, in the archiver's order: timeline
    history files first, then by name (oldest WAL first). `is_wal_file(name)` filters."""
    try:
        entries = os.listdir(os.path.join(wal_dir, "archive_status"))
    except OSError:
        return []
    names = [e[: -len(".ready")] for e in entries if e.endswith(".ready")]
    names = [n for n in names if n != exclude and is_wal_file(n)]
    return sorted(names, key=lambda n: (not n.endswith(".history"), n))


def prune_markers(spool: StrPath, wal_dir: StrPath) -> None:
    """Remove markers whose WAL file has left pg_wal, and temp files an interrupted push
    left behind (older than ten minutes: a younger one may be another push's)."""
    try:
        entries = os.listdir(spool)
    except OSError:
        return
    for entry in entries:
        if entry.startswith("."):
            try:
                stale = time.time() - os.stat(os.path.join(spool, entry)).st_mtime > 600
            except OSError:
                stale = False
            if stale:
                drop_marker(spool, entry)
        elif not os.path.exists(os.path.join(wal_dir, entry)):
            drop_marker(spool, entry)
