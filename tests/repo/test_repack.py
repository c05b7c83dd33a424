"""Prune with repack (`backup prune --max-unused`) and `repository stats` (issue 14 item 3).

Real CLI in subprocesses, real local repositories (one run against the moto S3 server).
A history whose deleted backups leave packs half dead (1 MiB packs of ~100 KB files):
prune with repack must shrink the repository, keep every remaining backup restorable byte
for byte and `repository check --read-data` clean; kill -9 at each write of a
prune-with-repack must leave every remaining backup restorable, and a later prune must
finish the job.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_one_line_error, assert_same_tree, restored, snapshot_tree

FILE = 100_000  # one chunk per file: files up to 512 KiB are a single chunk
N_FILES = 30


def write_generation(root: Path, gen: int) -> None:
    """Generation 0 writes every file; each later one rewrites the even-numbered half.

    So once generation 0 is deleted, its packs are half dead (its odd files stay live)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(N_FILES):
        if gen == 0 or i % 2 == 0:
            (root / f"f{i:02}.bin").write_bytes(random.Random(gen * 1000 + i).randbytes(FILE))


def repo_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())


def build_history(dep: Any, src: Path, generations: int = 4) -> list[tuple[str, dict[str, Any]]]:
    """One backup per generation, with the tree each one holds."""
    history = []
    for gen in range(generations):
        write_generation(src, gen)
        history.append((dep.create(), snapshot_tree(src)))
    return history


def assert_restores(dep: Any, backup_id: str, expected: dict[str, Any], src: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    dep.ok("backup", "restore", backup_id, "--target", target, "--yes")
    assert_same_tree(expected, snapshot_tree(restored(target, src)))


def prune_json(dep: Any, *args: str, **kwargs: Any) -> dict[str, Any]:
    doc = dep.ok("backup", "prune", "--yes", "-o", "json", *args, **kwargs).json()
    (repo,) = doc["repositories"]
    return dict(repo)


@pytest.fixture
def history(make_deployment: Any, tmp_path: Path) -> tuple[Any, Path, list[tuple[str, dict[str, Any]]]]:
    src = tmp_path / "src"
    dep = make_deployment([{"type": "files", "paths": [str(src)]}], settings={"pack_size_mib": 1})
    hist = build_history(dep, src)
    # Delete the first two: generation 0's packs become half dead, generation 1's all dead.
    for backup_id, _ in hist[:2]:
        dep.ok("backup", "delete", backup_id, "--yes")
    # Packs younger than prune's grace period (1 h) that hold unreferenced blobs may belong
    # to a backup still running, so prune never repacks them: let the hour pass.
    _age(dep.repository, 7200)
    return dep, src, hist[2:]


def test_prune_repacks_mixed_packs_and_every_backup_still_restores(history: Any, tmp_path: Path) -> None:
    dep, src, survivors = history
    before = repo_bytes(dep.repository)
    kept_whole = prune_json(dep, "--max-unused", "100%")
    assert kept_whole["packs_repacked"] == 0 and kept_whole["freed_bytes"] == 0, kept_whole
    assert repo_bytes(dep.repository) == before

    result = prune_json(dep, "--max-unused", "0%")
    after = repo_bytes(dep.repository)
    assert result["packs_repacked"] > 0, result
    assert result["freed_bytes"] == before - after > 0, (result, before, after)
    # 2 live backups of 30 files, 15 of them shared: 45 live files of ~100 KB remain, of
    # the 60 the four backups stored; the dead 15 are gone (less than one file's slack).
    live = 45 * FILE
    assert after < live + FILE, (before, after, live)
    assert before > live + 10 * FILE
    for n, (backup_id, tree) in enumerate(survivors):
        assert_restores(dep, backup_id, tree, src, tmp_path / f"restore-{n}")
    dep.ok("repository", "check", "--read-data")
    again = prune_json(dep, "--max-unused", "0%")
    assert again["packs_repacked"] == 0 and again["packs_deleted"] == 0, again


def test_max_unused_bad_value_is_a_usage_error(files_deployment: Any) -> None:
    result = files_deployment.run("backup", "prune", "--yes", "--max-unused", "lots")
    assert_one_line_error(result, 2, "--max-unused", "percentage")


def _age(repo: Path, seconds: float) -> None:
    """Make every pack look `seconds` older (as if the grace period had passed)."""
    old = time.time() - seconds
    for p in (repo / "data").rglob("*"):
        if p.is_file():
            os.utime(p, (old, old))


@pytest.mark.parametrize("how", ["before", "after"])
def test_kill_during_prune_with_repack_leaves_every_backup_restorable(
    history: Any, tmp_path: Path, how: str
) -> None:
    dep, src, survivors = history
    pristine = tmp_path / "pristine"
    shutil.copytree(dep.repository, pristine)
    killed = 0
    for k in range(1, 60):
        shutil.rmtree(dep.repository)
        shutil.copytree(pristine, dep.repository)
        run = dep.run(
            "backup",
            "prune",
            "--yes",
            "--max-unused",
            "0%",
            env={"BACKUPCTL_FAULTS": f"kill_at={k},kill_how={how}"},
        )
        if run.returncode == 0:
            break
        assert run.returncode == -9, str(run)
        killed += 1
        for backup_id, tree in survivors:
            assert_restores(dep, backup_id, tree, src, tmp_path / "restore")
        if k % 3 == 1:  # a later prune finishes the job (sampled: each costs a few runs)
            dep.ok("repository", "unlock", "--remove-all")
            _age(dep.repository, 7200)
            prune_json(dep, "--max-unused", "0%")
            assert prune_json(dep, "--max-unused", "0%")["packs_repacked"] == 0
            for backup_id, tree in survivors:
                assert_restores(dep, backup_id, tree, src, tmp_path / "restore")
            dep.ok("repository", "check", "--read-data")
    else:
        pytest.fail("prune was still killed at write 59: raise the sweep's bound")
    assert killed >= 5, killed  # the sweep did reach the repack, index and delete writes


def test_repository_stats_counts_what_the_test_stored(make_deployment: Any, tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_generation(src, 0)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}], settings={"pack_size_mib": 1})
    dep.create()
    dep.create()  # the same tree again: everything deduplicated
    stats = dep.ok("repository", "stats", "-o", "json").json()
    assert stats["snapshots"] == 2
    assert stats["data_blobs"] == N_FILES
    assert stats["logical_bytes"] == 2 * N_FILES * FILE
    assert stats["referenced_raw_bytes"] >= N_FILES * FILE
    assert stats["dedup_ratio"] == 2.0
    assert stats["unused_bytes"] == 0
    assert stats["packs_unindexed"] == 0
    assert stats["pack_bytes"] == repo_bytes(dep.repository)
    assert stats["blob_bytes"] < stats["pack_bytes"]
    text = dep.ok("repository", "stats")
    assert "Deduplication ratio:" in text.stderr and "2.00x" in text.stderr, str(text)


@pytest.mark.timeout(600)
def test_repack_on_s3(request: pytest.FixtureRequest, make_deployment: Any, tmp_path: Path) -> None:
    import helpers
    from conftest_servers import destination_config

    src = tmp_path / "src"
    dep = make_deployment([{"type": "files", "paths": [str(src)]}], settings={"pack_size_mib": 1})
    doc = helpers.load_yaml(dep.config)
    doc["destinations"] = {"local": destination_config("s3", request, tmp_path)}
    helpers.dump_yaml(doc, dep.config)
    dep.env.update({k: os.environ[k] for k in ("TEST_S3_KEY_ID", "TEST_S3_SECRET")})
    hist = build_history(dep, src, generations=3)
    before = dep.ok("repository", "stats", "-o", "json").json()
    # On S3 the packs cannot be aged past the grace period: delete and repack in one run
    # (packs holding blobs of the deleted backup are not young).
    deleted = dep.ok("backup", "delete", hist[0][0], "--yes", "--max-unused", "0%", "-o", "json").json()
    assert deleted["freed_bytes"] > 0, deleted
    after = dep.ok("repository", "stats", "-o", "json").json()
    # Without the repack, generation 0's half-dead packs would stay whole (unused > 0).
    assert after["unused_bytes"] == 0, after
    assert after["pack_bytes"] == before["pack_bytes"] - deleted["freed_bytes"]
    assert after["snapshots"] == 2 and after["packs_unindexed"] == 0
    for n, (backup_id, tree) in enumerate(hist[1:]):
        assert_restores(dep, backup_id, tree, src, tmp_path / f"restore-{n}")
    dep.ok("repository", "check", "--read-data")


def test_repack_keeps_a_pack_whose_live_blob_is_damaged(history: Any, tmp_path: Path) -> None:
    """Damage is never repacked away: each backup restores exactly as well after prune as before."""
    dep, src, survivors = history
    import helpers

    svc = helpers.service(dep.config)
    repo = svc.repository("local")
    data_packs = {
        pid: entries for pid, entries in repo.load_index().blobs_by_pack().items() if entries[0].type == "d"
    }
    svc.close()
    # Flip a byte in every data blob: whichever mixed packs prune picks for repacking, each
    # holds a damaged live blob (a pack with no live blob is deleted, not repacked).
    for pid, entries in data_packs.items():
        p = dep.repository / "data" / pid[:2] / pid
        raw = bytearray(p.read_bytes())
        for e in entries:
            raw[e.offset + e.length // 2] ^= 0xFF
        p.write_bytes(raw)
    _age(dep.repository, 7200)

    def outcomes() -> list[int]:
        codes = []
        for backup_id, tree in survivors:
            target = tmp_path / "restore"
            shutil.rmtree(target, ignore_errors=True)
            run = dep.run("backup", "restore", backup_id, "--target", target, "--yes")
            assert run.returncode in (0, 7) and "Traceback" not in run.stderr, str(run)
            if run.returncode == 0:
                assert_same_tree(tree, snapshot_tree(restored(target, src)))
            codes.append(run.returncode)
        return codes

    before = outcomes()
    assert 7 in before  # the damage hit live data
    run = dep.run("backup", "prune", "--yes", "--max-unused", "0%")
    assert run.returncode in (0, 3) and "not repacked (kept whole)" in run.stderr, str(run)
    assert outcomes() == before
    assert dep.run("repository", "check", "--read-data").returncode == 7
