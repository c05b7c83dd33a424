"""Safety of the repository's identity and index (issue 11: items 1, 2, 7, 10, 14).

* Creating a repository has a single winner, whoever races for it (threads of one
  scheduler, processes, hosts on S3); a repository whose key slots disagree on the master
  keys refuses to open instead of reading with the wrong ones.
* Only blobs listed by a written index file are used for deduplication, so a failed backup
  cannot make a later one reference data that no index lists.
* A key file readable by others is refused; a destination with repository objects but no
  config is damaged, never initialised over; a damaged key slot is named, and skipped when
  another slot opens.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any

import helpers
import pytest
from helpers import assert_one_line_error, assert_same_tree, restored, snapshot_tree

from backupctl.destinations.base import Destination
from backupctl.destinations.faulty import FaultyDestination
from backupctl.destinations.local import LocalDestination, LocalOptions
from backupctl.errors import BackupFailedError, IntegrityError
from backupctl.repo.crypto import KeyMaterial, MasterKeys, read_key_file, wrap_master_keys
from backupctl.repo.repository import Repository

NIGHTLY = {"schedules": [{"cron": "0 0 * * *", "timezone": "UTC"}]}


def make_files(root: Path, seed: int, n: int = 4, size: int = 300_000) -> Path:
    import random

    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"f{i}.bin").write_bytes(rnd.randbytes(size))
    (root / "note.txt").write_text(f"tree {seed}\n")
    return root


def config_doc(
    tmp_path: Path, deployments: dict[str, Any], *, settings: dict[str, Any] | None = None
) -> dict[str, Any]:
    key = tmp_path / "repo.key"
    if not key.exists():
        from backupctl.repo.crypto import generate_key_file

        generate_key_file(key)
    doc: dict[str, Any] = {
        "destinations": {"local": {"type": "local", "path": str(tmp_path / "repo"), "fsync": False}},
        "deployments": {name: {"destinations": ["local"], **d} for name, d in deployments.items()},
        "encryption": {"key_file": str(key)},
        "policies": {"nightly": NIGHTLY},
    }
    if settings:
        doc["settings"] = settings
    return doc


def write_doc(path: Path, doc: dict[str, Any]) -> dict[str, str]:
    """Write the config; the env for it, with a state directory of its own (schedules, jobs)."""
    helpers.dump_yaml(doc, path)
    state = path.parent / "state"
    state.mkdir(exist_ok=True)
    return {"BACKUPCTL_CONFIG": str(path), "XDG_STATE_HOME": str(state)}


def key_slots(repo_dir: Path) -> list[str]:
    keys = repo_dir / "keys"
    return (
        sorted(p.name for p in keys.iterdir() if not p.name.endswith(".tmp-backupctl"))
        if keys.exists()
        else []
    )


def assert_restores(env: dict[str, str], backup_id: str, source: Path, target: Path) -> None:
    helpers.run_ok("backup", "restore", backup_id, "--target", target, env=env)
    assert_same_tree(snapshot_tree(source), snapshot_tree(restored(target, source)))


def material_of(key_file: Path) -> KeyMaterial:
    return KeyMaterial("key_file", read_key_file(key_file))


def local(path: Path) -> Destination:
    return LocalDestination("local", LocalOptions(type="local", path=path, fsync=False))


def race(n: int, fn: Any) -> list[Any]:
    """Run fn(i) in n threads released at once; returns results (or raises the first error)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return results


# ---- 1. one winner when creating a repository --------------------------------------------------


def test_racing_creators_make_one_repository_with_one_key_slot(tmp_path: Path) -> None:
    key = tmp_path / "repo.key"
    from backupctl.repo.crypto import generate_key_file

    generate_key_file(key)
    for round_no in range(6):
        repo_dir = tmp_path / f"repo-{round_no}"
        repos = race(3, lambda i, d=repo_dir: Repository.create(local(d), material_of(key)))
        assert len({r.id for r in repos}) == 1
        assert len({r.cipher.keys for r in repos}) == 1, "creators ended with different master keys"
        assert len(key_slots(repo_dir)) == 1, key_slots(repo_dir)
        reopened = Repository.open(local(repo_dir), material_of(key))
        assert reopened.cipher.keys == repos[0].cipher.keys


def test_service_opens_a_repository_once_between_threads(tmp_path: Path) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    env = write_doc(
        tmp_path / "config.yaml",
        config_doc(tmp_path, {"app": {"sources": [{"type": "files", "paths": [str(tree)]}]}}),
    )
    for _ in range(3):
        svc = helpers.service(Path(env["BACKUPCTL_CONFIG"]))
        try:
            repos = race(4, lambda i, s=svc: s.repository("local", create=True))
        finally:
            svc.close()
        assert all(r is repos[0] for r in repos), "each thread got its own Repository object"
    assert len(key_slots(tmp_path / "repo")) == 1


def test_concurrent_backup_create_processes_on_an_empty_destination(tmp_path: Path) -> None:
    trees = {name: make_files(tmp_path / f"src-{name}", seed) for seed, name in enumerate(("a", "b"), 1)}
    for round_no in range(4):
        root = tmp_path / f"round-{round_no}"
        root.mkdir()
        doc = config_doc(
            root, {n: {"sources": [{"type": "files", "paths": [str(t)]}]} for n, t in trees.items()}
        )
        env = write_doc(root / "config.yaml", doc)
        procs = [
            subprocess.Popen(
                helpers.cli_command("backup", "create", name, "-o", "json"),
                env=helpers.cli_env(env),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name in trees
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        for p, (out, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0 and "Traceback" not in err, (out, err)
        assert len(key_slots(root / "repo")) == 1, key_slots(root / "repo")
        listed = helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()
        assert sorted((r["deployment"], r["status"]) for r in listed) == [
            ("a", "Completed"),
            ("b", "Completed"),
        ]
        for rec in listed:
            assert_restores(env, rec["id"], trees[rec["deployment"]], root / f"restore-{rec['deployment']}")


def test_run_due_with_two_deployments_on_an_empty_destination(tmp_path: Path) -> None:
    trees = {name: make_files(tmp_path / f"src-{name}", seed) for seed, name in enumerate(("a", "b"), 1)}
    for round_no in range(3):
        root = tmp_path / f"round-{round_no}"
        root.mkdir()
        doc = config_doc(
            root,
            {
                n: {"sources": [{"type": "files", "paths": [str(t)]}], "policy": "nightly"}
                for n, t in trees.items()
            },
        )
        env = write_doc(root / "config.yaml", doc)
        result = helpers.run_cli("schedule", "run-due", "-o", "json", env=env)
        assert result.returncode == 0, str(result)
        assert len(key_slots(root / "repo")) == 1, key_slots(root / "repo")
        listed = helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()
        assert sorted((r["deployment"], r["status"]) for r in listed) == [
            ("a", "Completed"),
            ("b", "Completed"),
        ]
        for rec in listed:
            assert_restores(env, rec["id"], trees[rec["deployment"]], root / f"restore-{rec['deployment']}")
        # And the next run still works on the same repository.
        again = helpers.run_ok("backup", "create", "a", env=env)
        assert "Traceback" not in again.stderr


@pytest.mark.parametrize("kind", ["s3", "gcs", "azure", "sftp", "ftp"])
def test_concurrent_creators_on_remote_destinations(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Three hosts create the repository at once, each with its own connection."""
    from conftest_servers import build_destination, destination_config

    from backupctl.repo.crypto import generate_key_file

    key = tmp_path / "repo.key"
    generate_key_file(key)
    for _round in range(3):
        cfg = destination_config(kind, request, tmp_path)
        dests = [build_destination(cfg, f"{kind}-{i}") for i in range(3)]
        try:
            repos = race(3, lambda i, ds=dests: Repository.create(ds[i], material_of(key)))
            assert len({r.cipher.keys for r in repos}) == 1, "creators ended with different master keys"
            slots = [i.name for i in dests[0].list("keys/")]
            assert len(slots) == 1, slots
            assert Repository.open(dests[0], material_of(key)).cipher.keys == repos[0].cipher.keys
        finally:
            for d in dests:
                d.close()


def test_concurrent_first_backups_on_s3_restore(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    from conftest_servers import destination_config

    trees = {name: make_files(tmp_path / f"src-{name}", seed) for seed, name in enumerate(("a", "b"), 1)}
    doc = config_doc(
        tmp_path, {n: {"sources": [{"type": "files", "paths": [str(t)]}]} for n, t in trees.items()}
    )
    doc["destinations"] = {"remote": destination_config("s3", request, tmp_path)}
    for dep in doc["deployments"].values():
        dep["destinations"] = ["remote"]
    env = write_doc(tmp_path / "config.yaml", doc)
    env.update({k: os.environ[k] for k in ("TEST_S3_KEY_ID", "TEST_S3_SECRET")})
    procs = [
        subprocess.Popen(
            helpers.cli_command("backup", "create", name),
            env=helpers.cli_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in trees
    ]
    for p in procs:
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0, (out, err)
    listed = helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()
    assert sorted((r["deployment"], r["status"]) for r in listed) == [("a", "Completed"), ("b", "Completed")]
    for rec in listed:
        assert_restores(env, rec["id"], trees[rec["deployment"]], tmp_path / f"restore-{rec['deployment']}")


def _add_slot(repo_dir: Path, keys: MasterKeys, key_file: Path, name: str) -> None:
    (repo_dir / "keys" / name).write_bytes(wrap_master_keys(keys, material_of(key_file)))


def test_slots_that_disagree_on_the_master_keys_refuse_to_open(tmp_path: Path, make_deployment: Any) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    dep.create()
    (good,) = key_slots(dep.repository)
    # A repository made by an older backupctl (no master_key_check in the config) with a
    # second slot from a losing creator: nothing can tell which slot is right.
    config = json.loads((dep.repository / "config").read_text())
    config.pop("master_key_check", None)
    config.pop("key_slot", None)
    (dep.repository / "config").write_text(json.dumps(config))
    _add_slot(dep.repository, MasterKeys.generate(), dep.key_file, "f" * 32)
    result = dep.run("backup", "list")
    assert_one_line_error(result, 7, f"keys/{good}", f"keys/{'f' * 32}", "different master keys")


def test_an_orphan_slot_of_a_losing_creator_is_ignored(tmp_path: Path, make_deployment: Any) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    backup_id = dep.create()
    # A creator that lost the race and was killed before removing its own slot.
    for name in ("0" * 32, "f" * 32):
        _add_slot(dep.repository, MasterKeys.generate(), dep.key_file, name)
    second = dep.create()
    for bid in (backup_id, second):
        assert_restores(dep.env, bid, tree, dep.root / f"restore-{bid[:6]}")


# ---- 2. a failed backup does not poison the index ----------------------------------------------


def test_failed_backup_does_not_poison_the_index_of_the_process(tmp_path: Path) -> None:
    tree = make_files(tmp_path / "src", 7, n=6, size=400_000)
    other = make_files(tmp_path / "other", 8, n=1)
    doc = config_doc(
        tmp_path,
        {
            "a": {
                "sources": [
                    {"type": "files", "paths": [str(tree)]},
                    {"type": "sqlite", "path": str(tmp_path / "missing.db")},
                ]
            },
            "b": {"sources": [{"type": "files", "paths": [str(tree)]}]},
            "c": {"sources": [{"type": "files", "paths": [str(other)]}]},
        },
        settings={"pack_size_mib": 1},
    )
    env = write_doc(tmp_path / "config.yaml", doc)
    svc = helpers.service(Path(env["BACKUPCTL_CONFIG"]))
    try:
        with pytest.raises(BackupFailedError):
            svc.create_backup("a")
        assert any((tmp_path / "repo" / "data").rglob("*")), "the failed backup should have written packs"
        b = svc.create_backup("b")
        assert b["status"] == "Completed"
        c = svc.create_backup("c")
    finally:
        svc.close()
    assert_restores(env, b["id"], tree, tmp_path / "restore-b")
    # Deleting another backup prunes unreferenced packs: B's data must survive it.
    helpers.run_ok("backup", "delete", c["id"], "--yes", env=env)
    assert_restores(env, b["id"], tree, tmp_path / "restore-b-after-prune")
    helpers.run_ok("backup", "verify", b["id"], env=env)


def test_run_due_failed_deployment_does_not_poison_the_next(tmp_path: Path) -> None:
    """The same through `schedule run-due` with one worker: A fails after writing packs, B
    (queued behind it, same files) is Completed and restores exactly."""
    tree = make_files(tmp_path / "src", 7, n=6, size=400_000)
    doc = config_doc(
        tmp_path,
        {
            "a": {
                "sources": [
                    {"type": "files", "paths": [str(tree)]},
                    {"type": "sqlite", "path": str(tmp_path / "missing.db")},
                ],
                "policy": "nightly",
            },
            "b": {"sources": [{"type": "files", "paths": [str(tree)]}], "policy": "nightly"},
        },
        settings={"pack_size_mib": 1, "max_parallel_backups": 1},
    )
    env = write_doc(tmp_path / "config.yaml", doc)
    result = helpers.run_cli("schedule", "run-due", "-o", "json", env=env)
    rows = {r["deployment"]: r["status"] for r in result.json() if r.get("kind", "backup") == "backup"}
    assert rows == {"a": "Failed", "b": "Completed"}, str(result)
    (b,) = [
        r for r in helpers.run_ok("backup", "list", "-o", "json", env=env).json() if r["deployment"] == "b"
    ]
    assert_restores(env, b["id"], tree, tmp_path / "restore-b")
    helpers.run_ok("backup", "verify", b["id"], env=env)


def test_backups_through_a_failing_destination_all_restore(tmp_path: Path) -> None:
    src = tmp_path / "src"
    doc = config_doc(
        tmp_path,
        {"app": {"sources": [{"type": "files", "paths": [str(src)]}]}},
        settings={"pack_size_mib": 1},
    )
    env = write_doc(tmp_path / "config.yaml", doc)
    svc = helpers.service(Path(env["BACKUPCTL_CONFIG"]))
    completed: dict[str, dict[str, Any]] = {}
    failed = 0
    try:
        svc.repository("local", create=True)
        svc._destinations["local"] = FaultyDestination(svc.destination("local"), fail_ratio=0.1, seed=11)
        svc._repos.clear()
        import random

        rnd = random.Random(3)
        make_files(src, 100)
        for round_no in range(150):  # about 1 in 7 backups completes through 10% of calls failing
            if failed >= 4 and len(completed) >= 4:
                break
            # Each round changes some files, so new blobs are written, and brings back old ones.
            (src / f"f{rnd.randrange(4)}.bin").write_bytes(random.Random(round_no % 5).randbytes(300_000))
            (src / "note.txt").write_text(f"round {round_no}\n")
            try:
                rec = svc.create_backup("app")
            except BackupFailedError:
                failed += 1
                continue
            except Exception:  # a fault while opening the repository or similar: not a Completed backup
                failed += 1
                continue
            completed[rec["id"]] = snapshot_tree(src)
    finally:
        svc.close()
    assert failed >= 4 and len(completed) >= 4, (failed, len(completed))
    for backup_id, expected in completed.items():
        target = tmp_path / f"restore-{backup_id[:8]}"
        helpers.run_ok("backup", "restore", backup_id, "--target", target, env=env)
        assert_same_tree(expected, snapshot_tree(restored(target, src)))


# ---- 7. key file mode --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o666, 0o604])
def test_a_key_file_readable_by_others_is_refused(make_deployment: Any, tmp_path: Path, mode: int) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    os.chmod(dep.key_file, mode)
    result = dep.run("backup", "create", "app")
    assert_one_line_error(result, 4, str(dep.key_file), f"{mode:04o}", f"chmod 600 {dep.key_file}")
    assert not (dep.repository / "config").exists()
    os.chmod(dep.key_file, 0o600)
    dep.create()


# ---- 10. a repository without its config ---------------------------------------------------------


def test_a_repository_that_lost_its_config_is_damaged_not_empty(make_deployment: Any, tmp_path: Path) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    dep.create()
    slots_before = key_slots(dep.repository)
    (dep.repository / "config").unlink()
    listed = dep.run("backup", "list")
    assert_one_line_error(listed, 7, "no config", "damaged")
    created = dep.run("backup", "create", "app")
    assert_one_line_error(created, 7, "no config", "damaged")
    assert not (dep.repository / "config").exists()
    assert key_slots(dep.repository) == slots_before


@pytest.mark.parametrize("kind", ["snapshots", "index", "data", "wal", "binlog"])
def test_any_repository_object_without_config_is_damage(
    make_deployment: Any, tmp_path: Path, kind: str
) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    dep.create()
    (dep.repository / "config").unlink()
    for other in ("snapshots", "index", "data", "keys"):
        if other != kind:
            subprocess.run(["rm", "-rf", str(dep.repository / other)], check=True)
    if kind in ("wal", "binlog"):  # only an archived log file is left (PITR archives)
        (dep.repository / kind / "app").mkdir(parents=True)
        (dep.repository / kind / "app" / "000000010000000000000001").write_bytes(b"archived")
    assert_one_line_error(dep.run("backup", "create", "app"), 7, "no config", f"({kind}/)")
    assert not (dep.repository / "config").exists()


# ---- 14. damaged key slots ---------------------------------------------------------------------


def test_a_truncated_key_slot_is_named(make_deployment: Any, tmp_path: Path) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    dep.create()
    (slot,) = key_slots(dep.repository)
    path = dep.repository / "keys" / slot
    path.write_bytes(path.read_bytes()[:40])
    assert_one_line_error(dep.run("backup", "list"), 7, f"keys/{slot}")


def test_a_garbage_key_slot_is_skipped_when_another_opens(make_deployment: Any, tmp_path: Path) -> None:
    tree = make_files(tmp_path / "src", 1, n=1)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    backup_id = dep.create()
    for name, junk in (("0" * 32, b"\x00garbage"), ("1" * 32, b'{"kdf": "hkdf-sha256"}'), ("2" * 32, b"[1]")):
        (dep.repository / "keys" / name).write_bytes(junk)
    assert_restores(dep.env, backup_id, tree, dep.root / "restore")


def test_open_raises_integrity_error_for_damaged_slot_only(tmp_path: Path) -> None:
    from backupctl.repo.crypto import generate_key_file

    key = tmp_path / "repo.key"
    generate_key_file(key)
    Repository.create(local(tmp_path / "repo"), material_of(key))
    (slot,) = key_slots(tmp_path / "repo")
    (tmp_path / "repo" / "keys" / slot).write_bytes(b"{")
    with pytest.raises(IntegrityError) as caught:
        Repository.open(local(tmp_path / "repo"), material_of(key))
    assert f"keys/{slot}" in caught.value.message


# ---- a pack the index names is gone: the next backup must not reuse its blobs -----------


def test_backup_after_a_pack_is_lost_stores_its_data_again(tmp_path: Path, make_deployment: Any) -> None:
    """Found by the torture suite: with the data packs deleted, the next backup deduplicated
    against the index, was listed Completed and could not be restored (exit 7)."""
    tree = helpers.make_sample_tree(tmp_path / "src")
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    dep.create()
    packs = sorted(dep.packs())
    assert packs
    for name in packs:
        (dep.repository / "data" / name[:2] / name).unlink()
    result = dep.run("backup", "create", "app", "--type", "full")
    backup_id = result.stdout.strip().splitlines()[-1]
    target = tmp_path / "target"
    restore = dep.run("backup", "restore", backup_id, "--target", target)
    # Completed, with a warning naming the lost packs (exit 3); it must restore exactly.
    assert result.returncode == 3 and "is missing: what this backup needs" in result.stderr, str(result)
    assert restore.returncode == 0, str(restore)
    assert_same_tree(snapshot_tree(tree), snapshot_tree(restored(target, tree)))
    # The index now holds two copies of the data blobs, one in a lost pack: repair drops the
    # lost packs; the first backup's own item streams are gone with them (check names it and
    # only it), and prune must keep the healthy copies the new backup needs.
    assert dep.run("repository", "repair", "index").returncode in (0, 3)
    check = dep.run("repository", "check")
    assert check.returncode == 7 and backup_id not in check.stderr, check.stderr
    assert dep.run("backup", "prune", "--yes", "--max-unused", "0%").returncode in (0, 3, 7)
    again = tmp_path / "again"
    assert dep.run("backup", "restore", backup_id, "--target", again).returncode == 0
    assert_same_tree(snapshot_tree(tree), snapshot_tree(restored(again, tree)))
    assert dep.run("backup", "verify", backup_id).returncode == 0
