"""`backup download`: standard formats that open without backupctl."""

from __future__ import annotations

import sqlite3
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import helpers


def test_download_files_part_is_a_tar_that_tar_extracts(
    files_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    backup_id = files_deployment.create()
    out = tmp_path / "files.tar"
    files_deployment.ok("backup", "download", backup_id, "--part", "files", "--out", str(out))
    extract = tmp_path / "x"
    extract.mkdir()
    subprocess.run(["tar", "-x", "-f", str(out), "-C", str(extract)], check=True)
    helpers.assert_same_tree(
        helpers.snapshot_tree(sample_tree), helpers.snapshot_tree(helpers.restored(extract, sample_tree))
    )


def test_download_to_stdout_streams_the_same_tar(
    files_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    backup_id = files_deployment.create()
    proc = subprocess.run(
        helpers.cli_command("backup", "download", backup_id, "--part", "all", "--out", "-"),
        env=helpers.cli_env(files_deployment.env),
        capture_output=True,
        check=True,
    )
    tar_path = tmp_path / "all.tar"
    tar_path.write_bytes(proc.stdout)
    with tarfile.open(tar_path) as tar:
        names = set(tar.getnames())
    expected = {str(p.relative_to("/")) for p in sample_tree.rglob("*")}
    assert expected <= names


def test_download_database_part_of_sqlite_is_the_database_file(make_deployment: Any, tmp_path: Path) -> None:
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as conn:
        conn.execute("create table t (id integer primary key, v text)")
        conn.executemany("insert into t (v) values (?)", [(f"row {i}",) for i in range(500)])
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    backup_id = dep.create()
    out = tmp_path / "dump.db"
    dep.ok("backup", "download", backup_id, "--part", "database", "--out", str(out))
    with sqlite3.connect(out) as conn:
        rows = conn.execute("select id, v from t order by id").fetchall()
    assert rows == [(i + 1, f"row {i}") for i in range(500)]


def test_download_missing_part_is_a_clear_not_found(files_deployment: Any, tmp_path: Path) -> None:
    backup_id = files_deployment.create()
    result = files_deployment.run(
        "backup", "download", backup_id, "--part", "database", "--out", str(tmp_path / "x")
    )
    assert result.returncode == 5, result
    assert "no database part" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()
