"""Retention and the log archive: when backups expire, the archived WAL that only they needed
goes with them, and everything a retained base backup needs stays (issue 6, item 5).

Through the CLI against a throwaway PostgreSQL server: two base backups with writes and
archived segments before, between and after them; a policy keeping the newest backup only;
`backup prune` deletes the older backup and exactly the segments before the newer backup's
start segment; a restore to a moment after the newer backup still has every row. The same
for MariaDB binary logs against a throwaway MariaDB server.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from dbservers import MariaDBServer
from pitr_helpers import PitrDeployment

from pitr.test_pitr_postgres import batches, start_restored, wait_promoted

pytestmark = pytest.mark.server


def archived_segments(dep: PitrDeployment) -> list[str]:
    """Names of the archived WAL segments (not history/backup-label files), sorted."""
    root = dep.repository / "wal" / "app"
    return sorted(p.name for p in root.rglob("*") if p.is_file() and len(p.name) == 24)


def segment_of(lsn: str, timeline: int) -> str:
    """The WAL file name holding `lsn` (16 MiB segments, PostgreSQL's default)."""
    hi, lo = (int(part, 16) for part in lsn.split("/"))
    segno = ((hi << 32) | lo) >> 24
    return f"{timeline:08X}{segno >> 8:08X}{segno & 0xFF:08X}"


def test_prune_deletes_the_wal_only_expired_backups_needed_and_keeps_the_rest(pitr_pg: Any) -> None:
    server, dep = pitr_pg
    db = "ret"
    server.psql(f"CREATE DATABASE {db}")
    server.psql(
        "CREATE TABLE t (id serial PRIMARY KEY, batch int, at timestamptz DEFAULT clock_timestamp())", db
    )
    dep.ok("pitr", "check", "app")

    old = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    server.psql("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 40)", db)
    dep.ok("pitr", "check", "app")
    new = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    new_start = dep.ok("backup", "show", new["id"], "-o", "json").json()
    new_info = next(s["info"] for s in new_start["sources"] if s.get("method") == "pg_basebackup")
    server.psql("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 20)", db)
    time.sleep(1.2)
    moment = server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")
    time.sleep(1.2)
    server.psql("INSERT INTO t (batch) SELECT 3 FROM generate_series(1, 10)", db)
    dep.ok("pitr", "check", "app")
    before = archived_segments(dep)

    # A policy keeping only the newest backup, manual ones included.
    dep.ok(
        "policy",
        "create",
        "keep1",
        "--daily-at",
        "03:00",
        "--keep-last",
        "1",
        "--include-manual",
        "--deployment",
        "app",
    )
    plan = dep.ok("backup", "prune", "--deployment", "app", "--dry-run", "-o", "json").json()
    assert {d["id"]: d["action"] for d in plan["decisions"]} == {old["id"]: "delete", new["id"]: "keep"}
    assert archived_segments(dep) == before  # a dry run deletes nothing

    dep.ok("backup", "prune", "--deployment", "app", "--yes")
    listed = {b["id"] for b in dep.ok("backup", "list", "-o", "json").json()}
    assert old["id"] not in listed and new["id"] in listed

    # Exactly the segments before the retained backup's start segment are gone.
    first_kept = segment_of(new_info["start_lsn"], int(new_info.get("timeline", 1)))
    after = archived_segments(dep)
    assert after == [s for s in before if s >= first_kept], (before, after, first_kept)
    assert len(after) < len(before), (before, after)

    shown = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert shown["earliest"] == dep.ok("backup", "show", new["id"], "-o", "json").json()["finished"], shown
    assert not shown["gaps"], shown
    assert dep.ok("pitr", "verify", "app", "-o", "json").json()["ok"]

    # What the retained backup needs is all there: a restore between batches 2 and 3 works.
    target = Path(dep.root) / "restored"
    dep.ok("backup", "restore", "--deployment", "app", "--to-time", f"{moment} UTC", "--target", target)
    port = start_restored(server, target)
    try:
        wait_promoted(server, port)
        assert batches(server, port, db).splitlines() == ["1|40", "2|20"]
    finally:
        server.pg_ctl_stop(target)


def test_prune_deletes_the_binlogs_only_expired_backups_needed(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = fresh_mariadb_server
    db = f"ret_{uuid.uuid4().hex[:8]}"
    dep = make_deployment([server.options(method="mariabackup")])
    server.root_sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, b INT)")
    server.root_sql(f"INSERT INTO {db}.t (b) VALUES (0)")
    old = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    for n in (1, 2):
        server.root_sql(f"INSERT INTO {db}.t (b) VALUES ({n}); FLUSH BINARY LOGS")
    new = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    new_file = next(s["info"]["binlog_file"] for s in dep.show(new["id"])["sources"])
    server.root_sql(f"INSERT INTO {db}.t (b) VALUES (3); FLUSH BINARY LOGS")
    dep.ok("binlog", "sync", "app", "--flush")
    archive = dep.repository / "binlog" / "app"
    before = sorted(p.name for p in archive.iterdir())
    assert before[0] < new_file <= before[-1], (before, new_file)

    dep.ok(
        "policy", "create", "keep1", "--daily-at", "03:00", "--keep-last", "1", "--include-manual",
        "--deployment", "app",
    )  # fmt: skip
    dep.ok("backup", "prune", "--deployment", "app", "--yes")
    listed = {b["id"] for b in dep.ok("backup", "list", "-o", "json").json()}
    assert old["id"] not in listed and new["id"] in listed

    after = sorted(p.name for p in archive.iterdir())
    assert after == [name for name in before if name >= new_file], (before, after, new_file)
    shown = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert shown["gaps"] == [] and [b["id"] for b in shown["backups"]] == [new["id"]], shown
    assert dep.ok("pitr", "verify", "app", "-o", "json").json()["ok"]
