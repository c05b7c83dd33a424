"""The restore-drill contract: what a driller receives, what it returns, how it is found.

A drill restores one Completed backup into a throwaway place (never the live deployment)
and checks what came back. The framework (`backupctl.drill.run`) opens the backup, makes
one private scratch directory per stored source, calls that source's driller, turns an
exception into a failed check, removes the scratch directory (and whatever a killed drill
left: see `backupctl.tempdir`), and stores a `DrillRecord` in the repository and locally.

How to write and register a driller (e.g. for PostgreSQL, in backupctl/drill/postgres.py):

1. Create the module `backupctl/drill/<source type>.py` (the source type of
   `sources.base.SOURCE_TYPES`: files, sqlite, postgres, mariadb). It must define a
   module-level `DRILLER` object (an instance of a `Driller` subclass). `driller_for(type)`
   imports the module on first use; nothing else registers it.
2. Implement `drill(self, ctx) -> list[DrillCheck]`:
   - restore the stored source with `ctx.restore_to(target_dir, extra_info)` (the engine's
     own restore-to-target path; entries land under target_dir/<entry path>), or iterate
     `ctx.entries()` to read the stored entries yourself (a dump's stream, say);
   - put everything you create under `ctx.scratch` (a private 0700 directory removed by the
     framework, also after kill -9 by the next backupctl run); servers you start must be
     stopped in a `finally` and should keep their data directory and socket under
     `ctx.scratch` so that a sweep removes them (use `backupctl.procs` helpers to start
     children; never put secrets in argv or in a child's environment that does not need them);
   - never touch the live deployment: a temporary database name or a throwaway server on a
     free port, never the configured database;
   - return one `DrillCheck` per thing checked: `name` is short and stable
     ("integrity", "rows:public.orders", "content:/etc/hosts"), `detail` names the object
     and, on failure, the expected vs found values ("public.orders: 1000 rows at backup
     time, 999 restored"). A check that could not run at all is a failed check whose detail
     says why; an old backup without recorded counts is a passed check that says so.
   - report progress through `ctx.reporter` (backupctl.events); never print.
   `ctx.to_time` is the PITR target (None: the backup as taken). A driller that cannot do
   PITR raises `DrillUnsupported` with one line saying so.
   Restore time: the framework measures the whole `drill()` call; a driller whose restore
   and check phases are distinct sets `ctx.restore_seconds` itself (monotonic seconds spent
   restoring) so that the record separates the two.
3. Add a test with the real tool (tests/drill/test_drill_<type>.py) that a good backup passes and
   a tampered one fails with the check named.

Only `typing`, `dataclasses` and stdlib are imported at module level here; the engine is
imported for type checking only, so importing this module costs nothing.
"""

from __future__ import annotations

import abc
import datetime as dt
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.drill.record import DrillCheckDoc, DrillRecord
from backupctl.errors import BackupctlError, ConfigError
from backupctl.events import Reporter

if TYPE_CHECKING:
    from backupctl.backups.restorer import Prefetcher
    from backupctl.backups.service import Service
    from backupctl.config.models import DeploymentConfig
    from backupctl.records import BackupSummary, Manifest, SourceRecord
    from backupctl.repo.repository import Repository
    from backupctl.sources.base import RestoreEntry


@dataclass
class DrillCheck:
    """One thing a drill checked. `detail` names the table/path and, on failure, the
    expected vs found values."""

    name: str
    passed: bool
    detail: str = ""

    def to_doc(self) -> DrillCheckDoc:
        return {"name": self.name, "passed": self.passed, "detail": self.detail}


class DrillUnsupported(BackupctlError):
    """A driller cannot drill this stored source (e.g. no PITR for it); becomes a failed check."""

    kind = "drill_unsupported"


@dataclass
class DrillContext:
    """What a driller needs for one stored source of the drilled backup."""

    service: Service
    backup: BackupSummary  # the drilled backup's summary (id, deployment, started...)
    manifest: Manifest
    repo: Repository  # opened, index loaded
    source: SourceRecord  # the stored source to drill
    position: int  # its position in manifest["sources"]
    deployment: DeploymentConfig | None  # the configured deployment (None if no longer configured)
    scratch: Path  # private 0700 directory, removed by the framework afterwards
    reporter: Reporter
    to_time: dt.datetime | None = None  # PITR target; None: the backup as taken
    prefetcher: Prefetcher | None = None  # set by the framework; shared by restore_to/entries
    restore_seconds: float | None = None  # set by a driller that measures its restore itself
    restore_warnings: list[str] = field(default_factory=list)  # what restore_to warned about
    extra: dict[str, Any] = field(default_factory=dict)  # free for drillers

    @property
    def backup_id(self) -> str:
        return self.backup["id"]

    @property
    def info(self) -> dict[str, Any]:
        """What the source recorded at backup time (`Source.info()`): row counts and so on."""
        return dict(self.source.get("info", {}))

    def entries(self) -> Iterator[RestoreEntry]:
        """The stored source's entries with their content (in order; consume strictly in order)."""
        assert self.prefetcher is not None
        return self.prefetcher.entries([bytes.fromhex(b) for b in self.source["tree"]])

    def restore_to(self, target_dir: Path, extra_info: dict[str, Any] | None = None) -> None:
        """Restore this stored source under `target_dir` through the engine's own
        restore-to-target code path (the configured source's `restore`, an incremental's
        chain included). Raises what restore raises (IntegrityError for damaged data...)."""
        from backupctl.events import CollectingReporter, WarningsAsInfo

        assert self.prefetcher is not None
        source = self.service.restore_source(self.source, self.deployment, self.position)
        # Restore warnings (an attribute a non-root restore cannot set...) are shown as info
        # lines and kept in `restore_warnings`: they are the drill's findings, not warnings of
        # the command.
        collector = CollectingReporter(WarningsAsInfo(self.reporter, "drill restore: "))
        source.reporter = collector
        saved, self.service.reporter = self.service.reporter, collector
        try:
            self.service.restore_stored_source(
                self.repo, self.manifest, self.source, source, self.prefetcher, target_dir, extra_info
            )
        finally:
            self.service.reporter = saved
            self.restore_warnings.extend(
                f"{w.path}: {w.message}" if w.path else w.message for w in collector.warnings
            )


class Driller(abc.ABC):
    """Checks that one stored source restores. One instance per module (`DRILLER`)."""

    # True when `drill` honours ctx.to_time (point-in-time drills); `backup drill --to-time`
    # is refused up front when no source of the backup supports it.
    supports_pitr: bool = False

    @abc.abstractmethod
    def drill(self, ctx: DrillContext) -> list[DrillCheck]:
        """Restore `ctx.source` into `ctx.scratch` (or a throwaway server) and check it."""


DRILL_MODULES = {"files": "files", "sqlite": "sqlite", "postgres": "postgres", "mariadb": "mariadb"}


def driller_for(source_type: str) -> Driller:
    """The driller of a source type, imported on first use (backupctl.drill.<type>.DRILLER)."""
    module = DRILL_MODULES.get(source_type)
    if module is None:
        raise ConfigError(f"no restore drill for source type {source_type!r}")
    try:
        mod = importlib.import_module(f"backupctl.drill.{module}")
    except ModuleNotFoundError as exc:
        if exc.name != f"backupctl.drill.{module}":
            raise
        raise ConfigError(f"no restore drill for source type {source_type!r} in this version") from None
    driller: Driller = mod.DRILLER
    return driller


# ---- storing and reading drill records (DrillRecord lives in backupctl.drill.record) ---


def save_drill_record(service: Service, destination: str, record: DrillRecord) -> None:
    """Store `record` in the repository of `destination` and in the local cache."""
    from backupctl.drill import store

    store.save(service, destination, record)


def drill_history(
    service: Service, deployment_or_backup: str, destination: str | None = None
) -> list[DrillRecord]:
    """Drill records of a deployment (by name) or of one backup (by full ID), newest first,
    read from the repository (every host's drills) and cached locally."""
    from backupctl.drill import store

    return store.history(service, deployment_or_backup, destination)
