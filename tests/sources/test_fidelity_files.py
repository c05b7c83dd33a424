"""Fidelity of the files source: what a backup of a real tree restores (issue 12, files).

Round trips over the seeded corpus (tests/fidelity.py) and over real trees of this
machine, with --target and in place, compared entry by entry: type, mode, owner, size,
content, mtime, link target, hard-link identity, xattrs/ACLs/capabilities, device
numbers and the holes of sparse files. Only what docs/guide.md lists as not captured
may differ. Root-only parts (device nodes, foreign owners, capabilities) need root; CI
runs these tests as root.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import fidelity
import helpers
import pytest

from backupctl.errors import ExitCode

needs_root = pytest.mark.skipif(not fidelity.IS_ROOT, reason="needs root (CI runs this as root)")


def _backup_clean(dep: Any) -> str:
    """A backup that must complete with no warning at all (exit 0)."""
    return dep.create()


def _restore_target(dep: Any, backup_id: str, target: Path, source: Path) -> Path:
    dep.ok("backup", "restore", backup_id, "--target", target)
    return helpers.restored(target, source)


# ---- item 5: a configured path that does not exist -----------------------------------


def test_missing_source_path_fails_the_backup(
    tmp_path: Path, make_deployment: Any, sample_tree: Path
) -> None:
    missing = tmp_path / "not-mounted" / "data"
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree), str(missing)]}])
    result = dep.run("backup", "create", "app")
    helpers.assert_one_line_error(result, ExitCode.FAILED, str(missing))
    assert not [b for b in dep.list() if b["status"] == "Completed"], dep.list()


def test_relative_source_path_is_refused(tmp_path: Path, make_deployment: Any, sample_tree: Path) -> None:
    dep = make_deployment([{"type": "files", "paths": ["src"]}])
    result = dep.run("backup", "create", "app", cwd=tmp_path)  # tmp_path/src exists
    helpers.assert_one_line_error(result, ExitCode.CONFIG, "paths", "absolute")


def test_init_with_a_relative_example_path_writes_it_absolute(tmp_path: Path, sample_tree: Path) -> None:
    """`init --example-path src` in a shell means ./src then; the config must say so, since
    relative paths are refused when the config is read."""
    helpers.run_ok("init", "--example-path", "src", cwd=tmp_path)  # tmp_path/src is the sample tree
    helpers.run_ok("backup", "create", "example", cwd="/")
    config = helpers.load_yaml(tmp_path / "xdg-config" / "backupctl" / "config.yaml")
    assert config["deployments"]["example"]["sources"][0]["paths"] == [str(sample_tree)]


def test_in_place_restore_brings_back_a_deleted_source_path(tmp_path: Path, make_deployment: Any) -> None:
    """Restoring a deleted directory is the common case: the safety backup taken first must
    not fail because a configured path is missing (there is nothing there to overwrite)."""
    kept, deleted = tmp_path / "kept", tmp_path / "deleted"
    for root in (kept, deleted):
        root.mkdir()
        (root / "f").write_text(root.name)
    before = {root: fidelity.snapshot(root) for root in (kept, deleted)}
    dep = make_deployment([{"type": "files", "paths": [str(kept), str(deleted)]}])
    backup_id = _backup_clean(dep)
    shutil.rmtree(deleted)
    result = dep.ok("backup", "restore", backup_id, "--yes")
    assert "safety backup" in result.stderr + result.stdout
    for root in (kept, deleted):
        fidelity.assert_same(before[root], fidelity.snapshot(root))
    shutil.rmtree(kept)
    shutil.rmtree(deleted)  # every path gone: no safety backup needed, the restore still works
    dep.ok("backup", "restore", backup_id, "--yes")
    for root in (kept, deleted):
        fidelity.assert_same(before[root], fidelity.snapshot(root))
    # An ordinary backup still refuses a missing path.
    shutil.rmtree(deleted)
    helpers.assert_one_line_error(dep.run("backup", "create", "app"), ExitCode.FAILED, str(deleted))


def test_dangling_symlink_as_top_level_path_is_stored(tmp_path: Path, make_deployment: Any) -> None:
    """A top-level path that is a dangling symlink exists: it is stored as a link, not refused."""
    src = tmp_path / "src"
    (src / "gone").mkdir(parents=True)
    (src / "kept").write_text("kept")
    # A dangling symlink is not "missing": it is stored as a link.
    os.symlink(tmp_path / "nowhere", src / "dangling")
    dep = make_deployment([{"type": "files", "paths": [str(src), str(src / "dangling")]}])
    result = dep.run("backup", "create", "app")
    # Stored, and said: a configured path that points nowhere is worth a warning (exit 3).
    assert result.returncode == 3, str(result)
    assert (
        f"{src / 'dangling'}: is a symlink to {tmp_path / 'nowhere'}, which does not exist" in result.stderr
    )
    backup_id = result.stdout.strip().splitlines()[-1]
    assert dep.show(backup_id)["status"] == "Completed"
    target = tmp_path / "target"
    dep.run("backup", "restore", backup_id, "--target", target)
    restored_link = helpers.restored(target, src / "dangling")
    assert os.readlink(restored_link) == str(tmp_path / "nowhere")


# ---- item 3: FIFOs, device nodes, sockets ----------------------------------------------


def _special_tree(root: Path) -> Path:
    root.mkdir()
    (root / "plain").write_text("plain")
    os.mkfifo(root / "fifo", 0o620)
    os.link(root / "fifo", root / "fifo-2")
    if fidelity.IS_ROOT:
        os.mknod(root / "null-like", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.mknod(root / "loop-like", 0o640 | stat.S_IFBLK, os.makedev(7, 42))
    cwd = os.getcwd()
    os.chdir(root)
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("sock")
    finally:
        os.chdir(cwd)
    for p in root.iterdir():
        os.utime(p, ns=(1_234_567_890_123_456_789, 1_234_567_890_123_456_789), follow_symlinks=False)
    return root


def test_fifos_and_device_nodes_round_trip_sockets_are_skipped_silently(
    tmp_path: Path, make_deployment: Any
) -> None:
    src = _special_tree(tmp_path / "src")
    before = fidelity.snapshot(src)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)  # exit 0: no warning for the FIFO or the socket
    restored = _restore_target(dep, backup_id, tmp_path / "r", src)
    fidelity.assert_same(before, fidelity.snapshot(restored))
    assert stat.S_ISFIFO(os.lstat(restored / "fifo").st_mode)
    assert not (restored / "sock").exists()
    # The tar export carries them as FIFOs and device nodes too (not as empty files).
    dep.ok("backup", "download", backup_id, "--part", "files", "--out", tmp_path / "files.tar")
    with tarfile.open(tmp_path / "files.tar") as tar:
        members = {Path(m.name).name: m for m in tar.getmembers()}
    assert members["fifo"].isfifo()
    if fidelity.IS_ROOT:
        assert members["loop-like"].isblk() and (
            members["loop-like"].devmajor,
            members["loop-like"].devminor,
        ) == (7, 42)


# ---- item 2: xattrs, ACLs, capabilities ------------------------------------------------


@needs_root
def test_xattrs_acls_and_capabilities_round_trip(tmp_path: Path, make_deployment: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    assert fidelity.xattrs_supported(src), "tmp_path's filesystem must support user xattrs"
    (src / "f").write_text("data")
    os.setxattr(src / "f", "user.a", b"\x00binary\xff")
    os.setxattr(src / "f", "trusted.t", b"t")
    subprocess.run(["setfacl", "-m", "u:54321:rw", src / "f"], check=True)
    (src / "d").mkdir()
    subprocess.run(["setfacl", "-d", "-m", "g:54322:rx", src / "d"], check=True)
    (src / "d" / "inherits").write_text("inherits the default ACL")
    (src / "helper").write_text("#!/bin/sh\n")
    os.chown(src / "helper", 54321, 54321)
    os.chmod(src / "helper", 0o750)
    subprocess.run(["setcap", "cap_net_bind_service+ep", src / "helper"], check=True)
    before = fidelity.snapshot(src)
    assert "security.capability" in before[b"helper"]["xattrs"]
    assert "system.posix_acl_default" in before[b"d"]["xattrs"]
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)
    restored = _restore_target(dep, backup_id, tmp_path / "r", src)
    fidelity.assert_same(before, fidelity.snapshot(restored))
    # In place: xattrs removed or changed since the backup come back; none are added.
    os.removexattr(src / "f", "user.a")
    os.setxattr(src / "f", "user.added", b"x")
    (src / "helper").write_text("#!/bin/sh\nchanged\n")  # writing clears the capability
    subprocess.run(["setfacl", "-b", src / "d"], check=True)
    dep.ok("backup", "restore", backup_id, "--yes")
    fidelity.assert_same(before, fidelity.snapshot(src))


@needs_root
def test_restore_without_privileges_warns_for_what_it_cannot_set(
    tmp_path: Path, make_deployment: Any
) -> None:
    """Run as uid 0 with every capability dropped (as an unprivileged user would be for
    these operations): trusted.* xattrs, capabilities, foreign owners and device nodes
    cannot be set; each is a warning naming the path, and everything else is restored."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    os.setxattr(src / "f", "user.kept", b"kept")
    os.setxattr(src / "f", "trusted.lost", b"lost")
    os.mknod(src / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
    os.mkfifo(src / "fifo")
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)
    target = tmp_path / "r"
    proc = subprocess.run(
        [
            "setpriv",
            "--bounding-set=-all",
            "--inh-caps=-all",
            "--",
            *helpers.cli_command("backup", "restore", backup_id, "--target", target),
        ],
        env=helpers.cli_env(dep.env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == ExitCode.PARTIAL, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any("trusted.lost" in ln and "/f" in ln for ln in lines), proc.stderr
    assert any("chardev" in ln and "/dev" in ln for ln in lines), proc.stderr
    restored = helpers.restored(target, src)
    assert (restored / "f").read_text() == "data"
    assert os.getxattr(restored / "f", "user.kept") == b"kept"
    assert stat.S_ISFIFO(os.lstat(restored / "fifo").st_mode)


# ---- item 4: sparse files ---------------------------------------------------------------


def test_sparse_file_restores_with_its_holes(tmp_path: Path, make_deployment: Any) -> None:
    src = tmp_path / "src"
    src.mkdir()
    sparse = src / "disk.img"
    with open(sparse, "wb") as fh:
        fh.seek(512 << 20)
        fh.write(os.urandom(4096))
        fh.truncate(1 << 30)
    assert os.stat(sparse).st_blocks * 512 <= 64 << 10
    before = fidelity.snapshot(src)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)
    restored = _restore_target(dep, backup_id, tmp_path / "r", src)
    assert os.stat(restored / "disk.img").st_blocks * 512 <= 64 << 10
    fidelity.assert_same(before, fidelity.snapshot(restored))
    sparse.write_bytes(b"overwritten")
    dep.ok("backup", "restore", backup_id, "--yes")
    assert os.stat(sparse).st_blocks * 512 <= 64 << 10
    fidelity.assert_same(before, fidelity.snapshot(src))


def test_item_format_stays_backward_compatible() -> None:
    """Items written before xattrs/devices/holes existed read back unchanged, and an item
    without them is written byte for byte as before (tree blobs keep deduplicating)."""
    from backupctl.repo.items import Item

    old = (
        b'{"p":"srv/a","k":"file","m":420,"u":0,"g":0,"mt":1763779621000000000,"un":"root",'
        b'"gn":"root","ct":1763779621000000000,"i":1234,"s":6,"c":["' + b"ab" * 32 + b'"]}\n'
    )
    item = Item.from_json(old)
    assert (item.xattrs, item.rdev, item.sparse) == (None, None, False)
    assert item.to_json() == old
    # an unchanged file's item is written again from its stored line (archiver._reuse); a
    # changed copy is encoded afresh, and the line does not count in equality
    assert item.line == old.rstrip(b"\n")
    changed = dataclasses.replace(item, mode=0o600)
    assert changed.line is None and changed != item
    assert dataclasses.replace(item) == item
    assert Item.from_json(changed.to_json()) == changed
    new = Item("dev/null", "chardev", 0o666, xattrs={"user.a": b"\x00\xff"}, rdev=(1, 3), sparse=False)
    assert Item.from_json(new.to_json()) == new


# ---- the corpus and real trees ----------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fidelity.build_corpus(tmp_path_factory.mktemp("corpus") / "tree")


def _copy(src: Path, dst: Path) -> Path:
    # cp -a keeps owners, modes, times, xattrs, ACLs, capabilities, hard links and specials.
    subprocess.run(["cp", "-a", "--", str(src), str(dst)], check=True)
    return dst


def test_corpus_round_trip_target_and_in_place(
    tmp_path: Path, make_deployment: Any, corpus_template: Path
) -> None:
    src = _copy(corpus_template, tmp_path / "corpus")
    before = fidelity.snapshot(src)
    assert fidelity.differences(fidelity.snapshot(corpus_template), before) == []  # the copy is exact
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)
    restored = _restore_target(dep, backup_id, tmp_path / "r", src)
    fidelity.assert_same(before, fidelity.snapshot(restored))

    # In place, over a tree that changed in every way the corpus can change.
    (src / "files" / "large.bin").write_bytes(b"shrunk")
    (src / "files" / "r00.dat").unlink()
    shutil.rmtree(src / "deep" / "level-000" / "level-001")
    os.unlink(src / "links" / "long-target")
    os.unlink(src / "special" / "fifo")
    os.unlink(src / "hard" / "b")
    os.chmod(src / "modes" / "setuid", 0o644)
    (src / "sparse" / "mostly-hole").write_bytes(b"dense now")
    if (src / "xattrs").exists():
        os.removexattr(src / "xattrs" / "file", "user.plain")
    # Another type where the backup has this one: the restore replaces it.
    os.unlink(src / "special" / "fifo-linked")
    (src / "special" / "fifo-linked").write_text("a file where a FIFO was")
    os.unlink(src / "links" / "dangling")
    (src / "links" / "dangling").mkdir()  # empty: one with content is kept, with a warning
    os.unlink(src / "files" / "one-byte")
    os.symlink("elsewhere", src / "files" / "one-byte")
    dep.ok("backup", "restore", backup_id, "--yes")
    fidelity.assert_same(before, fidelity.snapshot(src))


def _stdlib() -> Path:
    return Path(os.path.dirname(os.__file__))


@pytest.mark.parametrize("tree", ["python-stdlib", "usr-share-doc"])
def test_real_tree_round_trip(tmp_path: Path, make_deployment: Any, tree: str) -> None:
    src = tmp_path / tree
    if tree == "python-stdlib":
        shutil.copytree(
            _stdlib(),
            src,
            symlinks=True,
            ignore=shutil.ignore_patterns("site-packages", "dist-packages", "__pycache__", "test", "tests"),
        )
    else:
        _copy(Path("/usr/share/doc"), src)
    before = fidelity.snapshot(src)
    assert len(before) > 500, f"{tree}: too small to mean anything ({len(before)} entries)"
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = _backup_clean(dep)
    restored = _restore_target(dep, backup_id, tmp_path / "r", src)
    fidelity.assert_same(before, fidelity.snapshot(restored))
    # In place over a tree whose files were all rewritten.
    for dirpath, _dirs, files in os.walk(src):
        for name in files[:3]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                with open(path, "ab") as fh:
                    fh.write(b"changed")
    dep.ok("backup", "restore", backup_id, "--yes")
    fidelity.assert_same(before, fidelity.snapshot(src))


def test_guide_lists_what_is_not_captured() -> None:
    guide = (helpers.REPO_ROOT / "docs" / "guide.md").read_text()
    assert "What is and is not captured for files" in guide
    section = guide.split("What is and is not captured for files", 1)[1].split("\n## ", 1)[0]
    for item in fidelity.NOT_CAPTURED:
        assert item in section, f"docs/guide.md does not list {item!r} as not captured"


if __name__ == "__main__":  # build a corpus by hand: python tests/sources/test_fidelity_files.py DIR
    fidelity.build_corpus(Path(sys.argv[1]))
