"""The torture harness shared by tests/test_torture.py (CI size) and bench/torture.py (large).

A `World` is one config with one or more `files` deployments, a local repository (and
optionally a second destination `remote` for uploads), generated source trees that change
between steps, and an oracle: the tree each backup must restore to. Steps run the real CLI
in subprocesses and disturb it - SIGKILL at a random moment or at the K-th destination write
(BACKUPCTL_FAULTS=kill_at=K, see backupctl/destinations/faulty.py), injected destination
faults, concurrent commands, damaged objects - and after each step `World.check` asserts the
guarantees of docs/design.md ("Guarantees and how the torture suite checks them"):

* every backup listed Completed restores byte for byte (trees compared with
  helpers.snapshot_tree: content, modes, times, owners, links);
* no backup that was Completed before the step is lost, except the ones the step was asked
  to delete (a deleted or pruned backup may vanish, nothing else may);
* nothing is written outside a restore target (the source trees and the `outside` directory
  that the trees' absolute symlinks point into are compared before and after each restore);
* `repository check` passes, when the command exists;
* no command ends in a traceback or an "internal error".

A violated guarantee is recorded as a `Violation` with the command lines that reproduce it;
the tests assert there are none, the bench counts them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import helpers

from backupctl.repo.crypto import generate_key_file

KB = 1024
FAULTS_ENV = "BACKUPCTL_FAULTS"
KILLED = -signal.SIGKILL

# What each kind of object is called in a repository (docs/design.md, "Objects").
OBJECT_KINDS = ("config", "keys", "index", "pack-header", "pack-body", "snapshots", "locks")


class BrokenTree(RuntimeError):
    """The code under test does not even import (a half-finished edit): not a finding."""


@dataclasses.dataclass
class Violation:
    kind: str  # unrestorable, lost, outside, check, internal, list
    step: str
    detail: str

    def __str__(self) -> str:
        return f"[{self.kind}] step {self.step}: {self.detail}"


@dataclasses.dataclass
class Stats:
    steps: int = 0
    kills: int = 0
    rounds: int = 0  # concurrent rounds
    restores: int = 0
    faults: int = 0
    unrestorable: int = 0
    lost: int = 0
    outside: int = 0
    check_failed: int = 0
    internal: int = 0
    violations: list[Violation] = dataclasses.field(default_factory=list)

    def add(self, v: Violation) -> None:
        self.violations.append(v)
        attr = {"unrestorable": "unrestorable", "lost": "lost", "outside": "outside", "check": "check_failed"}
        name = attr.get(v.kind, "internal")
        setattr(self, name, getattr(self, name) + 1)

    def merge(self, other: Stats) -> None:
        for f in dataclasses.fields(self):
            if f.name == "violations":
                self.violations.extend(other.violations)
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return (
            f"steps {self.steps}, kills {self.kills}, concurrent rounds {self.rounds}, restores {self.restores}, "
            f"unrestorable Completed {self.unrestorable}, lost backups {self.lost}, "
            f"writes outside target {self.outside}, check failures {self.check_failed}, "
            f"internal errors {self.internal}"
        )


@dataclasses.dataclass
class Run:
    """One finished (or killed) CLI run."""

    args: list[str]
    env: dict[str, str]
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == KILLED

    def command(self) -> str:
        env = " ".join(f"{k}={v!r}" for k, v in self.env.items() if k != "BACKUPCTL_CONFIG")
        return f"{env + ' ' if env else ''}backupctl {' '.join(self.args)} -> {self.returncode}"


# ---- source trees ---------------------------------------------------------------------------


def _text(rng: random.Random, n: int) -> bytes:
    words = [b"alpha", b"beta", b"gamma", b"delta", b"backup", b"torture", b"\n", b"0123"]
    out = bytearray()
    while len(out) < n:
        out += rng.choice(words) + b" "
    return bytes(out[:n])


class Tree:
    """A generated source tree that `mutate` changes a little (new, changed, removed files)."""

    def __init__(
        self, root: Path, outside: Path, rng: random.Random, size_kb: int, *, capistrano: bool = False
    ) -> None:
        self.root, self.outside, self.rng = root, outside, rng
        self.capistrano = capistrano
        self.counter = 0
        self.mtime = 1_700_000_000_000_000_000
        root.mkdir(parents=True)
        (root / "sub" / "deeper").mkdir(parents=True)
        (root / "empty").mkdir()
        (root / "empty.txt").write_bytes(b"")
        files = max(4, size_kb // 150)
        for _ in range(files):
            self._new_file(size_kb * KB // files)
        os.symlink("sub", root / "link_rel_dir")
        os.symlink(str(outside), root / "link_abs_outside")  # restore must not write through it
        os.symlink("/nonexistent/torture", root / "link_dangling")
        first = sorted(p for p in root.rglob("*.bin") if p.is_file())[0]
        os.link(first, root / "hardlink.bin")
        if capistrano:
            # A Capistrano-style layout: `current` is an absolute symlink to the live release,
            # and the deployment also names current/uploads (see World's `capistrano`).
            (root / "releases" / "r1" / "uploads").mkdir(parents=True)
            (root / "releases" / "r1" / "uploads" / "live.txt").write_text("version 0\n")
            os.symlink(str(root / "releases" / "r1"), root / "current")
        self._touch_all()

    def _new_file(self, size: int) -> None:
        self.counter += 1
        where = self.root / self.rng.choice(["", "sub", "sub/deeper"])
        name = where / f"f{self.counter}.{'bin' if self.counter % 2 else 'txt'}"
        data = self.rng.randbytes(size) if self.counter % 2 else _text(self.rng, size)
        name.write_bytes(data)
        os.chmod(name, self.rng.choice([0o644, 0o600, 0o640, 0o755]))

    def _touch_all(self) -> None:
        for p in sorted(self.root.rglob("*"), key=lambda p: -len(p.parts)):
            self.mtime += 1_000_000_007
            os.utime(p, ns=(self.mtime, self.mtime), follow_symlinks=False)

    def mutate(self, new_kb: int) -> None:
        files = [
            p for p in self.root.rglob("*") if p.is_file() and not p.is_symlink() and p.name != "hardlink.bin"
        ]
        files = [p for p in files if os.stat(p).st_nlink == 1 and p.stat().st_size > 0]
        self.rng.shuffle(files)
        for p in files[:2]:  # change two files (new size, new content)
            p.write_bytes(self.rng.randbytes(self.rng.randrange(1, 64) * KB))
        if len(files) > 6:
            files[2].unlink()
        for _ in range(2):
            self._new_file(new_kb * KB // 2)
        if self.capistrano:
            (self.root / "releases" / "r1" / "uploads" / "live.txt").write_text(f"version {self.counter}\n")
        self._touch_all()


# ---- the world ------------------------------------------------------------------------------


class World:
    """A config, its repositories, source trees and the oracle; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        deployments: Sequence[str] = ("app",),
        remote: dict[str, Any] | None = None,
        seed: int = 0,
        keep_last: int = 2,
        size_kb: int = 1200,
        new_kb: int = 600,
        pack_size_mib: int = 1,
        stats: Stats | None = None,
        restore_sample: int = 1,
        capistrano: bool = False,
    ) -> None:
        """`capistrano`: the trees get a `current` symlink to releases/r1 and the deployments
        also name `current/uploads` (issue 11 item 5); restored trees are then only checked
        for writes outside the target, not compared."""
        self.root = root
        self.rng = random.Random(seed)
        self.seed = seed
        self.stats = stats or Stats()
        self.new_kb = new_kb
        self.restore_sample = restore_sample
        self.keep_last = keep_last
        self.exact = not capistrano
        self.damaged = False  # set while a test has damaged the repository on purpose
        self.outside = root / "outside"
        (self.outside / "canary").mkdir(parents=True)
        (self.outside / "canary" / "live.txt").write_text("live data outside every restore target\n")
        self.repository = root / "repo"
        self.trees = {
            dep: Tree(
                root / "src" / dep,
                self.outside,
                random.Random(seed * 7919 + i),
                size_kb,
                capistrano=capistrano,
            )
            for i, dep in enumerate(deployments)
        }
        destinations: dict[str, Any] = {
            "local": {"type": "local", "path": str(self.repository), "fsync": False}
        }
        if remote is not None:
            destinations["remote"] = remote
        self.dest_names = list(destinations)
        doc = {
            "destinations": destinations,
            "deployments": {
                dep: {
                    "sources": [
                        {
                            "type": "files",
                            "paths": [str(tree.root)]
                            + ([str(tree.root / "current" / "uploads")] if capistrano else []),
                        }
                    ],
                    "destinations": list(destinations),
                    "upload": False,
                    "policy": "torture",
                }
                for dep, tree in self.trees.items()
            },
            "policies": {
                "torture": {
                    # No `created`: the newest slot is due at once on a first `run-due`.
                    "schedules": [{"cron": "0 0 * * *", "timezone": "UTC"}],
                    "retention": {"keep_last": keep_last},
                }
            },
            "encryption": {"key_file": str(root / "repo.key")},
            "settings": {"pack_size_mib": pack_size_mib, "workers": 2, "state_dir": str(root / "state")},
        }
        if not (root / "repo.key").exists():
            generate_key_file(root / "repo.key")
        self.config = root / "config.yaml"
        helpers.dump_yaml(doc, self.config)
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}
        # Oracle: per deployment, (wall time, tree snapshot) whenever the tree was captured;
        # a backup started at S must restore to the last snapshot taken before S.
        self.history: dict[str, list[tuple[float, dict[str, Any]]]] = {d: [] for d in self.trees}
        self.expected: dict[str, dict[str, Any]] = {}
        self.known: dict[str, set[str]] = {d: set() for d in self.dest_names}
        self.restore_counter = 0
        self.durations: dict[str, float] = {}
        self.log: list[str] = []  # command lines of this world, for reproduction
        self._repo_command: bool | None = None
        for dep in self.trees:
            self.capture(dep)

    # ---- running ----------------------------------------------------------------------------

    def capture(self, dep: str) -> None:
        self.history[dep].append((time.time() - 0.001, helpers.snapshot_tree(self.trees[dep].root)))

    def mutate(self, dep: str | None = None) -> None:
        for name in [dep] if dep else list(self.trees):
            self.trees[name].mutate(self.new_kb)
            self.capture(name)

    def start(self, *args: str, faults: str | None = None) -> tuple[subprocess.Popen[str], dict[str, str]]:
        extra = {FAULTS_ENV: faults} if faults else {}
        proc = subprocess.Popen(
            helpers.cli_command(*args),
            env=helpers.cli_env({**self.env, **extra}),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return proc, extra

    def finish(
        self,
        proc: subprocess.Popen[str],
        args: Sequence[str],
        extra: dict[str, str],
        kill_after: float | None,
    ) -> Run:
        t0 = time.monotonic()
        try:
            out, err = proc.communicate(timeout=kill_after if kill_after is not None else 300)
        except subprocess.TimeoutExpired:
            if kill_after is None:
                proc.kill()
                out, err = proc.communicate()
                run = Run(list(args), extra, proc.returncode, out, err)
                self.violation("internal", "hung for 300 s: " + run.command())
                return run
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate()
        run = Run(list(args), extra, proc.returncode, out, err)
        if not run.killed:
            self.durations[args[0] + " " + args[1]] = time.monotonic() - t0
        self.note(run, kill_after)
        return run

    def note(self, run: Run, kill_after: float | None) -> None:
        how = f" (SIGKILL after {kill_after:.3f}s)" if kill_after is not None else ""
        self.log.append(run.command() + how)
        if run.killed:
            self.stats.kills += 1
        elif "SyntaxError" in run.stderr or "IndentationError" in run.stderr:
            raise BrokenTree(f"the code under test does not import: {run.stderr.strip()[-500:]}")
        elif "Traceback" in run.stderr or "internal error" in run.stderr:
            self.violation("internal", f"{run.command()}\n{run.stderr.strip()[-800:]}")

    def run(self, *args: str, faults: str | None = None, kill_after: float | None = None) -> Run:
        proc, extra = self.start(*args, faults=faults)
        return self.finish(proc, args, extra, kill_after)

    def random_delay(self, op: str) -> float:
        """A random moment inside a run of `op` (as long as its last uninterrupted run)."""
        return self.rng.uniform(0.05, max(0.3, self.durations.get(op, 1.5)))

    def violation(self, kind: str, detail: str, step: str | None = None) -> None:
        tail = "\n  ".join(self.log[-6:])
        found = Violation(kind, step or str(self.stats.steps), f"{detail}\n  recent commands:\n  {tail}")
        self.stats.add(found)
        if os.environ.get("TORTURE_LOG"):  # as they happen, for long runs
            with open(os.environ["TORTURE_LOG"], "a") as fh:
                fh.write(f"{found}\n\n")

    # ---- queries ----------------------------------------------------------------------------

    def records(self, dest: str = "local") -> list[dict[str, Any]] | None:
        result = self.run("backup", "list", "--all", "-o", "json", "--destination", dest)
        if result.returncode != 0 and self.damaged and "Traceback" not in result.stderr:
            return None  # deliberate damage named with an error: fine (a traceback is noted by `run`)
        if result.returncode != 0:
            self.violation("list", f"backup list failed: {result.command()}\n{result.stderr.strip()}")
            return None
        rows: list[dict[str, Any]] = json.loads(result.stdout)
        return rows

    def completed(self, dest: str = "local", deployment: str | None = None) -> list[dict[str, Any]]:
        rows = self.records(dest) or []
        return sorted(
            (r for r in rows if r["status"] == "Completed" and deployment in (None, r["deployment"])),
            key=lambda r: r["started"],
        )

    def has_repository_command(self) -> bool:
        if self._repo_command is None:
            probe = helpers.run_cli("repository", "--help", env=self.env)
            self._repo_command = probe.returncode == 0 and "check" in probe.stdout
        return self._repo_command

    def prune_victims(self, keep_last: int) -> set[str]:
        """Backups `backup prune` may delete: all but the newest keep_last per deployment."""
        victims: set[str] = set()
        for dep in self.trees:
            rows = self.completed("local", dep)
            victims.update(r["id"] for r in rows[: max(0, len(rows) - keep_last)])
        return victims

    # ---- the oracle -------------------------------------------------------------------------

    def expected_tree(self, record: dict[str, Any]) -> dict[str, Any]:
        started = dt.datetime.fromisoformat(record["started"].replace("Z", "+00:00")).timestamp()
        candidates = [snap for t, snap in self.history[record["deployment"]] if t <= started + 0.002]
        return candidates[-1] if candidates else self.history[record["deployment"]][0][1]

    def _sentinel(self) -> dict[str, Any]:
        out = {"outside": helpers.snapshot_tree(self.outside)}
        for dep, tree in self.trees.items():
            out[dep] = helpers.snapshot_tree(tree.root)
        return out

    def restore_ok(self, record: dict[str, Any], dest: str, step: str, *, refusal_ok: bool = False) -> bool:
        """Restore into a fresh target and compare; record violations. True when exact.
        With `refusal_ok` (after deliberate damage) a failed restore is fine as long as it
        says so (exit code, no traceback); a wrong tree never is."""
        backup_id = record["id"]
        if backup_id not in self.expected:
            self.expected[backup_id] = self.expected_tree(record)
        self.restore_counter += 1
        target = self.root / "restores" / f"r{self.restore_counter}"
        before = self._sentinel()
        result = self.run(
            "backup", "restore", backup_id, "--target", str(target), "--destination", dest, "--yes"
        )
        self.stats.restores += 1
        if self._sentinel() != before:
            self.violation("outside", f"restore of {backup_id} changed files outside --target", step)
        ok = True
        # Exit 3: restored, with warnings (e.g. an index file skipped as damaged, a symlink
        # restored as a directory); the tree comparison below decides.
        if result.returncode not in (0, 3) and refusal_ok:
            ok = False
        elif result.returncode not in (0, 3):
            self.violation(
                "unrestorable",
                f"Completed backup {backup_id} ({dest}) does not restore: {result.command()}\n"
                f"{result.stderr.strip()[-600:]}",
                step,
            )
            ok = False
        elif self.exact:
            src = self.trees[record["deployment"]].root
            try:
                helpers.assert_same_tree(
                    self.expected[backup_id], helpers.snapshot_tree(helpers.restored(target, src))
                )
            except (AssertionError, FileNotFoundError) as exc:
                self.violation(
                    "unrestorable", f"Completed backup {backup_id} ({dest}) restores wrong: {exc}", step
                )
                ok = False
        shutil.rmtree(target, ignore_errors=True)
        return ok

    def check(self, step: str, *, may_vanish: Iterable[str] = (), restore_all: bool = False) -> None:
        """Assert the guarantees after a step (see the module docstring)."""
        self.stats.steps += 1
        vanish = set(may_vanish)
        for dest in self.dest_names:
            rows = self.records(dest)
            if rows is None:
                continue
            completed = {r["id"]: r for r in rows if r["status"] == "Completed"}
            lost = self.known[dest] - set(completed) - vanish
            for backup_id in sorted(lost):
                self.violation("lost", f"Completed backup {backup_id} vanished from {dest}", step)
            new = set(completed) - self.known[dest]
            old = sorted(set(completed) - new)
            # Old backups are restored now and then (every third step), new ones always.
            sampled = self.stats.steps % 3 == 0 and self.restore_sample
            sample = set(self.rng.sample(old, min(self.restore_sample, len(old)))) if sampled else set()
            for backup_id in sorted(completed if restore_all else new | sample):
                self.restore_ok(completed[backup_id], dest, step)
            self.known[dest] = set(completed)
        if self.has_repository_command():
            for dest in self.dest_names:
                result = self.run("repository", "check", "--destination", dest)
                if result.returncode == 10 and not self.known[dest]:
                    continue  # no repository there yet (nothing uploaded): nothing to check
                if result.returncode != 0:
                    self.violation("check", f"{result.command()}\n{result.stderr.strip()[-600:]}", step)

    # ---- saving and rolling back (to try several kinds of damage on one world) ------------

    def save(self) -> None:
        for name in ("repo", "state"):
            shutil.rmtree(self.root / f"saved-{name}", ignore_errors=True)
            if (self.root / name).exists():
                shutil.copytree(self.root / name, self.root / f"saved-{name}", symlinks=True)
        self._saved_known = {d: set(ids) for d, ids in self.known.items()}

    def roll_back(self) -> None:
        for name in ("repo", "state"):
            shutil.rmtree(self.root / name, ignore_errors=True)
            if (self.root / f"saved-{name}").exists():
                shutil.copytree(self.root / f"saved-{name}", self.root / name, symlinks=True)
        self.known = {d: set(ids) for d, ids in self._saved_known.items()}

    # ---- steps ------------------------------------------------------------------------------

    def create(self, dep: str = "app", *, kill_after: float | None = None, faults: str | None = None) -> Run:
        self.mutate(dep)
        return self.run("backup", "create", dep, faults=faults, kill_after=kill_after)

    def delete_oldest(
        self, dep: str = "app", *, kill_after: float | None = None, faults: str | None = None
    ) -> tuple[Run | None, set[str]]:
        rows = self.completed("local", dep)
        if len(rows) < 2:
            return None, set()
        victim = rows[0]["id"]
        return self.run("backup", "delete", victim, "--yes", faults=faults, kill_after=kill_after), {victim}

    def prune(
        self, keep_last: int = 2, *, kill_after: float | None = None, faults: str | None = None
    ) -> tuple[Run, set[str]]:
        victims = self.prune_victims(keep_last)
        return self.run("backup", "prune", "--yes", faults=faults, kill_after=kill_after), victims

    def upload_newest(self, *, kill_after: float | None = None, faults: str | None = None) -> Run | None:
        rows = self.completed("local")
        if not rows or "remote" not in self.dest_names:
            return None
        return self.run(
            "backup",
            "upload",
            rows[-1]["id"],
            "--destination",
            "remote",
            faults=faults,
            kill_after=kill_after,
        )

    def step_args(self, op: str, dep: str = "app") -> tuple[list[str], set[str], Any]:
        """(argv, backups it may delete, what to do first) for one operation."""
        if op == "delete":
            rows = self.completed("local", dep)
            if len(rows) >= 2:
                return ["backup", "delete", rows[0]["id"], "--yes"], {rows[0]["id"]}, None
            op = "create"
        if op == "prune":
            return ["backup", "prune", "--yes"], self.prune_victims(self.keep_last), None
        if op == "upload" and "remote" in self.dest_names:
            rows = self.completed("local")
            if rows:
                on_remote = self.known.get("remote", set())
                todo = [r for r in rows if r["id"] not in on_remote] or rows
                return ["backup", "upload", todo[-1]["id"], "--destination", "remote"], set(), None
        if op == "repair" and self.has_repository_command():
            return ["repository", "repair", "index"], set(), None
        return ["backup", "create", dep], set(), lambda: self.mutate(dep)

    def random_step(self, rng: random.Random, ops: Sequence[str], *, kill: str | None = None) -> Run:
        """One operation, killed at a random moment (kill="time"), at a random write
        (kill="write") or not at all; then `check`."""
        op = rng.choice(list(ops))
        args, vanish, before = self.step_args(op, rng.choice(list(self.trees)))
        if before is not None:
            before()
        label = " ".join(args[:2])
        if kill == "time":
            delay = self.random_delay(label)
            run = self.run(*args, kill_after=delay)
            label += f" killed after {delay:.3f}s"
        elif kill == "write":
            # About as many writes as such a command makes here (packs, index, manifest, locks).
            most = {"backup create": 6, "backup delete": 8, "backup prune": 8, "backup upload": 6}.get(
                label, 4
            )
            k, how = rng.randint(1, most), rng.choice(["before", "after"])
            run = self.run(*args, faults=f"kill_at={k},kill_how={how}")
            label += f" kill_at={k} {how}"
        else:
            run = self.run(*args)
        self.check(label, may_vanish=vanish)
        return run

    def pair(self, a: Sequence[str], b: Sequence[str]) -> tuple[Run, Run]:
        """Start two commands at once and wait for both."""
        pa, ea = self.start(*a)
        pb, eb = self.start(*b)
        ra = self.finish(pa, a, ea, None)
        rb = self.finish(pb, b, eb, None)
        self.stats.rounds += 1
        return ra, rb

    def kill_sweep(self, make_args: Any, *, how: str = "before", stride: int = 1, limit: int = 200) -> int:
        """Run the command `make_args()` returns with kill_at=1, 1+stride, ... until a run is
        not killed; `check` after each. Returns the number of kills."""
        kills = 0
        k = 1
        while k <= limit:
            args, may_vanish, before = make_args()
            if before is not None:
                before()
            run = self.run(*args, faults=f"kill_at={k},kill_how={how}")
            self.check(f"{' '.join(args[:2])} kill_at={k} {how}", may_vanish=may_vanish)
            if not run.killed:
                break
            kills += 1
            k += stride
        return kills


# ---- damage ---------------------------------------------------------------------------------


def repository_objects(repository: Path, kind: str) -> list[Path]:
    """The objects of one kind in a local repository (see OBJECT_KINDS)."""
    sub = {"config": None, "keys": "keys", "index": "index", "snapshots": "snapshots", "locks": "locks"}
    if kind == "config":
        return [repository / "config"] if (repository / "config").exists() else []
    folder = repository / (sub.get(kind) or "data")
    if not folder.exists():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.endswith(".tmp-backupctl"))


def damage(path: Path, kind: str, rng: random.Random, how: str = "flip") -> str:
    """Damage one object: flip a byte (in the header or the body of a pack), truncate it, or
    delete it. Returns a description."""
    data = bytearray(path.read_bytes())
    if how == "delete":
        path.unlink()
        return f"deleted {path.name}"
    if how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
        return f"truncated {path.name} to {len(data) // 2} bytes"
    if kind == "pack-header":
        header_len = int.from_bytes(data[-4:], "little")
        pos = len(data) - 4 - rng.randrange(1, max(2, header_len))
    elif kind == "pack-body":
        header_len = int.from_bytes(data[-4:], "little")
        pos = rng.randrange(0, max(1, len(data) - 4 - header_len))
    else:
        pos = rng.randrange(len(data))
    data[pos] ^= 0x40
    path.write_bytes(bytes(data))
    return f"flipped byte {pos} of {path.name}"


def kill_process_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
        proc.communicate()


# ---- concurrent rounds ----------------------------------------------------------------------

CONCURRENT_KINDS = ("create/create empty", "run-due empty", "create/prune", "upload/delete", "create/create")


def concurrent_round(kind: str, root: Path, seed: int, stats: Stats, world: World | None = None) -> World:
    """One concurrent round of `kind` (CONCURRENT_KINDS) and its check. The rounds on an
    empty destination make a fresh World under root; the others reuse `world` (made on
    first use, with a `remote` destination) and return it."""
    if kind == "create/create empty":
        fresh = World(root, seed=seed, size_kb=300, stats=stats)
        fresh.pair(["backup", "create", "app"], ["backup", "create", "app"])
        fresh.check(f"{kind} round", restore_all=True)
        fresh.run("backup", "create", "app")
        fresh.check(f"{kind}: the backup after")
        return fresh
    if kind == "run-due empty":
        fresh = World(root, deployments=("a", "b", "c"), seed=seed, size_kb=300, stats=stats)
        fresh.run("schedule", "run-due")
        fresh.stats.rounds += 1
        fresh.check(f"{kind} round", restore_all=True)
        fresh.run("backup", "create", "a")
        fresh.check(f"{kind}: the backup after")
        return fresh
    if world is None:
        remote = {"type": "local", "path": str(root / "remote"), "fsync": False}
        world = World(root, seed=seed, stats=stats, remote=remote)
        world.run("backup", "create", "app")
        world.check("set-up")
    if kind == "create/prune":
        world.mutate("app")
        victims = world.prune_victims(world.keep_last)
        world.pair(["backup", "create", "app"], ["backup", "prune", "--yes"])
        world.check(kind, may_vanish=victims)
    elif kind == "upload/delete":
        world.mutate("app")
        world.run("backup", "create", "app")
        world.check(f"{kind} set-up")
        rows = world.completed("local")
        remote_rows = world.completed("remote")
        upload = ["backup", "upload", rows[-1]["id"], "--destination", "remote"]
        if len(remote_rows) >= 2:
            victim = remote_rows[0]["id"]
            world.pair(upload, ["backup", "delete", victim, "--yes", "--destination", "remote"])
            world.check(kind, may_vanish={victim})
        else:
            victims = world.prune_victims(world.keep_last)
            world.pair(upload, ["backup", "prune", "--yes"])
            world.check(kind, may_vanish=victims | world.known["remote"])
    else:  # create/create on an existing repository
        world.mutate("app")
        world.pair(["backup", "create", "app"], ["backup", "create", "app"])
        world.check(kind)
    return world
