"""Failures found by walking through the docs as a new user on Debian 12 (issue 12).

Each test reproduces one finding against real components and is marked xfail(strict=True)
until the engine is fixed; the fix removes the mark.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbservers import PostgresServer

pytestmark = pytest.mark.server


@pytest.mark.xfail(
    strict=True,
    reason="walkthrough: a physical clone of a Debian-layout cluster (postgresql.conf, pg_hba.conf "
    "in /etc/postgresql, not in the data directory) fails: the clone's private start needs "
    "postgresql.conf in --datadir",
)
def test_physical_clone_of_a_cluster_whose_config_lives_outside_the_data_directory(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = pg_server
    db = "walk_" + uuid.uuid4().hex[:8]
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g", db)
    deployment = make_deployment([server.options(method="pg_basebackup")])
    # Debian's layout: the configuration files are not in the data directory, so
    # pg_basebackup does not carry them. The running server has read them already.
    etc = Path(tempfile.mkdtemp(prefix="backupctl-pg-etc-"))
    names = ("postgresql.conf", "pg_hba.conf", "pg_ident.conf")
    for name in names:
        shutil.move(server.data / name, etc / name)
    try:
        backup_id = deployment.create()
    finally:
        for name in names:
            shutil.move(etc / name, server.data / name)
        shutil.rmtree(etc, ignore_errors=True)
    base = Path(tempfile.mkdtemp(prefix="backupctl-walk-clone-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    try:
        result = deployment.run(
            "backup", "clone", backup_id, "--name", "walk" + uuid.uuid4().hex[:6],
            "--datadir", base / "data", "--yes",
        )  # fmt: skip
        # Today: exit 1, "the cloned PostgreSQL server on ... would not start: ...
        # could not access the server configuration file .../postgresql.conf".
        assert result.returncode == 0, str(result)
    finally:
        shutil.rmtree(base, ignore_errors=True)
        server.psql(f"DROP DATABASE {db} WITH (FORCE)")


@pytest.mark.xfail(
    strict=True,
    reason="walkthrough: a configured path that is a symlink to a directory stores only the link "
    "(a Completed 0 B backup, exit 0, no warning); the user meant the directory's contents",
)
def test_a_configured_path_that_is_a_symlinked_directory_is_not_silently_a_0_byte_backup(
    tmp_path: Path, make_deployment: Any
) -> None:
    real = tmp_path / "data" / "www"
    real.mkdir(parents=True)
    (real / "index.html").write_text("<h1>site</h1>\n")
    link = tmp_path / "www"
    link.symlink_to(real)  # like /var/www -> /data/www
    deployment = make_deployment([{"type": "files", "paths": [str(link)]}])
    result = deployment.run("backup", "create", "app")
    # Today: exit 0 and the backup holds one symlink and no file content. Either the
    # contents are backed up, or the backup says that only a link was stored (exit 3).
    backup_id = deployment.list()[0]["id"]
    stored = deployment.show(backup_id)["size_bytes"]
    assert stored > 0 or (result.returncode == 3 and str(link) in result.stderr), str(result)


def test_restore_target_that_is_a_file_is_refused_before_any_prompt(
    tmp_path: Path, make_deployment: Any
) -> None:
    """--target naming an existing file (a typo) is a usage error, exit 2, before the
    'current data there will be overwritten' prompt, and the file is left alone (the
    restore used to ask, then stop with 'File exists ... or remove <the file>')."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("a\n")
    deployment = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = deployment.create()
    victim = tmp_path / "notes.txt"
    victim.write_text("precious\n")
    for extra in ([], ["--yes"]):
        result = deployment.run("backup", "restore", backup_id, "--target", victim, *extra)
        assert result.returncode == 2, str(result)
        assert "not a directory" in result.stderr and str(victim) in result.stderr, str(result)
        assert "overwritten" not in result.stderr and "remove" not in result.stderr, str(result)
        assert victim.read_text() == "precious\n"
