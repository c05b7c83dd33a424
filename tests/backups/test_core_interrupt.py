"""Killing `backupctl backup create` at several points leaves a consistent repository.

After each SIGKILL: the interrupted backup is never Completed (no new manifest; the
job shows as Failed), every earlier backup still verifies, stale locks do not block
anyone, and the next backup completes, reuses what the killed runs uploaded and
indexed, and restores byte-identical. SIGINT and SIGTERM end with exit code 130 and a
Failed job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.errors import ExitCode
from backupctl.repo.items import read_items

MIB = 1 << 20
# Letters, digits, spaces and newlines: text-like, compressible, and unique per file.
_TEXT_TABLE = bytes((b"abcdefghijklmnopqrstuvwxyz  eeetaoin\n,0123456789" * 6)[:256])


def _text(n: int) -> bytes:
    return os.urandom(n).translate(_TEXT_TABLE)


class World:
    """One repository shared by the tests of this module (generating 200 MB once)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / "src"
        self.state = root / "state"
        self.repository = root / "repo"
        self.config = helpers.write_config(
            root / "config.yaml",
            sources=[{"type": "files", "paths": [str(self.src)]}],
            repository=self.repository,
            # Small packs: many objects, an index file every 8 packs (16 MiB).
            settings={"pack_size_mib": 2, "state_dir": str(self.state), "workers": 2},
        )
        self.env = {"BACKUPCTL_CONFIG": str(self.config)}

    def run(self, *args: Any, **kw: Any) -> helpers.CliResult:
        return helpers.run_cli(*args, env=self.env, **kw)

    def ok(self, *args: Any, **kw: Any) -> helpers.CliResult:
        return helpers.run_ok(*args, env=self.env, **kw)

    def records(self) -> list[dict[str, Any]]:
        return self.ok("backup", "list", "--all", "-o", "json").json()

    def manifests(self) -> set[str]:
        d = self.repository / "snapshots"
        return {p.name for p in d.iterdir()} if d.exists() else set()

    def objects(self, sub: str) -> dict[str, int]:
        d = self.repository / sub
        if not d.exists():
            return {}
        return {
            p.name: p.stat().st_size
            for p in d.rglob("*")
            if p.is_file() and not p.name.endswith(".tmp-backupctl")
        }

    def start_backup(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            helpers.cli_command("backup", "create", "app"),
            env=helpers.cli_env(self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # A shell may start us with SIGINT ignored; the child must see SIGINT like a user's ^C.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )

    def referenced_packs(self, backup_id: str) -> set[str]:
        svc = helpers.service(self.config)
        try:
            repo = svc.repository("local")
            repo.load_index(reload=True)
            manifest = repo.load_manifest(backup_id)
            packs: set[str] = set()
            for src in manifest["sources"]:
                tree = [bytes.fromhex(t) for t in src["tree"]]
                blobs = list(tree)
                for item in read_items(repo, tree):
                    blobs.extend(item.chunks)
                packs.update(repo.index.lookup(b).pack_id for b in blobs)
            return packs
        finally:
            svc.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    w = World(tmp_path_factory.mktemp("interrupt"))
    base = w.src / "base"
    base.mkdir(parents=True)
    for i in range(4):
        (base / f"base-{i}.bin").write_bytes(os.urandom(2 * MIB))
        (base / f"base-{i}.txt").write_bytes(_text(3 * MIB))
    # The baseline: an earlier, completed backup that must survive every kill.
    w.baseline = w.ok("backup", "create", "app").stdout.strip()  # type: ignore[attr-defined]
    # Then ~180 MB more: half random (incompressible), half text.
    for d in range(6):
        sub = w.src / f"dir-{d}"
        sub.mkdir()
        for i in range(5):
            (sub / f"random-{i}.bin").write_bytes(os.urandom(3 * MIB))
            (sub / f"text-{i}.csv").write_bytes(_text(3 * MIB))
    return w


def _kill_when(
    world: World, proc: subprocess.Popen[str], ready: Callable[[], bool], timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, (
            f"the backup finished (exit {proc.returncode}) before the kill point was reached; "
            f"stderr: {proc.stderr.read() if proc.stderr else ''}"
        )
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.005)
    assert proc.poll() is None, "the backup finished before the kill"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_several_points(tmp_path: Path, world: World) -> None:
    baseline = world.baseline  # type: ignore[attr-defined]
    base_packs = world.objects("data")
    base_indexes = world.objects("index")
    completed_before = {r["id"] for r in world.records() if r["status"] == "Completed"}
    assert completed_before == {baseline}
    t_start = [0.0]

    def after(seconds: float) -> Callable[[], bool]:
        return lambda: time.monotonic() - t_start[0] >= seconds

    run_start_packs = [0]

    def packs_at_least(n: int) -> Callable[[], bool]:
        """n packs written by this run."""
        return lambda: len(world.objects("data")) >= run_start_packs[0] + n

    def new_index() -> Callable[[], bool]:
        return lambda: len(world.objects("index")) > len(base_indexes) + killed_indexes[0]

    killed_indexes = [0]
    points: list[tuple[str, Callable[[], bool]]] = [
        ("0.3 s after start", after(0.3)),
        ("first new pack", packs_at_least(1)),
        ("first index file of the run", new_index()),
        ("30 new packs", packs_at_least(30)),
    ]
    seen_failed: set[str] = set()
    for label, ready in points:
        manifests_before = world.manifests()
        killed_indexes[0] = len(world.objects("index")) - len(base_indexes)
        run_start_packs[0] = len(world.objects("data"))
        t_start[0] = time.monotonic()
        proc = world.start_backup()
        _kill_when(world, proc, ready)

        assert world.manifests() == manifests_before, f"[{label}] a killed backup left a manifest"
        records = world.records()
        completed = {r["id"] for r in records if r["status"] == "Completed"}
        assert completed == completed_before, f"[{label}] the killed backup shows as Completed: {records}"
        failed = {r["id"] for r in records if r["status"] == "Failed"}
        assert {r["id"] for r in records} == completed | failed, records
        if label != "0.3 s after start":  # that early the job may not be recorded yet: then not listed at all
            assert failed - seen_failed, f"[{label}] the killed job is not listed as Failed: {records}"
        for r in records:
            if r["id"] in failed - seen_failed:
                assert "interrupted" in (r["error"] or ""), r
        seen_failed = failed
        for backup_id in completed_before:
            world.ok("backup", "verify", backup_id)

    assert len(world.objects("index")) > len(base_indexes), "no kill happened after an index file was written"
    packs_before_completion = world.objects("data")
    killed_run_packs = set(packs_before_completion) - set(base_packs)
    assert killed_run_packs, "the killed runs wrote no packs: the kill points are too early"

    # The next backup completes (stale locks of the killed processes do not block it) ...
    created = world.run("backup", "create", "app", "-o", "json")
    assert created.returncode == 0, str(created)
    record = created.json()
    assert record["status"] == "Completed" and record["parent"] == baseline
    new_id = record["id"]
    # ... reuses the packs the killed runs wrote and indexed ...
    referenced = world.referenced_packs(new_id)
    reused = referenced & killed_run_packs
    assert reused, "the completed backup reused nothing the killed runs stored"
    new_data = sum(
        size for name, size in world.objects("data").items() if name in referenced and name not in base_packs
    )
    assert record["stored_bytes"] < new_data, (
        f"stored {record['stored_bytes']} bytes, as much as a run from scratch needs ({new_data})"
    )
    # ... and restores byte-identical.
    target = tmp_path / "restore"
    world.ok("backup", "restore", new_id[:10], "--target", target)
    helpers.assert_same_tree(
        helpers.snapshot_tree(world.src), helpers.snapshot_tree(helpers.restored(target, world.src))
    )
    world.ok("backup", "verify", new_id)
    world.ok("backup", "verify", baseline)

    # Deleting takes the exclusive lock despite the killed processes' stale locks, and
    # prunes the killed runs' packs nobody references - once they are older than prune's
    # grace period (which protects a backup still writing): age every pack past it.
    old = time.time() - 2 * 3600
    for pack in (world.repository / "data").rglob("*"):
        if pack.is_file():
            os.utime(pack, (old, old))
    world.ok("backup", "delete", baseline, "--yes")
    remaining_packs = set(world.objects("data"))
    assert remaining_packs == world.referenced_packs(new_id), "unreferenced packs survived the prune"
    world.ok("backup", "verify", new_id)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_exit_130_and_failed(world: World, signum: int) -> None:
    # A fresh tree version so the backup has new data to write.
    extra = world.src / f"extra-{signum}"
    extra.mkdir()
    for i in range(8):
        (extra / f"r{i}.bin").write_bytes(os.urandom(4 * MIB))
    manifests_before = world.manifests()
    ids_before = {r["id"] for r in world.records()}
    packs0 = len(world.objects("data"))
    proc = world.start_backup()
    deadline = time.monotonic() + 60
    while len(world.objects("data")) < packs0 + 2:
        assert proc.poll() is None, "the backup finished before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == ExitCode.INTERRUPTED, (proc.returncode, out, err)
    assert "Traceback" not in err, err
    assert out.strip() == "", "an interrupted backup printed an ID"
    assert world.manifests() == manifests_before
    new = [r for r in world.records() if r["id"] not in ids_before]
    assert len(new) == 1 and new[0]["status"] == "Failed", new
    assert "interrupted" in new[0]["error"]
    # Nothing is left locked: another backup completes.
    world.ok("backup", "create", "app")
