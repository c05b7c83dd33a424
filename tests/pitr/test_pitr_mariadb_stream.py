"""`binlog sync --follow --stream`: the binary log being written is archived as it grows.

Against a throwaway MariaDB, without any log rotation after the base backup:

* the follower streams the current file and stores it as a partial copy each round; the
  window (`pitr show`) then reaches the last streamed event, and `partial_binlog` names it;
* a restore to a moment inside the streamed file, and to a position in it, gives exactly
  the rows written before it (compared row by row);
* `pitr verify` checks the partial copy too;
* a restore whose replay fails leaves no half-restored target directory;
* once the file is closed and archived whole, its partial copy is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest
from dbservers import MariaDBServer

from pitr.test_pitr_mariadb import master_status, started

pytestmark = pytest.mark.server


def test_streamed_current_binlog_is_recoverable_without_rotation(
    fresh_mariadb_server: MariaDBServer, make_deployment: Any
) -> None:
    server = fresh_mariadb_server
    db = f"stream_{uuid.uuid4().hex[:8]}"
    dep = make_deployment([server.options(method="mariabackup")])

    def batch(n: int, rows: int) -> None:
        server.root_sql(f"INSERT INTO {db}.t (batch) SELECT {n} FROM seq_1_to_{rows}")

    server.root_sql(
        f"CREATE DATABASE {db}; CREATE TABLE {db}.t (id INT AUTO_INCREMENT PRIMARY KEY, batch INT)"
    )
    batch(0, 10)
    backup = dep.ok("backup", "create", "app", "--type", "full", "-o", "json").json()
    current, _ = master_status(server)

    proc = subprocess.Popen(
        helpers.cli_command("binlog", "sync", "app", "--follow", "--stream", "--interval", "1", "-o", "json"),
        env=helpers.cli_env(dep.env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    timer = threading.Timer(120, proc.kill)
    timer.start()
    rounds: list[dict[str, Any]] = []

    def until_streamed(position: int) -> dict[str, Any]:
        assert proc.stdout is not None
        while True:
            line = proc.stdout.readline()
            assert line, f"the follower stopped: {proc.stderr.read() if proc.stderr else ''}"
            rounds.append(json.loads(line))
            partial = rounds[-1].get("partial")
            if partial and partial["file"] == current and partial["end_position"] >= position:
                return partial

    work = Path(tempfile.mkdtemp(prefix="backupctl-binlog-stream-"))
    try:
        time.sleep(1.2)
        batch(1, 100)
        time.sleep(1.5)
        between_1_2 = server.root_sql("SELECT DATE_FORMAT(UTC_TIMESTAMP(6), '%Y-%m-%d %H:%i:%s.%f')")
        time.sleep(1.5)
        batch(2, 50)
        _, after_2 = master_status(server)
        batch(3, 5)
        file_now, after_3 = master_status(server)
        assert file_now == current  # nothing rotated the log: only the stream can have it
        partial = until_streamed(after_3)
        assert partial["stored"] is True and partial["end_position"] == after_3, partial
    finally:
        timer.cancel()
        proc.terminate()
        proc.communicate(timeout=30)
    try:
        assert all("error" not in r for r in rounds), rounds
        assert not (dep.repository / "binlog" / "app" / current).exists()
        stored = dep.repository / "binlog-partial" / "app" / current
        assert stored.exists() and b"INSERT" not in stored.read_bytes()  # encrypted

        window = dep.ok("pitr", "show", "app", "-o", "json").json()
        assert window["partial_binlog"] == current and window["gaps"] == [], window
        (rng,) = window["backups"]
        assert rng["usable"] and rng["id"] == backup["id"] and rng["last_file"] == current, rng
        assert window["earliest"] < between_1_2.replace(" ", "T") < window["latest"], window
        verify = dep.ok("pitr", "verify", "app", "-o", "json").json()
        assert verify["ok"] and verify["checked"] >= 1, verify

        target = work / "by-time"
        result = dep.ok(
            "backup", "restore", "--deployment", "app", "--to-time", f"{between_1_2} UTC", "--target", target,
            "-o", "json",
        ).json()  # fmt: skip
        assert result["binlogs"] == [current], result
        with started(server, target) as sql:
            rows = sql(f"SELECT batch, count(*) FROM {db}.t GROUP BY batch ORDER BY batch").splitlines()
            assert rows == ["0\t10", "1\t100"]

        target2 = work / "by-position"
        dep.ok(
            "backup", "restore", "--deployment", "app", "--to-position", f"{current}:{after_2}",
            "--target", target2,
        )  # fmt: skip
        with started(server, target2) as sql:
            rows = sql(f"SELECT batch, count(*) FROM {db}.t GROUP BY batch ORDER BY batch").splitlines()
            assert rows == ["0\t10", "1\t100", "2\t50"]

        # A replay that fails after the base backup was written leaves no directory that
        # would start with the backup's rows only: the target is removed again.
        fake_bin = work / "bin"
        fake_bin.mkdir()
        failing = fake_bin / "mariadb-binlog"
        failing.write_text("#!/bin/sh\necho 'simulated decoder failure' >&2\nexit 1\n")
        failing.chmod(0o755)
        target3 = work / "failed"
        failed = dep.run(
            "backup", "restore", "--deployment", "app", "--to-time", f"{between_1_2} UTC", "--target", target3,
            env={"PATH": f"{fake_bin}:{os.environ['PATH']}"},
        )  # fmt: skip
        assert failed.returncode == 1 and "simulated decoder failure" in failed.stderr, str(failed)
        assert not target3.exists()

        # Closed and archived whole: the partial copy goes, the window stays.
        server.root_sql("FLUSH BINARY LOGS")
        synced = dep.ok("binlog", "sync", "app", "-o", "json").json()
        assert [f["file"] for f in synced["archived"]] == [current], synced
        assert not stored.exists()
        after = dep.ok("pitr", "show", "app", "-o", "json").json()
        assert after["partial_binlog"] is None and after["latest"] >= window["latest"], after

        # --stream without --follow is a usage error.
        bad = dep.run("binlog", "sync", "app", "--stream")
        assert bad.returncode == 2 and "--follow" in bad.stderr and "Traceback" not in bad.stderr, str(bad)
    finally:
        shutil.rmtree(work, ignore_errors=True)
