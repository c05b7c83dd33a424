"""The torture suite, CI size (issue 11, "the lasting part"); bench/torture.py runs it large.

Every test drives the real CLI in subprocesses against a real local repository (and the moto
S3 server for a few), disturbs it - SIGKILL at every K-th destination write or at a random
moment, concurrent commands, injected destination faults, damaged objects - and then
asserts the guarantees of docs/design.md through torture_lib.World.check: every backup listed
Completed restores byte for byte, no earlier Completed backup is lost, nothing is written
outside a restore target, `repository check` passes (when the command exists), and no
command ends in a traceback. A failure lists the commands that reproduce it.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import helpers
import pytest
from torture_lib import OBJECT_KINDS, Run, World, damage, repository_objects

pytestmark = pytest.mark.torture


def assert_clean(world: World) -> None:
    assert not world.stats.violations, f"{world.stats.summary()}\n\n" + "\n\n".join(
        map(str, world.stats.violations[:6])
    )


def world_with_backups(root: Path, n: int, **kwargs: Any) -> World:
    world = World(root, **kwargs)
    for i in range(n):
        run = world.create()
        assert run.returncode == 0, run.stderr
        world.check(f"setup create {i}")
    return world


# ---- kill -9 at every K-th destination write ------------------------------------------------


@pytest.mark.parametrize("how", ["before", "after"])
def test_kill_create_at_every_write(tmp_path: Path, how: str) -> None:
    world = world_with_backups(tmp_path / "w", 1, seed=11)

    def create() -> tuple[list[str], set[str], Any]:
        return ["backup", "create", "app"], set(), lambda: world.mutate("app")

    kills = world.kill_sweep(create, how=how, stride=1 if how == "before" else 2)
    assert kills >= 2, f"only {kills} writes were killed: the kill points did not reach the data"
    assert world.create().returncode == 0
    world.check("final", restore_all=True)
    assert_clean(world)


def test_kill_delete_and_prune_at_every_write(tmp_path: Path) -> None:
    world = world_with_backups(tmp_path / "w", 3, seed=12)

    def delete() -> tuple[list[str], set[str], Any]:
        rows = world.completed("local", "app")
        while len(rows) < 3:  # killed deletes may have deleted their victims: refill
            assert world.create().returncode == 0
            world.check("refill")
            rows = world.completed("local", "app")
        victim = rows[0]["id"]
        return ["backup", "delete", victim, "--yes"], {victim}, None

    kills = world.kill_sweep(delete, how="before", stride=2)
    for i in range(3):
        assert world.create().returncode == 0
        world.check(f"refill {i}")

    def prune() -> tuple[list[str], set[str], Any]:
        return ["backup", "prune", "--yes"], world.prune_victims(2), None

    kills += world.kill_sweep(prune, how="after", stride=3)
    assert kills >= 3
    world.check("final", restore_all=True)
    assert_clean(world)


def test_kill_upload_at_every_write(tmp_path: Path) -> None:
    remote = {"type": "local", "path": str(tmp_path / "remote"), "fsync": False}
    world = world_with_backups(tmp_path / "w", 2, seed=13, remote=remote)

    def upload() -> tuple[list[str], set[str], Any]:
        newest = world.completed("local")[-1]["id"]
        return ["backup", "upload", newest, "--destination", "remote"], set(), None

    kills = world.kill_sweep(upload, how="before")
    assert world.create().returncode == 0
    world.check("another backup")
    kills += world.kill_sweep(upload, how="after", stride=2)
    assert kills >= 3
    world.check("final", restore_all=True)
    assert_clean(world)


def test_kill_repair_at_every_write(tmp_path: Path) -> None:
    """A killed `repository repair index` leaves the repository no worse than it found it
    (every backup that restored before still restores), and the next repair fixes it."""
    world = world_with_backups(tmp_path / "w", 3, seed=14)
    if not world.has_repository_command():
        pytest.skip("`backupctl repository` does not exist yet (issue 11 item 6)")
    kills = 0
    for k in range(1, 40):
        # Something to repair: one index file gone.
        repository_objects(world.repository, "index")[0].unlink()
        world.damaged = True
        restorable = {
            r["id"] for r in world.completed("local") if world.restore_ok(r, "local", "", refusal_ok=True)
        }
        run = world.run(
            "repository", "repair", "index", faults=f"kill_at={k},kill_how={'before' if k % 2 else 'after'}"
        )
        still = {
            r["id"] for r in world.completed("local") if world.restore_ok(r, "local", "", refusal_ok=True)
        }
        for backup_id in sorted(restorable - still):
            world.violation(
                "unrestorable", f"{backup_id} restored before a killed repair, not after", f"kill_at={k}"
            )
        world.damaged = False
        repaired = world.run("repository", "repair", "index")
        assert repaired.returncode == 0, repaired.stderr
        world.check(f"repair after kill_at={k}", restore_all=True)
        if not run.killed:
            break
        kills += 1
    assert kills >= 1
    assert_clean(world)


# ---- kill -9 at random moments --------------------------------------------------------------


def test_kill_at_random_moments(tmp_path: Path) -> None:
    remote = {"type": "local", "path": str(tmp_path / "remote"), "fsync": False}
    world = world_with_backups(tmp_path / "w", 2, seed=15, remote=remote)
    rng = random.Random(15)
    for _ in range(6):
        world.random_step(rng, ["create", "create", "delete", "prune", "upload"], kill="time")
    world.check("final", restore_all=True)
    assert_clean(world)


# ---- restores stay inside their target ------------------------------------------------------


def test_restores_never_write_outside_the_target(tmp_path: Path) -> None:
    """(a) a deployment naming a path below a symlinked directory (Capistrano's current/),
    (c) a non-empty --target holding a symlink where the backup has a directory."""
    world = World(tmp_path / "w", seed=80, capistrano=True, size_kb=300)
    for i in range(3):
        assert world.create().returncode == 0
        world.check(f"create {i}", restore_all=True)  # older backups restore over changed live files
    # (c): the target already holds the restored tree's top directory as a symlink outside.
    target = tmp_path / "target"
    top = helpers.restored(target, world.trees["app"].root)
    top.parent.mkdir(parents=True)
    evil = world.outside / "evil"
    evil.mkdir()
    top.symlink_to(evil)
    before = helpers.snapshot_tree(world.outside)
    oldest = world.completed("local")[0]["id"]
    world.run("backup", "restore", oldest, "--target", str(target), "--yes")
    if helpers.snapshot_tree(world.outside) != before:
        world.violation("outside", "restore into a --target holding a symlink wrote through it")
    assert_clean(world)


# ---- concurrent pairs -----------------------------------------------------------------------


def _pair(world: World, a: list[str], b: list[str]) -> None:
    pa, ea = world.start(*a)
    pb, eb = world.start(*b)
    world.finish(pa, a, ea, None)
    world.finish(pb, b, eb, None)
    world.stats.rounds += 1


def test_concurrent_create_create_on_an_empty_destination(tmp_path: Path) -> None:
    for r in range(3):
        world = World(tmp_path / f"w{r}", seed=20 + r, size_kb=300)
        _pair(world, ["backup", "create", "app"], ["backup", "create", "app"])
        world.check(f"round {r}", restore_all=True)
        assert world.create().returncode == 0, "a backup after the first two fails"
        world.check(f"round {r}: one more backup")
        assert_clean(world)


def test_run_due_with_several_deployments_on_an_empty_destination(tmp_path: Path) -> None:
    for r in range(2):
        world = World(tmp_path / f"w{r}", deployments=("a", "b", "c"), seed=30 + r, size_kb=300)
        world.run("schedule", "run-due")
        world.stats.rounds += 1
        world.check(f"round {r}", restore_all=True)
        completed = world.completed("local")
        assert len(completed) == 3, [r["deployment"] for r in completed]
        assert world.create("a").returncode == 0, "a backup after the first run-due fails"
        world.check(f"round {r}: one more backup")
        assert_clean(world)


def test_concurrent_create_and_prune(tmp_path: Path) -> None:
    world = world_with_backups(tmp_path / "w", 3, seed=40)
    for r in range(3):
        world.mutate("app")
        victims = world.prune_victims(2)
        _pair(world, ["backup", "create", "app"], ["backup", "prune", "--yes"])
        world.check(f"round {r}", may_vanish=victims)
    world.check("final", restore_all=True)
    assert_clean(world)


def test_concurrent_upload_and_delete(tmp_path: Path) -> None:
    remote = {"type": "local", "path": str(tmp_path / "remote"), "fsync": False}
    world = world_with_backups(tmp_path / "w", 1, seed=50, remote=remote)
    for r in range(3):
        assert world.create().returncode == 0
        assert world.create().returncode == 0
        world.check(f"round {r} set-up")
        rows = world.completed("local")
        remote_rows = world.completed("remote")
        if len(remote_rows) >= 2:
            victim = remote_rows[0]["id"]
            vanish = {victim}
            delete = ["backup", "delete", victim, "--yes", "--destination", "remote"]
        else:
            vanish, delete = set(), ["backup", "prune", "--yes"]
            vanish = world.prune_victims(2)
        _pair(world, ["backup", "upload", rows[-1]["id"], "--destination", "remote"], delete)
        world.check(f"round {r}", may_vanish=vanish)
    assert_clean(world)


# ---- a faulty destination -------------------------------------------------------------------


FAULTS = "fail=0.04,timeout=0.02,short_read=0.04,torn=0.02,timeout_s=0.02"


def test_faulty_local_destination(tmp_path: Path) -> None:
    """Without retries every fault fails the command: a Failed backup is honest, a wrong
    Completed one is not."""
    world = world_with_backups(tmp_path / "w", 1, seed=60)
    rng = random.Random(60)
    injected = 0
    for step in range(8):
        faults = f"{FAULTS},seed={step}"
        op = rng.choice(["create", "create", "delete", "prune"])
        vanish: set[str] = set()
        run: Run | None
        if op == "create":
            run = world.create(faults=faults)
        elif op == "delete":
            run, vanish = world.delete_oldest(faults=faults)
        else:
            run, vanish = world.prune(faults=faults)
        injected += run is not None and run.returncode != 0
        world.check(f"{step}: {op} with {faults}", may_vanish=vanish)
    assert injected, "no command met a fault"
    world.check("final", restore_all=True)
    assert_clean(world)


@pytest.mark.server
def test_faulty_s3_destination_behind_retries(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from conftest_servers import destination_config

    remote = destination_config("s3", request, tmp_path)
    world = world_with_backups(tmp_path / "w", 1, seed=61, remote=remote)
    for step in range(2):
        assert world.create().returncode == 0
        newest = world.completed("local")[-1]["id"]
        world.run(
            "backup", "upload", newest, "--destination", "remote", faults=f"{FAULTS},seed={step},dests=remote"
        )
        world.check(f"{step}: upload to S3 with faults")
        vanish = world.prune_victims(2)
        world.run("backup", "prune", "--yes", faults=f"{FAULTS},seed={step},dests=remote")
        world.check(
            f"{step}: prune with faults", may_vanish=vanish | {r["id"] for r in world.completed("remote")}
        )
    world.check("final", restore_all=True)
    assert_clean(world)


@pytest.mark.server
def test_kill_upload_to_s3_at_every_write(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from conftest_servers import destination_config

    remote = destination_config("s3", request, tmp_path)
    world = world_with_backups(tmp_path / "w", 2, seed=62, remote=remote)

    def upload() -> tuple[list[str], set[str], Any]:
        newest = world.completed("local")[-1]["id"]
        return ["backup", "upload", newest, "--destination", "remote"], set(), None

    assert world.kill_sweep(upload, how="after", stride=2) >= 1
    world.check("final", restore_all=True)
    assert_clean(world)


def test_run_due_behind_a_failing_destination(tmp_path: Path) -> None:
    """Failed backups in one run-due process must not make the later ones of the same process
    Completed but unrestorable."""
    world = World(tmp_path / "w", deployments=("a", "b", "c"), seed=63, size_kb=600)
    world.run("schedule", "run-due")  # creates the repository and a first backup of each
    world.check("first run-due")
    for step in range(3):
        world.mutate()
        # A new state dir so that every deployment is due again.
        state = world.root / f"state-{step}"
        doc = helpers.load_yaml(world.config)
        doc["settings"]["state_dir"] = str(state)
        helpers.dump_yaml(doc, world.config)
        world.known = {d: set() for d in world.dest_names}  # the rows live in the state dir
        world.run("schedule", "run-due", faults=f"fail=0.1,seed={step}")
        world.check(f"run-due {step} with faults", restore_all=True)
    assert_clean(world)


# ---- damaged objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind",
    OBJECT_KINDS,
)
def test_damage_is_named_never_restored_wrong(tmp_path: Path, kind: str) -> None:
    """Flip a byte in, truncate or delete one object of each kind: every backup still listed
    Completed restores exactly or is refused with a clear error, `repository check` (when it
    exists) names the damage, and the next backup fails clearly or restores exactly."""
    world = world_with_backups(tmp_path / "w", 2, seed=70)
    if kind == "locks":  # a lock left behind by a killed backup, then damaged
        world.run("backup", "create", "app", faults="kill_at=1,kill_how=after")
    world.save()
    hows = {"pack-body": ["flip"], "keys": ["flip", "truncate"], "locks": ["flip", "truncate"]}.get(
        kind, ["flip", "delete"]
    )
    for how in hows:
        objects = repository_objects(world.repository, kind)
        assert objects, f"no {kind} object to damage"
        what = damage(random.Random(7).choice(objects), kind, random.Random(7), how)
        step = f"{kind} {how}"
        world.log.append(f"# damaged a {kind} object: {what}")
        world.damaged = True
        for row in world.completed("local"):
            world.restore_ok(row, "local", step, refusal_ok=True)
        # A deleted manifest is a deleted backup as far as the repository can tell.
        if world.has_repository_command() and kind != "locks" and (kind, how) != ("snapshots", "delete"):
            # Pack bodies are read only with --read-data (the structure check reads headers).
            check = world.run("repository", "check", *(["--read-data"] if kind == "pack-body" else []))
            if check.returncode == 0:
                world.violation("check", f"`repository check` passes after the damage ({what})", step)
        created = world.create()
        if created.returncode == 0:
            backup_id = created.stdout.strip().splitlines()[-1]
            rows = [r for r in world.completed("local") if r["id"] == backup_id]
            if not rows:
                world.violation(
                    "unrestorable", f"backup create printed {backup_id}, not listed Completed", step
                )
            for row in rows:
                world.restore_ok(row, "local", f"{step}: the backup after the damage")
        world.roll_back()
        world.damaged = False
    assert_clean(world)
