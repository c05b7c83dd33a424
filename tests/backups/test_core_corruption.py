"""Damaged repositories: verify and restore name the damaged object; nothing crashes."""

from __future__ import annotations

import os
from pathlib import Path

import helpers
import pytest

from backupctl.errors import ExitCode
from backupctl.repo.items import read_items
from backupctl.repo.pack import pack_name

MIB = 1 << 20


@pytest.fixture
def two_backups(tmp_path: Path, make_deployment):
    """Backup A of a tree with one big random file; backup B adds a second big file."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(2 * MIB))
    (src / "sub" / "note.txt").write_text("a note\n")
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    a = dep.create()
    (src / "second.bin").write_bytes(os.urandom(2 * MIB))
    b = dep.create()
    return dep, src, a, b


def _locate(dep, backup_id: str, rel: str) -> list[tuple[str, int, int]]:
    """(pack object name, offset, length) of every chunk of file `rel` in a backup."""
    svc = helpers.service(dep.config)
    repo = svc.repository("local")
    repo.load_index()
    manifest = repo.load_manifest(backup_id)
    out = []
    for src in manifest["sources"]:
        for item in read_items(repo, [bytes.fromhex(t) for t in src["tree"]]):
            if item.path.endswith(rel):
                for chunk in item.chunks:
                    loc = repo.index.lookup(chunk)
                    out.append((pack_name(loc.pack_id), loc.offset, loc.length))
    svc.close()
    assert out, f"{rel} not found in {backup_id}"
    return out


def _tree_packs(dep, backup_id: str) -> list[tuple[str, int, int]]:
    svc = helpers.service(dep.config)
    repo = svc.repository("local")
    repo.load_index()
    manifest = repo.load_manifest(backup_id)
    out = []
    for src in manifest["sources"]:
        for t in src["tree"]:
            loc = repo.index.lookup(bytes.fromhex(t))
            out.append((pack_name(loc.pack_id), loc.offset, loc.length))
    svc.close()
    return out


def _flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        byte = fh.read(1)
        fh.seek(offset)
        fh.write(bytes([byte[0] ^ 0x01]))


def test_flipped_byte_in_data_pack(tmp_path: Path, two_backups) -> None:
    dep, src, a, b = two_backups
    expected = helpers.snapshot_tree(src)
    name, offset, length = _locate(dep, b, "second.bin")[0]
    # `second.bin` is new in B: its pack is not used by A.
    assert name not in {n for n, _, _ in _locate(dep, a, "big.bin")}
    _flip(dep.repository / name, offset + length // 2)
    pack_id = name.rsplit("/", 1)[1]

    verify = dep.run("backup", "verify", b)
    assert verify.returncode == ExitCode.INTEGRITY, str(verify)
    assert "Traceback" not in verify.stderr
    assert name in verify.stderr, f"verify must name the damaged pack {name}\n{verify}"
    as_json = dep.run("backup", "verify", b, "-o", "json")
    assert as_json.returncode == ExitCode.INTEGRITY
    doc = as_json.json()
    assert doc["ok"] is False and any(pack_id in e for e in doc["errors"]), doc
    # The other backup does not use that pack and is intact.
    dep.ok("backup", "verify", a)

    target = tmp_path / "restore"
    restore = dep.run("backup", "restore", b, "--target", target)
    assert restore.returncode != 0, str(restore)
    assert restore.returncode == ExitCode.INTEGRITY, str(restore)
    assert "Traceback" not in restore.stderr
    assert pack_id in restore.stderr, str(restore)
    assert len([ln for ln in restore.stderr.splitlines() if ln.startswith("error:")]) == 1
    # No complete file with wrong content: each restored file is either right or visibly incomplete.
    root = helpers.restored(target, src)
    bad = root / "second.bin"
    if bad.exists():
        assert bad.stat().st_size < 2 * MIB or bad.read_bytes() == (src / "second.bin").read_bytes(), (
            "a damaged file was restored complete with wrong content"
        )
        assert bad.read_bytes() != (src / "second.bin").read_bytes()
    for rel in ("big.bin", "sub/note.txt"):
        p = root / rel
        if p.exists() and p.stat().st_size == (src / rel).stat().st_size:
            assert p.read_bytes() == (src / rel).read_bytes()

    # Backup A restores fine and byte-identical (as it was).
    target_a = tmp_path / "restore-a"
    dep.ok("backup", "restore", a, "--target", target_a)
    got = helpers.snapshot_tree(helpers.restored(target_a, src))
    assert "second.bin" not in got
    assert got["big.bin"] == expected["big.bin"]


def test_flipped_byte_in_tree_pack(tmp_path: Path, two_backups) -> None:
    dep, src, a, b = two_backups
    name, offset, length = _tree_packs(dep, b)[0]
    _flip(dep.repository / name, offset + length // 2)
    verify = dep.run("backup", "verify", b)
    assert verify.returncode == ExitCode.INTEGRITY, str(verify)
    assert name in verify.stderr, str(verify)
    restore = dep.run("backup", "restore", b, "--target", tmp_path / "r")
    assert restore.returncode == ExitCode.INTEGRITY and "Traceback" not in restore.stderr, str(restore)
    assert name.rsplit("/", 1)[1] in restore.stderr


def test_missing_pack(tmp_path: Path, two_backups) -> None:
    dep, src, a, b = two_backups
    name, _, _ = _locate(dep, b, "second.bin")[0]
    (dep.repository / name).unlink()
    verify = dep.run("backup", "verify", b)
    assert verify.returncode == ExitCode.INTEGRITY, str(verify)
    assert name in verify.stderr and "missing" in verify.stderr, str(verify)
    restore = dep.run("backup", "restore", b, "--target", tmp_path / "r")
    assert restore.returncode == ExitCode.INTEGRITY and "Traceback" not in restore.stderr, str(restore)
    assert name in restore.stderr


def test_truncated_pack(tmp_path: Path, two_backups) -> None:
    dep, src, a, b = two_backups
    name, offset, length = _locate(dep, b, "second.bin")[-1]
    with open(dep.repository / name, "r+b") as fh:
        fh.truncate(offset + length // 2)
    verify = dep.run("backup", "verify", b)
    assert verify.returncode == ExitCode.INTEGRITY, str(verify)
    assert name in verify.stderr, str(verify)


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_corrupt_manifest(tmp_path: Path, two_backups, damage: str) -> None:
    dep, src, a, b = two_backups
    manifest = dep.repository / "snapshots" / b
    data = manifest.read_bytes()
    if damage == "flip":
        _flip(manifest, len(data) // 2)
    elif damage == "truncate":
        manifest.write_bytes(data[: len(data) // 2])
    else:
        manifest.write_bytes(b"")

    for args in (
        ["backup", "show", b],
        ["backup", "verify", b],
        ["backup", "restore", b, "--target", str(tmp_path / "r")],
    ):
        result = dep.run(*args)
        helpers.assert_one_line_error(result, ExitCode.INTEGRITY, f"snapshots/{b}")
    assert not (tmp_path / "r" / "src").exists()

    # With the local catalog cache, the other backup is listed as before.
    listed = dep.run("backup", "list", "-o", "json")
    assert listed.returncode == 0 and a in {r["id"] for r in listed.json()}, str(listed)
    # On a fresh machine (empty state dir) the damaged manifest is skipped with a warning
    # naming it, never a crash that hides every backup; the other one is listed and restorable.
    fresh = {"XDG_STATE_HOME": str(tmp_path / "fresh-state")}
    fresh_list = dep.run("backup", "list", "-o", "json", env=fresh)
    assert fresh_list.returncode == 0 and "Traceback" not in fresh_list.stderr, str(fresh_list)
    assert f"snapshots/{b}" in fresh_list.stderr, str(fresh_list)
    by_id = {r["id"]: r for r in fresh_list.json()}
    assert a in by_id and by_id.get(b, {}).get("status") != "Completed", str(fresh_list)
    restore = dep.run("backup", "restore", a, "--target", tmp_path / "ra", env=fresh)
    assert restore.returncode in (0, ExitCode.PARTIAL) and "Traceback" not in restore.stderr, str(restore)
    assert (helpers.restored(tmp_path / "ra", src) / "big.bin").read_bytes() == (src / "big.bin").read_bytes()
    dep.ok("backup", "verify", a)


def test_a_damaged_small_file_in_a_batch_fails_only_that_file(tmp_path: Path, make_deployment) -> None:
    """Small files' chunks are loaded in batches (backups/restorer.py): a damaged chunk stops
    the restore at the file that needs it, the error names that file, and every file before
    it in the same batch is restored whole."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(40):
        (src / f"f{i:02}.txt").write_bytes(os.urandom(1000 + i))
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup = dep.create()
    ((name, offset, length),) = _locate(dep, backup, "f23.txt")
    _flip(dep.repository / name, offset + length // 2)

    target = tmp_path / "restore"
    restore = dep.run("backup", "restore", backup, "--target", target)
    assert restore.returncode == ExitCode.INTEGRITY, str(restore)
    errors = [ln for ln in restore.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "f23.txt" in errors[0] and "f22.txt" not in errors[0], str(restore)
    root = helpers.restored(target, src)
    for i in range(23):
        rel = f"f{i:02}.txt"
        assert (root / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert not (root / "f23.txt").exists()
