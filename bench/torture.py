"""The torture suite at a large size (issue 11): kill -9 and concurrent rounds, then a summary.

The CI size is tests/test_torture.py; both use tests/torture_lib.py, so the steps and the
checks are the same (see docs/design.md, "Guarantees and how the torture suite checks them").

    python bench/torture.py                          # the reported size: 500 kills, 100 rounds
    python bench/torture.py --kills 60 --rounds 15   # a medium run (~15 minutes on 2 cores)

Phases:

1. Kills: worlds of `--world-steps` steps each (a local repository and a second destination
   `remote`: a local folder, or for the first `--s3-worlds` worlds the moto S3 server); each step is a create, delete, prune, upload or (when the command
   exists) `repository repair index`, killed with SIGKILL at a random moment or at a random
   destination write (BACKUPCTL_FAULTS=kill_at=K), every `--clean-every`-th step not
   killed; a check after every step and a full check (every backup restored) at the end
   of each world.
2. Concurrent rounds, cycling through: two creates on an empty destination, `schedule
   run-due` with three deployments on an empty destination, create with prune, upload with
   delete, two creates on an existing repository.
3. Faults (`--fault-steps`): creates, deletes and prunes behind a destination that fails,
   times out, reads short and tears writes.

Prints the summary line (kills, rounds, unrestorable Completed, lost backups, writes outside
a target...) and the first violations with the commands that reproduce them; `--json FILE`
writes everything. Exit status 1 when a guarantee was violated.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import servers  # noqa: E402
import torture_lib as T  # noqa: E402

OPS = ("create", "create", "create", "delete", "prune", "upload", "repair")
FAULTS = "fail=0.04,timeout=0.02,short_read=0.04,torn=0.02,timeout_s=0.02"


def s3_remote(server: object, n: int) -> dict[str, object]:
    """A fresh prefix on the moto S3 server (as tests/conftest_servers.py configures it)."""
    os.environ["TEST_S3_KEY_ID"] = server.access_key  # type: ignore[attr-defined]
    os.environ["TEST_S3_SECRET"] = server.secret_key  # type: ignore[attr-defined]
    return {
        "type": "s3", "bucket": servers.BUCKET, "prefix": f"torture-{n}-{os.getpid()}",
        "endpoint": server.endpoint, "region": server.region,  # type: ignore[attr-defined]
        "force_path_style": True, "access_key_id_env": "TEST_S3_KEY_ID",
        "secret_access_key_env": "TEST_S3_SECRET",
    }  # fmt: skip


def kill_phase(
    work: Path, args: argparse.Namespace, stats: T.Stats, rng: random.Random, s3: object | None
) -> None:
    n = 0
    while stats.kills < args.kills:
        root = work / f"kill-{n}"
        remote: dict[str, object] = {"type": "local", "path": str(root / "remote"), "fsync": False}
        if s3 is not None and n < args.s3_worlds:
            remote = s3_remote(s3, n)
        world = T.World(root / "w", seed=args.seed + n, stats=stats, remote=remote)
        world.run("backup", "create", "app")
        world.check("set-up")
        for step in range(args.world_steps):
            if stats.kills >= args.kills:
                break
            kill = None if step % args.clean_every == args.clean_every - 1 else rng.choice(["time", "write"])
            world.random_step(rng, OPS, kill=kill)
            progress(stats, f"kills world {n} step {step}")
        world.check("end of world", restore_all=True)
        if not args.keep and not stats.violations:
            shutil.rmtree(root, ignore_errors=True)
        n += 1


def round_phase(work: Path, args: argparse.Namespace, stats: T.Stats) -> None:
    world: T.World | None = None
    for r in range(args.rounds):
        kind = T.CONCURRENT_KINDS[r % len(T.CONCURRENT_KINDS)]
        if kind.endswith("empty"):
            fresh = T.concurrent_round(kind, work / f"round-{r}", args.seed + r, stats)
            if not args.keep and not stats.violations:
                shutil.rmtree(fresh.root, ignore_errors=True)
        else:
            world = T.concurrent_round(kind, work / "rounds", args.seed, stats, world)
        progress(stats, f"round {r} {kind}")
    if world is not None:
        world.check("end of rounds", restore_all=True)


def fault_phase(work: Path, args: argparse.Namespace, stats: T.Stats, rng: random.Random) -> None:
    if not args.fault_steps:
        return
    world = T.World(work / "faults", seed=args.seed, stats=stats)
    world.run("backup", "create", "app")
    world.check("set-up")
    for step in range(args.fault_steps):
        op = rng.choice(["create", "create", "delete", "prune"])
        argv, vanish, before = world.step_args(op)
        if before is not None:
            before()
        run = world.run(*argv, faults=f"{FAULTS},seed={args.seed + step}")
        stats.faults += run.returncode != 0
        world.check(f"{' '.join(argv[:2])} with faults seed={args.seed + step}", may_vanish=vanish)
        progress(stats, f"faults step {step}")
    world.check("end of faults", restore_all=True)


_last = [0.0]


def progress(stats: T.Stats, where: str) -> None:
    if time.monotonic() - _last[0] > 30:
        _last[0] = time.monotonic()
        print(f"[{time.strftime('%H:%M:%S')}] {where}: {stats.summary()}", file=sys.stderr, flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=500, help="SIGKILLs to make (default 500)")
    ap.add_argument("--rounds", type=int, default=100, help="concurrent rounds (default 100)")
    ap.add_argument(
        "--fault-steps", type=int, default=40, help="steps behind a faulty destination (default 40)"
    )
    ap.add_argument("--world-steps", type=int, default=40, help="steps per world in the kill phase")
    ap.add_argument("--clean-every", type=int, default=5, help="every N-th step runs unkilled")
    ap.add_argument(
        "--s3-worlds", type=int, default=2, help="kill-phase worlds whose `remote` is moto S3 (0: none)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--json", type=Path, help="write the summary and every violation here")
    args = ap.parse_args()

    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-torture-"))
    work.mkdir(parents=True, exist_ok=True)
    stats = T.Stats()
    rng = random.Random(args.seed)
    started = time.monotonic()
    phases = {}
    with contextlib.ExitStack() as stack:
        s3 = None
        if args.s3_worlds:
            s3 = stack.enter_context(servers.run_moto())
            servers.make_bucket(s3)
        for name, run in (
            ("kills", lambda: kill_phase(work, args, stats, rng, s3)),
            ("rounds", lambda: round_phase(work, args, stats)),
            ("faults", lambda: fault_phase(work, args, stats, rng)),
        ):
            t0 = time.monotonic()
            run()
            phases[name] = round(time.monotonic() - t0, 1)
    elapsed = time.monotonic() - started

    print(f"torture: {stats.summary()}")
    print(f"commands failed by injected faults: {stats.faults}; phases (s): {phases}; total {elapsed:.0f} s")
    for v in stats.violations[:20]:
        print(f"\n{v}")
    if args.json:
        doc = {
            "args": {k: str(v) for k, v in vars(args).items()},
            "phases_s": phases,
            "summary": {k: v for k, v in dataclasses.asdict(stats).items() if k != "violations"},
            "violations": [dataclasses.asdict(v) for v in stats.violations],
        }
        args.json.write_text(json.dumps(doc, indent=2))
    if not args.keep and not stats.violations:
        shutil.rmtree(work, ignore_errors=True)
    elif stats.violations:
        print(f"\nscratch directory kept for inspection: {work}")
    return 1 if stats.violations else 0


if __name__ == "__main__":
    sys.exit(main())
