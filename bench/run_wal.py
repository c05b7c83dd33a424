#!/usr/bin/env python3
"""Benchmark WAL archiving through backupctl's light entry point under a pgbench load (issue 6, §1).

For each archive_command in turn, a fresh throwaway PostgreSQL cluster (run_postgres.Cluster:
initdb through `runuser -u postgres`, a free high port, 127.0.0.1 only), `pgbench -i -s SCALE`
with archiving off, then archive_mode = on and a restart, and a pgbench TPC-B load of
--seconds with --clients clients:

  cp                test ! -f ARCHIVE/%f && cp %p ARCHIVE/%f  (reference: a plain copy, no fsync)
  pgbackrest        pgbackrest archive-push %p (zstd 3, aes-256-cbc, local repository)
  pgbackrest-async  the same with archive-async=y, process-max=2 (pushes ahead from a spool)
  backupctl-single  python -m backupctl.wal --config CFG --deployment bench push --ahead 0 %p
                    (one segment per call: compressed, encrypted, written to a local
                    destination, acknowledged once durable)
  backupctl         ... push %p: the same, archiving up to 32 ready segments ahead per call

Every second: pg_stat_archiver (archived_count, last_archived_wal, failed_count), the current
WAL file and the number of `.ready` files in pg_wal/archive_status (segments waiting for the
archiver). After the load, waits for the backlog to drain. Reports WAL generated and archived
segments per second during the load, the archive lag (segments between the current WAL file
and the last archived one; `.ready` files) max and final, and the time to drain.

The archiver runs archive_command as the postgres OS user: when this interpreter is not
reachable by it (e.g. under /root, 0700), tests/pitr_helpers.light_command() gives the system
python3 with a world-readable copy of the few packages the light entry point imports.

Usage: sudo python bench/run_wal.py [--seconds 60] [--scale 10] [--clients 8] [--json wal.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from measure import git_commit, log  # noqa: E402
from run_postgres import Cluster  # noqa: E402

SEG = 16 * 1024 * 1024


def segno(walfile: str) -> int:
    """Segment number (log * 256 + seg) of a 24-hex-digit WAL file name; timeline ignored."""
    return int(walfile[8:16], 16) * 0x100 + int(walfile[16:24], 16)


def as_postgres(*argv: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True, capture_output=True, text=True)


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            os.chown(os.path.join(root, n), uid, gid)


def backupctl_command(work: Path, c: Cluster, binary: str) -> str:
    """Set up a backupctl repository and config the postgres user can use; the archive_command."""
    from pitr_helpers import light_command

    bc = work / "backupctl"
    bc.mkdir(parents=True)
    os.chmod(bc, 0o755)
    repo, key, cfg = bc / "repo", bc / "repo.key", bc / "backupctl.yaml"
    env = os.environ | {
        f"XDG_{k}_HOME": str(bc / "xdg" / k.lower()) for k in ("STATE", "CONFIG", "DATA", "CACHE")
    }
    subprocess.run(
        [binary, "--config", str(cfg), "init", "--repository", str(repo), "--key-file", str(key)],
        check=True,
        capture_output=True,
        env=env,
    )
    cfg.write_text(
        "destinations:\n"
        f"  local: {{type: local, path: {json.dumps(str(repo))}}}\n"
        "deployments:\n"
        "  bench:\n"
        "    sources:\n"
        f"      - {{type: postgres, host: 127.0.0.1, port: {c.port}, user: postgres,"
        " databases: [bench], method: pg_basebackup}\n"
        "    destinations: [local]\n"
        "    policy: none\n"
        "encryption:\n"
        f"  key_file: {json.dumps(str(key))}\n"
    )
    os.chmod(cfg, 0o644)
    prefix = light_command()
    out = subprocess.run(
        [binary, "--config", str(cfg), "-o", "json", "pitr", "setup", "bench", "--command", prefix],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    chown_tree(repo, c.pw.pw_uid, c.pw.pw_gid)
    os.chown(key, c.pw.pw_uid, c.pw.pw_gid)
    return str(json.loads(out)["settings"]["archive_command"])


def pgbackrest_command(work: Path, c: Cluster, asynchronous: bool) -> str:
    """pgBackRest as the peer: the same work as backupctl (zstd level 3, AES-256 encryption,
    a local repository, acknowledged once stored), archive-push per segment, or with
    archive-async (a background process pushes ready segments ahead from a spool, two at once)."""
    br = work / "pgbackrest"
    for d in (br, br / "repo", br / "spool", br / "lock", br / "log"):
        d.mkdir(parents=True, exist_ok=True)
        os.chown(d, c.pw.pw_uid, c.pw.pw_gid)
    conf = br / "pgbackrest.conf"
    settings = {
        "repo1-path": br / "repo",
        "repo1-cipher-type": "aes-256-cbc",
        "repo1-cipher-pass": os.urandom(16).hex(),
        "compress-type": "zst",
        "compress-level": 3,
        "log-level-console": "warn",
        "log-level-file": "off",
        "lock-path": br / "lock",
        "log-path": br / "log",
        "spool-path": br / "spool",
    }
    if asynchronous:
        settings |= {"archive-async": "y", "process-max": 2}
    stanza = {"pg1-path": c.data, "pg1-port": c.port, "pg1-socket-path": c.sock}
    lines = ["[global]", *(f"{k}={v}" for k, v in settings.items())]
    lines += ["[bench]", *(f"{k}={v}" for k, v in stanza.items())]
    conf.write_text("\n".join(lines) + "\n")
    os.chmod(conf, 0o644)
    as_postgres("pgbackrest", f"--config={conf}", "--stanza=bench", "stanza-create")
    return f"pgbackrest --config={conf} --stanza=bench archive-push %p"


def cp_command(work: Path, c: Cluster) -> str:
    archive = work / "archive"
    archive.mkdir(parents=True)
    os.chown(archive, c.pw.pw_uid, c.pw.pw_gid)
    return f"test ! -f {archive}/%f && cp %p {archive}/%f"


def sample(c: Cluster) -> dict[str, Any]:
    row = c.psql(
        "postgres",
        "SELECT archived_count, coalesce(last_archived_wal, ''), failed_count,"
        " pg_walfile_name(pg_current_wal_lsn()), pg_current_wal_lsn() - '0/0'::pg_lsn FROM pg_stat_archiver",
    ).split("|")
    status = c.data / "pg_wal" / "archive_status"
    ready = sum(1 for n in os.listdir(status) if n.endswith(".ready"))
    current, last = row[3], row[1]
    return {
        "t": time.monotonic(),
        "archived": int(row[0]),
        "last_archived": last,
        "failed": int(row[2]),
        "current": current,
        "wal_bytes": int(float(row[4])),
        "lag_segments": segno(current) - segno(last) if last else None,
        "ready": ready,
    }


def drain_backlog(c: Cluster, segments: int) -> dict[str, Any]:
    """Capacity: hold the archiver back (archive_command = false), write about `segments`
    segments of WAL, restore the real command and time how fast the backlog drains."""
    c.psql("postgres", "ALTER SYSTEM SET archive_command = 'false'")
    c.psql("postgres", "SELECT pg_reload_conf()")
    rows = segments * SEG // 230  # ~230 bytes of WAL per row (heap tuple + record header)
    c.psql(
        "bench",
        "CREATE TABLE filler AS SELECT g, md5(g::text) || md5(random()::text) || md5(random()::text)"
        f" || md5(random()::text) AS pad FROM generate_series(1, {rows}) g",
    )
    c.psql("postgres", "SELECT pg_switch_wal()")
    held = sample(c)
    c.psql("postgres", "ALTER SYSTEM RESET archive_command")
    c.psql("postgres", "SELECT pg_reload_conf()")
    t0 = time.monotonic()
    s = held
    while s["ready"] and time.monotonic() - t0 < 600:
        time.sleep(0.2)
        s = sample(c)
    took = time.monotonic() - t0
    done = s["archived"] - held["archived"]
    log(f"backlog of {held['ready']} segments drained: {done} in {took:.1f} s")
    return {
        "backlog_segments": held["ready"],
        "backlog_archived": done,
        "backlog_s": round(took, 1),
        "capacity_per_s": round(done / took, 2) if took else None,
        "capacity_mb_per_s": round(done * 16 / took, 1) if took else None,
    }


def measure(mode: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    c = Cluster(work / "pg")
    c.start()
    try:
        c.psql("postgres", "CREATE DATABASE bench")
        subprocess.run(
            ["pgbench", *c.conn, "-i", "-q", "-s", str(args.scale), "bench"], check=True, capture_output=True
        )
        if mode == "cp":
            command = cp_command(work, c)
        elif mode.startswith("pgbackrest"):
            command = pgbackrest_command(work, c, asynchronous=mode == "pgbackrest-async")
        else:
            command = backupctl_command(work, c, args.backupctl)
            if mode == "backupctl-single":  # one push per call, as before archiving ahead
                command = command.replace(" push %p", " push --ahead 0 %p")
        with open(c.data / "postgresql.conf", "a") as f:
            f.write(
                "\nwal_level = replica\narchive_mode = on\n"
                f"archive_command = '{command.replace(chr(39), chr(39) * 2)}'\n"
                f"max_wal_size = '4GB'\ncheckpoint_timeout = '{args.checkpoint_timeout}s'\n"
                f"synchronous_commit = {args.synchronous_commit}\n"
            )
        as_postgres(str(c.bin / "pg_ctl"), "-D", str(c.data), "-l", str(c.base / "log"), "-w", "restart")
        c.psql("postgres", "SELECT pg_switch_wal()")
        deadline = time.monotonic() + 60
        while sample(c)["ready"] and time.monotonic() < deadline:  # start with an empty backlog
            time.sleep(0.2)
        start = sample(c)
        log(f"{mode}: pgbench -c {args.clients} -T {args.seconds}; archive_command = {command}")
        load = subprocess.Popen(
            [
                "pgbench",
                *c.conn,
                "-n",
                "-c",
                str(args.clients),
                "-j",
                str(args.clients),
                "-T",
                str(args.seconds),
                "bench",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        samples = [start]
        while load.poll() is None:
            time.sleep(1.0)
            samples.append(sample(c))
        pgbench_out = load.stdout.read() if load.stdout else ""
        end_load = sample(c)
        samples.append(end_load)
        after = end_load
        drain_deadline = time.monotonic() + args.drain_timeout
        while end_load["ready"] and time.monotonic() < drain_deadline:
            time.sleep(0.5)
            end_load = sample(c)
            samples.append(end_load)
        drained = samples[-1]
        load_s = after["t"] - start["t"]
        tps = next(
            (ln.split("=")[1].split()[0] for ln in pgbench_out.splitlines() if ln.startswith("tps")), ""
        )
        generated = segno(after["current"]) - segno(start["current"])
        archived_load = after["archived"] - start["archived"]
        drain_s = drained["t"] - after["t"]
        lags = [s["lag_segments"] for s in samples if s["lag_segments"] is not None]
        result = {
            "mode": mode,
            "archive_command": command,
            "load_s": round(load_s, 1),
            "tps": float(tps) if tps else None,
            "wal_mb": round((after["wal_bytes"] - start["wal_bytes"]) / 2**20, 1),
            "segments_generated": generated,
            "generated_per_s": round(generated / load_s, 2),
            "archived_during_load": archived_load,
            "archived_per_s": round(archived_load / load_s, 2),
            "archived_total": drained["archived"] - start["archived"],
            "failed": drained["failed"] - start["failed"],
            "ready_max": max(s["ready"] for s in samples),
            "ready_at_load_end": after["ready"],
            "ready_final": drained["ready"],
            "lag_segments_max": max(lags) if lags else None,
            "lag_segments_at_load_end": after["lag_segments"],
            "drain_s": round(drain_s, 1),
            "drain_per_s": round((drained["archived"] - after["archived"]) / drain_s, 2)
            if drain_s > 1
            else None,
            "ready_series": [s["ready"] for s in samples],
        }
        if args.backlog:
            result.update(drain_backlog(c, args.backlog))
        log(json.dumps({k: v for k, v in result.items() if k != "ready_series"}))
        return result
    finally:
        c.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=int, default=60, help="pgbench -T")
    ap.add_argument("--scale", type=int, default=10, help="pgbench -i -s")
    ap.add_argument("--clients", type=int, default=8, help="pgbench -c and -j")
    ap.add_argument("--checkpoint-timeout", type=int, default=30, help="s; short = more full-page writes")
    ap.add_argument("--drain-timeout", type=int, default=300, help="s to wait for the backlog after the load")
    ap.add_argument("--synchronous-commit", default="off", help="off: more transactions, more WAL")
    ap.add_argument("--backlog", type=int, default=64, help="segments for the drain test (0: skip)")
    ap.add_argument(
        "--modes",
        default="cp,pgbackrest,pgbackrest-async,backupctl-single,backupctl",
        help="cp, pgbackrest, pgbackrest-async, backupctl-single (--ahead 0), backupctl",
    )
    ap.add_argument("--json", type=Path, default=Path("bench-wal.json"))
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--backupctl", default=shutil.which("backupctl") or "backupctl")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the cluster is started through `runuser -u postgres`")
    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-walbench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    doc: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "commit": git_commit(),
        "seconds": args.seconds,
        "scale": args.scale,
        "clients": args.clients,
        "cpus": os.cpu_count(),
        "results": [],
    }
    try:
        for mode in args.modes.split(","):
            d = work / mode
            d.mkdir()
            os.chmod(d, 0o755)
            doc["results"].append(measure(mode, d, args))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(
        f"{'':17} {'WAL MB':>7} {'gen seg/s':>9} {'arch seg/s':>10} {'lag max':>7} {'.ready max':>10} {'.ready end':>10} {'final':>5} {'drain s':>7}"
    )
    for r in doc["results"]:
        print(
            f"{r['mode']:17} {r['wal_mb']:7.0f} {r['generated_per_s']:9.2f} {r['archived_per_s']:10.2f} "
            f"{r['lag_segments_max']!s:>7} {r['ready_max']:10} {r['ready_at_load_end']:10} {r['ready_final']:5} {r['drain_s']:7.1f}"
        )


if __name__ == "__main__":
    main()
