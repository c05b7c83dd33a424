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
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import (  # noqa: E402
    MB,
    StepFailed,
    Timed,
    git_commit,
    json_doc,
    log,
    median,
    run,
    run_pipeline,
    sync,
    tree_bytes,
)

TARGET_VS_DUMP = 1.25
DUMP_OPTIONS = [
    "--single-transaction",
    "--routines",
    "--events",
    "--triggers",
    "--hex-blob",
    "--skip-dump-date",
    "--default-character-set=utf8mb4",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.data = base / "data"
        self.sock = base / "mysqld.sock"
        self.port = free_port()
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


class BackupctlMaria:
    def __init__(self, work: Path, s: Server, binary: str) -> None:
        self.work = work / "backupctl"
        self.work.mkdir(parents=True, exist_ok=True)
        self.s = s
        self.binary = binary
        self.config = self.work / "backupctl.yaml"
        self.logfile = self.work / "stderr.log"
        self.repo = self.work / "repo"
        base = self.work / "xdg"
        self.env = {f"XDG_{k}_HOME": str(base / k.lower()) for k in ("STATE", "CONFIG", "DATA", "CACHE")}
        self.ids: dict[str, str] = {}
        self.restore_flags: list[str] = []

    def cli(self, *args: str) -> list[str]:
        return [self.binary, "--config", str(self.config), *args]

    def setup(self) -> str | None:
        if shutil.which(self.binary) is None:
            return "backupctl is not installed (pip install -e .)"
        key = self.work / "repo.key"
        try:
            run(
                self.cli("init", "--repository", str(self.repo), "--key-file", str(key)),
                env=self.env,
                log=self.logfile,
            )
        except StepFailed as exc:
            return f"`backupctl init` failed: {exc}"
        src = f"{{type: mariadb, socket: {json.dumps(str(self.s.sock))}, user: root, databases: [bench]"
        self.config.write_text(
            "destinations:\n"
            f"  local: {{type: local, path: {json.dumps(str(self.repo))}}}\n"
            "deployments:\n"
            "  logical:\n"
            f"    sources: [{src}, method: mariadb-dump}}]\n"
            "    destinations: [local]\n"
            "    policy: none\n"
            "  physical:\n"
            f"    sources: [{src}, method: mariabackup, datadir: {json.dumps(str(self.s.data))}}}]\n"
            "    destinations: [local]\n"
            "    policy: none\n"
            "encryption:\n"
            f"  key_file: {json.dumps(str(key))}\n"
        )
        check = subprocess.run(
            self.cli("config", "validate"), capture_output=True, text=True, env=os.environ | self.env
        )
        if check.returncode != 0:
            return (
                "backupctl does not accept the mariadb source yet: "
                + (check.stderr or check.stdout).strip()[-500:]
            )
        helptext = subprocess.run(
            self.cli("backup", "restore", "--help"), capture_output=True, text=True
        ).stdout
        if "--no-safety-backup" in helptext:
            self.restore_flags = ["--no-safety-backup"]
        return None

    def backup(self, deployment: str) -> Timed:
        # Always full: a physical incremental would measure something else.
        t = run(
            self.cli("-o", "json", "backup", "create", deployment, "--type", "full"),
            env=self.env,
            log=self.logfile,
        )
        self.ids[deployment] = str(json_doc(t.stdout)["id"])
        return t

    def restore(self, deployment: str) -> Timed:
        return run(
            self.cli("backup", "restore", self.ids[deployment], "--yes", *self.restore_flags),
            env=self.env,
            log=self.logfile,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=3_000_000, help="accounts rows (pgbench -s 30: 3,000,000)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("bench-mariadb.json"))
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--backupctl", default="backupctl")
    ap.add_argument("--restic", default="restic")
    args = ap.parse_args()

    for tool in ("mariadbd", "mariadb-install-db", "mariadb-dump", "mariabackup"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} not found (apt-get install mariadb-server mariadb-backup)")
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-mariabench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[Timed]] = {}
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": args.rows,
        "runs": args.runs,
    }
    meta["commit"] = git_commit()

    def add(name: str, t: Timed) -> None:
        results.setdefault(name, []).append(t)

    def failed(name: str, exc: StepFailed) -> None:
        log(f"FAILED: {name}: {str(exc)[-600:]}")
        lines = str(exc).splitlines()
        meta.setdefault("failures", []).append(f"{name}: {lines[0]} / {lines[-1]}")

    try:
        with server(work / "mariadb") as s:
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

            restic_env = {
                "RESTIC_REPOSITORY": str(work / "restic-repo"),
                "RESTIC_PASSWORD_FILE": str(work / "restic-password"),
                "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            }
            (work / "restic-password").write_text("bench-password-not-secret\n")
            (work / "restic-password").chmod(0o600)
            run([args.restic, "init", "--repository-version", "2"], env=restic_env, log=work / "restic.log")

            def restic_stdin(name: str) -> list[str]:
                return [
                    args.restic,
                    "backup",
                    "--quiet",
                    "--host",
                    "bench",
                    "--stdin",
                    "--stdin-filename",
                    name,
                ]

            def fresh_mb_dir() -> None:
                # mariabackup wants an empty --target-dir even when it streams.
                shutil.rmtree(mb_dir, ignore_errors=True)
                mb_dir.mkdir()

            def mb_alone() -> Timed:
                fresh_mb_dir()
                return run(mb_cmd, stdout=subprocess.DEVNULL, log=work / "mb.log")

            def mb_restic() -> Timed:
                fresh_mb_dir()
                return run_pipeline(
                    [mb_cmd, restic_stdin("bench.xbstream")], env=restic_env, log=work / "restic.log"
                )

            bc = BackupctlMaria(work, s, args.backupctl)
            why_not = bc.setup()
            if why_not:
                log(f"SKIPPING backupctl: {why_not}")
                meta["backupctl_skipped"] = why_not

            for i in range(args.runs):
                steps: list[tuple[str, Callable[[], Timed]]] = [
                    (
                        "mariadb-dump > /dev/null",
                        lambda: run(dump_cmd, stdout=subprocess.DEVNULL, log=work / "dump.log"),
                    ),
                    (
                        "mariadb-dump | restic backup --stdin",
                        lambda: run_pipeline(
                            [dump_cmd, restic_stdin("bench.sql")], env=restic_env, log=work / "restic.log"
                        ),
                    ),
                    (
                        "mariabackup --stream > /dev/null",
                        mb_alone,
                    ),
                    (
                        "mariabackup --stream | restic backup --stdin",
                        mb_restic,
                    ),
                ]
                if not why_not:
                    steps.append(("backupctl backup create (mariadb-dump)", lambda: bc.backup("logical")))
                    steps.append(("backupctl backup create (mariabackup)", lambda: bc.backup("physical")))
                for name, fn in steps if i % 2 == 0 else list(reversed(steps)):
                    sync()
                    log(f"run {i}: {name}")
                    try:
                        add(name, fn())
                    except StepFailed as exc:
                        if not name.startswith("backupctl"):
                            raise
                        failed(name, exc)

                s.sql("DROP DATABASE IF EXISTS restore_sql; CREATE DATABASE restore_sql")
                sync()
                log(f"run {i}: mariadb < dump.sql")
                with open(dump, "rb") as dump_in:
                    add(
                        "mariadb < dump.sql (new database)",
                        run_pipeline(
                            [[*s.client, "restore_sql"]],
                            stdin=dump_in,
                            stdout=subprocess.DEVNULL,
                            log=work / "restore.log",
                        ),
                    )
                if not why_not and "logical" in bc.ids:
                    sync()
                    log(f"run {i}: backupctl restore (logical)")
                    try:
                        add("backupctl backup restore (mariadb-dump, in place)", bc.restore("logical"))
                    except StepFailed as exc:
                        failed("backupctl restore", exc)
                        continue
                    got = checksum(s, "bench")
                    if got != reference:
                        log(f"run {i}: backupctl restore DIFFERS: {got} != {reference}")
                        meta.setdefault("restore_mismatch", []).append(i)
            meta["restic_repo_bytes"] = tree_bytes(work / "restic-repo")[1]
            if not why_not:
                meta["backupctl_repo_bytes"] = tree_bytes(bc.repo)[1]
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    summary = {
        name: {"wall_s": median([t.wall_s for t in ts]), "peak_rss_mib": median([t.peak_rss_mib for t in ts])}
        for name, ts in results.items()
    }
    lines = [
        f"MariaDB {meta['server']}: pgbench-like tables, {args.rows:,} accounts, {meta['db_bytes'] / MB:.0f} MB in InnoDB,"
        f" plain dump {meta['dump_bytes'] / MB:.0f} MB, median of {args.runs}",
        "",
        "| step | time | peak RSS (largest process) |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {v['wall_s']:.2f} s | {v['peak_rss_mib']:.0f} MiB |" for n, v in summary.items()]
    pairs = [
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
    ]
    table = []
    for mine, floor, restic in pairs:
        if mine in summary:
            b, alone, r = summary[mine]["wall_s"], summary[floor]["wall_s"], summary[restic]["wall_s"]
            table.append(
                f"| {mine} <= 1.25x {floor} | {b / alone:.2f}x | {'met' if b <= TARGET_VS_DUMP * alone else '**missed**'} |"
            )
            table.append(
                f"| {mine} < {restic} | {b / r:.2f}x | {'met' if b < r else '**missed**'} |".replace(
                    " | restic", " \\| restic"
                )
            )
    restored = summary.get("backupctl backup restore (mariadb-dump, in place)")
    if restored:
        p = summary["mariadb < dump.sql (new database)"]["wall_s"]
        table.append(f"| restore vs mariadb < dump.sql | {restored['wall_s'] / p:.2f}x | - |")
    if table:
        lines += ["", "| target | measured | verdict |", "|---|---|---|", *table]
    if "backupctl_skipped" in meta:
        lines += ["", f"backupctl not measured: {meta['backupctl_skipped']}"]
    for problem in meta.get("failures", []):
        lines.append(f"\nFAILED: {problem}")
    if meta.get("restore_mismatch"):
        lines.append(f"\nbackupctl's restore did NOT match the source in runs {meta['restore_mismatch']}")
    md = "\n".join(lines)
    args.json.write_text(
        json.dumps(
            {
                "meta": meta,
                "summary": summary,
                "runs": {n: [t.as_dict() for t in ts] for n, ts in results.items()},
            },
            indent=2,
        )
        + "\n"
    )
    if args.md:
        args.md.write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
