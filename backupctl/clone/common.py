"""What the logical and physical clones share: the clone error, generated passwords and
their verifiers/hashes, the 0600 secrets file, a free port, restoring one stored source
into a new place, and the original source's config entry.

Imports nothing from the clone variants (logical, physical) nor from clone.api, so both
variants sit above it without a cycle.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.backups.restorer import Prefetcher
from backupctl.config.paths import config_dir
from backupctl.errors import BackupctlError
from backupctl.events import Finished, Started
from backupctl.records import Manifest, SourceRecord
from backupctl.sources.base import Source

if TYPE_CHECKING:
    from backupctl.backups.service import Service
    from backupctl.repo.repository import Repository

DB_TYPES = ("postgres", "mariadb")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
PG_IDENT_MAX = 63
MARIADB_IDENT_MAX = 64


@dataclass(frozen=True)
class Made:
    """What a clone variant made: the new source's config entry, and `undo`, which removes
    the clone again (secret file, database or data directory) if adding the entry to the
    config file fails. Returned, never stored in the result dict (which goes to JSON)."""

    doc: dict[str, Any]
    undo: Callable[[], None]


class CloneError(BackupctlError):
    """A clone could not be made (bad name, existing database, unsupported backup...)."""

    kind = "clone"


# ---- secrets ---------------------------------------------------------------------------


def new_password() -> str:
    """32 URL-safe characters (192 bits): no quoting problems in any client or file."""
    return secrets.token_urlsafe(24)


def scram_verifier(password: str, *, iterations: int = 4096, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802/7677)."""
    salt = salt or os.urandom(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def mysql_native_hash(password: str) -> str:
    """The mysql_native_password hash: '*' + upper hex SHA1(SHA1(password))."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


def secrets_dir() -> Path:
    return config_dir() / "secrets"


def secret_file_path(name: str) -> Path:
    return secrets_dir() / f"{name}.password"


def write_secret_file(name: str, password: str) -> Path:
    """Create secrets/<name>.password with mode 0600 (directory 0700); never overwrite."""
    directory = secrets_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    path = secret_file_path(name)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise CloneError(
            f"a secrets file {path} already exists",
            hint="choose another --name, or remove the file if it belongs to a deleted clone",
        ) from None
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ---- the clone -------------------------------------------------------------------------


def restore_into(
    svc: Service,
    repo: Repository,
    manifest: Manifest,
    src: SourceRecord,
    source: Source,
    target_dir: Path | None,
    extra_info: dict[str, Any],
) -> None:
    """Restore one stored source into `source` (what Service.restore_backup does per source)."""
    repo.load_index()
    svc.reporter.emit(Started("restore", manifest["id"], int(src.get("bytes", 0))))
    prefetcher = Prefetcher(repo)
    try:
        svc.restore_stored_source(repo, manifest, src, source, prefetcher, target_dir, extra_info)
    finally:
        prefetcher.close()
    svc.reporter.emit(Finished("restore", manifest["id"]))


def source_doc(source: Source) -> dict[str, Any]:
    """The original source's config entry as the user wrote it (plus its type)."""
    doc: dict[str, Any] = source.options.model_dump(mode="json", exclude_unset=True)
    doc["type"] = source.options.type
    return doc
