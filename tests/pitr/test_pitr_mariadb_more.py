"""In-place restores of MariaDB physical (mariabackup) backups, plain and point-in-time.

The deployment names the throwaway server's own data directory (`datadir:`), owned by the
`mysql` user as on a real host. In place (no --target):

* a running server is refused before anything is done: no safety backup, rows unchanged;
* with the server stopped, the safety backup is an offline copy of the data directory
  (info `offline: true`, listed and Completed, no base for point-in-time recovery), then the
  directory's contents are replaced (owner kept) and, for --to-time, the binary logs
  replayed; the server started on its data directory has exactly the rows before the moment,
  compared table by table;
* restoring the safety backup in place (--no-safety-backup) gives back the state before;
* a plain restore of a mariabackup chain (full + incremental) gives the backup's rows.

Servers come from dbservers; `master_status` from test_pitr_mariadb.
"""

from __future__ import annotations

import os
import pwd
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbservers import MariaDBServer

from backupctl.errors import ExitCode
from backupctl.sources.dbutil import chown_tree
from pitr.test_pitr_mariadb import master_status

pytestmark = pytest.mark.server


def tables(server: MariaDBServer, db: str) -> dict[str, list[str]]:
    """Every table of `db` with its rows in primary-key order (one tab-separated line each)."""
    names = server.root_sql(
        f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{db}' ORDER BY table_name"
    ).splitlines()
    return {name: server.root_sql(f"SELECT * FROM {db}.{name} ORDER BY id").splitlines() for name in names}


def utc_now(server: MariaDBServer) -> str:
    return server.root_sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")


@pytest.fixture
def in_place(fresh_mariadb_server: MariaDBServer, make_deployment: Any) -> Any:
    """(server, deployment `app` with `datadir:` = the server's data directory, database name).

    The data directory is owned by `mysql` (the server itself runs as root, so it keeps
    working) and reachable by it, so the replay's temporary server runs as `mysql`.
    """
    server = fresh_mariadb_server
    mysql = pwd.getpwnam("mysql")
    os.chmod(server.base, 0o711)
    chown_tree(server.data, mysql.pw_uid, mysql.pw_gid)
    dep = make_deployment([server.options(method="mariabackup", datadir=str(server.data))])
    db = f"inplace_{uuid.uuid4().hex[:8]}"
    server.root_sql(
        f"CREATE DATABASE {db};"
        f"CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, batch INT) ENGINE=InnoDB;"
        f"CREATE TABLE {db}.notes (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(40)) ENGINE=Aria"
    )
    return server, dep, db


def batch(server: MariaDBServer, db: str, n: int, rows: int) -> None:
    server.root_sql(
        f"INSERT INTO {db}.t (batch) SELECT {n} FROM seq_1_to_{rows};"
        f"INSERT INTO {db}.notes (note) VALUES ('batch {n}')"
    )


def owned_by_mysql(datadir: Path) -> bool:
    uid = pwd.getpwnam("mysql").pw_uid
    return all(p.stat().st_uid == uid for p in [datadir, datadir / "ibdata1", *datadir.glob("*/*.frm")])


def test_in_place_restore_to_a_time_refuses_a_running_server_and_can_be_undone(in_place: Any) -> None:
    server, dep, db = in_place
    batch(server, db, 0, 10)
    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    time.sleep(1.2)
    batch(server, db, 1, 100)
    time.sleep(1.5)
    between = utc_now(server)
    time.sleep(1.5)
    batch(server, db, 2, 50)
    server.root_sql("FLUSH BINARY LOGS")
    batch(server, db, 3, 5)
    dep.ok("binlog", "sync", "app", "--flush")
    before = tables(server, db)
    # Exactly what batches 0 and 1 wrote, with the ids InnoDB gave them.
    expected = {
        "notes": before["notes"][:2],
        "t": [row for row in before["t"] if row.split("\t")[1] in ("0", "1")],
    }
    assert [n.split("\t")[1] for n in before["notes"]] == [f"batch {i}" for i in range(4)], before
    assert (len(before["t"]), len(expected["t"])) == (165, 110), before
    restore = ("backup", "restore", "--deployment", "app", "--to-time", f"{between} UTC")

    # The server still runs on its data directory: refused before anything, no safety backup.
    running = dep.run(*restore, "--yes")
    assert running.returncode != 0, str(running)
    assert "a MariaDB server is running on it" in running.stderr, str(running)
    assert [b["id"] for b in dep.ok("backup", "list", "--all", "-o", "json").json()] == [base["id"]]
    assert tables(server, db) == before

    server.shutdown()
    unconfirmed = dep.run(*restore)  # stdin is not a terminal: no confirmation, nothing done
    assert unconfirmed.returncode == ExitCode.ABORTED, str(unconfirmed)
    result = dep.ok(*restore, "--yes", "-o", "json").json()
    assert result["backup"] == base["id"] and result["datadir"] == str(server.data), result
    safety = result["safety_backup"]
    assert safety, result
    listed = {b["id"]: b for b in dep.ok("backup", "list", "--all", "-o", "json").json()}
    assert listed[safety]["status"] == "Completed", listed
    assert "safety backup" in listed[safety]["comment"], listed
    info = dep.show(safety)["sources"][0]["info"]
    assert info["offline"] is True and info["method"] == "mariabackup" and "binlog_file" not in info, info
    # The offline copy is no base for replay: only the mariabackup backup is listed.
    shown = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert [b["id"] for b in shown["backups"]] == [base["id"]], shown
    assert owned_by_mysql(server.data)

    # The server starts on its own data directory with exactly the rows before the moment.
    server.start_datadir(server.data)
    assert tables(server, db) == expected

    # Undo: the safety backup, restored in place, gives back the state before the restore.
    server.shutdown()
    undo = dep.ok("backup", "restore", safety, "--yes", "--no-safety-backup", "-o", "json").json()
    assert undo["safety_backup"] is None, undo
    assert owned_by_mysql(server.data)
    server.start_datadir(server.data)
    assert tables(server, db) == before
    master_status(server)  # binary logging goes on


def test_plain_in_place_restore_of_a_mariabackup_chain_gives_the_backups_rows(in_place: Any) -> None:
    server, dep, db = in_place
    batch(server, db, 0, 10)
    dep.ok("backup", "create", "app", "--type", "full")
    batch(server, db, 1, 20)
    inc = dep.ok("backup", "create", "app", "--type", "incremental", "-o", "json").json()
    assert dep.show(inc["id"])["sources"][0]["info"]["backup_type"] == "incremental"
    expected = tables(server, db)
    batch(server, db, 2, 30)
    server.root_sql(f"CREATE TABLE {db}.later (id INT PRIMARY KEY)")
    assert tables(server, db) != expected

    server.shutdown()
    done = dep.run("backup", "restore", inc["id"], "--yes", "-o", "json")
    # The safety backup's note (an offline copy) is not a warning of the restore: exit 0.
    assert done.returncode == 0, str(done)
    result = done.json()
    assert result["target"] is None and result["safety_backup"], result
    assert dep.show(result["safety_backup"])["sources"][0]["info"]["offline"] is True
    assert owned_by_mysql(server.data)
    server.start_datadir(server.data)
    assert tables(server, db) == expected


def test_binlog_sync_refuses_a_server_whose_log_numbering_went_back(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    """After RESET MASTER (or a restore with the logs inside the data directory) the server's
    new logs would reuse archived names and be skipped as "already archived": refused loudly."""
    server = fresh_mariadb_server
    dep = make_deployment([server.options(method="mariabackup")])
    server.root_sql("CREATE DATABASE reset_db; CREATE TABLE reset_db.t (id INT PRIMARY KEY)")
    server.root_sql("FLUSH BINARY LOGS; INSERT INTO reset_db.t VALUES (1); FLUSH BINARY LOGS")
    first = dep.ok("binlog", "sync", "app", "-o", "json").json()
    assert len(first["archived"]) >= 2, first
    archive = dep.repository / "binlog" / "app"
    before = {p.name: p.read_bytes() for p in archive.iterdir()}

    server.root_sql("RESET MASTER")
    refused = dep.run("binlog", "sync", "app", "--flush")
    assert refused.returncode != 0, str(refused)
    assert "numbering went back" in refused.stderr and "log_bin" in refused.stderr, str(refused)
    assert {p.name: p.read_bytes() for p in archive.iterdir()} == before  # nothing archived or changed
