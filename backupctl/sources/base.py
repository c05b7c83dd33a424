"""The source contract: what a backup reads, and how it is put back.

A source turns its configuration into a stream of `Entry` objects (files, directories,
symlinks, hard links) with paths relative to the source's own namespace. The engine
reads each file entry's content through `Entry.open()`, chunks, deduplicates,
compresses and encrypts it; it never knows whether the bytes came from a regular file,
an SQLite online-backup copy, or the stdout of `pg_dump`.

* Files: `files` yields one entry per filesystem object, path = absolute path without
  the leading '/'.
* A consistent copy: `sqlite` copies the database through the online backup API into a
  temporary file and yields it under the database's path.
* A streamed dump: a source starts a subprocess and yields an entry whose `open()`
  returns the pipe (size unknown, `size=-1`). `finish()` is called after every entry was
  consumed and MUST raise `SourceError` with the tool's own message when the subprocess
  exited non-zero; the backup then fails and no manifest is written.
* A physical copy of a data directory: a tree of file entries (or a tar stream as one
  entry), with the database's own start/stop-backup calls in `scan()` / `finish()`.

Restore is the reverse: the engine hands the source its stored entries as
`RestoreEntry` objects whose `chunks()` yields the content, and a `RestoreRequest`
saying where to put them.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from backupctl.errors import ConfigError, SourceError
from backupctl.events import NullReporter, Reporter

# fifo, chardev and blockdev: special files, recreated with mknod (device nodes as root).
EntryKind = Literal["file", "dir", "symlink", "hardlink", "fifo", "chardev", "blockdev"]


class NothingToBackUp(SourceError):
    """The source's data does not exist at all (no database yet): distinct from an outage,
    so that a safety backup before a restore into an empty target can be skipped."""


class SkipEntry(Exception):
    """Raised by `Entry.open()` (or while reading) when an object vanished or became
    unreadable: the engine records a warning and goes on without that entry."""


@dataclass
class Entry:
    """One object in a source's namespace, in the order the source yields them.

    Directories come before their content. `size` is -1 for streams of unknown length.
    `open` is set for kind == "file". `check_unchanged`, when set, is called after the
    content was read and returns a warning text if the object changed meanwhile.
    `reusable` says whether the engine may reuse the parent backup's chunks when
    (size, mtime_ns, ctime_ns, inode) all match; streams are never reusable.
    """

    path: str
    kind: EntryKind
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    user: str = ""
    group: str = ""
    mtime_ns: int = 0
    ctime_ns: int = 0
    inode: int = 0
    size: int = 0
    target: str = ""  # symlink target, or the path of the first link for "hardlink"
    open: Callable[[], IO[bytes]] | None = None
    check_unchanged: Callable[[], str | None] | None = None
    reusable: bool = False
    # Files source metadata (None/empty when the source has none): extended attributes
    # incl. ACLs and capabilities; (major, minor) of a device node; sparse=True when the
    # file has holes (allocated < size), so the engine reads only its data extents.
    xattrs: dict[str, bytes] | None = None
    rdev: tuple[int, int] | None = None
    sparse: bool = False
    # The absolute path of the regular file whose bytes are the content, when another process
    # may read it by path instead of calling `open` (the files source: sources/regular.py
    # says how it is opened and checked); "" when only `open` reads it (a dump's pipe).
    local_path: str = ""


@dataclass
class RestoreEntry:
    """A stored entry handed back to its source for restore."""

    path: str
    kind: EntryKind
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    mtime_ns: int
    size: int
    target: str
    chunks: Callable[[], Iterator[bytes]]
    xattrs: dict[str, bytes] | None = None  # None: not recorded (older backups)
    rdev: tuple[int, int] | None = None
    sparse: bool = False  # restore all-zero chunks as holes


@dataclass
class RestoreRequest:
    """Where and how to restore.

    target_dir: restore into this directory (each entry at target_dir/<entry path>);
        None means in place, over the live data (the CLI has already confirmed).
    source_info: what the source stored in the manifest at backup time (`info()`).
    """

    target_dir: Path | None
    source_info: dict[str, Any] = field(default_factory=dict)
    reporter: Reporter = field(default_factory=NullReporter)


class SourceOptions(BaseModel):
    """Base of every source's config model; `type` selects the plugin."""

    model_config = ConfigDict(extra="forbid")
    type: str


class Source(abc.ABC):
    """Reads one configured source for a backup and restores it again."""

    Options: ClassVar[type[SourceOptions]]

    def __init__(self, options: SourceOptions, reporter: Reporter | None = None) -> None:
        self.options = options
        self.reporter: Reporter = reporter or NullReporter()
        # Set by the engine for the safety backup before an in-place restore: data that does
        # not exist is nothing to overwrite, so a source may skip it instead of failing.
        self.safety_backup = False

    @property
    @abc.abstractmethod
    def method(self) -> str:
        """The backup method shown to users: files, sqlite, pg_dump, mariabackup..."""

    @property
    def supports_incremental(self) -> bool:
        """True when `incremental` differs from `full` for this source (file skipping)."""
        return False

    def describe(self) -> dict[str, Any]:
        """What this source is, without secrets, for `backup show`."""
        return self.options.model_dump(mode="json", exclude={"type"})

    @abc.abstractmethod
    def scan(self) -> Iterator[Entry]:
        """Yield the entries to back up. May start subprocesses or take a snapshot."""

    def finish(self) -> None:
        """Called after every entry was consumed. Raise SourceError to fail the backup."""

    def abort(self) -> None:
        """Called instead of `finish` when the backup fails; stop child processes."""

    def info(self) -> dict[str, Any]:
        """Facts recorded in the manifest after `finish` (server version, LSN...)."""
        return {}

    @abc.abstractmethod
    def restore(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        """Put the entries back, in place or under request.target_dir."""

    def set_parent(self, info: dict[str, Any] | None) -> None:
        """Called before `scan()` with the parent backup's recorded `info()` for an
        incremental backup, None for a full one. Sources whose incrementals do not build on
        the parent's recorded facts (mariabackup's LSN does) ignore it."""

    def restore_chain(
        self, chain: list[tuple[dict[str, Any], Iterator[RestoreEntry]]], request: RestoreRequest
    ) -> None:
        """Restore a backup whose `info()` says `backup_type: incremental`: `chain` holds
        (recorded info, entries) from the full backup up to this one, oldest first. Only
        sources that record `backup_type` (mariabackup) override this; every other stored
        backup is whole, so the default restores the newest element alone."""
        self.restore(chain[-1][1], request)

    def check_in_place_restore(self, source_info: dict[str, Any]) -> None:
        """Raise what `restore` in place would refuse up front (a server running on the data
        directory, say): called before the safety backup, so a refused restore changes
        nothing. `source_info` is what `info()` recorded for the stored source."""


SOURCE_TYPES: dict[str, str] = {
    "files": "backupctl.sources.files:FilesSource",
    "sqlite": "backupctl.sources.sqlite:SQLiteSource",
    "postgres": "backupctl.sources.postgres:PostgresSource",
    "mariadb": "backupctl.sources.mariadb:MariaDBSource",
}


def source_class(type_name: str) -> type[Source]:
    try:
        target = SOURCE_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(SOURCE_TYPES))
        raise ConfigError(f"unknown source type {type_name!r}", hint=f"known types: {known}") from None
    module_name, _, class_name = target.partition(":")
    cls: type[Source] = getattr(importlib.import_module(module_name), class_name)
    return cls
