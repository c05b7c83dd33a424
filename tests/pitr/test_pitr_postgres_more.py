"""Point-in-time recovery for PostgreSQL, the paths test_pitr_postgres.py leaves out.

* `--to-lsn` into a new directory: exactly the rows written before the LSN; an LSN past a
  missing segment is refused with the reason, before anything is written.
* In place (no --target): the deployment's own data_dir with the server stopped; a running
  server is refused, the confirmation is required, and a safety backup (an offline copy of
  the stopped data directory) is taken first. The server then starts on its own data
  directory, replays, promotes to timeline 2 and keeps archiving there (`pitr check`,
  `pitr show` report the new timeline). Restoring the safety backup in place undoes it.
* Destinations [local, s3] (moto): every WAL object pushed is on S3 byte for byte; objects
  deleted there come back with `pitr sync`; with the local repository gone and the config
  pointing at S3 alone, a restore to a time reads the base backup and the WAL from S3.

Servers, deployments and the light entry point come from dbservers / pitr_helpers; the
restored-server helpers from test_pitr_postgres.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest_servers import build_destination, destination_config
from dbservers import PostgresServer
from helpers import dump_yaml, load_yaml
from pitr_helpers import S3_PACKAGES, PitrDeployment, light_command

from backupctl.errors import ExitCode
from backupctl.pitr.logarchive import WAL_SEGMENT_SIZE, lsn_to_int
from pitr.test_pitr_postgres import batches, start_restored, wait_promoted

pytestmark = pytest.mark.server

DB = "pitr"


@pytest.fixture
def pitr_pg_dir(fresh_pg_server: PostgresServer) -> Any:
    """Archiving into deployment `app`, whose source names the server's own data directory."""
    server = fresh_pg_server
    dep = PitrDeployment([server.options(method="pg_basebackup", data_dir=str(server.data))])
    prefix = light_command()
    dep.ok("pitr", "setup", "app", "--command", prefix)  # creates the repository
    dep.hand_over()
    applied = dep.ok("pitr", "setup", "app", "--apply", "--command", prefix, "-o", "json").json()
    assert applied["applied"] and applied["restart_needed"] is False, applied
    server.psql(f"CREATE DATABASE {DB}")
    server.psql("CREATE TABLE t (id serial PRIMARY KEY, batch int)", DB)
    dep.ok("pitr", "check", "app")
    yield server, dep
    dep.cleanup()


def insert(server: PostgresServer, batch: int, rows: int) -> None:
    server.psql(f"INSERT INTO t (batch) SELECT {batch} FROM generate_series(1, {rows})", DB)


def utc_now(server: PostgresServer) -> str:
    return server.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')")


def lsn_text(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def test_restore_to_an_lsn_gives_exactly_the_rows_before_it(pitr_pg_dir: Any) -> None:
    server, dep = pitr_pg_dir
    dep.ok("backup", "create", "app", "--type", "full")
    insert(server, 1, 100)
    lsn = server.psql("SELECT pg_current_wal_insert_lsn()")
    insert(server, 2, 50)
    segment = dep.ok("pitr", "check", "app", "-o", "json").json()["segment"]

    target = dep.root / "restored-lsn"
    result = dep.ok(
        "backup", "restore", "--deployment", "app", "--to-lsn", lsn, "--target", target, "-o", "json"
    ).json()
    assert result["recovery_settings"]["recovery_target_lsn"] == lsn, result
    assert result["recovery_settings"]["archive_mode"] == "off", result  # a side copy
    assert result["safety_backup"] is None, result
    port = start_restored(server, target)
    try:
        wait_promoted(server, port)
        assert batches(server, port, DB) == "1|100"
    finally:
        server.pg_ctl_stop(target)

    # An LSN whose segment is not archived yet: refused, with the way out.
    ahead = lsn_text(lsn_to_int(server.psql("SELECT pg_current_wal_insert_lsn()")) + 2 * WAL_SEGMENT_SIZE)
    early = dep.run("backup", "restore", "--deployment", "app", "--to-lsn", ahead, "--target", dep.root / "x")
    assert early.returncode != 0 and "the archive ends at segment" in early.stderr, str(early)
    assert "pitr check app" in early.stderr, str(early)

    # An LSN past a segment missing from the archive: refused with the reason, nothing written.
    insert(server, 3, 25)
    late = server.psql("SELECT pg_current_wal_insert_lsn()")
    dep.ok("pitr", "check", "app")
    (dep.repository / "wal" / "app" / segment[:8] / segment).unlink()
    refused = dep.run(
        "backup", "restore", "--deployment", "app", "--to-lsn", late, "--target", dep.root / "refused"
    )
    assert refused.returncode != 0, str(refused)
    assert f"WAL segment {segment} is missing from the archive" in refused.stderr, str(refused)
    assert not (dep.root / "refused").exists()


def test_in_place_restore_to_a_time_promotes_archives_a_new_timeline_and_can_be_undone(
    pitr_pg_dir: Any,
) -> None:
    server, dep = pitr_pg_dir
    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    insert(server, 1, 100)
    time.sleep(1.5)
    between = utc_now(server)
    time.sleep(1.5)
    insert(server, 2, 50)
    dep.ok("pitr", "check", "app")
    before = batches(server, server.port, DB)
    assert before.splitlines() == ["1|100", "2|50"]
    restore = ("backup", "restore", "--deployment", "app", "--to-time", f"{between} UTC")

    # The server still runs on its data directory: refused before anything, no safety backup.
    running = dep.run(*restore, "--yes")
    assert running.returncode != 0 and "a PostgreSQL server is running on it" in running.stderr, str(running)
    assert [b["id"] for b in dep.ok("backup", "list", "--all", "-o", "json").json()] == [base["id"]]

    server.pg_ctl_stop(server.data)
    unconfirmed = dep.run(*restore)  # stdin is not a terminal: no confirmation, nothing done
    assert unconfirmed.returncode == ExitCode.ABORTED, str(unconfirmed)
    assert not (server.data / "recovery.signal").exists()

    result = dep.ok(*restore, "--yes", "-o", "json").json()
    assert result["backup"] == base["id"] and result["datadir"] == str(server.data), result
    assert "archive_mode" not in result["recovery_settings"], result  # the deployment's own server
    safety = result["safety_backup"]
    assert safety, result
    listed = {b["id"]: b for b in dep.ok("backup", "list", "--all", "-o", "json").json()}
    assert listed[safety]["status"] == "Completed", listed
    assert "safety backup" in listed[safety]["comment"], listed
    shown_safety = dep.ok("backup", "show", safety, "-o", "json").json()
    assert shown_safety["sources"][0]["info"]["offline"] is True, shown_safety
    assert (server.data / "recovery.signal").exists()

    # The server starts on its own data directory, replays to the moment and promotes.
    server.pg_ctl_start(server.data)
    wait_promoted(server, server.port)
    assert batches(server, server.port, DB) == "1|100"
    assert server.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000002"

    # It keeps archiving, now on timeline 2, and the window says so.
    check = dep.ok("pitr", "check", "app", "-o", "json").json()
    assert check["ok"] and check["segment"].startswith("00000002"), check
    shown = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert shown["timelines"] == [1, 2], shown
    changes = [g for g in shown["gaps"] if g["kind"] == "timeline_change"]
    assert [(g["timeline"], g["history_file"]) for g in changes] == [(2, True)], shown
    assert not [g for g in shown["gaps"] if g["kind"] == "missing_segments"], shown
    # The offline safety copy is no base for replay: only the pg_basebackup backup is listed.
    assert [(b["id"], b["usable"]) for b in shown["backups"]] == [(base["id"], True)], shown
    assert "timeline 2 starts at" in dep.ok("pitr", "show", "app").stdout
    assert dep.ok("pitr", "verify", "app", "-o", "json").json()["ok"] is True

    # Undo: the safety backup, restored in place, gives back the state before the restore.
    server.pg_ctl_stop(server.data)
    undo = dep.ok("backup", "restore", safety, "--yes", "--no-safety-backup", "-o", "json").json()
    assert undo["safety_backup"] is None, undo
    assert not (server.data / "recovery.signal").exists()
    server.pg_ctl_start(server.data)
    assert server.psql("SELECT pg_is_in_recovery()") == "f"
    assert batches(server, server.port, DB) == before
    assert server.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)") == "00000001"


# ---- copies on a remote destination: push, `pitr sync`, and a restore from the copy ------------


def stored_objects(cfg: dict[str, Any], prefix: str) -> dict[str, bytes]:
    """Every object under `prefix` at a destination, read with a fresh client."""
    dest = build_destination(cfg, "inspect")
    try:
        return {info.name: dest.get(info.name) for info in dest.list(prefix)}
    finally:
        dest.close()


def local_objects(root: Path, prefix: str) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in (root / prefix).rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def test_wal_copies_on_s3_are_byte_equal_pitr_sync_fills_gaps_and_a_restore_reads_them(
    fresh_pg_server: PostgresServer, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    server = fresh_pg_server
    dep = PitrDeployment([server.options(method="pg_basebackup")])
    try:
        # The archive_command runs as postgres, without the test's environment: the S3 keys are
        # files that user can read.
        s3 = destination_config("s3", request, tmp_path)
        for option in ("access_key_id", "secret_access_key"):
            key = dep.root / f"s3-{option}"
            key.write_text(os.environ[s3.pop(f"{option}_env")] + "\n")
            os.chmod(key, 0o600)
            os.chown(key, dep.owner.pw_uid, dep.owner.pw_gid)
            s3[f"{option}_file"] = str(key)
        doc = load_yaml(dep.config)
        doc["destinations"]["offsite"] = s3
        doc["deployments"]["app"]["destinations"] = ["local", "offsite"]
        dump_yaml(doc, dep.config)

        prefix = light_command(extra=S3_PACKAGES)
        dep.ok("pitr", "setup", "app", "--command", prefix)
        dep.hand_over()
        dep.ok("pitr", "setup", "app", "--apply", "--command", prefix)
        server.psql(f"CREATE DATABASE {DB}")
        server.psql("CREATE TABLE t (id serial PRIMARY KEY, batch int)", DB)
        dep.ok("pitr", "check", "app")
        base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
        assert base["destinations"]["offsite"]["state"] == "uploaded", base
        insert(server, 1, 100)
        time.sleep(1.5)
        between = utc_now(server)
        time.sleep(1.5)
        insert(server, 2, 50)
        dep.ok("pitr", "check", "app")

        # Each push copied its object to S3 as it is stored locally, byte for byte.
        wal = "wal/app/"
        local = local_objects(dep.repository, wal)
        assert sum(1 for name in local if name.rsplit("/", 1)[-1][:1] == "0") >= 3, sorted(local)
        assert stored_objects(s3, wal) == local

        # Objects lost on S3 come back with `pitr sync`; what is there is left alone.
        lost = sorted(local)[:2]
        dest = build_destination(s3, "inspect")
        try:
            for name in lost:
                dest.delete(name)
        finally:
            dest.close()
        assert set(stored_objects(s3, wal)) == set(local) - set(lost)
        synced = dep.ok("pitr", "sync", "app", "-o", "json").json()
        assert synced["destinations"]["offsite"] == {"copied": 2, "present": len(local) - 2}, synced
        assert stored_objects(s3, wal) == local
        again = dep.ok("pitr", "sync", "app", "-o", "json").json()
        assert again["destinations"]["offsite"] == {"present": len(local)}, again

        # `wal fetch` falls back to the other destinations: a segment lost locally, then the
        # whole local repository, is read from S3 (config unchanged), byte for byte.
        segment = next(n for n in sorted(local) if n.rsplit("/", 1)[-1][:1] == "0")
        seg_name = segment.rsplit("/", 1)[-1]
        first = dep.ok("wal", "fetch", seg_name, tmp_path / "from-local", "-o", "json").json()
        assert first["destination"] == "local", first
        (dep.repository / segment).unlink()
        second = dep.ok("wal", "fetch", seg_name, tmp_path / "from-s3", "-o", "json").json()
        assert second["destination"] == "offsite", second
        assert (tmp_path / "from-s3").read_bytes() == (tmp_path / "from-local").read_bytes()
        missing = dep.run("wal", "fetch", "00000001000000FF000000FF", tmp_path / "none")
        assert missing.returncode == 1 and not (tmp_path / "none").exists(), str(missing)

        # The local disk is gone: with the S3 destination alone (a fresh machine's state), the
        # restore reads the base backup and, through restore_command as postgres, the WAL from S3.
        shutil.rmtree(dep.repository)
        third = dep.ok("wal", "fetch", seg_name, tmp_path / "no-local", "-o", "json").json()
        assert third["destination"] == "offsite", third
        assert (tmp_path / "no-local").read_bytes() == (tmp_path / "from-local").read_bytes()
        doc["deployments"]["app"]["destinations"] = ["offsite"]
        dump_yaml(doc, dep.config)
        fresh = {"XDG_STATE_HOME": str(tmp_path / "fresh-state")}
        target = dep.root / "restored-from-s3"
        dep.ok(
            "backup",
            "restore",
            "--deployment",
            "app",
            "--to-time",
            f"{between} UTC",
            "--target",
            target,
            env=fresh,
        )
        port = start_restored(server, target)
        try:
            wait_promoted(server, port)
            assert batches(server, port, DB) == "1|100"
        finally:
            server.pg_ctl_stop(target)
    finally:
        dep.cleanup()
