"""Point-in-time recovery for MariaDB against a throwaway server, through the CLI.

A mariabackup backup early; batches of rows written a second or two apart with binary log
rotations between some of them; `binlog sync --flush` archives the closed logs (twice: the
second run archives nothing). Restores to a moment between two batches and to a binary log
position must contain exactly the rows written before it. A binary log deleted from the
archive is reported by `pitr show`/`pitr verify` and a restore past it is refused with the
reason.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import MariaDBServer


@contextlib.contextmanager
def started(server: MariaDBServer, datadir: Path) -> Iterator[Any]:
    """mariadbd on a restored datadir (own socket, no networking); yields a SQL function."""
    assert server.mariadbd and server.client
    run_dir = Path(tempfile.mkdtemp(prefix="bctl-check-"))
    sock = run_dir / "s.sock"
    proc = subprocess.Popen(
        [
            server.mariadbd,
            "--no-defaults",
            "--user=root",
            f"--datadir={datadir}",
            f"--socket={sock}",
            "--skip-networking",
            "--skip-log-bin",
            f"--pid-file={run_dir / 'pid'}",
            f"--log-error={run_dir / 'error.log'}",
            "--innodb-buffer-pool-size=64M",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )

    def sql(query: str) -> str:
        res = subprocess.run(
            [
                str(server.client),
                "--no-defaults",
                f"--socket={sock}",
                "-uroot",
                "--batch",
                "--skip-column-names",
                "-e",
                query,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if res.returncode != 0:
            raise RuntimeError(res.stderr)
        return res.stdout.strip()

    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"mariadbd on {datadir} exited: {(run_dir / 'error.log').read_text()[-2000:]}"
                )
            try:
                sql("SELECT 1")
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield sql
    finally:
        proc.terminate()
        proc.wait(timeout=120)
        shutil.rmtree(run_dir, ignore_errors=True)


def master_status(server: MariaDBServer) -> tuple[str, int]:
    file, pos = server.root_sql("SHOW MASTER STATUS").split("\t")[:2]
    return file, int(pos)


@pytest.mark.server
def test_restore_to_a_time_and_to_a_position_gives_exactly_the_rows_before_it(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = fresh_mariadb_server
    db = f"pitr_{uuid.uuid4().hex[:8]}"
    dep = make_deployment([server.options(method="mariabackup")])

    def batch(n: int, rows: int) -> None:
        server.root_sql(f"INSERT INTO {db}.t (batch) SELECT {n} FROM seq_1_to_{rows}")

    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, batch INT,"
        " at DATETIME(6) DEFAULT NOW(6)) ENGINE=InnoDB"
    )
    batch(0, 10)
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    assert dep.show(backup["id"])["method"] == "mariabackup"

    time.sleep(1.2)
    batch(1, 100)
    server.root_sql("CREATE USER 'pitr_reader'@'localhost'; GRANT SELECT ON *.* TO 'pitr_reader'@'localhost'")
    time.sleep(1.5)
    between_1_2 = server.root_sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
    time.sleep(1.5)
    batch(2, 50)
    file_2, _ = master_status(server)
    server.root_sql("FLUSH BINARY LOGS")
    time.sleep(1.2)
    batch(3, 25)
    file_3, after_3 = master_status(server)
    assert file_3 != file_2
    batch(4, 5)
    server.root_sql("FLUSH BINARY LOGS")
    time.sleep(1.2)
    batch(5, 1)

    first = dep.ok("binlog", "sync", "app", "--flush", "-o", "json").json()
    names = [f["file"] for f in first["archived"]]
    assert file_2 in names and file_3 in names, first
    assert all(f["state"] == "stored" for f in first["archived"]), first
    assert server.password not in str(first)
    again = dep.ok("binlog", "sync", "app", "-o", "json").json()
    assert again["archived"] == [] and set(names) <= set(again["already_archived"]), again
    stored = dep.repository / "binlog" / "app" / file_3
    assert stored.exists() and b"INSERT" not in stored.read_bytes()  # encrypted

    window = dep.ok("pitr", "show", "app", "-o", "json").json()
    assert window["engine"] == "mariadb" and window["gaps"] == [], window
    assert window["earliest"] and window["latest"], window
    assert window["earliest"] < between_1_2.replace(" ", "T") < window["latest"], window
    (rng,) = window["backups"]
    assert rng["usable"] and rng["id"] == backup["id"] and rng["start_position"] > 4, rng
    assert dep.ok("pitr", "verify", "app", "-o", "json").json()["ok"]
    table = dep.ok("pitr", "show", "app").stdout
    assert "Earliest" in table and "Latest" in table
    reach = dep.ok("backup", "show", backup["id"], "-o", "json").json()["pitr"]
    assert reach["earliest"] <= backup["finished"] <= reach["latest"] == window["latest"], reach
    assert reach["gaps"] == 0, reach

    work = Path(tempfile.mkdtemp(prefix="backupctl-pitr-mariadb-"))
    try:
        # To a time between batch 1 and batch 2: exactly batches 0 and 1.
        target = work / "by-time"
        result = dep.ok(
            "backup", "restore", "--deployment", "app", "--to-time", f"{between_1_2} UTC", "--target", target,
            "-o", "json",
        ).json()  # fmt: skip
        assert result["engine"] == "mariadb" and result["backup"] == backup["id"], result
        assert result["replay"]["start_file"] == rng["start_file"], result
        assert result["binlogs"][0] == rng["start_file"] and file_3 not in result["binlogs"], result
        with started(server, target) as sql:
            assert sql(f"SELECT batch, count(*) FROM {db}.t GROUP BY batch ORDER BY batch").splitlines() == [
                "0\t10",
                "1\t100",
            ]
            assert sql("SELECT count(*) FROM mysql.user WHERE user = 'pitr_reader'") == "1"

        # To a position: everything before the event at FILE:POS, i.e. batches 0..3.
        target2 = work / "by-position"
        dep.ok(
            "backup",
            "restore",
            "--deployment",
            "app",
            "--to-position",
            f"{file_3}:{after_3}",
            "--target",
            target2,
        )
        with started(server, target2) as sql:
            assert sql(f"SELECT batch, count(*) FROM {db}.t GROUP BY batch ORDER BY batch").splitlines() == [
                "0\t10",
                "1\t100",
                "2\t50",
                "3\t25",
            ]

        # A binary log deleted from the archive: reported, and a restore past it refused.
        stored.unlink()
        shown = dep.ok("pitr", "show", "app", "-o", "json").json()
        gaps = [g for g in shown["gaps"] if g["kind"] == "missing_binlogs"]
        assert gaps and gaps[0]["first"] == file_3, shown
        assert shown["latest"] < window["latest"], shown
        verify = dep.run("pitr", "verify", "app", "-o", "json")
        assert verify.returncode == 7 and verify.json()["ok"] is False, str(verify)
        late = server.root_sql(f"SELECT DATE_FORMAT(MAX(at), '%Y-%m-%d %H:%i:%s.%f') FROM {db}.t")
        late_utc = server.root_sql(
            f"SELECT DATE_FORMAT(CONVERT_TZ('{late}', @@session.time_zone, '+00:00'), '%Y-%m-%d %H:%i:%s.%f')"
        )
        refused = dep.run(
            "backup",
            "restore",
            "--deployment",
            "app",
            "--to-time",
            f"{late_utc} UTC",
            "--target",
            work / "refused",
        )
        assert refused.returncode != 0, str(refused)
        assert f"binary log {file_3} is missing from the archive" in refused.stderr, str(refused)
        assert not (work / "refused").exists()
        by_pos = dep.run(
            "backup",
            "restore",
            "--deployment",
            "app",
            "--to-position",
            f"{file_3}:{after_3}",
            "--target",
            work / "refused",
        )
        assert by_pos.returncode != 0 and "missing from the archive" in by_pos.stderr, str(by_pos)
        assert not (work / "refused").exists()

        # --follow: one JSON line per round; with --flush each round archives the file it closed.
        proc = subprocess.Popen(
            helpers.cli_command(
                "binlog", "sync", "app", "--follow", "--interval", "1", "--flush", "-o", "json"
            ),
            env=helpers.cli_env(dep.env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        timer = threading.Timer(90, proc.kill)
        timer.start()
        try:
            assert proc.stdout is not None
            rounds = [json.loads(proc.stdout.readline()) for _ in range(2)]
        finally:
            timer.cancel()
            proc.terminate()
            proc.communicate(timeout=30)
        # Round 1 also re-archives the deleted file (still on the server), closing the gap.
        assert [len(r["archived"]) for r in rounds] == [2, 1], rounds
        assert rounds[0]["archived"][0]["file"] == file_3, rounds
        assert rounds[0]["current"] == rounds[1]["archived"][0]["file"], rounds
        assert dep.ok("pitr", "show", "app", "-o", "json").json()["gaps"] == []
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _event(ts: int, typ: int, body: bytes, pos: int) -> bytes:
    size = 19 + len(body)
    return struct.pack("<IBIIIH", ts, typ, 1, size, pos + size, 0) + body


def test_scan_binlog_reads_times_and_positions_and_refuses_damage() -> None:
    from backupctl.errors import IntegrityError
    from backupctl.pitr.binlog_format import scan_binlog
    from backupctl.pitr.mariadb_restore import stop_datetime
    from backupctl.timefmt import parse_iso_utc as parse_iso

    data = b"\xfebin"
    for ts, typ, body in (
        (1795318755, 15, bytes(80)),
        (1795318760, 162, bytes(23)),
        (1795318761, 4, bytes(30)),
    ):
        data += _event(ts, typ, body, len(data))
    facts = scan_binlog(data)
    assert facts["first_event_time"] == "2026-11-22T03:39:15.000000Z"
    assert facts["last_event_time"] == "2026-11-22T03:39:21.000000Z"
    assert facts["last_transaction_time"] == "2026-11-22T03:39:20.000000Z"
    assert facts["end_position"] == len(data) and facts["events"] == 3 and facts["closed_by"] == "rotate"
    for bad in (data[:-5], b"junk" + data[4:]):
        with pytest.raises(IntegrityError):
            scan_binlog(bad)
    # A time target replays events whose whole-second time is before it.
    assert stop_datetime(parse_iso("2026-11-22T03:39:20.300Z")) == "2026-11-22 03:39:21"
    assert stop_datetime(parse_iso("2026-11-22T03:39:20Z")) == "2026-11-22 03:39:20"
