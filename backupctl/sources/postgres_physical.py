"""The physical path of the PostgreSQL source: a `pg_basebackup` tar into a data directory.

For `PostgresSource` (sources/postgres.py), which refuses a running server first:
`check_physical_version` refuses a backup the server meant to start it cannot start,
`restore_base_backup` extracts `postgres/base.tar` into an empty (or, in place, emptied)
data directory and makes it startable (stale pid files gone, mode 0700, owner of
PG_VERSION, minimal configuration for a copy elsewhere). `extract_tar_stream` checks every
member itself before it is written, because the Python on Debian 12 (3.11.2) has no tar
extraction filters; `clear_dir` is shared with the MariaDB physical restore.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from backupctl.errors import SourceError
from backupctl.events import InfoEvent, WarningEvent
from backupctl.sources.base import RestoreEntry, RestoreRequest
from backupctl.sources.dbutil import ChunkReader, chown_tree, ensure_empty_dir, run
from backupctl.sources.postgres_conf import write_missing_config

BASE_TAR = "postgres/base.tar"


def restore_base_backup(entries: Iterable[RestoreEntry], dest: Path, request: RestoreRequest) -> None:
    """Extract the base backup's tar into `dest` and make the data directory startable.

    The caller has refused a running server on `dest` and checked the version."""
    if request.target_dir is None and dest.is_dir():
        # In place: the configured data directory of a stopped server, after the confirmation
        # and the engine's safety backup. Its contents go; the directory itself (owner, mode,
        # a mount point) stays.
        clear_dir(dest)
    ensure_empty_dir(dest, what="physical restore")
    _extract_base_tar(entries, dest, request)
    for stale in ("postmaster.pid", "postmaster.opts"):
        with contextlib.suppress(FileNotFoundError):
            (dest / stale).unlink()
    os.chmod(dest, 0o700)
    version_file = dest / "PG_VERSION"
    if os.geteuid() == 0 and version_file.exists():
        st = version_file.stat()
        chown_tree(dest, st.st_uid, st.st_gid)
    # A copy elsewhere must start on its own; in place the configuration stays where it is.
    written = write_missing_config(dest) if request.target_dir is not None else []
    if written:
        request.reporter.emit(
            InfoEvent(
                f"the backup holds no {', '.join(written)} (the cluster keeps its configuration outside "
                f"its data directory, as Debian does in /etc/postgresql): wrote minimal ones into {dest} "
                "(local connections only)"
            )
        )
    request.reporter.emit(
        InfoEvent(
            f"restored a PostgreSQL {request.source_info.get('major_version', '')} data directory into {dest}"
            + (
                ""  # a restore to a moment adds recovery settings and says how to start it
                if request.source_info.get("pitr")
                else f"; start it with `pg_ctl -D {dest} start` (it replays the WAL included in the backup)"
            )
        )
    )


def _extract_base_tar(entries: Iterable[RestoreEntry], dest: Path, request: RestoreRequest) -> None:
    """Extract the BASE_TAR entry into `dest`; other files are warned about and skipped."""
    restored = False
    for entry in entries:
        if entry.kind != "file":
            continue
        if entry.path != BASE_TAR:
            request.reporter.emit(WarningEvent("not part of a base backup; skipped", path=entry.path))
            continue
        extract_tar_stream(ChunkReader(entry.chunks()), dest)
        restored = True
    if not restored:
        raise SourceError(f"the backup holds no {BASE_TAR}")


def _major_tuple(label: str) -> tuple[int, ...]:
    """ "15" -> (15,); "9.6" -> (9, 6); anything else -> ()."""
    parts = label.strip().split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) and label.strip() else ()


def installed_server_majors() -> set[str]:
    """The PostgreSQL server major versions installed here (Debian's /usr/lib/postgresql/N,
    and a `postgres` on PATH), as labels ("15", "9.6")."""
    found = {p.parent.parent.name for p in Path("/usr/lib/postgresql").glob("*/bin/postgres")}
    on_path = shutil.which("postgres")
    if on_path:
        with contextlib.suppress(SourceError, OSError):
            m = re.search(
                r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", run([on_path, "--version"], what="postgres --version")
            )
            if m:
                found.add(m.group(1) if int(m.group(1)) >= 10 else f"{m.group(1)}.{m.group(2)}")
    return {label for label in found if _major_tuple(label)}


def check_physical_version(info: dict[str, Any], dest: Path | None, reporter: Any) -> None:
    """Refuse a physical backup that the server meant to start it cannot start; warn when
    it is older than that server (a newer server needs pg_upgrade to use it).

    The server meant to start it: the cluster already in `dest` (its PG_VERSION, in place),
    else the servers installed here (when none is found, nothing is checked)."""
    backup = str(info.get("major_version") or "")
    backup_t = _major_tuple(backup)
    if not backup_t:
        return
    existing = ""
    if dest is not None:
        with contextlib.suppress(OSError):
            existing = (dest / "PG_VERSION").read_text().strip()
    if _major_tuple(existing):
        if _major_tuple(existing) < backup_t:
            raise SourceError(
                f"refusing to restore: the backup is a PostgreSQL {backup} data directory, but {dest} holds a"
                f" cluster of PostgreSQL {existing}, an older major version that cannot start it",
                hint=f"restore with --target into a new directory and start it with PostgreSQL {backup}",
            )
        if _major_tuple(existing) > backup_t:
            reporter.emit(
                WarningEvent(
                    f"the backup is a PostgreSQL {backup} data directory, replacing a PostgreSQL {existing} cluster"
                    f" in {dest}: start it with PostgreSQL {backup} (then pg_upgrade to move to {existing})"
                )
            )
        return
    installed = installed_server_majors()
    if not installed or backup in installed:
        return
    listed = ", ".join(sorted(installed, key=_major_tuple))
    if all(_major_tuple(label) < backup_t for label in installed):
        raise SourceError(
            f"refusing to restore: the backup is a PostgreSQL {backup} data directory, but the PostgreSQL"
            f" server here is {listed}, an older major version that cannot start it",
            hint=f"restore on a machine with PostgreSQL {backup}, or install its server first",
        )
    reporter.emit(
        WarningEvent(
            f"no PostgreSQL {backup} server is installed here (found {listed}): the restored data directory"
            f" starts only with PostgreSQL {backup}"
        )
    )


# TarFile.extractall(filter=...) arrived in 3.11.4 (and 3.8.17, 3.9.17, 3.10.12); Debian 12's
# system Python is 3.11.2.
HAS_TAR_FILTER = hasattr(tarfile, "data_filter")


def extract_tar_stream(fileobj: Any, dest: Path, *, python_filter: bool = HAS_TAR_FILTER) -> None:
    """Extract an uncompressed tar stream (read once, in order) into the directory `dest`.

    Every member is checked before it is written, on every Python: no absolute name, nothing
    that lands outside `dest` (`..`, or through a symbolic link extracted earlier), no
    symbolic or hard link whose target is absolute or outside `dest`, no device node. A
    member that fails raises SourceError ("refusing ...") before anything of it is written.
    Owners and modes are kept (as root), without setuid/setgid/sticky bits or group/other
    write bits. Where the Python has extraction filters (`python_filter`), its "tar"
    filter runs as well.
    """
    root = os.path.realpath(dest)

    def checked(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        for member in tar:
            why = _refusal(member, root)
            if why:
                raise SourceError(
                    f"refusing to extract {member.name!r} from the backup: {why}",
                    hint="the backup's tar is not a data directory written by pg_basebackup",
                )
            member.mode &= 0o755
            yield member

    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        if python_filter:
            tar.extractall(dest, members=checked(tar), filter="tar")
        else:
            tar.extractall(dest, members=checked(tar))


def _inside(path: str, root: str) -> bool:
    """Whether `path`, with every symbolic link resolved, lies in the directory `root` (real)."""
    real = os.path.realpath(path)
    return os.path.commonpath([real, root]) == root


def _refusal(member: tarfile.TarInfo, root: str) -> str | None:
    """Why the tar member may not be extracted under `root` (real path), or None."""
    name = member.name
    if name.startswith("/") or os.path.isabs(name):
        return "an absolute path"
    if not _inside(os.path.join(root, name), root):
        return "a path outside the directory"
    if member.issym() or member.islnk():
        base = os.path.dirname(name) if member.issym() else ""
        if os.path.isabs(member.linkname):
            return f"a link to the absolute path {member.linkname!r}"
        if not _inside(os.path.join(root, base, member.linkname), root):
            return f"a link outside the directory ({member.linkname!r})"
        return None
    if member.ischr() or member.isblk():
        return "a device node"
    if not (member.isreg() or member.isdir() or member.isfifo()):
        return "an entry of an unknown type"
    return None


def clear_dir(path: Path) -> None:
    """Delete everything inside `path` (symbolic links themselves, never their targets)."""
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path)
        else:
            os.unlink(entry.path)
