"""`backupctl backup clone --to-time/--to-name/...`: a point-in-time clone into a new deployment.

Against the throwaway servers, through the CLI: rows written in batches with known moments
between them, the log archived, a clone to a moment between two batches. The clone is then
started as its start command would (the harness's equivalent, as the server's OS user) and
read with the NEW password from the password file: exactly the rows written before the moment
must be there, table by table; it is a promoted, writable server that no longer reads the
original's archive; and the original deployment (rows, password, archive) is untouched.
Refusals (a moment before the oldest backup, a logical backup, no --datadir) write nothing:
no data directory content, no config entry, no secret file.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dbservers import MariaDBServer, PostgresServer
from helpers import load_yaml

from clone.test_e2e_clone import (
    check_secret_file,
    mariadb_can_use,
    mariadb_login,
    pg_can_login,
    pg_login_port,
)

pytestmark = pytest.mark.server

PG_TABLES = ("orders", "customers")
MARIADB_TABLES = ("orders", "customers")


@pytest.fixture
def clone_base() -> Iterator[Path]:
    """A directory the postgres OS user can enter, for the clones' data directories."""
    base = Path(tempfile.mkdtemp(prefix="backupctl-pitr-clone-"))
    pw = pwd.getpwnam("postgres")
    os.chown(base, pw.pw_uid, pw.pw_gid)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def nothing_created(dep: Any, name: str, datadir: Path, isolated_env: dict[str, Path]) -> None:
    assert not datadir.exists() or not any(datadir.iterdir()), list(datadir.iterdir())
    assert name not in (load_yaml(dep.config)["deployments"] or {})
    secrets = isolated_env["XDG_CONFIG_HOME"] / "backupctl" / "secrets" / f"{name}.password"
    assert not secrets.exists()


def pg_batches(server: PostgresServer, port: int, password: str, db: str, table: str) -> list[str]:
    sql = f"SELECT batch, count(*) FROM {table} GROUP BY batch ORDER BY batch"
    return pg_login_port(server, port, server.user, password, db, sql).splitlines()


def test_postgres_clone_to_a_time_and_to_a_restore_point(
    pitr_pg: Any,
    clone_base: Path,
    isolated_env: dict[str, Path],
) -> None:
    server, dep = pitr_pg
    db = "shop"
    server.psql(f"CREATE DATABASE {db}")
    server.psql(
        "CREATE TABLE orders (id serial PRIMARY KEY, batch int, at timestamptz DEFAULT clock_timestamp());"
        "CREATE TABLE customers (id serial PRIMARY KEY, batch int)",
        db,
    )

    def write(batch: int, orders: int, customers: int) -> None:
        server.psql(
            f"INSERT INTO orders (batch) SELECT {batch} FROM generate_series(1, {orders});"
            f"INSERT INTO customers (batch) SELECT {batch} FROM generate_series(1, {customers})",
            db,
        )

    dep.ok("pitr", "check", "app")
    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    write(1, 100, 10)
    time.sleep(1.5)
    between_1_2 = server.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    )
    time.sleep(1.5)
    write(2, 50, 5)
    server.psql("SELECT pg_create_restore_point('before_batch_3')")
    time.sleep(1.2)
    write(3, 25, 2)
    dep.ok("pitr", "check", "app")
    original = {t: pg_batches(server, server.port, server.password, db, t) for t in PG_TABLES}
    assert original == {"orders": ["1|100", "2|50", "3|25"], "customers": ["1|10", "2|5", "3|2"]}

    # A moment before the oldest backup: refused with the reason, nothing written.
    refused_dir = clone_base / "refused"
    refused = dep.run(
        "backup", "clone", "--deployment", "app", "--to-time", "2001-02-03 04:05:06 UTC",
        "--name", "too_early", "--datadir", refused_dir, "--yes",
    )  # fmt: skip
    assert refused.returncode != 0, str(refused)
    assert "no base backup of 'app' ends before 2001-02-03T04:05:06.000000Z" in refused.stderr, str(refused)
    nothing_created(dep, "too_early", refused_dir, isolated_env)

    # To a time between batch 1 and batch 2.
    datadir = clone_base / "shop-0903"
    result = dep.ok(
        "backup", "clone", "--deployment", "app", "--to-time", f"{between_1_2} UTC",
        "--name", "shop_0903", "--datadir", datadir, "--yes", "-o", "json", timeout=600,
    )  # fmt: skip
    doc = result.json()
    assert doc["kind"] == "physical" and doc["datadir"] == str(datadir), doc
    assert doc["pitr_backup"] == doc["backup_id"] == base["id"], doc
    assert doc["target_moment"].startswith(between_1_2.replace(" ", "T")[:19]), doc
    assert doc["user"] == server.user and "password" not in doc
    secret = Path(doc["password_file"])
    password = secret.read_text().strip()
    check_secret_file(secret, password, isolated_env)
    assert password not in result.stdout + result.stderr

    # A promoted cluster on its own port that no longer fetches WAL.
    assert not (datadir / "recovery.signal").exists() and not (datadir / "postmaster.pid").exists()
    auto = (datadir / "postgresql.auto.conf").read_text()
    assert f"port = {doc['port']}" in auto and "archive_mode = off" in auto, auto
    assert "restore_command" not in auto and "recovery_target" not in auto, auto
    new = load_yaml(dep.config)["deployments"]["shop_0903"]
    assert new["description"] == f"clone of app at {doc['target_moment']}", new
    src = new["sources"][0]
    assert src["port"] == doc["port"] and src["data_dir"] == str(datadir) and src["method"] == "pg_basebackup"
    assert src["password_file"] == str(secret) and "password_env" not in src
    assert password not in dep.config.read_text()

    server.pg_ctl_start(datadir, clone_base / "shop-0903.log")  # the start command, as postgres
    try:
        port = doc["port"]
        assert {t: pg_batches(server, port, password, db, t) for t in PG_TABLES} == {
            "orders": ["1|100"],
            "customers": ["1|10"],
        }
        assert pg_login_port(server, port, server.user, password, db, "SELECT pg_is_in_recovery()") == "f"
        assert not pg_can_login(server, port, server.user, server.password, db)
        pg_login_port(server, port, server.user, password, db, "INSERT INTO orders (batch) VALUES (9)")
    finally:
        server.pg_ctl_stop(datadir)

    # From a given base backup to a named restore point (human output): batches 1 and 2.
    datadir2 = clone_base / "shop-rp"
    human = dep.ok(
        "backup", "clone", base["id"][:8], "--to-name", "before_batch_3",
        "--name", "shop_rp", "--datadir", datadir2, "--yes", timeout=600,
    )  # fmt: skip
    assert human.stdout.strip() == "shop_rp", str(human)
    src2 = load_yaml(dep.config)["deployments"]["shop_rp"]["sources"][0]
    said = "".join(human.stderr.split())  # wrapped for the terminal width
    for text in (
        f"Cloned app at restore point 'before_batch_3' (base backup {base['id'][:8]})",
        f"port {src2['port']}. Start it with: pg_ctl -D {datadir2}",
        f"The password is stored in {src2['password_file']}",
    ):
        assert "".join(text.split()) in said, str(human)
    password2 = Path(src2["password_file"]).read_text().strip()
    server.pg_ctl_start(datadir2, clone_base / "shop-rp.log")
    try:
        assert {t: pg_batches(server, src2["port"], password2, db, t) for t in PG_TABLES} == {
            "orders": ["1|100", "2|50"],
            "customers": ["1|10", "2|5"],
        }
    finally:
        server.pg_ctl_stop(datadir2)

    # The original: same rows, same password, and its archive gained no clone's timeline.
    assert {t: pg_batches(server, server.port, server.password, db, t) for t in PG_TABLES} == original
    assert not pg_can_login(server, server.port, server.user, password, db)
    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert window["timelines"] == [1] and window["gaps"] == [], window


def test_mariadb_clone_to_a_time(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any, isolated_env: dict[str, Path]
) -> None:
    server = fresh_mariadb_server
    db = f"shop_{uuid.uuid4().hex[:8]}"
    dep = make_deployment([server.options(method="mariabackup")])

    def write(batch: int, orders: int, customers: int) -> None:
        server.root_sql(
            f"INSERT INTO {db}.orders (batch) SELECT {batch} FROM seq_1_to_{orders};"
            f"INSERT INTO {db}.customers (batch) SELECT {batch} FROM seq_1_to_{customers}"
        )

    def batches(target: MariaDBServer, password: str, table: str) -> list[str]:
        sql = f"SELECT batch, count(*) FROM {table} GROUP BY batch ORDER BY batch"
        return mariadb_login(target, server.user, password, db, sql).splitlines()

    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.orders (id INT AUTO_INCREMENT PRIMARY KEY, batch INT,"
        f" at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB; CREATE TABLE {db}.customers"
        " (id INT AUTO_INCREMENT PRIMARY KEY, batch INT) ENGINE=InnoDB"
    )
    write(0, 10, 1)
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    time.sleep(1.2)
    write(1, 100, 10)
    time.sleep(1.5)
    between_1_2 = server.root_sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
    time.sleep(1.5)
    write(2, 50, 5)
    server.root_sql("FLUSH BINARY LOGS")
    write(3, 25, 2)
    dep.ok("binlog", "sync", "app", "--flush")
    original = {t: batches(server, server.password, t) for t in MARIADB_TABLES}
    assert original["orders"] == ["0\t10", "1\t100", "2\t50", "3\t25"], original

    base = Path(tempfile.mkdtemp(prefix="backupctl-pitr-mclone-"))
    datadir = base / "data"
    clone = MariaDBServer()
    try:
        result = dep.ok(
            "backup", "clone", "--deployment", "app", "--to-time", f"{between_1_2} UTC",
            "--name", "m0903", "--datadir", datadir, "--yes", "-o", "json", timeout=600,
        )  # fmt: skip
        doc = result.json()
        assert doc["pitr_backup"] == doc["backup_id"] == backup["id"], doc
        assert doc["target_moment"].startswith(between_1_2.replace(" ", "T")[:19]), doc
        secret = Path(doc["password_file"])
        password = secret.read_text().strip()
        check_secret_file(secret, password, isolated_env)
        assert password not in result.stdout + result.stderr
        new = load_yaml(dep.config)["deployments"]["m0903"]
        assert new["description"] == f"clone of app at {doc['target_moment']}", new
        assert new["sources"][0]["datadir"] == str(datadir) and new["sources"][0]["port"] == doc["port"]

        clone.start_datadir(datadir, port=doc["port"])
        assert {t: batches(clone, password, t) for t in MARIADB_TABLES} == {
            "orders": ["0\t10", "1\t100"],
            "customers": ["0\t1", "1\t10"],
        }
        assert not mariadb_can_use(clone, server.user, server.password, db)
        # The original: same rows, its own password only.
        assert {t: batches(server, server.password, t) for t in MARIADB_TABLES} == original
        assert not mariadb_can_use(server, server.user, password, db)
    finally:
        clone.stop()
        shutil.rmtree(base, ignore_errors=True)


def test_clone_to_a_moment_refuses_logical_backups_and_a_missing_datadir(
    pg_server: PostgresServer, make_deployment: Any, isolated_env: dict[str, Path], tmp_path: Path
) -> None:
    server = pg_server
    db = f"pitrcl_{uuid.uuid4().hex[:8]}"
    server.psql(f"CREATE DATABASE {db}")
    try:
        dep = make_deployment([server.options(databases=[db])])
        backup_id = dep.create()
        assert dep.show(backup_id)["method"] == "pg_dump"
        datadir = tmp_path / "clone"
        datadir.mkdir()  # an existing empty directory must stay empty

        by_id = dep.run(
            "backup", "clone", backup_id[:8], "--to-time", "2030-01-01 00:00 UTC",
            "--name", "logical", "--datadir", datadir, "--yes",
        )  # fmt: skip
        assert by_id.returncode != 0, str(by_id)
        assert (
            f"backup {backup_id[:8]} is a pg_dump backup; point-in-time recovery starts from a physical backup"
            in (by_id.stderr)
        ), str(by_id)
        nothing_created(dep, "logical", datadir, isolated_env)

        by_deployment = dep.run(
            "backup", "clone", "--deployment", "app", "--to-time", "2030-01-01 00:00 UTC",
            "--name", "logical", "--datadir", datadir, "--yes",
        )  # fmt: skip
        assert by_deployment.returncode != 0, str(by_deployment)
        assert "has no completed pg_basebackup backup" in by_deployment.stderr, str(by_deployment)
        nothing_created(dep, "logical", datadir, isolated_env)

        no_datadir = dep.run(
            "backup",
            "clone",
            "--deployment",
            "app",
            "--to-time",
            "2030-01-01 00:00 UTC",
            "--name",
            "x",
            "--yes",
        )
        assert no_datadir.returncode != 0 and "--datadir is required" in no_datadir.stderr, str(no_datadir)
        nothing_created(dep, "x", tmp_path / "none", isolated_env)

        no_id = dep.run("backup", "clone", "--name", "x", "--yes")
        assert no_id.returncode == 2 and "give a backup ID" in no_id.stderr, str(no_id)
    finally:
        server.psql(f"DROP DATABASE {db} WITH (FORCE)")
