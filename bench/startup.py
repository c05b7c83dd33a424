"""Start-up benchmark: how long short backupctl commands take, beside bare Python and restic.

    python bench/startup.py [--runs 10] [--tree LABEL=PATH ...] [--json OUT]

Every case runs `--runs` times; the runs are interleaved (run 1 of every case and tree,
then run 2, ...) so that a change in machine load hits all of them alike, and the median
is reported together with its difference to `python3 -c pass` (the same interpreter, so
its own start-up, site-packages and .pth files cancel out). Wall time is what a user
waits; CPU time (user + system, from getrusage of the children) is what the start-up costs
and moves far less with the load of other processes on the machine. Cases:

* `python3 -c pass` and `restic version` (/usr/bin/restic): the floor and a peer;
* `backupctl --version`, `backupctl --help`;
* one TAB completion of the command names (bash: `_BACKUPCTL_COMPLETE=complete_bash`,
  `COMP_WORDS="backupctl "`, `COMP_CWORD=1`, as completions/backupctl.bash sets them), and
  one of `backupctl backup <TAB>`;
* `backup list` with 50 completed backups of a deployment under an every-minute policy
  (`cron: "* * * * *"`, Europe/Berlin, the built-in default's retention);
* `python -m backupctl.wal push` of a segment that is already archived (the second call
  of PostgreSQL's archive_command for the same file; tests/pitr/test_wal_push.py).

`--tree LABEL=PATH` measures the package in another checkout (e.g. a `git worktree` of an
older commit) by putting PATH first on PYTHONPATH; give it several times to compare
trees in one run. The default is this checkout. The world (config, repository, 50
backups) is built once, with the code of this checkout, under a temporary directory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
RESTIC = "/usr/bin/restic"
BACKUPS = 50
POLICY = {
    "schedules": [{"type": "full", "cron": "* * * * *", "timezone": "Europe/Berlin"}],
    "retention": {"keep_last": 12, "keep_daily": 14, "keep_weekly": 8, "keep_monthly": 12},
}
SEGMENT = "000000010000000000000010"


def entry_point() -> list[str]:
    """The installed `backupctl` console script run by this interpreter (not the pyenv shim,
    whose bash wrapper would add its own start-up), else `python -m backupctl`."""
    script = Path(sys.executable).parent / "backupctl"
    if script.exists() and script.read_text(errors="replace").startswith("#!"):
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "backupctl"]


def build_world(root: Path) -> dict[str, Path]:
    """Config, repository, 50 backups under the every-minute policy, an archived segment."""
    sys.path.insert(0, str(HERE))
    from ruamel.yaml import YAML

    from backupctl.backups.service import Service
    from backupctl.config.loader import load_config
    from backupctl.repo.crypto import generate_key_file

    env = {
        "XDG_CONFIG_HOME": str(root / "xdg-config"),
        "XDG_DATA_HOME": str(root / "xdg-data"),
        "XDG_STATE_HOME": str(root / "xdg-state"),
    }
    os.environ.update(env)
    src = root / "src"
    src.mkdir()
    for i in range(20):
        (src / f"file-{i}.txt").write_text(f"file {i}\n" * 100)
    key = root / "repo.key"
    generate_key_file(key)
    config = root / "config.yaml"
    doc: dict[str, Any] = {
        "destinations": {"local": {"type": "local", "path": str(root / "repo")}},
        "deployments": {
            "app": {
                "sources": [{"type": "files", "paths": [str(src)]}],
                "destinations": ["local"],
                "policy": "minutely",
            },
            "db": {
                "sources": [{"type": "postgres", "host": "127.0.0.1", "port": 1, "method": "pg_basebackup"}],
                "destinations": ["local"],
                "policy": "none",
            },
        },
        "policies": {"minutely": POLICY},
        "encryption": {"key_file": str(key)},
    }
    with config.open("w") as fh:
        YAML(typ="safe", pure=True).dump(doc, fh)
    svc = Service(load_config(config), None)
    for i in range(BACKUPS):
        (src / "changing.txt").write_text(f"run {i}\n")
        svc.create_backup("app", type="full", created_by="minutely")
    # An already archived WAL segment: push it once now; the benchmark pushes it again.
    wal_dir = root / "walsrc"
    wal_dir.mkdir()
    segment = wal_dir / SEGMENT
    segment.write_bytes(os.urandom(1 << 20) + bytes((16 << 20) - (1 << 20)))
    push = [
        sys.executable,
        "-m",
        "backupctl.wal",
        "--config",
        str(config),
        "--deployment",
        "db",
        "push",
        str(segment),
    ]
    subprocess.run(push, check=True, env={**os.environ, "PYTHONPATH": str(HERE)}, capture_output=True)
    return {"config": config, "segment": segment, **{k: Path(v) for k, v in env.items()}}


def cases(world: dict[str, Path]) -> dict[str, tuple[list[str], dict[str, str]]]:
    cli = entry_point()
    cfg = ["--config", str(world["config"])]
    bash_tab = {"_BACKUPCTL_COMPLETE": "complete_bash", "COMP_WORDS": "backupctl ", "COMP_CWORD": "1"}
    backup_tab = {
        "_BACKUPCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": "backupctl backup ",
        "COMP_CWORD": "2",
    }
    wal = [sys.executable, "-m", "backupctl.wal", *cfg, "--deployment", "db", "push", str(world["segment"])]
    return {
        "backupctl --version": ([*cli, "--version"], {}),
        "backupctl --help": ([*cli, "--help"], {}),
        "TAB (backupctl <TAB>)": (cli, bash_tab),
        "TAB (backupctl backup <TAB>)": (cli, backup_tab),
        f"backup list ({BACKUPS} backups, every-minute policy)": ([*cli, *cfg, "backup", "list"], {}),
        "wal push (already archived)": (wal, {}),
    }


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child and what it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return elapsed, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tree", action="append", default=[], help="LABEL=PATH of a checkout to measure")
    parser.add_argument("--json", type=Path, help="write the medians and all samples here")
    parser.add_argument("--keep", action="store_true", help="keep the world directory")
    args = parser.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(HERE)}
    work = Path(tempfile.mkdtemp(prefix="backupctl-startup-"))
    try:
        world = build_world(work)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("_BACKUPCTL", "COMP_"))}
        base_env.update({"NO_COLOR": "1", "BACKUPCTL_CONFIG": str(world["config"])})
        plan: list[tuple[str, str, list[str], dict[str, str]]] = [
            ("python3 -c pass", "-", [sys.executable, "-c", "pass"], base_env),
        ]
        if Path(RESTIC).exists():
            plan.append(("restic version", "-", [RESTIC, "version"], base_env))
        for label, path in trees.items():
            env = {**base_env, "PYTHONPATH": str(Path(path).resolve())}
            for name, (argv, extra) in cases(world).items():
                plan.append((name, label, argv, {**env, **extra}))
        samples: dict[tuple[str, str], list[tuple[float, float]]] = {(n, t): [] for n, t, _, _ in plan}
        for _ in range(args.runs):
            for name, label, argv, env in plan:
                samples[(name, label)].append(run_once(argv, env))
        floor = statistics.median(w for w, _ in samples[("python3 -c pass", "-")])
        floor_cpu = statistics.median(c for _, c in samples[("python3 -c pass", "-")])
        load = os.getloadavg()
        print(
            f"median of {args.runs} runs; load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        print(f"{'case':50} {'tree':8} {'wall s':>7} {'above py':>9} {'CPU s':>7} {'above py':>9}")
        rows = []
        for (name, label), values in samples.items():
            wall = statistics.median(w for w, _ in values)
            cpu = statistics.median(c for _, c in values)
            rows.append(
                {
                    "case": name,
                    "tree": label,
                    "median_s": wall,
                    "above_python_s": wall - floor,
                    "median_cpu_s": cpu,
                    "cpu_above_python_s": cpu - floor_cpu,
                    "samples": values,
                }
            )
            print(f"{name:50} {label:8} {wall:7.3f} {wall - floor:+9.3f} {cpu:7.3f} {cpu - floor_cpu:+9.3f}")
        if args.json:
            args.json.write_text(json.dumps({"runs": args.runs, "loadavg": load, "rows": rows}, indent=1))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
