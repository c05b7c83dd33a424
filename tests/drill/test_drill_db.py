"""Restore drills of PostgreSQL and MariaDB backups (issue 16): `backupctl backup drill`.

Real servers (tests/conftest_db.py), real CLI, one backup per engine and method shared by its
pass and fail cases. Row counts are recorded while the dump streams (sources/rowcount.py);
a good backup drills as passed (pg_dump, pg_basebackup, pg_basebackup + WAL to a moment,
mariadb-dump, mariabackup, mariabackup + binary logs to a moment); a record listing a table the restored database lacks, or a
flipped byte in a stored pack, fails with the reason named. The live databases are
untouched, and no temporary database, server or directory is left behind, also none that a
killed drill left (the next drill removes it).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import MariaDBServer, PostgresServer, mariadb_fingerprint, pg_fingerprint

from backupctl.procs import pid_running
from backupctl.sources.rowcount import CopyCounter, InsertCounter

DRILL_FAILED = 8


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(autouse=True)
def private_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test's drills make their throwaway instances in a $TMPDIR of its own, so that
    `_instances()` sees only this test's (two xdist workers drilling at once raced here).
    Short, under /tmp: a server socket path must stay under 107 bytes."""
    path = tempfile.mkdtemp(prefix="bd", dir="/tmp")
    os.chmod(path, 0o755)  # the data directory's owner (postgres, mysql) enters it, as /tmp
    monkeypatch.setenv("TMPDIR", path)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _instances() -> set[str]:
    return set(glob.glob(os.path.join(os.environ["TMPDIR"], "bctl-drill-*")))


def _rewrite_manifest(dep: Any, backup_id: str, change: Any) -> None:
    """Tamper with what a backup recorded: decode its manifest, change it, store it again."""
    import helpers

    svc = helpers.service(dep.config)
    repo = svc.repository("local")
    manifest = repo.load_manifest(backup_id)
    change(manifest)
    repo.delete_manifest(backup_id)
    repo.save_manifest(manifest)
    svc.close()


def _flip_a_byte(repository: Path) -> tuple[Path, bytes]:
    """Flip one byte in the largest pack (the dump's data); returns (pack, original bytes)."""
    pack = max((p for p in (repository / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    original = pack.read_bytes()
    data = bytearray(original)
    data[len(data) // 2] ^= 0x40
    pack.write_bytes(bytes(data))
    return pack, original


def _drill(dep: Any, *args: str) -> tuple[int, dict[str, Any]]:
    result = dep.run("backup", "drill", "app", *args, "-o", "json")
    assert "Traceback" not in result.stderr, str(result)
    return result.returncode, result.json()


def _failed(record: dict[str, Any]) -> list[str]:
    return [f"{c['name']}: {c['detail']}" for c in record["checks"] if not c["passed"]]


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ---- the counters, on the exact byte forms the tools write ---------------------------------


def test_counters_are_exact_however_the_stream_is_cut() -> None:
    copy = (
        b"SET x = 1;\n-- COPY public.fake (a) FROM stdin; in a comment\n"
        b'COPY public."Odd (x)" (a) FROM stdin;\na\\nb\n\\\\.\n\\N\n\\.\n\n'
        b"COPY public.empty (a) FROM stdin;\n\\.\n"
        b"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$\nCOPY x\n$$;\n"
        b'COPY s2."select" (a, b) FROM stdin;\n1\t2\n3\t4\n\\.\n'
        b"COPY public.nocols  FROM stdin;\n\n\n\\.\n"  # a table without columns: empty rows
    )
    inserts = (
        b"-- Dumping data for table `t`\n--\n\nLOCK TABLES `t` WRITE;\n"
        b"INSERT INTO `t` VALUES (1,'a),(b',NULL),(2,'it\\'s \\\\ ),( x\\n;',0x28292C28),(3,'','');\n"
        b"INSERT INTO `t` VALUES\n(4,'x'),\n(5,'y;');\n"
        b"UNLOCK TABLES;\n/*!50003 TRIGGER tr BEFORE INSERT ON e FOR EACH ROW\n"
        b"INSERT INTO `t` VALUES (9,'z') */;;\n"
        b"--\n-- Dumping data for table `we(i)rd``t`\n--\n\nLOCK TABLES `we(i)rd``t` WRITE;\n"
        b"UNLOCK TABLES;\n"
    )
    for size in (1, 2, 3, 5, 7, 64, 1 << 16):
        c = CopyCounter()
        for i in range(0, len(copy), size):
            c.feed(copy[i : i + size])
        c.close()
        assert c.done and c.complete
        assert c.counts == {'public."Odd (x)"': 3, "public.empty": 0, 's2."select"': 2, "public.nocols": 2}, (
            size
        )
        m = InsertCounter()
        for i in range(0, len(inserts), size):
            m.feed(inserts[i : i + size])
        m.close()
        assert m.done and m.complete
        assert m.counts == {"t": 5, "we(i)rd`t": 0}, size
    cut = CopyCounter()
    cut.feed(copy[: copy.index(b"\\N")])
    cut.close()
    assert not cut.complete  # a dump cut off inside COPY data records nothing


def test_the_fast_search_for_the_end_of_copy_data_finds_what_find_finds() -> None:
    import random

    from backupctl.sources.rowcount import _find_terminator

    rng = random.Random(5)
    alphabet = [b"\n", b"\\", b".", b"a", b"\t", b"\\N", b"\n\\.\n", b"\\.", b"\r"]
    for _ in range(3000):
        data = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        for pos in range(len(data) + 1):
            assert _find_terminator(data, pos) == data.find(b"\n\\.\n", pos), (data, pos)


# ---- PostgreSQL -----------------------------------------------------------------------------


def _pg_databases(server: PostgresServer) -> list[str]:
    return server.psql("SELECT datname FROM pg_database ORDER BY 1").splitlines()


@pytest.mark.server
def test_postgres_logical_drill_passes_and_fails_with_the_reason(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    db = unique("drill")
    pg_server.psql(f"CREATE DATABASE {db}")
    pg_server.psql(
        "CREATE TABLE customers (id serial PRIMARY KEY, name text);"
        "INSERT INTO customers (name) SELECT 'c' || g FROM generate_series(1, 7) g;"
        "CREATE TABLE orders (id serial PRIMARY KEY, customer int, note text);"
        "INSERT INTO orders (customer, note) SELECT g % 7, E'line\\n\\\\.\\t' || g FROM generate_series(1, 120) g;"
        "CREATE TABLE \"Odd Name\" (v text); INSERT INTO \"Odd Name\" VALUES (E'\\\\.'), (NULL), ('x');"
        "CREATE TABLE empty (a int);",
        db,
    )
    dep = make_deployment([pg_server.options(databases=[db])])
    backup_id = dep.create()
    info = dep.show(backup_id)["sources"][0]["info"]
    assert info["row_counts"] == {
        db: {"public.customers": 7, "public.orders": 120, 'public."Odd Name"': 3, "public.empty": 0}
    }, info
    before, databases_before = pg_fingerprint(pg_server, db), _pg_databases(pg_server)
    # A temporary database that a killed drill of this host left: the next drill drops it.
    import socket as socket_

    from backupctl.drill.postgres import host_tag

    assert socket_.gethostname()
    leftover = f"backupctl_drill_{host_tag()}_{_dead_pid()}_abcdef_0"
    pg_server.psql(f"CREATE DATABASE {leftover}")

    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    names = {c["name"] for c in record["checks"]}
    assert {"postgres.restore", "postgres.rows", "postgres.amcheck"} <= names, names
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "postgres.rows")
    assert "4 tables as recorded" in rows and "public.orders 120" in rows, rows
    amcheck = [c["detail"] for c in record["checks"] if c["name"] == "postgres.amcheck"]
    assert "no corruption" in amcheck[0], amcheck
    # A dump cannot be rolled forward: --to-time is refused up front (usage error, exit 2).
    refused = dep.run("backup", "drill", "app", "--to-time", "2030-01-01 00:00 UTC")
    helpers.assert_one_line_error(refused, 2, "cannot be rolled forward")
    assert pg_fingerprint(pg_server, db) == before
    assert _pg_databases(pg_server) == databases_before  # no temporary database, the leftover gone

    # The record lists a table the restored database does not have, and a wrong count.
    def tamper(manifest: dict[str, Any]) -> None:
        counts = manifest["sources"][0]["info"]["row_counts"][db]
        counts["public.invoices"] = 5
        counts["public.orders"] = 121

    _rewrite_manifest(dep, backup_id, tamper)
    code, record = _drill(dep)
    assert code == DRILL_FAILED and record["passed"] is False, record
    bad = _failed(record)
    assert any("public.invoices" in d and "missing after restore" in d for d in bad), bad
    assert any("public.orders" in d and "121" in d and "120 restored" in d for d in bad), bad
    result = dep.run("backup", "drill", "app")
    assert result.returncode == DRILL_FAILED and "postgres.rows" in result.stderr, str(result)

    # A flipped byte in a stored pack: the restore fails, and says which object.
    _flip_a_byte(dep.repository)
    code, record = _drill(dep)
    assert code == DRILL_FAILED and record["passed"] is False, record
    bad = _failed(record)
    assert bad and bad[0].startswith("postgres.restore:"), bad
    assert pg_fingerprint(pg_server, db) == before
    assert _pg_databases(pg_server) == databases_before


@pytest.mark.server
def test_postgres_logical_drill_as_a_user_that_only_may_create_databases(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    role, db = unique("owner"), unique("owned")
    password = "pw-" + uuid.uuid4().hex
    pg_server.psql(f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD '{password}'")
    pg_server.psql(f"CREATE DATABASE {db} OWNER {role}")
    pg_server.psql(f"SET ROLE {role}; CREATE TABLE t (a int); INSERT INTO t VALUES (1), (2)", db)
    os.environ[f"DRILL_PW_{role}"] = password
    dep = make_deployment(
        [pg_server.options(databases=[db], user=role, password_env=f"DRILL_PW_{role}", globals=False)]
    )
    dep.create()
    databases_before = _pg_databases(pg_server)
    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    details = {c["name"]: c["detail"] for c in record["checks"]}
    assert "1 tables as recorded (public.t 2)" in details["postgres.rows"], details
    assert "pg_amcheck not run" in details["postgres.amcheck"], details
    assert password not in str(record)
    assert _pg_databases(pg_server) == databases_before

    # The password variable unset on this host: a configuration error (exit 4), not a verdict
    # on the backup - no failed drill is recorded against it.
    del os.environ[f"DRILL_PW_{role}"]
    unset = dep.run("backup", "drill", "app", "-o", "json")
    assert unset.returncode == 4 and f"DRILL_PW_{role}" in unset.stderr, str(unset)
    (row,) = dep.ok("backup", "list", "-o", "json").json()
    assert row["drill_passed"] is True, row


@pytest.mark.server
def test_postgres_physical_and_point_in_time_drills(pitr_pg: Any) -> None:
    server, dep = pitr_pg
    db = "shop"
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t (id serial PRIMARY KEY, batch int); CREATE INDEX ON t (batch)", db)
    server.psql("INSERT INTO t (batch) SELECT 0 FROM generate_series(1, 10)", db)
    dep.ok("pitr", "check", "app")
    backup_id = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()["id"]
    server.psql("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 100)", db)
    time.sleep(1.2)
    moment = server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1.2)
    server.psql("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 50)", db)
    dep.ok("pitr", "check", "app")
    instances = _instances()

    # The backup as taken: the 10 rows of before it.
    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    assert record["backup_id"] == backup_id
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "postgres.rows")
    assert f"database {db}: 1 tables restored (public.t 10)" in rows, rows
    assert any(c["name"] == "postgres.amcheck" and "no corruption" in c["detail"] for c in record["checks"])

    # To the moment between batch 1 and batch 2: WAL replayed to it, 110 rows.
    code, record = _drill(dep, "--to-time", f"{moment} UTC")
    assert code == 0 and record["passed"] is True, record
    assert record["to_time"] and record["to_time"].startswith(moment[:10]), record
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "postgres.rows")
    assert "public.t 110" in rows, rows
    assert any("recovered to" in c["detail"] for c in record["checks"] if c["name"] == "postgres.start")

    # The live server is untouched, and no throwaway server or directory is left.
    assert server.psql("SELECT count(*) FROM t", db) == "160"
    assert _instances() == instances
    assert not [p for p in os.listdir(dep.root) if p.startswith(".backupctl-")]

    # A drill killed (-9) while its throwaway server runs: the server outlives it, and the
    # next drill stops it and removes its directory.
    import helpers

    proc = subprocess.Popen(
        helpers.cli_command("backup", "drill", "app"),
        env=helpers.cli_env(dep.env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    pidfiles: list[str] = []
    deadline = time.monotonic() + 120
    while not pidfiles and proc.poll() is None and time.monotonic() < deadline:
        pattern = os.path.join(os.environ["TMPDIR"], f"bctl-drill-{proc.pid}-*", "data", "postmaster.pid")
        pidfiles = glob.glob(pattern)
        time.sleep(0.05)
    assert pidfiles, "the drill ended before its server was seen"
    os.kill(proc.pid, 9)
    proc.wait()
    postmaster = int(Path(pidfiles[0]).read_text().split()[0])
    os.kill(postmaster, 0)  # still running: nothing stopped it
    assert _instances() != instances
    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    assert _instances() == instances
    assert not pid_running(postmaster)  # gone (a zombie not yet reaped by its new parent counts)

    # A flipped byte in the stored base backup: the drill fails at the restore.
    _flip_a_byte(dep.repository)
    code, record = _drill(dep)
    assert code == DRILL_FAILED and record["passed"] is False, record
    assert _failed(record)[0].startswith("postgres.restore:"), _failed(record)
    assert _instances() == instances


# ---- MariaDB --------------------------------------------------------------------------------


@pytest.mark.server
def test_mariadb_logical_drill_passes_and_fails_with_the_reason(
    mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    db = unique("drill")
    mariadb_server.root_sql(f"CREATE DATABASE {db}")
    mariadb_server.root_sql(
        "CREATE TABLE t (id int PRIMARY KEY, s text, b blob);"
        "INSERT INTO t VALUES (1, 'a),(b', NULL), (2, 'it''s \\\\ ),( x\\n;', 0x28292C28), (3, '', '');"
        "CREATE TABLE big (a int, s varchar(200));"
        "INSERT INTO big SELECT seq, repeat('y),(', 40) FROM seq_1_to_3000;"
        "CREATE TABLE empty (a int); CREATE VIEW v AS SELECT id FROM t;"
        "CREATE EVENT ev ON SCHEDULE EVERY 1 SECOND DO INSERT INTO empty VALUES (1);"
        "ALTER EVENT ev DISABLE;",
        db,
    )
    dep = make_deployment([mariadb_server.options(databases=[db])])
    backup_id = dep.create()
    info = dep.show(backup_id)["sources"][0]["info"]
    assert info["row_counts"] == {db: {"t": 3, "big": 3000, "empty": 0}}, info
    before = mariadb_fingerprint(mariadb_server, db)
    databases_before = mariadb_server.root_sql("SHOW DATABASES")
    instances = _instances()

    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    names = {c["name"] for c in record["checks"]}
    assert {"mariadb.restore", "mariadb.rows", "mariadb.check_table"} <= names, names
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "mariadb.rows")
    assert "3 tables as recorded" in rows and "big 3000" in rows, rows
    assert mariadb_fingerprint(mariadb_server, db) == before
    assert mariadb_server.root_sql("SHOW DATABASES") == databases_before
    assert _instances() == instances

    def tamper(manifest: dict[str, Any]) -> None:
        manifest["sources"][0]["info"]["row_counts"][db]["invoices"] = 2

    _rewrite_manifest(dep, backup_id, tamper)
    code, record = _drill(dep)
    assert code == DRILL_FAILED and record["passed"] is False, record
    bad = _failed(record)
    assert bad == [
        f"mariadb.rows: database {db}: table invoices recorded with 2 rows at backup time, missing after restore"
    ], bad
    assert _instances() == instances


@pytest.mark.server
def test_mariadb_physical_and_point_in_time_drills_pass_and_a_flipped_byte_fails(
    mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    db = unique("drillphys")
    mariadb_server.root_sql(f"CREATE DATABASE {db}")
    mariadb_server.root_sql(
        "CREATE TABLE t (id int PRIMARY KEY, s text) ENGINE=InnoDB;"
        "INSERT INTO t SELECT seq, concat('r', seq) FROM seq_1_to_250;"
        "CREATE TABLE a (id int) ENGINE=Aria; INSERT INTO a VALUES (1), (2);",
        db,
    )
    dep = make_deployment([mariadb_server.options(method="mariabackup")])
    dep.create()
    instances = _instances()
    code, record = _drill(dep)
    assert code == 0 and record["passed"] is True, record
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "mariadb.rows")
    assert f"database {db}: 2 tables restored (a 2, t 250)" in rows, rows
    checked = [c["detail"] for c in record["checks"] if c["name"] == "mariadb.check_table"]
    assert f"database {db}: CHECK TABLE OK for 2 tables" in checked, checked
    assert mariadb_server.root_sql("SELECT count(*) FROM t", db) == "250"
    assert _instances() == instances

    # To a moment after the backup: the archived binary logs replayed up to it.
    time.sleep(1.2)
    mariadb_server.root_sql("INSERT INTO t SELECT seq, 'b1' FROM seq_1001_to_1100", db)
    time.sleep(1.5)
    moment = mariadb_server.root_sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
    time.sleep(1.5)
    mariadb_server.root_sql("INSERT INTO t SELECT seq, 'b2' FROM seq_2001_to_2050", db)
    mariadb_server.root_sql("FLUSH BINARY LOGS")
    dep.ok("binlog", "sync", "app", "--flush")
    code, record = _drill(dep, "--to-time", f"{moment} UTC")
    assert code == 0 and record["passed"] is True, record
    rows = " ".join(c["detail"] for c in record["checks"] if c["name"] == "mariadb.rows")
    assert f"database {db}: 2 tables restored (a 2, t 350)" in rows, rows
    assert mariadb_server.root_sql("SELECT count(*) FROM t", db) == "400"
    assert _instances() == instances

    _flip_a_byte(dep.repository)
    code, record = _drill(dep)
    assert code == DRILL_FAILED and record["passed"] is False, record
    assert _failed(record)[0].startswith("mariadb.restore:"), _failed(record)
    assert _instances() == instances
