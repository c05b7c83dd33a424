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
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dbbench  # noqa: E402
from measure import MB, StepFailed, Timed, json_doc, log, run, run_pipeline, sync  # noqa: E402

PG_BIN_CANDIDATES = [Path("/usr/lib/postgresql/15/bin"), Path("/usr/lib/postgresql/16/bin")]


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
        self.port = dbbench.free_port()
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


class BackupctlPg(dbbench.Backupctl[Cluster]):
    source_type = "postgres"

    def sources(self) -> dict[str, str]:
        port = self.server.port
        return {
            "pgbench": f"{{type: postgres, host: 127.0.0.1, port: {port}, user: postgres,"
            " databases: [bench], method: pg_dump}"
        }

    def restore(self) -> tuple[Timed, float, bool]:
        """(timing, the restore's own duration_s from its JSON, whether a safety backup ran first)."""
        # No id when the backup failed: the restore then fails too and is reported as such.
        backup_id = self.ids.get("pgbench", "")
        t = run(
            self.cli("-o", "json", "backup", "restore", backup_id, "--yes", *self.restore_flags),
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
    dbbench.add_common_args(ap, "bench-postgres.json")
    args = ap.parse_args()

    res = dbbench.Results(args.runs, scale=args.scale)
    meta = res.meta
    with dbbench.scratch(args.work, "backupctl-pgbench-", args.keep) as work:
        os.chmod(work, 0o755)
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
            psql = ["psql", *c.conn, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
            sh_psql = " ".join(psql)
            with open(dump, "wb") as f:
                run(pg_dump, stdout=f)
            meta["dump_bytes"] = dump.stat().st_size

            restic = dbbench.Restic(work, args.restic)
            bc = BackupctlPg(work, c, args.backupctl)
            why_not = res.setup_backupctl(bc)

            for i in range(args.runs):
                steps = dbbench.stream_steps("pg_dump", pg_dump, restic, "bench.sql", work / "pg_dump.log")
                if not why_not:
                    steps.append(("backupctl backup create (pg_dump)", lambda: bc.backup("pgbench")))
                res.steps(i, steps)

                c.recreate("restore_psql")
                res.step(
                    i,
                    "psql -f dump.sql (new database)",
                    lambda: run([*psql, "-d", "restore_psql", "-f", str(dump)], log=work / "psql.log"),
                    say="psql restore",
                )
                # What an in-place restore has to do: drop the loaded database, create it
                # again and load the dump in one transaction.
                res.step(
                    i,
                    "dropdb + createdb + psql -1 -f dump.sql (in place)",
                    lambda: run(
                        [
                            "sh",
                            "-c",
                            f"{sh_psql} -d postgres -c 'DROP DATABASE restore_psql WITH (FORCE)'"
                            f" && {sh_psql} -d postgres -c 'CREATE DATABASE restore_psql'"
                            f" && {sh_psql} -1 -d restore_psql -f {dump}",
                        ],
                        log=work / "psql.log",
                    ),
                    say="drop + create + psql -1",
                )
                c.recreate("restore_restic")
                res.step(
                    i,
                    "restic dump latest | psql (new database)",
                    lambda: run_pipeline(
                        [
                            [args.restic, "dump", "--quiet", "latest", "bench.sql"],
                            [*psql, "-d", "restore_restic"],
                        ],
                        env=restic.env,
                        stdout=subprocess.DEVNULL,
                        log=restic.log,
                    ),
                    say="restic dump | psql",
                )
                if not why_not:
                    sync()
                    log(f"run {i}: backupctl restore")
                    try:
                        timed, own_s, safety = bc.restore()
                    except StepFailed as exc:
                        res.failed("backupctl restore", exc)
                        continue
                    res.add("backupctl backup restore (in place)", timed)
                    if safety:
                        # Without --no-safety-backup the wall time includes a full dump of the
                        # current database first; the restore alone is its reported duration.
                        res.add(
                            "backupctl restore alone (its duration_s, without the safety backup)",
                            Timed(own_s),
                        )
                        meta["restore_includes_safety_backup"] = True
                    res.check_restore(i, checksum(c, "bench"), reference)
            res.repo_sizes(restic, None if why_not else bc)

    summary = res.summary()
    targets: list[str] = []
    bname = "backupctl backup create (pg_dump)"
    if bname in summary:
        targets += dbbench.backup_targets(
            summary,
            bname,
            "pg_dump > /dev/null",
            "pg_dump | restic backup --stdin",
            ("backup <= 1.25x pg_dump alone", "backup < pg_dump | restic"),
        )
        restored = summary.get(
            "backupctl restore alone (its duration_s, without the safety backup)",
            summary.get("backupctl backup restore (in place)"),
        )
        if restored:
            p = summary["psql -f dump.sql (new database)"]["wall_s"]
            targets.append(
                dbbench.target_row(
                    "restore vs psql of the same dump into a new database", restored["wall_s"] / p
                )
            )
            inplace = summary.get("dropdb + createdb + psql -1 -f dump.sql (in place)")
            if inplace:
                ratio = restored["wall_s"] / inplace["wall_s"]
                targets.append(
                    dbbench.target_row("restore vs drop + create + psql -1 of the same dump", ratio)
                )
        mine, theirs = meta["backupctl_repo_bytes"], meta["restic_repo_bytes"]
        targets.append(
            dbbench.target_row(
                f"repository: backupctl {mine / MB:.1f} MB, restic {theirs / MB:.1f} MB (after {args.runs} dumps)",
                mine / theirs,
            )
        )
    res.report(
        f"pgbench -i -s {args.scale}: database {meta['db_bytes'] / MB:.0f} MB,"
        f" plain dump {meta['dump_bytes'] / MB:.0f} MB, PostgreSQL {meta['server']}, median of {args.runs}",
        targets,
        args.json,
        args.md,
    )


if __name__ == "__main__":
    main()
