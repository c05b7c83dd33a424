"""`DatabaseSource`: the lifecycle the PostgreSQL and MariaDB sources share.

Dump streams of client tools (one ToolProcess per stream, secrets in a private directory),
finish/abort/info, the restore dispatch (physical, plain files into a target, logical), and
the walk over a logical backup's entries. Each subclass names its product, its temporary
directory prefix, the entry that holds roles/users and its physical method, and supplies
the tool-specific parts through the hooks below. Helpers for child processes and secrets
are in sources/dbutil.py.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, ClassVar

from backupctl.errors import SourceError
from backupctl.events import Reporter, WarningEvent
from backupctl.sources.base import Entry, NothingToBackUp, RestoreEntry, RestoreRequest, Source, SourceOptions
from backupctl.sources.dbutil import Secrets, ToolProcess, run, target_names, write_stream


@dataclass(frozen=True)
class Stream:
    """One dump stream of a backup, for `pipelined`: its path in the backup,
    how to start its tool, and whether it is a database's data (heavy) or small metadata."""

    path: str
    start: Callable[[], ToolProcess]
    heavy: bool = False


def pipelined(streams: list[Stream], ahead: int = 3) -> list[Entry]:
    """Entries for `streams` (in the order the engine will read them) whose tools start
    ahead of their turn, so that their start-up (a process, a connection, the catalog
    queries of pg_dump) overlaps the streams before them instead of adding up.

    Opening a small stream (globals, database properties) also starts the next `ahead`
    streams, up to and including the first heavy one (a database's data dump). Opening a
    heavy stream starts nothing: a data dump started early holds its snapshot and its
    table locks while it waits, and would do so for the whole of the dump before it.
    A started tool writes into its pipe (1 MiB) and then waits for its turn; abort()
    kills every started tool (each Stream.start registers its tool with the source), read or not.
    """
    tools: list[ToolProcess | None] = [None] * len(streams)

    def start(i: int) -> ToolProcess:
        tool = tools[i]
        if tool is None:
            tool = tools[i] = streams[i].start()
        return tool

    def opener(i: int) -> Callable[[], IO[bytes]]:
        def open_stream() -> IO[bytes]:
            tool = start(i)
            if not streams[i].heavy:
                for j in range(i + 1, min(i + 1 + ahead, len(streams))):
                    start(j)
                    if streams[j].heavy:
                        break
            return tool.output()

        return open_stream

    return [
        Entry(path=stream.path, kind="file", mode=0o600, size=-1, open=opener(i))
        for i, stream in enumerate(streams)
    ]


class DatabaseSource(Source):
    """What the PostgreSQL and MariaDB sources share: the lifecycle of their dump tools.

    `scan()` yields entries made by `_stream_entry` or `pipelined`: each starts its tool when
    the engine opens it (or a little before, see `pipelined`), is checked when its output
    ends (ToolProcess.output) and again in `finish()` (which then hands the tools' stderr to
    `_finished`), or is killed in `abort()`. The backup's credential files live in
    `self._secrets` until one of those two runs. `restore()` dispatches on the recorded
    method: physical (`physical_method`), plain files under a target directory, or logical,
    whose walk over the entries (`_logical_items`) is the same for both.
    """

    label: ClassVar[str]  # the product name in messages: "PostgreSQL", "MariaDB"
    secrets_prefix: ClassVar[str]  # of the temporary directories holding credential files
    globals_path: ClassVar[str]  # the entry with roles/users, restored before the databases
    physical_method: ClassVar[str]  # the `method` whose backups `_restore_physical` restores
    options: Any  # the subclass's model, with host, port, databases and method

    def __init__(self, options: SourceOptions, reporter: Reporter | None = None) -> None:
        super().__init__(options, reporter)
        self._secrets = Secrets(self.secrets_prefix)
        self._procs: list[ToolProcess] = []
        self._info: dict[str, Any] = {}

    @contextlib.contextmanager
    def _temp_secrets(self, secret: str | None = None) -> Iterator[Secrets]:
        """Credential files for one operation outside a backup, removed at the end; `secret`
        (e.g. a password carried by the SQL) is redacted from error messages."""
        secrets = Secrets(self.secrets_prefix)
        if secret:
            secrets.write("redact", "", secret=secret)
        try:
            yield secrets
        finally:
            secrets.cleanup()

    # -- backup ---------------------------------------------------------------------------

    def _wanted_databases(self, existing: Iterable[str]) -> list[str]:
        """The configured databases ("all": every existing one, sorted); refuses missing ones.

        All of them missing raises NothingToBackUp (e.g. the target of `restore --to` before
        its first restore), some of them SourceError.
        """
        found = set(existing)
        o = self.options
        wanted = sorted(found) if o.databases == "all" else list(o.databases)
        missing = [name for name in wanted if name not in found]
        if missing:
            error_class = NothingToBackUp if len(missing) == len(wanted) else SourceError
            raise error_class(
                f"{o.type}: database(s) {', '.join(missing)} not found on {o.host}:{o.port}",
                hint=f"existing: {', '.join(sorted(found)) or 'none'}",
            )
        return wanted

    def _warn_offline(self, data_dir: Path, path: str) -> None:
        self.reporter.emit(
            WarningEvent(
                f"the server is not running on {data_dir}: backed up the stopped data directory "
                "(an offline copy; not a base for point-in-time recovery)",
                path=path,
            )
        )

    def _stream_entry(
        self, path: str, argv: list[str], env: dict[str, str], what: str, cwd: Path | None = None
    ) -> Entry:
        """A file entry holding the stdout of `argv`, started when the engine opens it."""
        start = self._starter(argv, env, what, cwd)
        return Entry(path=path, kind="file", mode=0o600, size=-1, open=lambda: start().output())

    def _starter(
        self,
        argv: list[str],
        env: dict[str, str],
        what: str,
        cwd: Path | None = None,
        tool_class: type[ToolProcess] = ToolProcess,
    ) -> Callable[[], ToolProcess]:
        """A function starting `argv` as one of this backup's tools (checked in finish()),
        as a `tool_class` (a ToolProcess whose check() judges the exit, e.g. UsersDump)."""

        def start() -> ToolProcess:
            tool = tool_class(argv, env=env, secrets=self._secrets, what=what, cwd=cwd)
            self._procs.append(tool)
            return tool

        return start

    def finish(self) -> None:
        try:
            outputs = [(tool.what, tool.check()) for tool in self._procs]
            self._finished(outputs)
        except BaseException:
            self.abort()
            raise
        finally:
            self._secrets.cleanup()
        self._procs = []

    def _finished(self, outputs: list[tuple[str, str]]) -> None:
        """Every tool succeeded: record what their stderr ((what, stderr) in start order) or
        their side files say in `self._info`; raise SourceError to fail the backup."""

    def abort(self) -> None:
        for tool in self._procs:
            tool.kill()
        self._procs = []
        self._secrets.cleanup()

    def info(self) -> dict[str, Any]:
        return dict(self._info)

    # -- restore --------------------------------------------------------------------------

    def restore(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        """Restore a backup of this source type (possibly taken from another server).

        request.source_info is what `info()` recorded, plus optional keys from the engine:
          rename: {old database name: new name}  restore (clone) databases under new names
          only_databases: [names]                restore only these databases (original names)
          skip_globals: bool                     do not apply the globals (roles or users)
        """
        method = request.source_info.get("method", self.options.method)
        if method == self.physical_method:
            self._restore_physical(entries, request)
        elif request.target_dir is not None:
            for entry in entries:
                dest = request.target_dir / entry.path
                if entry.kind == "dir":
                    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
                elif entry.kind == "file":
                    write_stream(dest, entry.chunks())
        else:
            self._restore_logical(entries, request)

    def check_in_place_restore(self, source_info: dict[str, Any]) -> None:
        if source_info.get("method", self.options.method) == self.physical_method:
            datadir = self._configured_datadir()
            if datadir is not None:
                self._refuse_running(Path(datadir))

    @abc.abstractmethod
    def _configured_datadir(self) -> str | Path | None:
        """The deployment's data directory (where an in-place physical restore goes), if set."""

    @abc.abstractmethod
    def _refuse_running(self, datadir: Path) -> None:
        """Raise SourceError when a server runs on `datadir`."""

    @abc.abstractmethod
    def _restore_physical(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        """Restore a backup made with `physical_method` into a data directory."""

    @abc.abstractmethod
    def _restore_logical(self, entries: Iterator[RestoreEntry], request: RestoreRequest) -> None:
        """Restore a logical backup into the configured server (see `_logical_items`)."""

    def _logical_items(
        self, entries: Iterable[RestoreEntry], request: RestoreRequest
    ) -> Iterator[tuple[RestoreEntry, dict[str, str] | None, str]]:
        """The entries of a logical backup to apply, in order, as (entry, database, name).

        The globals come as (entry, None, ""), unless `skip_globals`; each database to restore
        as (entry, its recorded facts, the name to restore it under). Directories, databases
        left out by `only_databases` and foreign files (warned about) are skipped. The names
        are decided now, before the caller connects: a refusal (`target_names`) comes first.
        """
        info = request.source_info
        rename: dict[str, str] = dict(info.get("rename") or {})
        only = set(info.get("only_databases") or [])
        by_path = {d["path"]: d for d in info.get("databases", [])}
        if "rename" not in info:
            rename = target_names(
                [d["name"] for d in info.get("databases", []) if not only or d["name"] in only],
                self.options.databases,
                request.reporter,
            )

        def items() -> Iterator[tuple[RestoreEntry, dict[str, str] | None, str]]:
            for entry in entries:
                if entry.kind != "file":
                    continue
                if entry.path == self.globals_path:
                    if not info.get("skip_globals"):
                        yield entry, None, ""
                    continue
                db = by_path.get(entry.path)
                if db is None:
                    request.reporter.emit(
                        WarningEvent(f"not part of a {self.label} dump; skipped", path=entry.path)
                    )
                    continue
                if only and db["name"] not in only:
                    continue
                yield entry, db, rename.get(db["name"], db["name"])

        return items()

    def _load_dump(
        self,
        argv: list[str],
        env: dict[str, str],
        secrets: Secrets,
        what: str,
        name: str,
        entry: RestoreEntry,
    ) -> None:
        """Feed a database's dump to the client `argv`; a failure names the database."""
        try:
            run(argv, env=env, secrets=secrets, what=what, input_chunks=entry.chunks())
        except SourceError as exc:
            raise SourceError(f"restore of {self.label} database {name!r} failed: {exc.message}") from None
