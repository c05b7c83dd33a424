#!/usr/bin/env python3
"""Benchmark backupctl's PostgreSQL `pg_dump` backup and restore (issue 4, section 7).

Starts a throwaway PostgreSQL cluster (initdb through `runuser -u postgres`, a free high
port, 127.0.0.1 only), fills a database `bench` with `pgbench -i -s 30` (~478 MB on disk,
~292 MB plain dump), then measures side by side, median of --runs, alternating the order:

  backup   pg_dump > /dev/null                      (the floor: the dump alone)
           pg_dump | restic backup --stdin
           backupctl backup create pgbench          (method pg_dump + pg_dumpall --globals-only)
  restore  psql -f dump.sql into a new database     (the plain dump read from a file)
           restic dump latest | psql                into a new database
           backupctl backup restore ID --yes        (drops and recreates `bench`)

Targets: backupctl's backup <= 1.25x `pg_dump > /dev/null` and < `pg_dump | restic`.
Needs root (initdb refuses to run as root, so it runs as the postgres user).

Usage: sudo python bench/run_postgres.py [--scale 30] [--runs 3] [--json pg.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]
TARGET_VS_DUMP = 1.25


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A throwaway cluster: trust auth on 127.0.0.1 only, removed on exit."""

    def __init__(self, base: Path) -> None:
        bins = [b for b in PG_BIN_CANDIDATES if (b / "initdb").exists()]
        if not bins:
            raise SystemExit("PostgreSQL server binaries not found (apt-get install postgresql)")
        if os.geteuid() != 0:
            raise SystemExit("run as root: the cluster is started through `runuser -u postgres`")
        self.bin = bins[0]
        self.base = base
        self.data = base / "data"
        self.sock = base / "sock"
        self.port = free_port()
        self.pw = pwd.getpwnam("postgres")

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True)

    def start(self) -> None:
        for d in (self.base, self.sock):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, self.pw.pw_uid, self.pw.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"
        )
        with open(self.data / "postgresql.conf", "a") as f:
            f.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.sock}'\nshared_buffers = '256MB'\n"
            )
        self._as_postgres(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.base / "log"), "-w", "start"
        )

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_postgres(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def conn(self) -> list[str]:
        return ["-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]

    def psql(self, db: str, sql: str) -> str:
        return subprocess.run(
            ["psql", *self.conn, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()

    def recreate(self, db: str) -> None:
        self.psql("postgres", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        self.psql("postgres", f'CREATE DATABASE "{db}"')


@contextlib.contextmanager
def cluster(base: Path) -> Iterator[Cluster]:
    c = Cluster(base)
    c.start()
    try:
        yield c
    finally:
        c.stop()


def checksum(c: Cluster, db: str) -> str:
    """Row counts and an order-independent checksum of pgbench's tables."""
    parts = []
    for table in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history"):
        parts.append(
            c.psql(db, f"SELECT count(*), coalesce(sum(hashtext(t::text)::bigint), 0) FROM {table} t")
        )
    return ";".join(parts)


class BackupctlPg:
    def __init__(self, work: Path, c: Cluster, binary: str) -> None:
        self.work = work / "backupctl"
        self.work.mkdir(parents=True, exist_ok=True)
        self.c = c
        self.binary = binary
        self.config = self.work / "backupctl.yaml"
        self.logfile = self.work / "stderr.log"
        self.repo = self.work / "repo"
        base = self.work / "xdg"
        self.env = {f"XDG_{k}_HOME": str(base / k.lower()) for k in ("STATE", "CONFIG", "DATA", "CACHE")}
        self.last_id = ""
        self.restore_flags: list[str] = []

    def cli(self, *args: str) -> list[str]:
        return [self.binary, "--config", str(self.config), *args]

    def setup(self) -> str | None:
        """Write the config; returns why backupctl cannot run this benchmark, or None."""
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
        self.config.write_text(
            "destinations:\n"
            f"  local: {{type: local, path: {json.dumps(str(self.repo))}}}\n"
            "deployments:\n"
            "  pgbench:\n"
            "    sources:\n"
            f"      - {{type: postgres, host: 127.0.0.1, port: {self.c.port}, user: postgres,"
            " databases: [bench], method: pg_dump}\n"
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
                "backupctl does not accept the postgres source yet: "
                + (check.stderr or check.stdout).strip()[-500:]
            )
        helptext = subprocess.run(
            self.cli("backup", "restore", "--help"), capture_output=True, text=True
        ).stdout
        if "--no-safety-backup" in helptext:
            # The safety backup is a second full dump; the comparison is restore against psql.
            self.restore_flags = ["--no-safety-backup"]
        return None

    def backup(self) -> Timed:
        t = run(self.cli("-o", "json", "backup", "create", "pgbench"), env=self.env, log=self.logfile)
        self.last_id = str(json_doc(t.stdout)["id"])
        return t

    def restore(self) -> tuple[Timed, float, bool]:
        """(timing, the restore's own duration_s from its JSON, whether a safety backup ran first)."""
        t = run(
            self.cli("-o", "json", "backup", "restore", self.last_id, "--yes", *self.restore_flags),
            env=self.env,
            log=self.logfile,
        )
        try:
            doc = json_doc(t.stdout)
        except json.JSONDecodeError:
            doc = {}
        return t, float(doc.get("duration_s", t.wall_s)), bool(doc.get("safety_backup"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=int, default=30, help="pgbench -i -s SCALE (30: ~478 MB)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=Path, default=Path("bench-postgres.json"))
    ap.add_argument("--md", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--backupctl", default="backupctl")
    ap.add_argument("--restic", default="restic")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-pgbench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    results: dict[str, list[Timed]] = {}
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "scale": args.scale,
        "commit": git_commit(),
        "runs": args.runs,
    }
    try:
        with cluster(work / "pg") as c:
            meta["server"] = c.psql("postgres", "SHOW server_version")
            log(f"cluster on port {c.port}; pgbench -i -s {args.scale}")
            c.psql("postgres", "CREATE DATABASE bench")
            subprocess.run(
                ["pgbench", *c.conn, "-i", "-q", "-s", str(args.scale), "bench"],
                check=True,
                capture_output=True,
            )
            c.psql("bench", "VACUUM ANALYZE")
            meta["db_bytes"] = int(c.psql("bench", "SELECT pg_database_size('bench')"))
            reference = checksum(c, "bench")
            dump = work / "dump.sql"
            pg_dump = ["pg_dump", *c.conn, "-d", "bench"]
            with open(dump, "wb") as f:
                run(pg_dump, stdout=f)
            meta["dump_bytes"] = dump.stat().st_size

            restic_env = {
                "RESTIC_REPOSITORY": str(work / "restic-repo"),
                "RESTIC_PASSWORD_FILE": str(work / "restic-password"),
                "RESTIC_CACHE_DIR": str(work / "restic-cache"),
            }
            (work / "restic-password").write_text("bench-password-not-secret\n")
            (work / "restic-password").chmod(0o600)
            run([args.restic, "init", "--repository-version", "2"], env=restic_env, log=work / "restic.log")
            restic_backup = [
                args.restic,
                "backup",
                "--quiet",
                "--host",
                "bench",
                "--stdin",
                "--stdin-filename",
                "bench.sql",
            ]

            bc = BackupctlPg(work, c, args.backupctl)
            why_not = bc.setup()
            if why_not:
                log(f"SKIPPING backupctl: {why_not}")
                meta["backupctl_skipped"] = why_not

            def add(name: str, t: Timed) -> None:
                results.setdefault(name, []).append(t)

            def failed(name: str, exc: StepFailed) -> None:
                # backupctl is under development: keep the other measurements, report the error.
                log(f"FAILED: {name}: {str(exc)[-600:]}")
                meta.setdefault("failures", []).append(
                    f"{name}: {str(exc).splitlines()[0]} / {str(exc).splitlines()[-1]}"
                )

            for i in range(args.runs):
                steps: list[tuple[str, Any]] = [
                    (
                        "pg_dump > /dev/null",
                        lambda: run(pg_dump, stdout=subprocess.DEVNULL, log=work / "pg_dump.log"),
                    ),
                    (
                        "pg_dump | restic backup --stdin",
                        lambda: run_pipeline(
                            [pg_dump, restic_backup], env=restic_env, log=work / "restic.log"
                        ),
                    ),
                ]
                if not why_not:
                    steps.append(("backupctl backup create (pg_dump)", bc.backup))
                for name, fn in steps if i % 2 == 0 else list(reversed(steps)):
                    sync()
                    log(f"run {i}: {name}")
                    try:
                        add(name, fn())
                    except StepFailed as exc:
                        if not name.startswith("backupctl"):
                            raise
                        failed(name, exc)

                c.recreate("restore_psql")
                sync()
                log(f"run {i}: psql restore")
                add(
                    "psql -f dump.sql (new database)",
                    run(
                        [
                            "psql",
                            *c.conn,
                            "-X",
                            "-q",
                            "-v",
                            "ON_ERROR_STOP=1",
                            "-d",
                            "restore_psql",
                            "-f",
                            str(dump),
                        ],
                        log=work / "psql.log",
                    ),
                )
                # What an in-place restore has to do: drop the loaded database, create it
                # again and load the dump in one transaction.
                sync()
                log(f"run {i}: drop + create + psql -1")
                psql = " ".join(["psql", *c.conn, "-X", "-q", "-v", "ON_ERROR_STOP=1"])
                add(
                    "dropdb + createdb + psql -1 -f dump.sql (in place)",
                    run(
                        [
                            "sh",
                            "-c",
                            f"{psql} -d postgres -c 'DROP DATABASE restore_psql WITH (FORCE)'"
                            f" && {psql} -d postgres -c 'CREATE DATABASE restore_psql'"
                            f" && {psql} -1 -d restore_psql -f {dump}",
                        ],
                        log=work / "psql.log",
                    ),
                )
                c.recreate("restore_restic")
                sync()
                log(f"run {i}: restic dump | psql")
                add(
                    "restic dump latest | psql (new database)",
                    run_pipeline(
                        [
                            [args.restic, "dump", "--quiet", "latest", "bench.sql"],
                            ["psql", *c.conn, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", "restore_restic"],
                        ],
                        env=restic_env,
                        stdout=subprocess.DEVNULL,
                        log=work / "restic.log",
                    ),
                )
                if not why_not:
                    sync()
                    log(f"run {i}: backupctl restore")
                    try:
                        timed, own_s, safety = bc.restore()
                    except StepFailed as exc:
                        failed("backupctl restore", exc)
                        continue
                    add("backupctl backup restore (in place)", timed)
                    if safety:
                        # Without --no-safety-backup the wall time includes a full dump of the
                        # current database first; the restore alone is its reported duration.
                        add(
                            "backupctl restore alone (its duration_s, without the safety backup)",
                            Timed(own_s),
                        )
                        meta["restore_includes_safety_backup"] = True
                    got = checksum(c, "bench")
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
        f"pgbench -i -s {args.scale}: database {meta['db_bytes'] / MB:.0f} MB, plain dump {meta['dump_bytes'] / MB:.0f} MB,"
        f" PostgreSQL {meta['server']}, median of {args.runs}",
        "",
        "| step | time | peak RSS (largest process) |",
        "|---|---|---|",
    ]
    lines += [f"| {n} | {v['wall_s']:.2f} s | {v['peak_rss_mib']:.0f} MiB |" for n, v in summary.items()]
    bname = "backupctl backup create (pg_dump)"
    if bname in summary:
        b = summary[bname]["wall_s"]
        floor = summary["pg_dump > /dev/null"]["wall_s"]
        restic = summary["pg_dump | restic backup --stdin"]["wall_s"]
        lines += [
            "",
            "| target | measured | verdict |",
            "|---|---|---|",
            f"| backup <= 1.25x pg_dump alone | {b / floor:.2f}x | {'met' if b <= TARGET_VS_DUMP * floor else '**missed**'} |",
            f"| backup < pg_dump \\| restic | {b / restic:.2f}x | {'met' if b < restic else '**missed**'} |",
        ]
        restored = summary.get(
            "backupctl restore alone (its duration_s, without the safety backup)",
            summary.get("backupctl backup restore (in place)"),
        )
        if restored:
            p = summary["psql -f dump.sql (new database)"]["wall_s"]
            lines.append(
                f"| restore vs psql of the same dump into a new database | {restored['wall_s'] / p:.2f}x | - |"
            )
            inplace = summary.get("dropdb + createdb + psql -1 -f dump.sql (in place)")
            if inplace:
                ratio = restored["wall_s"] / inplace["wall_s"]
                lines.append(f"| restore vs drop + create + psql -1 of the same dump | {ratio:.2f}x | - |")
        lines.append(
            f"| repository: backupctl {meta['backupctl_repo_bytes'] / MB:.1f} MB, restic {meta['restic_repo_bytes'] / MB:.1f} MB"
            f" (after {args.runs} dumps) | {meta['backupctl_repo_bytes'] / meta['restic_repo_bytes']:.2f}x | - |"
        )
    elif "backupctl_skipped" in meta:
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
