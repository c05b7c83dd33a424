"""Issue 11 items 4, 6, 9, 13 and 14 (pack headers): a damaged or incomplete index never
takes the repository down nor lets prune delete live data; `repository check / repair /
unlock`; prune removes leftovers of failed runs; verify authenticates pack headers.

Every test runs the real CLI on a real repository and ends by restoring every backup
listed Completed byte for byte.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.errors import DestinationError, ExitCode
from backupctl.repo.pack import pack_name

MIB = 1 << 20
OLD = time.time() - 3 * 3600  # older than prune's grace period


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def _objects(dep: Any, prefix: str) -> list[Path]:
    """Objects under `prefix` of the local repository, oldest first."""
    root = dep.repository / prefix
    files = [p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp-backupctl")]
    return sorted(files, key=lambda p: p.stat().st_mtime_ns)


def _take(dep: Any, src: Path, n: int) -> list[tuple[str, dict[str, Any]]]:
    """n backups; each adds a new random file. Returns [(id, tree snapshot at that time)]."""
    out = []
    for i in range(n):
        (src / f"new-{uuid.uuid4().hex[:6]}-{i}.bin").write_bytes(os.urandom(300 * 1024))
        backup_id = dep.create()
        out.append((backup_id, helpers.snapshot_tree(src)))
        time.sleep(0.02)  # distinct mtimes for the index files of each backup
    return out


def _assert_all_completed_restore(
    dep: Any, src: Path, backups: list[tuple[str, dict[str, Any]]], tmp: Path, *, warned: bool = False
) -> None:
    """Every backup listed Completed restores byte for byte (exit 0; 3 when `warned`: the
    repository is known damaged and says so)."""
    listed = {r["id"]: r["status"] for r in dep.list()}
    for backup_id, expected in backups:
        if listed.get(backup_id) != "Completed":
            continue
        target = tmp / f"restore-{backup_id[:8]}-{uuid.uuid4().hex[:4]}"
        result = dep.run("backup", "restore", backup_id, "--target", target)
        assert result.returncode in ((0, ExitCode.PARTIAL) if warned else (0,)), result
        helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, src)))


@pytest.fixture
def repo3(tmp_path: Path, make_deployment: Any) -> tuple[Any, Path, list[tuple[str, dict[str, Any]]]]:
    src = tmp_path / "src"
    src.mkdir()
    (src / "base.bin").write_bytes(os.urandom(MIB))
    (src / "note.txt").write_text("note\n")
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    return dep, src, _take(dep, src, 3)


# ---- item 6: a damaged index file is skipped, check names it, repair index rebuilds it --


def test_damaged_index_file_is_skipped_named_and_repaired(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    newest_index = _objects(dep, "index")[-1]  # written by the last backup only
    _flip(newest_index, newest_index.stat().st_size // 2)
    name = f"index/{newest_index.name}"

    # Backups that do not need it stay usable (verify, restore) and a new backup works.
    first = backups[0][0]
    result = dep.run("backup", "verify", first)
    assert result.returncode == 0, result
    assert name in result.stderr and "repair index" in result.stderr, result
    _assert_all_completed_restore(dep, src, backups[:1], tmp_path, warned=True)
    (src / "after.txt").write_text("after the damage\n")
    result = dep.run("backup", "create", "app")
    assert result.returncode == 0, result
    backups.append((result.stdout.strip().splitlines()[-1], helpers.snapshot_tree(src)))

    # The backup that needs it fails by name; check names the damaged file, exit 7.
    assert dep.run("backup", "verify", backups[2][0]).returncode == ExitCode.INTEGRITY
    check = dep.run("repository", "check", "-o", "json")
    assert check.returncode == ExitCode.INTEGRITY, check
    doc = check.json()
    assert doc["ok"] is False and doc["index_files_damaged"] == [name]
    assert any(p["kind"] == "index" and p["object"] == name for p in doc["problems"]), doc
    assert any(p["kind"] == "snapshot" and backups[2][0] in p["object"] for p in doc["problems"]), doc

    repair = dep.ok("repository", "repair", "index", "-o", "json").json()
    assert repair["index_files_deleted"] == [name] and repair["packs_reindexed"] >= 1, repair
    assert not newest_index.exists()
    assert dep.ok("repository", "check", "-o", "json").json()["problems"] == []
    for backup_id, _ in backups:
        dep.ok("backup", "verify", backup_id)
    _assert_all_completed_restore(dep, src, backups, tmp_path)


# ---- item 4: delete/prune refuse while the index is incomplete ---------------------------


def test_delete_with_an_index_file_missing_refuses_and_keeps_every_pack(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    oldest_index = _objects(dep, "index")[0]  # the first backup's blobs, shared by all later ones
    oldest_index.unlink()
    packs_before = dep.packs()

    result = dep.run("backup", "delete", backups[0][0], "--yes")
    helpers.assert_one_line_error(result, ExitCode.INTEGRITY, "refusing to delete data", "repair index")
    assert dep.packs() == packs_before
    assert any(r["id"] == backups[0][0] for r in dep.list())  # nothing deleted, not even the manifest

    dep.ok("repository", "repair", "index")
    result = dep.run("backup", "delete", backups[0][0], "--yes")
    assert result.returncode == 0, result
    _assert_all_completed_restore(dep, src, backups[1:], tmp_path)
    assert dep.ok("repository", "check", "-o", "json").json()["ok"] is True


def test_prune_refuses_while_an_index_file_is_damaged(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    index = _objects(dep, "index")[1]
    _flip(index, 40)
    for p in dep.repository.joinpath("data").rglob("*"):
        if p.is_file():
            os.utime(p, (OLD, OLD))
    packs_before = dep.packs()
    result = dep.run("backup", "prune", "--yes")
    assert result.returncode == ExitCode.INTEGRITY, result
    assert f"index/{index.name}" in result.stderr and "repair index" in result.stderr, result
    assert dep.packs() == packs_before
    dep.ok("repository", "repair", "index")
    dep.ok("backup", "prune", "--yes")
    _assert_all_completed_restore(dep, src, backups, tmp_path)


# ---- item 14 (part): verify and check authenticate pack headers --------------------------


def test_flipped_pack_header_byte_fails_verify_and_check(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    newest_pack = _objects(dep, "data")[-1]
    data = newest_pack.read_bytes()
    (hlen,) = struct.unpack("<I", data[-4:])
    _flip(newest_pack, len(data) - 4 - hlen + hlen // 2)  # inside the encrypted header

    result = dep.run("backup", "verify", backups[-1][0])
    assert result.returncode == ExitCode.INTEGRITY, result
    assert newest_pack.name in result.stderr and "header" in result.stderr, result
    check = dep.run("repository", "check", "-o", "json")
    assert check.returncode == ExitCode.INTEGRITY, check
    assert [p["object"].rsplit("/", 1)[1] for p in check.json()["problems"]] == [newest_pack.name]
    # The blobs themselves are intact and indexed: every backup still restores exactly.
    _assert_all_completed_restore(dep, src, backups, tmp_path)


def test_check_read_data_names_a_damaged_blob(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    # A pack of file data only: a flip in a pack of item streams is found by the structure
    # check already (it reads every backup's item streams).
    svc = helpers.service(dep.config)
    by_pack = svc.repository("local").load_index().blobs_by_pack()
    data_pack = sorted(pid for pid, entries in by_pack.items() if all(e.type == "d" for e in entries))[0]
    svc.close()
    pack = next(p for p in _objects(dep, "data") if p.name == data_pack)
    _flip(pack, 100)
    assert dep.ok("repository", "check", "-o", "json").json()["ok"] is True  # structure is fine
    result = dep.run("repository", "check", "--read-data", "-o", "json")
    assert result.returncode == ExitCode.INTEGRITY, result
    problems = result.json()["problems"]
    assert problems and all(p["kind"] == "data" and p["object"].endswith(pack.name) for p in problems)
    assert result.json()["packs_read"] == len(dep.packs())
    part = dep.run("repository", "check", "--read-data-subset", "1/1", "-o", "json")
    assert part.returncode == ExitCode.INTEGRITY and part.json()["packs_read"] == len(dep.packs())
    bad = dep.run("repository", "check", "--read-data-subset", "0/3")
    helpers.assert_one_line_error(bad, ExitCode.USAGE, "--read-data-subset")


# ---- item 6: repair snapshots sets damaged manifests aside -------------------------------


def test_repair_snapshots_moves_a_damaged_manifest_aside(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    victim = backups[1][0]
    manifest = dep.repository / "snapshots" / victim
    _flip(manifest, manifest.stat().st_size // 2)
    check = dep.run("repository", "check", "-o", "json")
    assert check.returncode == ExitCode.INTEGRITY
    assert [p["object"] for p in check.json()["problems"]] == [f"snapshots/{victim}"]
    # Prune refuses: the damaged backup's blobs cannot be known.
    helpers.assert_one_line_error(
        dep.run("backup", "delete", backups[0][0], "--yes"),
        ExitCode.INTEGRITY,
        "refusing",
        "repair snapshots",
    )

    dry = dep.ok("repository", "repair", "snapshots", "--dry-run", "-o", "json").json()
    assert [d["id"] for d in dry["damaged"]] == [victim] and manifest.exists()
    doc = dep.ok("repository", "repair", "snapshots", "--yes", "-o", "json").json()
    assert [(d["id"], d["action"]) for d in doc["damaged"]] == [
        (victim, f"moved to damaged/snapshots/{victim}")
    ]
    assert not manifest.exists() and (dep.repository / "damaged" / "snapshots" / victim).exists()
    assert victim not in {r["id"] for r in dep.list() if r["status"] == "Completed"}
    assert dep.ok("repository", "check", "-o", "json").json()["ok"] is True
    _assert_all_completed_restore(dep, src, backups, tmp_path)


def test_lost_pack_check_repair_then_set_aside_the_backups_that_needed_it(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    newest = _objects(dep, "data")[-1]  # written by the last backup
    newest.unlink()
    check = dep.run("repository", "check", "-o", "json")
    assert check.returncode == ExitCode.INTEGRITY
    problems = check.json()["problems"]
    assert {
        "kind": "pack",
        "object": f"data/{newest.name[:2]}/{newest.name}",
        "message": "pack is missing (listed by the index)",
    } in problems

    repair = dep.ok("repository", "repair", "index", "-o", "json").json()
    assert repair["packs_missing"] == [f"data/{newest.name[:2]}/{newest.name}"]
    check = dep.run("repository", "check", "-o", "json").json()
    assert {p["kind"] for p in check["problems"]} == {"snapshot"}, check
    damaged = {p["object"].split("/", 1)[1] for p in check["problems"]}
    assert backups[-1][0] in damaged

    doc = dep.ok("repository", "repair", "snapshots", "--delete", "--yes", "-o", "json").json()
    assert {d["id"] for d in doc["damaged"]} == damaged and all(
        d["action"] == "deleted" for d in doc["damaged"]
    )
    assert dep.ok("repository", "check", "-o", "json").json()["ok"] is True
    dep.ok("backup", "prune", "--yes")
    _assert_all_completed_restore(dep, src, [b for b in backups if b[0] not in damaged], tmp_path)


# ---- item 13: prune removes temp files and old unreferenced packs, says how much ---------


def test_prune_frees_temp_files_and_packs_of_failed_runs(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    data = dep.repository / "data"
    # A backup that "failed": its packs and index are written, its manifest is not.
    (src / "failed.bin").write_bytes(os.urandom(2 * MIB))
    failed = dep.create()
    (dep.repository / "snapshots" / failed).unlink()
    for p in _objects(dep, "data"):
        os.utime(p, (OLD, OLD))
    # Temp files of killed writes: an old one (removed) and a young one (a running write: kept).
    old_tmp = data / "ab" / f".ab{'0' * 62}.{uuid.uuid4().hex[:12]}.tmp-backupctl"
    old_tmp.parent.mkdir(exist_ok=True)
    old_tmp.write_bytes(os.urandom(100_000))
    os.utime(old_tmp, (OLD, OLD))
    young_tmp = data / "cd" / f".cd{'0' * 62}.{uuid.uuid4().hex[:12]}.tmp-backupctl"
    young_tmp.parent.mkdir(exist_ok=True)
    young_tmp.write_bytes(b"x" * 1000)
    # An unindexed pack of a backup running right now (young): kept.
    young_pack = data / "ef" / ("ef" + "1" * 62)
    young_pack.parent.mkdir(exist_ok=True)
    young_pack.write_bytes(os.urandom(5000))

    before = dep.packs()
    result = dep.run("backup", "prune", "--yes", "-o", "json")
    assert result.returncode == 0, result
    repos = result.json()["repositories"]
    assert len(repos) == 1 and repos[0]["temp_files_deleted"] == 1
    assert repos[0]["freed_bytes"] > 2 * MIB  # the failed backup's 2 MiB file and the temp file
    assert repos[0]["packs_deleted"] >= 1
    assert not old_tmp.exists() and young_tmp.exists() and young_pack.exists()
    assert dep.packs() < before
    human = dep.run("backup", "prune", "--yes")
    assert human.returncode == 0 and "freed" in human.stderr, human
    _assert_all_completed_restore(dep, src, backups, tmp_path)
    assert dep.ok("repository", "check", "-o", "json").json()["ok"] is True


def test_delete_frees_a_fresh_backups_own_packs_at_once(tmp_path: Path, repo3: Any) -> None:
    """The grace period protects packs no backup ever referenced, not those of a deleted one."""
    dep, src, backups = repo3
    (src / "only-in-the-last.bin").write_bytes(os.urandom(2 * MIB))
    last = dep.create()
    before = dep.packs()
    doc = dep.ok("backup", "delete", last, "--yes", "-o", "json").json()
    assert doc["freed_bytes"] > 2 * MIB and doc["packs_deleted"] >= 1, doc
    assert dep.packs() < before
    _assert_all_completed_restore(dep, src, backups, tmp_path)


# ---- item 9: a lock of a dead process on another host --------------------------------


def _foreign_lock(dep: Any, *, age: float, exclusive: bool = True) -> Path:
    lock = dep.repository / "locks" / uuid.uuid4().hex
    lock.parent.mkdir(exist_ok=True)
    host = "pod-" + uuid.uuid4().hex[:6]
    assert host != socket.gethostname()
    lock.write_text(
        json.dumps(
            {
                "hostname": host,
                "pid": 4242,
                "exclusive": exclusive,
                "operation": "delete",
                "time": time.time() - age,
            }
        )
    )
    return lock


def test_foreign_lock_message_retry_and_unlock(tmp_path: Path, repo3: Any) -> None:
    dep, src, backups = repo3
    lock = _foreign_lock(dep, age=60)
    result = dep.run("backup", "create", "app")
    helpers.assert_one_line_error(
        result, ExitCode.LOCKED, "stale at", "--retry-lock", "repository unlock --remove-all"
    )
    result = dep.run("backup", "create", "app", "--retry-lock", "2s")
    helpers.assert_one_line_error(result, ExitCode.LOCKED, "waited 2s")
    helpers.assert_one_line_error(
        dep.run("backup", "delete", backups[0][0], "--yes", "--retry-lock", "1s"), ExitCode.LOCKED
    )
    helpers.assert_one_line_error(dep.run("backup", "prune", "--yes", "--retry-lock", "1s"), ExitCode.LOCKED)
    helpers.assert_one_line_error(
        dep.run("backup", "create", "app", "--retry-lock", "soon"), ExitCode.USAGE, "--retry-lock"
    )

    # unlock alone removes only stale locks: this one is 1 minute old.
    assert dep.ok("repository", "unlock", "-o", "json").json()["removed"] == []
    assert lock.exists()

    # --retry-lock waits for the holder: the lock goes away while create retries.
    timer = threading.Timer(1.5, lock.unlink)
    timer.start()
    try:
        result = dep.run("backup", "create", "app", "--retry-lock", "60s")
    finally:
        timer.join()
    assert result.returncode == 0, result

    stale = _foreign_lock(dep, age=31 * 60)
    live = _foreign_lock(dep, age=10, exclusive=False)
    removed = dep.ok("repository", "unlock", "-o", "json").json()["removed"]
    assert [r["name"] for r in removed] == [f"locks/{stale.name}"] and removed[0]["stale"] is True
    assert not stale.exists() and live.exists()
    removed = dep.ok("repository", "unlock", "--remove-all", "-o", "json").json()["removed"]
    assert [r["name"] for r in removed] == [f"locks/{live.name}"] and not live.exists()
    _assert_all_completed_restore(dep, src, backups, tmp_path)


# ---- the same on S3 (moto) --------------------------------------------------------------


def test_check_and_repair_on_s3(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    from conftest_servers import build_destination, destination_config

    cfg = destination_config("s3", request, tmp_path)
    src = tmp_path / "src"
    src.mkdir()
    (src / "base.bin").write_bytes(os.urandom(MIB))
    config = tmp_path / "config.yaml"
    key = tmp_path / "repo.key"
    helpers.write_config(
        config, sources=[{"type": "files", "paths": [str(src)]}], repository=tmp_path / "unused", key_file=key
    )
    doc = helpers.load_yaml(config)
    doc["destinations"] = {"s3": cfg}
    doc["deployments"]["app"]["destinations"] = ["s3"]
    helpers.dump_yaml(doc, config)
    env = {"BACKUPCTL_CONFIG": str(config)}
    backups = []
    for i in range(3):
        (src / f"f{i}.bin").write_bytes(os.urandom(200 * 1024))
        backup_id = helpers.run_ok("backup", "create", "app", env=env).stdout.strip().splitlines()[-1]
        backups.append((backup_id, helpers.snapshot_tree(src)))

    dest = build_destination(cfg)
    try:
        indexes = sorted(i.name for i in dest.list("index/"))
        assert len(indexes) == 3
        damaged = indexes[0]
        raw = bytearray(dest.get(damaged))
        raw[len(raw) // 2] ^= 1
        dest.put(damaged, bytes(raw))
        dest.delete(indexes[1])
        # A pack that the intact index file lists gets a flipped header byte.
        svc = helpers.service(config)
        try:
            repo = svc.repository("s3")
            kept = repo.codec.decode_doc(dest.get(indexes[2]), b"index", indexes[2])
        finally:
            svc.close()
        pack = pack_name(kept["packs"][0]["id"])
        raw = bytearray(dest.get(pack))
        (hlen,) = struct.unpack("<I", bytes(raw[-4:]))
        raw[len(raw) - 4 - hlen // 2] ^= 1
        dest.put(pack, bytes(raw))

        check = helpers.run_cli("repository", "check", "-o", "json", env=env)
        assert check.returncode == ExitCode.INTEGRITY, check
        doc = check.json()
        assert doc["index_files_damaged"] == [damaged]
        assert any(p["kind"] == "pack" and p["object"] == pack for p in doc["problems"]), doc
        helpers.assert_one_line_error(
            helpers.run_cli("backup", "delete", backups[0][0], "--yes", env=env), ExitCode.INTEGRITY, "repair"
        )

        repair = helpers.run_cli("repository", "repair", "index", "-o", "json", env=env)
        rdoc = repair.json()
        assert damaged in rdoc["index_files_deleted"]
        # The pack with the damaged header cannot be re-indexed unless a good index file lists it.
        if rdoc["packs_unreadable"]:
            assert repair.returncode == ExitCode.INTEGRITY
            assert [u["pack"] for u in rdoc["packs_unreadable"]] == [pack]
            snaps = helpers.run_ok("repository", "repair", "snapshots", "--yes", "-o", "json", env=env).json()
            assert snaps["damaged"], snaps
        else:
            assert repair.returncode == 0, repair
        check = helpers.run_cli("repository", "check", "-o", "json", env=env).json()
        assert {p["kind"] for p in check["problems"]} <= {"pack"}, check
        listed = {
            r["id"]: r["status"]
            for r in helpers.run_ok("backup", "list", "--all", "-o", "json", env=env).json()
        }
        restored_any = False
        for backup_id, expected in backups:
            if listed.get(backup_id) != "Completed":
                continue
            target = tmp_path / f"r-{backup_id[:8]}"
            helpers.run_ok("backup", "restore", backup_id, "--target", target, env=env)
            helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, src)))
            restored_any = True
        assert restored_any
    finally:
        dest.close()


def test_run_due_retry_lock_waits_for_a_foreign_lock(tmp_path: Path, make_deployment: Any) -> None:
    src = helpers.make_sample_tree(tmp_path / "src")
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    doc = helpers.load_yaml(dep.config)
    doc["policies"] = {
        "hourly": {
            "created": "2026-01-01T00:00:00Z",
            "schedules": [{"type": "full", "hourly": {"every": 1, "minute": 0}, "timezone": "UTC"}],
        }
    }
    doc["deployments"]["app"]["policy"] = "hourly"
    helpers.dump_yaml(doc, dep.config)
    dep.repository.mkdir()
    lock = _foreign_lock(dep, age=60)
    helpers.assert_one_line_error(
        dep.run("schedule", "run-due", "--retry-lock", "x"), ExitCode.USAGE, "--retry-lock"
    )
    timer = threading.Timer(1.5, lock.unlink)
    timer.start()
    try:
        result = dep.run("schedule", "run-due", "--retry-lock", "60s", "-o", "json")
    finally:
        timer.join()
    assert result.returncode == 0, result
    completed = [r for r in dep.list() if r["status"] == "Completed"]
    assert len(completed) == 1, result
    _assert_all_completed_restore(dep, src, [(completed[0]["id"], helpers.snapshot_tree(src))], tmp_path)


@pytest.mark.parametrize("type_name", ["local", "s3", "gcs", "azure", "sftp", "ftp"])
def test_listings_report_modification_times_for_the_grace_period(
    type_name: str, make_destination: Any
) -> None:
    """Prune's grace period needs each pack's age: every destination type reports it."""
    dest = make_destination(type_name)
    dest.put("data/ab/ab" + "0" * 62, b"pack bytes")
    (info,) = list(dest.list("data/"))
    assert info.mtime is not None, info
    assert abs(info.mtime - time.time()) < 3600, (info.mtime, time.time())  # a clock value, not a duration


@pytest.mark.parametrize("type_name", ["local", "sftp", "ftp"])
def test_temporaries_of_killed_writes_are_listed_and_removable(
    type_name: str, make_destination: Any, request: pytest.FixtureRequest
) -> None:
    """The destinations that write through temporary names let prune find and remove them."""
    dest = make_destination(type_name)
    pack = "data/ab/ab" + "0" * 62
    dest.put(pack, b"pack")
    # What a killed put leaves: its temporary file next to the final name (the test servers
    # run on this machine, so it is written into their directory by hand).
    if type_name == "local":
        root = Path(dest.location)
    elif type_name == "sftp":
        root = Path(dest._root)
    else:
        root = request.getfixturevalue("ftp_server").root / dest._root.lstrip("/")
    tmp_name = f"data/ab/.ab{'1' * 62}.0123456789ab.tmp-backupctl"
    (root / tmp_name).write_bytes(b"partial")

    assert [i.name for i in dest.list("data/")] == [pack]
    temps = list(dest.temporaries())
    assert [t.name for t in temps] == [tmp_name] and temps[0].size == 7 and temps[0].mtime is not None
    dest.delete_temporary(tmp_name)
    assert list(dest.temporaries()) == []
    with pytest.raises(DestinationError):
        dest.delete_temporary(pack)  # never a real object
    assert [i.name for i in dest.list("data/")] == [pack]
