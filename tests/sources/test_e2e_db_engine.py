"""Database backups through the engine's features, via the CLI, against the throwaway servers.

mariabackup full + incrementals restored as a chain into a datadir that starts; the safety
backup before an in-place restore, and restoring it undoes the restore; restore --to another
deployment; `--type incremental` on a logical dump.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbservers import MariaDBServer, PostgresServer, free_port, pg_fingerprint
from helpers import dump_yaml, load_yaml

pytestmark = pytest.mark.server


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def test_mariabackup_full_and_two_incrementals_restore_into_a_datadir_that_starts(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = fresh_mariadb_server
    db = unique("inc")
    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT PRIMARY KEY, stage INT) ENGINE=InnoDB"
    )
    deployment = make_deployment([server.options(method="mariabackup")])

    ids = []
    for stage, kind in enumerate(("full", "incremental", "incremental")):
        server.root_sql(f"INSERT INTO {db}.t SELECT seq + {stage * 1000}, {stage} FROM seq_1_to_500")
        result = deployment.ok("backup", "create", "app", "--type", kind, "-o", "json")
        ids.append(result.json()["id"])
    shown = [deployment.show(i) for i in ids]
    assert [s["type"] for s in shown] == ["full", "incremental", "incremental"], shown
    assert shown[1]["parent"] == ids[0] and shown[2]["parent"] == ids[1]
    server.root_sql(f"INSERT INTO {db}.t VALUES (99999, 9)")  # after the last backup: must not come back
    expected = server.root_sql(
        f"SELECT stage, count(*) FROM {db}.t WHERE stage < 9 GROUP BY stage ORDER BY stage"
    )
    assert expected.splitlines() == ["0\t500", "1\t500", "2\t500"]

    work = Path(tempfile.mkdtemp(prefix="backupctl-inc-"))
    try:
        target = work / "data"
        deployment.ok("backup", "restore", ids[2][:8], "--target", target, "--yes")
        server.shutdown()
        server.start_datadir(target, port=free_port())
        got = server.root_sql(f"SELECT stage, count(*) FROM {db}.t GROUP BY stage ORDER BY stage")
        assert got == expected
        assert server.root_sql(f"SELECT count(*) FROM {db}.t WHERE id = 99999") == "0"
    finally:
        server.shutdown()
        shutil.rmtree(work, ignore_errors=True)


def test_safety_backup_undoes_an_in_place_restore(pg_server: PostgresServer, make_deployment: Any) -> None:
    server = pg_server
    db = unique("safety")
    server.psql(f"CREATE DATABASE {db}")
    server.psql(
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, 'old' FROM generate_series(1, 100) g",
        db,
    )
    deployment = make_deployment([server.options(databases=[db])])
    old_backup = deployment.create()
    old_state = pg_fingerprint(server, db)

    server.psql(
        "INSERT INTO t SELECT g, 'new' FROM generate_series(101, 250) g; UPDATE t SET v = 'changed' WHERE id <= 10",
        db,
    )
    current = pg_fingerprint(server, db)
    assert current != old_state

    result = deployment.ok("backup", "restore", old_backup[:8], "--yes", "-o", "json").json()
    safety = result["safety_backup"]
    assert safety and safety != old_backup, result
    assert pg_fingerprint(server, db) == old_state
    assert deployment.show(safety)["status"] == "Completed"

    undo = deployment.ok("backup", "restore", safety, "--yes", "--no-safety-backup", "-o", "json").json()
    assert undo["safety_backup"] is None
    assert pg_fingerprint(server, db) == current
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")


def test_restore_to_another_deployment_leaves_the_source_untouched(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = pg_server
    db, other = unique("src"), unique("dst")
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g", db)
    server.psql(f"CREATE DATABASE {other}")
    server.psql("CREATE TABLE stale AS SELECT 1 AS x", other)
    deployment = make_deployment([server.options(databases=[db])])
    doc = load_yaml(deployment.config)
    doc["deployments"]["acceptance"] = {
        "sources": [server.options(databases=[other])],
        "destinations": ["local"],
    }
    dump_yaml(doc, deployment.config)
    backup_id = deployment.create()
    source_before = pg_fingerprint(server, db)

    result = deployment.ok("backup", "restore", backup_id, "--to", "acceptance", "--yes", "-o", "json").json()
    assert result["deployment"] == "acceptance"
    restored = pg_fingerprint(server, other)
    assert restored["table public.t"] == source_before["table public.t"]
    assert "table public.stale" not in restored  # the target was replaced by the backup's content
    assert pg_fingerprint(server, db) == source_before
    # The safety backup was of the target, not of the source.
    assert deployment.show(result["safety_backup"])["deployment"] == "acceptance"

    server.psql("INSERT INTO t VALUES (-1, 'source only')", db)
    assert pg_fingerprint(server, other)["table public.t"] == source_before["table public.t"]
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
    server.psql(f"DROP DATABASE {other} WITH (FORCE)")


def test_incremental_of_a_logical_dump_is_a_full_dump_and_says_so(
    pg_server: PostgresServer, make_deployment: Any
) -> None:
    server = pg_server
    db = unique("dumpinc")
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g", db)
    deployment = make_deployment([server.options(databases=[db])])

    first = deployment.ok("backup", "create", "app", "--type", "incremental")
    assert "no earlier backup" in first.stderr or "full dump" in first.stderr, str(first)
    assert "full dump" in first.stderr, str(first)
    second = deployment.ok("backup", "create", "app", "--type", "incremental")
    assert "full dump" in second.stderr, str(second)

    ids = [first.stdout.strip().splitlines()[-1], second.stdout.strip().splitlines()[-1]]
    shown = [deployment.show(i) for i in ids]
    for record in shown:
        assert record["method"] == "pg_dump"
        assert record["type"] == "full", record  # what was taken, not what was asked
        info = record["sources"][0]["info"]
        assert info.get("backup_type", "full") == "full", info  # the content is always a complete dump
    # A restore of the second one alone gives the complete database.
    server.psql("DELETE FROM t", db)
    deployment.ok("backup", "restore", ids[1], "--yes", "--no-safety-backup")
    assert server.psql("SELECT count(*) FROM t", db) == "100"
    server.psql(f"DROP DATABASE {db} WITH (FORCE)")
