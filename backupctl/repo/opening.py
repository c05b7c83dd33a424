"""The rules for opening a deployment's repository, written once for both entry points.

`backupctl` (backups/service.py, on the validated Pydantic config) and the light WAL entry
point (wal.py, on the raw YAML, to stay fast enough for PostgreSQL's archive_command) must
agree on which destination is the primary, where the key comes from and how a destination
is wrapped; tests/pitr/test_wal_light_config.py checks that they do. This module is cheap to
import: it does not import cryptography or any SDK until a function needs it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from backupctl.config.secrets import resolve_secret
from backupctl.errors import ConfigError

if TYPE_CHECKING:
    from backupctl.destinations.base import Destination
    from backupctl.repo.crypto import KeyMaterial


def primary_destination(destinations: Sequence[tuple[str, str]]) -> str:
    """Where backups (and WAL) of a deployment are written first: its first destination of
    type local, else its first destination. `destinations`: (name, type) in config order."""
    if not destinations:
        raise ConfigError("the deployment has no destinations")
    return next((name for name, type_ in destinations if type_ == "local"), destinations[0][0])


def key_material(
    *, key_file: str | Path | None, passphrase_env: str | None, passphrase_file: str | Path | None
) -> KeyMaterial:
    """The repository key from the `encryption:` section: a key file (mode checked by
    read_key_file), or a passphrase by reference (never empty)."""
    from backupctl.repo.crypto import KeyMaterial, read_key_file

    if key_file:
        return KeyMaterial("key_file", read_key_file(Path(os.path.expanduser(str(key_file)))))
    secret = resolve_secret(env=passphrase_env, file=passphrase_file, what="encryption passphrase")
    if secret is None:
        raise ConfigError("encryption: no key_file or passphrase configured")
    if not secret:
        raise ConfigError("encryption: the passphrase is empty")
    return KeyMaterial("passphrase", secret.encode())


def wrap_destination(dest: Destination) -> Destination:
    """Retries for remote destinations (a wrapper, not code in each destination). Tests
    inject faults beneath the retries through BACKUPCTL_FAULTS (destinations/faulty.py)."""
    from backupctl.destinations.faulty import from_env as faults_from_env

    dest = faults_from_env(dest)
    if dest.options.type == "local":
        return dest
    from backupctl.destinations.retry import RetryingDestination

    return RetryingDestination(dest)
