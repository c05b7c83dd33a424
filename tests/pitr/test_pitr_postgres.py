"""Point-in-time recovery for PostgreSQL against a throwaway server, through the CLI.

archive_command = backupctl's light entry point (run as the postgres OS user); base backup;
batches of rows written a second or two apart; restores to a moment between two batches and
to a named restore point must contain exactly the rows written before it. A deleted segment
is reported by `pitr show`/`pitr verify` and a restore past it is refused with the reason.
A segment pushed twice is accepted once; a different one under the same name is refused.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from dbservers import PostgresServer, free_port
from pitr_helpers import PitrDeployment, light_command

pytestmark = pytest.mark.server


def wait_promoted(server: PostgresServer, port: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            if server.psql("SELECT pg_is_in_recovery()", port=port) == "f":
                return
        except RuntimeError as exc:
            last = str(exc)
        time.sleep(0.3)
    raise AssertionError(f"the restored server was not promoted within {timeout} s: {last}")


def start_restored(server: PostgresServer, datadir: Path) -> int:
    port = free_port()
    with open(datadir / "postgresql.auto.conf", "a") as fh:
        fh.write(f"port = {port}\n")
    server.pg_ctl_start(datadir, log=server.base / f"{datadir.name}.log")
    return port


def batches(server: PostgresServer, port: int, db: str) -> str:
    return server.psql("SELECT batch, count(*) FROM t GROUP BY batch ORDER BY batch", db, port=port)


def test_restore_to_a_time_and_to_a_restore_point_gives_exactly_the_rows_before_it(pitr_pg: Any) -> None:
    server, dep = pitr_pg
    db = "pitr"
    server.psql(f"CREATE DATABASE {db}")
    server.psql(
        "CREATE TABLE t (id serial PRIMARY KEY, batch int, at timestamptz DEFAULT clock_timestamp())", db
    )
    check = dep.ok("pitr", "check", "app", "-o", "json").json()
    assert check["ok"] and (dep.repository / check["object"]).exists(), check

    base = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    server.psql("INSERT INTO t (batch) SELECT 1 FROM generate_series(1, 100)", db)
    time.sleep(1.5)
    between_1_2 = server.psql(
        "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')"
    )
    time.sleep(1.5)
    server.psql("INSERT INTO t (batch) SELECT 2 FROM generate_series(1, 50)", db)
    seg2 = dep.ok("pitr", "check", "app", "-o", "json").json()["segment"]
    server.psql("SELECT pg_create_restore_point('before_batch_3')")
    time.sleep(1.2)
    server.psql("INSERT INTO t (batch) SELECT 3 FROM generate_series(1, 25)", db)
    dep.ok("pitr", "check", "app")
    assert batches(server, server.port, db).splitlines() == ["1|100", "2|50", "3|25"]

    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert window["earliest"] and window["latest"], window
    assert window["earliest"] < between_1_2.replace(" ", "T") < window["latest"], window
    assert not [g for g in window["gaps"] if g["kind"] == "missing_segments"], window
    assert dep.ok("pitr", "verify", "app", "-o", "json").json()["ok"]

    # The window reachable from this backup, in `backup show`; the deployment's in `policy show`.
    shown_backup = dep.ok("backup", "show", base["id"], "-o", "json").json()
    reach = shown_backup["pitr"]
    assert reach["gaps"] == 0 and reach["earliest"] == shown_backup["finished"], reach
    assert reach["earliest"] <= shown_backup["finished"] <= reach["latest"], reach
    assert reach["latest"] == window["latest"], (reach, window)
    assert "Recoverable" in dep.ok("backup", "show", base["id"]).stdout
    policy = dep.ok("policy", "show", "default", "-o", "json").json()
    assert policy["pitr"]["app"]["earliest"] == window["earliest"], policy
    assert policy["pitr"]["app"]["latest"] == window["latest"], policy

    # Retention: the segment archived before the only base backup goes; everything after stays.
    first_check = check["object"]
    pruned = dep.ok("pitr", "prune", "app", "--yes", "-o", "json").json()
    assert first_check in pruned["deleted"], pruned
    assert not (dep.repository / first_check).exists()
    start = pruned["keep_from"]["wal"]["segment"]
    assert all(name.rsplit("/", 1)[-1] < start for name in pruned["deleted"]), pruned
    assert (dep.repository / "wal" / "app" / start[:8] / start).exists()

    # To a time between batch 1 and batch 2: exactly batch 1.
    target = dep.root / "restored-time"
    result = dep.ok(
        "backup",
        "restore",
        "--deployment",
        "app",
        "--to-time",
        f"{between_1_2} UTC",
        "--target",
        target,
        "-o",
        "json",
    ).json()
    assert result["recovery_settings"]["recovery_target_time"].startswith(between_1_2[:19]), result
    assert (target / "recovery.signal").exists()
    port = start_restored(server, target)
    try:
        wait_promoted(server, port)
        assert batches(server, port, db) == "1|100"
    finally:
        server.pg_ctl_stop(target)

    # To the named restore point: batches 1 and 2, not 3.
    target2 = dep.root / "restored-name"
    dep.ok("backup", "restore", "--deployment", "app", "--to-name", "before_batch_3", "--target", target2)
    port2 = start_restored(server, target2)
    try:
        wait_promoted(server, port2)
        assert batches(server, port2, db).splitlines() == ["1|100", "2|50"]
    finally:
        server.pg_ctl_stop(target2)

    missing_name = dep.run(
        "backup", "restore", "--deployment", "app", "--to-name", "nope", "--target", dep.root / "x"
    )
    assert missing_name.returncode != 0 and "no restore point named 'nope'" in missing_name.stderr, str(
        missing_name
    )

    # A segment deleted from the archive: reported, and a restore past it refused with the reason.
    obj = dep.repository / "wal" / "app" / seg2[:8] / seg2
    obj.unlink()
    shown = dep.ok("pitr", "show", "app", "-o", "json").json()
    gaps = [g for g in shown["gaps"] if g["kind"] == "missing_segments"]
    assert gaps and gaps[0]["first"] == seg2, shown
    assert shown["latest"] < window["latest"], shown
    verify = dep.run("pitr", "verify", "app", "-o", "json")
    assert verify.returncode == 7 and verify.json()["ok"] is False, str(verify)
    late = server.psql("SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') FROM t", db)
    refused = dep.run(
        "backup",
        "restore",
        "--deployment",
        "app",
        "--to-time",
        f"{late} UTC",
        "--target",
        dep.root / "refused",
    )
    assert refused.returncode != 0, str(refused)
    assert f"WAL segment {seg2} is missing from the archive" in refused.stderr, str(refused)
    assert not (dep.root / "refused").exists()


def test_a_segment_pushed_twice_is_accepted_once_and_a_different_one_is_refused(tmp_path: Path) -> None:
    dep = PitrDeployment([{"type": "postgres", "host": "127.0.0.1", "port": 1, "method": "pg_basebackup"}])
    try:
        dep.ok("pitr", "setup", "app")
        seg = tmp_path / "000000010000000000000042"
        payload = os.urandom(1 << 20) + bytes(15 << 20)
        seg.write_bytes(payload)
        prefix = light_command(user="root").split()
        env = {**os.environ, "BACKUPCTL_CONFIG": str(dep.config)}
        first = subprocess.run([*prefix, "push", str(seg)], env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        stored = dep.repository / "wal" / "app" / "00000001" / seg.name
        before = stored.stat()
        assert stored.stat().st_size < len(payload) // 4  # compressed
        assert payload[: 1 << 16] not in stored.read_bytes()  # encrypted
        again = dep.ok("wal", "push", str(seg), "--deployment", "app", "-o", "json").json()
        assert again["state"] == "already archived", again
        assert stored.stat().st_mtime_ns == before.st_mtime_ns and stored.stat().st_ino == before.st_ino

        seg.write_bytes(os.urandom(1 << 20) + bytes(15 << 20))
        conflict = subprocess.run([*prefix, "push", str(seg)], env=env, capture_output=True, text=True)
        assert conflict.returncode != 0 and "DIFFERENT" in conflict.stderr, conflict.stderr
        conflict_cli = dep.run("wal", "push", str(seg))
        assert conflict_cli.returncode != 0 and "DIFFERENT" in conflict_cli.stderr, str(conflict_cli)

        out = tmp_path / "fetched"
        dep.ok("wal", "fetch", seg.name, out)
        assert out.read_bytes() == payload
        missing = subprocess.run(
            [*prefix, "fetch", "000000010000000000000043", str(tmp_path / "m")],
            env=env,
            capture_output=True,
            text=True,
        )
        assert missing.returncode == 1 and not (tmp_path / "m").exists(), missing.stderr
    finally:
        dep.cleanup()
