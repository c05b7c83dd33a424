"""The destination contract: a flat key/value object store.

Every destination (local folder, S3, GCS, Azure Blob, SFTP, FTP) implements this
small interface; the repository layer (backupctl.repo) is the only user. Keys are
relative, '/'-separated names such as ``config``, ``keys/ab12...``,
``data/3f/3f9c...``; a destination maps them under its own prefix/path.

Guarantees every implementation MUST give (checked by tests/destinations/test_destination_conformance.py):

* ``put(name, data)`` is atomic: a reader sees either no object or the whole object,
  never a partial one (temp file + fsync + rename, single PUT, committed block list...).
  It overwrites an existing object unless ``exclusive=True``.
* ``put(name, data, exclusive=True)`` fails with ``AlreadyExists`` when the object exists.
  Destinations that cannot do this atomically declare ``conditional_create=False`` in
  their capabilities and do a best-effort check-then-write.
* ``get(name, offset, length)`` returns exactly the requested bytes; ``length=None``
  means to the end. Raises ``NotFound`` for a missing object.
* ``stat(name)`` returns an ``ObjectInfo`` or raises ``NotFound``.
* ``list(prefix)`` yields every object whose name starts with ``prefix`` (recursively,
  in no particular order), as ``ObjectInfo``.
* ``delete(name)`` removes an object; deleting a missing object raises ``NotFound``.
* Errors are typed: ``NotFound``, ``AlreadyExists``, ``PermissionDenied`` (credentials,
  ACLs: permanent), ``Transient`` (timeouts, resets, 5xx, throttling: worth a retry),
  ``StorageFull`` and plain ``DestinationError`` for anything else permanent. No SDK
  exception escapes a destination.
* Thread safety: one destination object may be used from several threads at once.
"""

from __future__ import annotations

import abc
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from backupctl.errors import BackupctlError, ConfigError, DestinationError, NotFoundError


class NotFound(NotFoundError):
    """The object does not exist."""


class AlreadyExists(DestinationError):
    """A conditional create found the object already there."""


class PermissionDenied(DestinationError):
    """Credentials or permissions refused: permanent, not retried."""


class Transient(DestinationError):
    """A failure worth retrying: timeout, connection reset, 5xx, throttling."""


class StorageFull(DestinationError):
    """No space left (disk full, quota exceeded)."""


@dataclass(frozen=True)
class ObjectInfo:
    name: str
    size: int
    # Last modification, seconds since the epoch, where the store tells it cheaply
    # (prune's grace period for young unreferenced packs); None = unknown.
    mtime: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Capabilities:
    """What a destination can do; shown by `backupctl destination check`."""

    conditional_create: bool = True  # put(exclusive=True) is atomic on the server
    range_reads: bool = True  # get(offset, length) fetches only that range
    archive_tiers: bool = False  # objects may need a restore request before reading
    notes: tuple[str, ...] = field(default_factory=tuple)


class DestinationOptions(BaseModel):
    """Base of every destination's config model; `type` selects the plugin."""

    model_config = ConfigDict(extra="forbid")
    type: str
    connections: int = Field(4, ge=1, le=64, description="Objects transferred at once (uploads, downloads).")
    retries: int = Field(
        5,
        ge=0,
        le=20,
        description="Remote destinations: how often a failed request (timeout, refused connection, "
        "5xx, throttling) is retried, with exponential backoff (0.5 s doubling, at most 20 s, "
        "2 minutes in all). The local destination never retries.",
    )


class Destination(abc.ABC):
    """A flat object store. See the module docstring for the contract."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, name: str, options: DestinationOptions) -> None:
        self.name = name
        self.options = options

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """A human-readable location without secrets, e.g. ``s3://bucket/prefix``."""

    @abc.abstractmethod
    def put(self, name: str, data: bytes, *, exclusive: bool = False) -> None: ...

    @abc.abstractmethod
    def get(self, name: str, offset: int = 0, length: int | None = None) -> bytes: ...

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo: ...

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...

    @abc.abstractmethod
    def delete(self, name: str) -> None: ...

    def exists(self, name: str) -> bool:
        try:
            self.stat(name)
        except NotFound:
            return False
        return True

    def put_metadata(self, name: str, data: bytes, *, exclusive: bool = False) -> None:
        """Store a small metadata object (config, keys, index, manifest, lock).

        Destinations with archive storage classes override this to keep metadata in a
        class that can be read at once; by default it is a plain ``put``.
        """
        self.put(name, data, exclusive=exclusive)

    def temporaries(self) -> Iterator[ObjectInfo]:
        """Temporary files that interrupted writes left behind (never visible through `list`).

        Only destinations that write through temporary names have any; prune removes the old
        ones with `delete_temporary`. The default has none.
        """
        return iter(())

    def delete_temporary(self, name: str) -> None:
        """Remove one entry of `temporaries()`."""
        raise NotFound(name)

    def close(self) -> None:
        """Release connections. Further calls are not allowed."""


# type name -> "module:Class". Plugins are imported lazily so that a missing SDK only
# matters to users of that destination type.
DESTINATION_TYPES: dict[str, str] = {
    "local": "backupctl.destinations.local:LocalDestination",
    "s3": "backupctl.destinations.s3:S3Destination",
    "gcs": "backupctl.destinations.gcs:GCSDestination",
    "azure": "backupctl.destinations.azure:AzureDestination",
    "sftp": "backupctl.destinations.sftp:SFTPDestination",
    "ftp": "backupctl.destinations.ftp:FTPDestination",
}

# The extra that installs a type's SDK, from the source checkout backupctl was installed
# from (`pip install '.[s3]'` there: backupctl is not on a package index), and the SDK's own
# package for those who install it directly (docs/destinations.md lists both).
DESTINATION_EXTRAS: dict[str, str] = {"s3": "s3", "gcs": "gcs", "azure": "azure", "sftp": "sftp"}
DESTINATION_SDKS: dict[str, str] = {
    "s3": "boto3",
    "gcs": "google-cloud-storage",
    "azure": "azure-storage-blob",
    "sftp": "paramiko",
}


def destination_class(type_name: str) -> type[Destination]:
    """The plugin class for a `type:` value. Its module imports no SDK at import time."""
    try:
        target = DESTINATION_TYPES[type_name]
    except KeyError:
        known = ", ".join(sorted(DESTINATION_TYPES))
        raise ConfigError(f"unknown destination type {type_name!r}", hint=f"known types: {known}") from None
    module_name, _, class_name = target.partition(":")
    module = importlib.import_module(module_name)
    cls: type[Destination] = getattr(module, class_name)
    return cls


def options_model(type_name: str) -> type[DestinationOptions]:
    cls = destination_class(type_name)
    model: type[DestinationOptions] = cls.Options  # type: ignore[attr-defined]
    return model


def require_module(module: str, type_name: str) -> Any:
    """Import an SDK for a destination, or fail with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = DESTINATION_EXTRAS.get(type_name, type_name)
        sdk = DESTINATION_SDKS.get(type_name, module)
        raise BackupctlError(
            f"destination type {type_name!r} needs the {module!r} package",
            hint=f"in the backupctl source checkout, run `pip install '.[{extra}]'` (same Python "
            f"environment as backupctl), or install the SDK itself: `pip install {sdk}`",
        ) from None


def open_destination(name: str, options: DestinationOptions) -> Destination:
    """Instantiate the plugin for already-validated options."""
    cls = destination_class(options.type)
    return cls(name, options)


def wrap_unknown(dest_name: str, exc: BaseException) -> DestinationError:
    """Fallback classification for an unexpected exception from an SDK."""
    return DestinationError(f"destination {dest_name!r}: {type(exc).__name__}: {exc}")
