"""Point-in-time recovery run by the scheduler, and the recoverable moment in `backup list`.

* `pitr: {binlog_sync: 5m}`: `schedule run-due` archives a MariaDB deployment's closed binary
  logs once per 5-minute slot (a second run-due in the slot archives nothing even when there
  is something new; the next slot does), against a throwaway server, with a FakeClock shared
  by the Service and the Scheduler (as tests/schedule/test_scheduler_engine.py).
* A sync that fails is a Failed row and exit code 1, the backups of the same run still
  happen; a second host in the same slot finds the lease taken.
* `backup list` gives each pg_basebackup / mariabackup backup the last moment it can be
  rolled forward to, equal to what `pitr show` says; null for a logical backup; the table
  gets a "PITR until" column only then.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import MariaDBServer, free_port
from pitr.test_pitr_mariadb import master_status

from backupctl.backups.service import Service
from backupctl.config.loader import load_config
from backupctl.policy.schedule import FakeClock
from backupctl.schedule.scheduler import Scheduler


def configure(config: Path, deployment: str, **keys: Any) -> None:
    doc = helpers.load_yaml(config)
    doc["deployments"][deployment].update(keys)
    helpers.dump_yaml(doc, config)


def slot_start(every: timedelta) -> datetime:
    """Now, moved back to the start of its grid slot plus a second (so minutes can pass in it)."""
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    now = datetime.now(UTC)
    return epoch + every * ((now - epoch) // every) + timedelta(seconds=1)


def archived_binlogs(repository: Path) -> set[str]:
    folder = repository / "binlog" / "app"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


@pytest.mark.server
def test_run_due_archives_the_closed_binary_logs_once_per_interval(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = fresh_mariadb_server
    db = f"sched_{uuid.uuid4().hex[:8]}"
    dep = make_deployment([server.options(method="mariabackup")])
    setup = dep.ok("pitr", "setup", "app")
    assert "set `pitr: {binlog_sync: 5m}` under deployments.app" in setup.stderr.splitlines()[0], str(setup)
    configure(dep.config, "app", policy="none", pitr={"binlog_sync": "5m"})
    assert dep.ok("pitr", "setup", "app", "-o", "json").json()["binlog_sync"] == "5m"
    server.root_sql(f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, n INT)")
    server.root_sql(f"INSERT INTO {db}.t (n) SELECT 0 FROM seq_1_to_10")
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    # Binary log event times have one-second resolution: a window needs an event in a later
    # second than the backup's end (as in tests/pitr/test_pitr_mariadb.py).
    time.sleep(1.2)
    server.root_sql(f"INSERT INTO {db}.t (n) SELECT 1 FROM seq_1_to_100")
    closed, _ = master_status(server)
    server.root_sql("FLUSH BINARY LOGS")
    server.root_sql(f"INSERT INTO {db}.t (n) SELECT 2 FROM seq_1_to_50")
    open_file, _ = master_status(server)  # closed by the scheduled sync's FLUSH (flush defaults to on)

    every = timedelta(minutes=5)
    clock = FakeClock(slot_start(every))
    service = Service(load_config(dep.config), clock=clock)
    scheduler = Scheduler(service, clock)
    (row,) = scheduler.run_due()
    assert row["kind"] == "binlog_sync" and row["deployment"] == "app", row
    assert row["status"] == "Completed" and row["error"] is None, row
    assert row["flush"] is True and row["backup_id"] is None, row
    first = archived_binlogs(dep.repository)
    assert {closed, open_file} <= first, (first, row)
    assert row["archived"] == len(first) and row["current"] not in first, row
    assert server.password not in str(row)

    # Within the slot: not due, even though the server has closed another binary log since.
    server.root_sql(f"INSERT INTO {db}.t (n) SELECT 3 FROM seq_1_to_5")
    server.root_sql("FLUSH BINARY LOGS")
    clock.advance(timedelta(minutes=3))
    assert scheduler.run_due() == []
    assert archived_binlogs(dep.repository) == first
    slot = datetime.fromisoformat(row["slot"].replace("Z", "+00:00"))
    assert scheduler.next_run() == slot + every  # the daemon wakes up for it

    # The next slot archives what was closed since, plus the file its own flush closes.
    clock.advance(timedelta(minutes=2))
    (again,) = scheduler.run_due()
    assert again["status"] == "Completed" and again["slot"] > row["slot"], again
    second = archived_binlogs(dep.repository)
    assert row["current"] in second and again["archived"] == 2, (again, second - first)
    assert again["already_archived"] == len(first), again
    upcoming = [r for r in scheduler.upcoming() if r["kind"] == "binlog_sync"]
    assert upcoming == [
        {
            "kind": "binlog_sync",
            "deployment": "app",
            "policy": None,
            "schedule": "every 5m, flush",
            "type": "binlog",
            "next_run": (slot + 2 * every).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "last_run": again["slot"],
            "last_status": "Completed",
            "last_error": None,
        }
    ], upcoming

    # The archive now reaches the last sync: backup list says so, as pitr show does.
    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    (rng,) = window["backups"]
    assert rng["usable"] and rng["id"] == backup["id"], rng
    listed = {r["id"]: r for r in dep.list()}
    assert listed[backup["id"]]["recoverable_until"] == rng["to"] == window["latest"], (listed, window)


def test_a_failed_sync_is_a_failed_row_and_the_backups_of_the_run_still_happen(
    tmp_path: Path, make_deployment: Any
) -> None:
    tree = helpers.make_sample_tree(tmp_path / "tree")
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["db"] = {
        # Nothing listens on this port: the sync cannot connect.
        "sources": [{"type": "mariadb", "host": "127.0.0.1", "port": free_port(), "method": "mariabackup"}],
        "destinations": ["local"],
        "policy": "none",
        "pitr": {"binlog_sync": "1m", "flush": False},
    }
    helpers.dump_yaml(doc, dep.config)

    result = dep.run("schedule", "run-due", "-o", "json")
    assert result.returncode == 1, str(result)
    rows = {r["kind"]: r for r in result.json()}
    assert rows["backup"]["deployment"] == "app" and rows["backup"]["status"] == "Completed", rows
    sync = rows["binlog_sync"]
    assert sync["deployment"] == "db" and sync["status"] == "Failed" and sync["error"], sync
    assert sync["flush"] is False and sync["archived"] == 0, sync
    assert [b["deployment"] for b in dep.list()] == ["app"]

    # `schedule list` shows the failure and the next run.
    listed = dep.ok("schedule", "list", "-o", "json").json()
    (planned,) = [r for r in listed if r["kind"] == "binlog_sync"]
    assert planned["deployment"] == "db" and planned["last_status"] == "Failed", planned
    assert planned["last_error"] == sync["error"] and planned["last_run"] == sync["slot"], (planned, sync)
    assert planned["next_run"] > sync["slot"] and planned["schedule"] == "every 1m", planned
    assert "binlog_sync" in dep.ok("schedule", "list").stdout

    # Two hosts (two state databases) in the same slot: the second finds the lease taken.
    clock = FakeClock(slot_start(timedelta(minutes=1)) + timedelta(days=1))
    host_a = Scheduler(Service(load_config(dep.config), state_dir=tmp_path / "state-a", clock=clock), clock)
    host_b = Scheduler(Service(load_config(dep.config), state_dir=tmp_path / "state-b", clock=clock), clock)
    syncs_a = [r for r in host_a.run_due() if r["kind"] == "binlog_sync"]
    syncs_b = [r for r in host_b.run_due() if r["kind"] == "binlog_sync"]
    assert [r["status"] for r in syncs_a] == ["Failed"], syncs_a
    assert [r["status"] for r in syncs_b] == ["skipped: another host runs this slot"], syncs_b


def test_binlog_sync_is_refused_for_a_deployment_without_binary_logs(make_deployment: Any) -> None:
    dep = make_deployment([{"type": "postgres", "host": "127.0.0.1", "method": "pg_basebackup"}])
    configure(dep.config, "app", pitr={"binlog_sync": "5m"})
    helpers.assert_one_line_error(
        dep.run("config", "validate"),
        4,
        "deployments.app",
        "PostgreSQL archives its WAL through archive_command",
    )
    configure(dep.config, "app", sources=[{"type": "mariadb"}], pitr={"binlog_sync": "30s"})
    helpers.assert_one_line_error(
        dep.run("config", "validate"), 4, "deployments.app.pitr.binlog_sync", "shorter than one minute"
    )


@pytest.mark.server
def test_backup_list_gives_each_base_backup_its_recoverable_until(pitr_pg: Any) -> None:
    server, dep = pitr_pg
    db = "listed"
    server.psql(f"CREATE DATABASE {db}")
    server.psql("CREATE TABLE t (id serial PRIMARY KEY, n int)", db)
    doc = helpers.load_yaml(dep.config)
    doc["deployments"]["logical"] = {
        "sources": [server.options(method="pg_dump", databases=[db])],
        "destinations": ["local"],
    }
    helpers.dump_yaml(doc, dep.config)
    dep.ok("pitr", "check", "app")
    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    server.psql("INSERT INTO t (n) SELECT 1 FROM generate_series(1, 100)", db)
    dep.ok("pitr", "check", "app")
    logical = dep.ok("backup", "create", "logical", "-o", "json").json()

    def listed() -> dict[str, dict[str, Any]]:
        return {r["id"]: r for r in dep.ok("backup", "list", "-o", "json").json()}

    def reach() -> str:
        (rng,) = dep.ok("pitr", "show", "app", "-o", "json").json()["backups"]
        assert rng["usable"] and rng["id"] == base["id"] and rng["to_basis"] == "last archived transaction"
        return str(rng["to"])

    first = reach()
    rows = listed()
    assert rows[base["id"]]["recoverable_until"] == first > base["finished"], (rows[base["id"]], first)
    assert rows[logical["id"]]["recoverable_until"] is None, rows[logical["id"]]
    header = dep.ok("backup", "list").stdout.splitlines()[0]
    assert "PITR_UNTIL" in header, header
    header = dep.ok("backup", "list", "--deployment", "logical").stdout.splitlines()[0]
    assert "PITR_UNTIL" not in header, header

    # More WAL archived: the answer moves on with it (nothing stale is cached).
    server.psql("INSERT INTO t (n) SELECT 2 FROM generate_series(1, 10)", db)
    dep.ok("pitr", "check", "app")
    later = reach()
    assert later > first and listed()[base["id"]]["recoverable_until"] == later, (first, later)
