#!/usr/bin/env python3
"""Benchmark backupctl's MariaDB backups (issue 4, section 7), the counterpart of run_postgres.py.

Starts a throwaway MariaDB (mariadb-install-db + mariadbd --no-defaults on a temp datadir,
socket and free port, 127.0.0.1 only, binlog on), creates database `bench` with the same
table set as `pgbench -i -s 30` (accounts 3,000,000 rows with an 84-char filler, tellers,
branches, an empty history), then measures side by side, median of --runs, alternating:

  logical   mariadb-dump > /dev/null                 (the floor; backupctl's own options)
            mariadb-dump | restic backup --stdin
            backupctl backup create (method mariadb-dump)
  physical  mariabackup --backup --stream=xbstream > /dev/null
            mariabackup ... | restic backup --stdin
            backupctl backup create (method mariabackup)
  restore   mariadb < dump.sql                        into a new database
            backupctl backup restore ID --yes --no-safety-backup   (logical, in place)

Root logs in over the socket (unix_socket authentication); no password anywhere.
Usage: python bench/run_mariadb.py [--rows 3000000] [--runs 3] [--json mariadb.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbbench  # noqa: E402
from measure import MB, StepFailed, Timed, log, run, run_pipeline, sync  # noqa: E402

DUMP_OPTIONS = [
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--skip-dump-date",
    "--default-character-set=utf8mb4",
]


class Server:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "mysqld.sock"
        self.port = dbbench.free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def client(self) -> list[str]:
        return ["mariadb", "--no-defaults", f"--socket={self.sock}", "-uroot"]

    def sql(self, sql: str, db: str = "mysql") -> str:
        res = subprocess.run(
            [*self.client, "--batch", "--skip-column-names", f"--database={db}", "-e", sql],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise RuntimeError(f"mariadb: {res.stderr.strip()}")
        return res.stdout.strip()

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "binlog").mkdir(exist_ok=True)
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                "--user=root",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
        )
        self.proc = subprocess.Popen(
            [
                "mariadbd",
                "--no-defaults",
                "--user=root",
                f"--datadir={self.data}",
                f"--socket={self.sock}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--log-bin={self.base / 'binlog' / 'mariadb-bin'}",
                "--server-id=1",
                f"--log-error={self.base / 'error.log'}",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=512M",
                "--innodb-log-file-size=256M",
                "--innodb-flush-log-at-trx-commit=2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sql("SELECT 1")
                return
            except RuntimeError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("mariadbd did not start; see " + str(self.base / "error.log")) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def server(base: Path) -> Iterator[Server]:
    s = Server(base)
    try:
        s.start()
        yield s
    finally:
        s.stop()


def load_pgbench_like(s: Server, rows: int) -> None:
    """pgbench's schema and data shape: 100,000 accounts per branch, 10 tellers per branch."""
    branches = max(1, rows // 100_000)
    s.sql("CREATE DATABASE bench")
    s.sql(
        "CREATE TABLE branches (bid INT PRIMARY KEY, bbalance INT, filler CHAR(88));"
        "CREATE TABLE tellers (tid INT PRIMARY KEY, bid INT, tbalance INT, filler CHAR(84));"
        "CREATE TABLE accounts (aid INT PRIMARY KEY, bid INT, abalance INT, filler CHAR(84));"
        "CREATE TABLE history (tid INT, bid INT, aid INT, delta INT, mtime DATETIME, filler CHAR(22));",
        db="bench",
    )
    s.sql(
        f"INSERT INTO branches SELECT seq, 0, NULL FROM seq_1_to_{branches};"
        f"INSERT INTO tellers SELECT seq, (seq - 1) DIV 10 + 1, 0, NULL FROM seq_1_to_{branches * 10};"
        f"INSERT INTO accounts SELECT seq, (seq - 1) DIV 100000 + 1, 0, '' FROM seq_1_to_{rows};"
        "ANALYZE TABLE accounts, branches, tellers, history;",
        db="bench",
    )


def checksum(s: Server, db: str) -> str:
    return s.sql("CHECKSUM TABLE accounts, branches, tellers, history EXTENDED", db=db).replace("\n", ";")


class BackupctlMaria(dbbench.Backupctl[Server]):
    source_type = "mariadb"

    def sources(self) -> dict[str, str]:
        src = f"{{type: mariadb, socket: {json.dumps(str(self.server.sock))}, user: root, databases: [bench]"
        return {
            "logical": f"{src}, method: mariadb-dump}}",
            "physical": f"{src}, method: mariabackup, datadir: {json.dumps(str(self.server.data))}}}",
        }

    def full_backup(self, deployment: str) -> Timed:
        # Always full: a physical incremental would measure something else.
        return self.backup(deployment, "--type", "full")

    def restore(self, deployment: str) -> Timed:
        return run(
            self.cli("backup", "restore", self.ids[deployment], "--yes", *self.restore_flags),
            env=self.env,
            log=self.logfile,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="accounts rows (pgbench -s 30: 3,000,000)")
    dbbench.add_common_args(ap, "bench-mariadb.json")
    args = ap.parse_args()

    for tool in ("mariadbd", "mariadb-install-db", "mariadb-dump", "mariabackup"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} not found (apt-get install mariadb-server mariadb-backup)")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    res = dbbench.Results(args.runs, rows=args.rows)
    meta = res.meta
    with (
        dbbench.scratch(args.work, "backupctl-mariabench-", args.keep) as work,
        server(work / "mariadb") as s,
    ):
        meta["server"] = s.sql("SELECT VERSION()")
        log(f"mariadbd on port {s.port}; loading {args.rows} accounts")
        load_pgbench_like(s, args.rows)
        meta["db_bytes"] = int(
            s.sql(
                "SELECT SUM(data_length + index_length) FROM information_schema.tables WHERE table_schema='bench'"
            )
        )
        reference = checksum(s, "bench")
        dump_cmd = [
            "mariadb-dump",
            "--no-defaults",
            f"--socket={s.sock}",
            "-uroot",
            *DUMP_OPTIONS,
            "--",
            "bench",
        ]
        mb_dir = work / "mb-target"
        mb_cmd = [
            "mariabackup",
            "--no-defaults",
            "--backup",
            "--stream=xbstream",
            f"--target-dir={mb_dir}",
            f"--datadir={s.data}",
            f"--socket={s.sock}",
            "--user=root",
        ]
        dump = work / "dump.sql"
        with open(dump, "wb") as f:
            run(dump_cmd, stdout=f)
        meta["dump_bytes"] = dump.stat().st_size

        restic = dbbench.Restic(work, args.restic)

        def fresh_mb_dir() -> None:
            # mariabackup wants an empty --target-dir even when it streams.
            shutil.rmtree(mb_dir, ignore_errors=True)
            mb_dir.mkdir()

        def restore_sql() -> Timed:
            with open(dump, "rb") as dump_in:
                return run_pipeline(
                    [[*s.client, "restore_sql"]],
                    stdin=dump_in,
                    stdout=subprocess.DEVNULL,
                    log=work / "restore.log",
                )

        bc = BackupctlMaria(work, s, args.backupctl)
        why_not = res.setup_backupctl(bc)

        for i in range(args.runs):
            steps = [
                *dbbench.stream_steps("mariadb-dump", dump_cmd, restic, "bench.sql", work / "dump.log"),
                *dbbench.stream_steps(
                    "mariabackup --stream",
                    mb_cmd,
                    restic,
                    "bench.xbstream",
                    work / "mb.log",
                    before=fresh_mb_dir,
                ),
            ]
            if not why_not:
                steps.append(("backupctl backup create (mariadb-dump)", lambda: bc.full_backup("logical")))
                steps.append(("backupctl backup create (mariabackup)", lambda: bc.full_backup("physical")))
            res.steps(i, steps)

            s.sql("DROP DATABASE IF EXISTS restore_sql; CREATE DATABASE restore_sql")
            res.step(i, "mariadb < dump.sql (new database)", restore_sql, say="mariadb < dump.sql")
            if not why_not and "logical" in bc.ids:
                sync()
                log(f"run {i}: backupctl restore (logical)")
                try:
                    res.add("backupctl backup restore (mariadb-dump, in place)", bc.restore("logical"))
                except StepFailed as exc:
                    res.failed("backupctl restore", exc)
                    continue
                res.check_restore(i, checksum(s, "bench"), reference)
        res.repo_sizes(restic, None if why_not else bc)

    summary = res.summary()
    targets: list[str] = []
    for mine, floor, through_restic in [
        (
            "backupctl backup create (mariadb-dump)",
            "mariadb-dump > /dev/null",
            "mariadb-dump | restic backup --stdin",
        ),
        (
            "backupctl backup create (mariabackup)",
            "mariabackup --stream > /dev/null",
            "mariabackup --stream | restic backup --stdin",
        ),
    ]:
        if mine in summary:
            targets += dbbench.backup_targets(summary, mine, floor, through_restic)
    restored = summary.get("backupctl backup restore (mariadb-dump, in place)")
    if restored:
        p = summary["mariadb < dump.sql (new database)"]["wall_s"]
        targets.append(dbbench.target_row("restore vs mariadb < dump.sql", restored["wall_s"] / p))
    res.report(
        f"MariaDB {meta['server']}: pgbench-like tables, {args.rows:,} accounts,"
        f" {meta['db_bytes'] / MB:.0f} MB in InnoDB, plain dump {meta['dump_bytes'] / MB:.0f} MB,"
        f" median of {args.runs}",
        targets,
        args.json,
        args.md,
    )


if __name__ == "__main__":
    main()
