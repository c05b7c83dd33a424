"""Drill of a `files` source: restore it into scratch space through the engine's own
restore-to-target path, then compare every restored object with the backup's item stream.

Compared for every item: that it exists with the recorded kind; regular files byte for
byte (each recorded chunk's keyed hash against the restored bytes at that offset, so no
blob is read twice and holes make no difference) and their size; mode, mtime (ns) and
symlink targets; hard links point to the same inode as their first path; recorded extended
attributes. What a non-root restore cannot recreate (owners, device nodes, trusted.* and
security.* attributes) is compared only as root, and the summary check says so.

Failed checks name the path (as it was backed up) and the expected vs found values; at
most `_MAX_PER_CHECK` failures are listed per check, then one line counts the rest.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
import time
from collections.abc import Callable
from pathlib import Path

from backupctl.drill.base import DrillCheck, DrillContext, Driller, DrillUnsupported
from backupctl.repo.items import Item, read_items
from backupctl.repo.repository import Repository

_MAX_PER_CHECK = 20
_KIND_TEST: dict[str, Callable[[int], bool]] = {
    "file": stat.S_ISREG,
    "dir": stat.S_ISDIR,
    "symlink": stat.S_ISLNK,
    "fifo": stat.S_ISFIFO,
    "chardev": stat.S_ISCHR,
    "blockdev": stat.S_ISBLK,
}


class _Findings:
    """Failures per check name (capped) and what was compared, for the summary checks."""

    def __init__(self) -> None:
        self.failures: dict[str, list[str]] = {}
        self.counts: dict[str, int] = {}
        self.skipped: set[str] = set()  # what a non-root restore cannot recreate, not compared

    def fail(self, name: str, detail: str) -> None:
        self.failures.setdefault(name, []).append(detail)

    def checks(self, summaries: dict[str, str]) -> list[DrillCheck]:
        out = []
        for name, summary in summaries.items():
            failed = self.failures.get(name, [])
            if not failed:
                out.append(DrillCheck(name, True, summary))
                continue
            out.extend(DrillCheck(name, False, d) for d in failed[:_MAX_PER_CHECK])
            if len(failed) > _MAX_PER_CHECK:
                out.append(DrillCheck(name, False, f"... and {len(failed) - _MAX_PER_CHECK} more paths"))
        return out


def _uid(user: str, uid: int) -> int:
    try:
        return pwd.getpwnam(user).pw_uid if user else uid
    except KeyError:
        return uid


def _gid(group: str, gid: int) -> int:
    try:
        return grp.getgrnam(group).gr_gid if group else gid
    except KeyError:
        return gid


def _content_mismatch(repo: Repository, path: Path, item: Item) -> str | None:
    """Where the restored file's bytes differ from the recorded chunks (None: identical)."""
    offset = 0
    with open(path, "rb") as fh:
        for no, blob_id in enumerate(item.chunks):
            loc = repo.index.lookup(blob_id)
            if loc is None:
                return f"chunk {no + 1} of {len(item.chunks)} is missing from the index"
            data = fh.read(loc.raw_length)
            if len(data) != loc.raw_length or repo.codec.cipher.blob_id(data) != blob_id:
                return (
                    f"content differs from the backup in bytes {offset}-{offset + loc.raw_length - 1} "
                    f"(chunk {no + 1} of {len(item.chunks)})"
                )
            offset += loc.raw_length
        if fh.read(1):
            return f"longer than the {offset} bytes recorded"
    return None


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _settable_xattr(name: str, as_root: bool) -> bool:
    return as_root or name.startswith("user.") or name.startswith("system.posix_acl_")


class FilesDriller(Driller):
    def drill(self, ctx: DrillContext) -> list[DrillCheck]:
        if ctx.to_time is not None:
            raise DrillUnsupported("files backups have no point-in-time recovery")
        root = ctx.scratch / "restore"
        root.mkdir(mode=0o700)
        t0 = time.monotonic()
        ctx.restore_to(root)
        ctx.restore_seconds = time.monotonic() - t0
        return self.compare(ctx.repo, [bytes.fromhex(b) for b in ctx.source["tree"]], root)

    def compare(self, repo: Repository, tree: list[bytes], root: Path) -> list[DrillCheck]:
        as_root = os.geteuid() == 0
        found = _Findings()
        entries = files = nbytes = xattrs = 0
        for item in read_items(repo, tree):
            entries += 1
            shown = "/" + item.path
            path = root / item.path
            st = _restored_stat(found, path, item, shown, as_root)
            if st is None:
                continue
            if item.kind == "hardlink":
                _check_hardlink(found, root, item, st, shown)
                continue
            test = _KIND_TEST.get(item.kind)
            if test is None or not test(st.st_mode):
                found.fail("tree", f"{shown}: recorded as {item.kind}, restored as mode {st.st_mode:o}")
                continue
            if item.kind == "file":
                files += 1
                nbytes += item.size
                _check_content(found, repo, path, item, st, shown)
            _check_metadata(found, path, item, st, shown, as_root)
            xattrs += _check_xattrs(found, path, item, shown, as_root)
        skipped = found.skipped
        note = f"; not compared as non-root: {', '.join(sorted(skipped))}" if skipped else ""
        return found.checks(
            {
                "tree": f"{entries} {'entry' if entries == 1 else 'entries'} restored with their recorded kinds",
                "content": f"{_n(files, 'file')}, {_n(nbytes, 'byte')} identical to the backup",
                "metadata": f"mode, mtime, symlink targets, hard links and {_n(xattrs, 'extended attribute')} "
                f"as recorded{note}",
            }
        )


def _restored_stat(
    found: _Findings, path: Path, item: Item, shown: str, as_root: bool
) -> os.stat_result | None:
    """lstat of the restored path; None when it is missing (a device node a non-root restore
    cannot make is skipped, anything else fails the tree check)."""
    try:
        return os.lstat(path)
    except OSError as exc:
        if item.kind in ("chardev", "blockdev") and not as_root:
            found.skipped.add("device nodes")
            return None
        found.fail("tree", f"{shown}: recorded as {item.kind}, not restored ({exc.strerror})")
        return None


def _check_hardlink(found: _Findings, root: Path, item: Item, st: os.stat_result, shown: str) -> None:
    """A hard link must be the same inode as the first path it links to."""
    try:
        first = os.lstat(root / item.target)
    except OSError:
        found.fail("tree", f"{shown}: hard link to /{item.target}, which was not restored")
        return
    if (first.st_dev, first.st_ino) != (st.st_dev, st.st_ino):
        found.fail("metadata", f"{shown}: should be a hard link to /{item.target}, is a separate file")


def _check_content(
    found: _Findings, repo: Repository, path: Path, item: Item, st: os.stat_result, shown: str
) -> None:
    """A regular file: its size, then its bytes against the recorded chunks."""
    if st.st_size != item.size:
        found.fail("content", f"{shown}: {item.size} bytes recorded, {st.st_size} restored")
        return
    problem = _content_mismatch(repo, path, item)
    if problem:
        found.fail("content", f"{shown}: {problem}")


def _check_metadata(
    found: _Findings, path: Path, item: Item, st: os.stat_result, shown: str, as_root: bool
) -> None:
    """Symlink target (or mode), mtime, and the owner when running as root."""
    if item.kind == "symlink":
        target = os.readlink(path)
        if target != item.target:
            found.fail("metadata", f"{shown}: symlink to {item.target!r} recorded, {target!r} restored")
    else:
        mode = stat.S_IMODE(st.st_mode)
        if mode != item.mode:
            found.fail("metadata", f"{shown}: mode {item.mode:04o} recorded, {mode:04o} restored")
    if st.st_mtime_ns != item.mtime_ns:
        found.fail("metadata", f"{shown}: mtime {item.mtime_ns} ns recorded, {st.st_mtime_ns} ns restored")
    if as_root:
        want = (_uid(item.user, item.uid), _gid(item.group, item.gid))
        if (st.st_uid, st.st_gid) != want:
            found.fail(
                "metadata",
                f"{shown}: owner {want[0]}:{want[1]} recorded, {st.st_uid}:{st.st_gid} restored",
            )
    else:
        found.skipped.add("owners")


def _check_xattrs(found: _Findings, path: Path, item: Item, shown: str, as_root: bool) -> int:
    """The recorded extended attributes this restore could set; how many were compared."""
    compared = 0
    for name, value in (item.xattrs or {}).items():
        if not _settable_xattr(name, as_root):
            found.skipped.add("trusted.*/security.* attributes")
            continue
        compared += 1
        try:
            got = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            found.fail("metadata", f"{shown}: extended attribute {name} recorded, missing after restore")
            continue
        if got != value:
            found.fail("metadata", f"{shown}: extended attribute {name} differs from the recorded value")
    return compared


DRILLER = FilesDriller()
