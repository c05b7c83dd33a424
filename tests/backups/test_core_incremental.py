"""Incremental and full backups: which files are re-read, and every backup stands alone."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import helpers

KIB = 1024


def _regular_file_entries(root: Path) -> int:
    """Regular files the files source reads (the second path of a hard link is a link entry)."""
    seen: set[int] = set()
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            seen.add(p.stat().st_ino)
    return len(seen)


def _source(dep, backup_id: str) -> dict[str, Any]:
    shown = dep.show(backup_id)
    assert len(shown["sources"]) == 1
    return shown | {"src": shown["sources"][0]}


def test_incremental_reuses_unchanged_files_and_full_rereads(
    tmp_path: Path, files_deployment, sample_tree: Path
) -> None:
    dep = files_deployment
    n_regular = _regular_file_entries(sample_tree)
    first = dep.create()
    s1 = _source(dep, first)
    assert s1["type"] == "full", "the first backup of a deployment is full"
    assert s1["src"]["reused_files"] == 0

    second = dep.create()
    s2 = _source(dep, second)
    assert s2["type"] == "incremental" and s2["parent"] == first
    assert s2["src"]["reused_files"] == n_regular, s2["src"]
    assert s2["size_bytes"] == s1["size_bytes"]
    # Nothing new but the item stream (tree) and index.
    assert s2["stored_bytes"] < 16 * KIB < s1["stored_bytes"], (s1["stored_bytes"], s2["stored_bytes"])

    third = dep.create("--type", "full")
    s3 = _source(dep, third)
    assert s3["type"] == "full"
    assert s3["src"]["reused_files"] == 0, "a full backup re-reads every file"
    # ... but still stores only new chunks: the content deduplicates.
    assert s3["stored_bytes"] < 16 * KIB, s3["stored_bytes"]

    for backup_id in (first, second, third):
        target = tmp_path / backup_id
        dep.ok("backup", "restore", backup_id, "--target", target)
        helpers.assert_same_tree(
            helpers.snapshot_tree(sample_tree), helpers.snapshot_tree(helpers.restored(target, sample_tree))
        )


def test_modified_file_is_reread(tmp_path: Path, files_deployment, sample_tree: Path) -> None:
    dep = files_deployment
    n_regular = _regular_file_entries(sample_tree)
    dep.create()

    # Same size, new content, new mtime.
    small = sample_tree / "data" / "small.bin"
    old = small.read_bytes()
    small.write_bytes(bytes(b ^ 0xFF for b in old))
    os.utime(small, ns=(time.time_ns(), time.time_ns()))
    # Same size, new content, and the mtime put back as it was: the ctime gives it away.
    leaf = sample_tree / "deep" / "a" / "b" / "c" / "leaf"
    st = leaf.stat()
    leaf.write_text("LEAF")
    os.utime(leaf, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert leaf.stat().st_mtime_ns == st.st_mtime_ns and leaf.stat().st_size == st.st_size
    expected = helpers.snapshot_tree(sample_tree)

    second = dep.create()
    src = _source(dep, second)["src"]
    assert src["reused_files"] == n_regular - 2, src
    target = tmp_path / "r"
    dep.ok("backup", "restore", second, "--target", target)
    root = helpers.restored(target, sample_tree)
    assert (root / "data" / "small.bin").read_bytes() == bytes(b ^ 0xFF for b in old)
    assert (root / "deep" / "a" / "b" / "c" / "leaf").read_text() == "LEAF"
    helpers.assert_same_tree(expected, helpers.snapshot_tree(root))


def test_every_backup_restorable_after_its_parent_is_deleted(
    tmp_path: Path, files_deployment, sample_tree: Path
) -> None:
    dep = files_deployment
    first = dep.create()
    (sample_tree / "added.bin").write_bytes(os.urandom(600 * KIB))
    (sample_tree / "docs" / "readme.txt").unlink()  # one of two hard-linked paths goes away
    (sample_tree / "empty_dir").rmdir()
    state2 = helpers.snapshot_tree(sample_tree)
    second = dep.create()
    assert _source(dep, second)["parent"] == first
    (sample_tree / "data" / "random.bin").write_bytes(os.urandom(100))
    state3 = helpers.snapshot_tree(sample_tree)
    third = dep.create()
    assert _source(dep, third)["parent"] == second

    dep.ok("backup", "delete", first, "--yes")
    dep.ok("backup", "delete", second, "--yes")
    dep.ok("backup", "verify", third)
    target = tmp_path / "r3"
    dep.ok("backup", "restore", third, "--target", target)
    helpers.assert_same_tree(state3, helpers.snapshot_tree(helpers.restored(target, sample_tree)))
    assert state2 != state3

    # A new incremental after all that still has a valid parent chain.
    fourth = dep.create()
    assert _source(dep, fourth)["parent"] == third
    target4 = tmp_path / "r4"
    dep.ok("backup", "restore", fourth, "--target", target4)
    helpers.assert_same_tree(state3, helpers.snapshot_tree(helpers.restored(target4, sample_tree)))


def test_incremental_of_a_changed_source_definition_is_not_mixed_up(
    tmp_path: Path, make_deployment, sample_tree: Path
) -> None:
    """Two deployments with different paths in one repository: each has its own parent chain."""
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree / "docs")]}])
    cfg = helpers.load_yaml(dep.config)
    cfg["deployments"]["other"] = {
        "sources": [{"type": "files", "paths": [str(sample_tree / "data")]}],
        "destinations": ["local"],
    }
    helpers.dump_yaml(cfg, dep.config)
    a1 = dep.create()
    b1 = dep.ok("backup", "create", "other").stdout.strip()
    a2 = dep.create()
    assert _source(dep, a2)["parent"] == a1
    b2 = dep.ok("backup", "create", "other", "-o", "json").json()
    assert b2["parent"] == b1
