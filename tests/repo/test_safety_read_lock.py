"""Reads hold a shared lock: a delete or prune never removes packs under a running restore,
verify or download, and such a read never starts while one runs. A repository this user
cannot write to is still readable (without a lock, after a warning)."""

from __future__ import annotations

import os
import pwd
import subprocess
from pathlib import Path
from typing import Any

import helpers
import pytest
from helpers import assert_same_tree, restored, snapshot_tree

from backupctl.destinations.base import open_destination
from backupctl.destinations.local import LocalOptions
from backupctl.errors import ExitCode
from backupctl.repo.lock import RepositoryLock, list_locks


def _dest(repository: Path) -> Any:
    return open_destination("local", LocalOptions(type="local", path=repository))


def test_a_read_never_starts_under_a_prune(files_deployment: Any, sample_tree: Path, tmp_path: Path) -> None:
    dep = files_deployment
    backup_id = dep.create()
    prune = RepositoryLock(_dest(dep.repository), exclusive=True, operation="prune").acquire()
    try:
        target = tmp_path / "target"
        restore = dep.run("backup", "restore", backup_id, "--target", target)
        assert restore.returncode == ExitCode.LOCKED, str(restore)
        assert "locked exclusively by prune" in restore.stderr
        assert not target.exists() or not any(target.iterdir())
        verify = dep.run("backup", "verify", backup_id)
        assert verify.returncode == ExitCode.LOCKED, str(verify)
    finally:
        prune.release()
    restore = dep.ok("backup", "restore", backup_id, "--target", tmp_path / "after")
    assert_same_tree(snapshot_tree(sample_tree), snapshot_tree(restored(tmp_path / "after", sample_tree)))
    assert list_locks(_dest(dep.repository)) == []  # the restore's shared lock is released


def test_a_prune_waits_for_a_running_restore(files_deployment: Any) -> None:
    """The lock a restore takes is the one prune and delete refuse to run under."""
    dep = files_deployment
    first = dep.create()
    dep.create("--type", "full")
    reader = RepositoryLock(
        _dest(dep.repository), exclusive=False, operation=f"restore {first[:8]}"
    ).acquire()
    try:
        deleted = dep.run("backup", "delete", first, "--yes")
        assert deleted.returncode == ExitCode.LOCKED and "restore" in deleted.stderr, str(deleted)
    finally:
        reader.release()
    assert first in {row["id"] for row in dep.list()}


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand the repository to another OS user")
def test_a_repository_this_user_cannot_write_is_restored_without_a_lock(
    files_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    """As the PITR set-up has it: the repository belongs to another OS user. Root with every
    capability dropped cannot write there, and must still restore (and warn)."""
    dep = files_deployment
    backup_id = dep.create()
    nobody = pwd.getpwnam("nobody")
    # Readable by others (as a read-only share or mount would be), writable only by nobody.
    for root, dirs, files in os.walk(dep.repository):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o755)
        for name in files:
            os.chmod(os.path.join(root, name), 0o644)
        for name in [*dirs, *files]:
            os.chown(os.path.join(root, name), nobody.pw_uid, nobody.pw_gid)
    os.chmod(dep.repository, 0o755)
    os.chown(dep.repository, nobody.pw_uid, nobody.pw_gid)
    target = tmp_path / "target"
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            *helpers.cli_command("backup", "restore", backup_id, "--target", target),
        ],
        env=helpers.cli_env(dep.env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode in (0, ExitCode.PARTIAL), proc.stderr
    assert "reading without a lock" in proc.stderr and "Traceback" not in proc.stderr
    assert_same_tree(snapshot_tree(sample_tree), snapshot_tree(restored(target, sample_tree)))
    assert not (dep.repository / "locks").exists() or not any((dep.repository / "locks").iterdir())
