"""What the backup pipelines use of the Service façade (backups/service.py).

The pipelines behind Service's methods (backups/creating.py, uploading.py, catalog.py,
restoring.py) are functions that take the Service as their first argument. They type it
with this Protocol instead of importing Service: service.py imports them, so importing it
back (even for type checking only) would be an import cycle. The Protocol names exactly
the configuration lookups and shared state they need; Service satisfies it structurally,
and mypy checks that at every call.

`reading` is here because both the façade (verify, download) and restore take it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Any, Protocol

from backupctl.backups.damage import DamageMemory
from backupctl.backups.state import StateDB
from backupctl.config.models import Config, DeploymentConfig
from backupctl.destinations.base import Destination
from backupctl.events import Reporter, WarningEvent
from backupctl.repo.lock import reading_lock
from backupctl.repo.repository import Repository
from backupctl.sources.base import Source


class ServiceContext(Protocol):
    config: Config
    state: StateDB
    damage: DamageMemory
    reporter: Reporter  # restore swaps it while it takes the safety backup
    lock_wait: float

    def now(self) -> dt.datetime: ...

    def deployment(self, name: str) -> DeploymentConfig: ...

    def destination(self, name: str) -> Destination: ...

    def primary_destination(self, deployment: str) -> str: ...

    def repository(self, dest_name: str, *, create: bool = False) -> Repository: ...

    def build_source(self, options: Any, reporter: Reporter | None = None) -> Source: ...

    def location_of(self, dest_name: str) -> str | None: ...


def reading(svc: ServiceContext, repo: Repository, operation: str) -> contextlib.AbstractContextManager[None]:
    """The shared lock of a read (repo/lock.py reading_lock)."""
    return reading_lock(
        repo.dest,
        operation=operation,
        wait=svc.lock_wait,
        warn=lambda m: svc.reporter.emit(WarningEvent(m)),
    )
