"""Restore writes only where it must, whole files only, and says what it wrote.

- Never outside --target and never through a symlink below the root: a symlink the
  backup itself holds (a Capistrano `current` link), one left in a non-empty --target,
  or one that replaced a directory after the backup (in place) is not followed; where
  the backup has a directory, the symlink is replaced by a directory (issue 11 item 5).
- Any legal name restores, up to NAME_MAX bytes and not UTF-8, in place and into
  --target, and the safety backup of such a tree restores too (issue 12 item 1).
- A restore that stops part-way (a full disk, Ctrl-C) says how many of how many entries
  it wrote and where, leaves no temporary files, leaves every file in place either old or
  new and whole, and its safety backup undoes it (issue 12 item 6, issue 11 item 14).

Run as root (tmpfs mounts give the real "disk full").
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.errors import ExitCode

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (tmpfs mounts, ownership)")


def _leftover_temps(root: Path) -> list[str]:
    return [
        os.path.join(d, n)
        for d, dirs, files in os.walk(root)
        for n in [*dirs, *files]
        if n.startswith(".bkctl-") or n.endswith(".backupctl-restore")
    ]


def _tree_bytes(root: Path) -> dict[bytes, Any]:
    """Every path under root -> its content (files), link target (symlinks) or 'dir'."""
    out: dict[bytes, Any] = {}
    for d, dirs, files in os.walk(os.fsencode(root)):
        for n in [*dirs, *files]:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, os.fsencode(root))
            if os.path.islink(p):
                out[rel] = ("link", os.readlink(p))
            elif os.path.isdir(p):
                out[rel] = "dir"
            else:
                with open(p, "rb") as fh:
                    out[rel] = fh.read()
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Any]:
    """`tmpfs(path, size)` mounts a small tmpfs there; unmounted at the end."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


# ---- issue 11 item 5: symlinks ----------------------------------------------------------


def test_target_restore_does_not_write_through_a_symlink_the_backup_holds(
    tmp_path: Path, make_deployment: Any
) -> None:
    """Capistrano layout: `current` is an absolute symlink into releases/, and the config
    backs up /srv/app and /srv/app/current/uploads. Restoring into --target must not
    follow the restored `current` link back into the live tree."""
    app = tmp_path / "srv" / "app"
    uploads = app / "releases" / "20260101" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "photo.jpg").write_bytes(b"photo as backed up")
    os.symlink(app / "releases" / "20260101", app / "current")  # absolute, as Capistrano does
    dep = make_deployment([{"type": "files", "paths": [str(app), str(app / "current" / "uploads")]}])
    backup_id = dep.create()
    (uploads / "photo.jpg").write_bytes(b"live photo, changed after the backup")
    live_before = _tree_bytes(tmp_path / "srv")

    target = tmp_path / "restore"
    result = dep.run("backup", "restore", backup_id, "--target", target)
    assert result.returncode in (ExitCode.OK, ExitCode.PARTIAL), str(result)
    assert "Traceback" not in result.stderr, str(result)
    assert _tree_bytes(tmp_path / "srv") == live_before, "restore --target wrote into the live tree"
    restored = helpers.restored(target, app)
    # The release is restored under its real path, the configured path under its own.
    assert (
        restored / "releases" / "20260101" / "uploads" / "photo.jpg"
    ).read_bytes() == b"photo as backed up"
    current = restored / "current"
    assert not current.is_symlink() and current.is_dir(), "entries below current need a real directory"
    assert (current / "uploads" / "photo.jpg").read_bytes() == b"photo as backed up"
    assert "current" in result.stderr, "the replaced symlink is named in a warning"


def test_in_place_restore_replaces_a_symlink_that_replaced_a_directory(
    tmp_path: Path, make_deployment: Any
) -> None:
    src = tmp_path / "data" / "app"
    (src / "conf").mkdir(parents=True)
    (src / "conf" / "settings.ini").write_bytes(b"as backed up")
    os.chmod(src / "conf", 0o750)
    expected = helpers.snapshot_tree(src)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = dep.create()

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "settings.ini").write_bytes(b"someone else's file")
    os.chmod(elsewhere, 0o711)
    elsewhere_before = (_tree_bytes(elsewhere), os.stat(elsewhere).st_mode, os.stat(elsewhere).st_mtime_ns)
    import shutil

    shutil.rmtree(src / "conf")
    os.symlink(elsewhere, src / "conf")

    dep.ok("backup", "restore", backup_id, "--yes")
    after = (_tree_bytes(elsewhere), os.stat(elsewhere).st_mode, os.stat(elsewhere).st_mtime_ns)
    assert after == elsewhere_before, "the restore wrote through the symlink"
    assert not (src / "conf").is_symlink()
    helpers.assert_same_tree(expected, helpers.snapshot_tree(src))


@pytest.mark.parametrize("where", ["first component", "source root", "dangling relative", "file"])
def test_target_with_symlinks_in_the_way(
    tmp_path: Path, make_deployment: Any, sample_tree: Path, where: str
) -> None:
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree)]}])
    expected = helpers.snapshot_tree(sample_tree)
    backup_id = dep.create()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_bytes(b"outside")
    outside_before = _tree_bytes(outside)

    target = tmp_path / "target"
    target.mkdir()
    root = helpers.restored(target, sample_tree)
    first = target / root.relative_to(target).parts[0]
    if where == "first component":
        os.symlink(outside, first)
    elif where == "source root":
        root.parent.mkdir(parents=True)
        os.symlink(outside, root)
    elif where == "dangling relative":
        (root / "docs").parent.mkdir(parents=True)
        os.symlink("../nowhere/docs", root / "docs")
    else:  # a symlink to a file outside, where the backup has a file
        (root / "docs").mkdir(parents=True)
        os.symlink(outside / "keep.txt", root / "docs" / "readme.txt")

    dep.ok("backup", "restore", backup_id, "--target", target, "--yes")
    assert _tree_bytes(outside) == outside_before, "the restore wrote outside --target"
    helpers.assert_same_tree(expected, helpers.snapshot_tree(root))
    assert not _leftover_temps(target)


# ---- issue 12 item 1: long and non-UTF-8 names -------------------------------------------

_LONG = [b"a" * 255, b"\xc3\xa9" * 127 + b"x", b"n" * 237]
_ODD = [b"caf\xe9-latin1.txt", b"\xff\xfe-not-utf8", b"new\nline"]


def _odd_names_tree(root: Path, version: bytes) -> None:
    base = os.fsencode(root)
    os.makedirs(base, exist_ok=True)
    for i, name in enumerate(_LONG + _ODD):
        with open(os.path.join(base, name), "wb") as fh:
            fh.write(version + b" file %d\n" % i * 50)
    longdir = os.path.join(base, b"d" * 255)
    os.makedirs(longdir, exist_ok=True)
    with open(os.path.join(longdir, b"f" * 255), "wb") as fh:
        fh.write(version + b" deep")
    for name in (b"L" * 255, b"\xe9-link"):
        link = os.path.join(base, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(b"a" * 255, link)
    hard = os.path.join(base, b"h" * 255)
    if os.path.lexists(hard):
        os.unlink(hard)
    os.link(os.path.join(base, _LONG[0]), hard)


def test_names_up_to_name_max_and_not_utf8_restore_everywhere(tmp_path: Path, make_deployment: Any) -> None:
    src = tmp_path / "names"
    _odd_names_tree(src, b"v1")
    expected = helpers.snapshot_tree(src)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = dep.create()
    dep.ok("backup", "verify", backup_id)

    target = tmp_path / "target"
    dep.ok("backup", "restore", backup_id, "--target", target)
    helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, src)))

    _odd_names_tree(src, b"v2")  # every file changed, same names
    changed = helpers.snapshot_tree(src)
    result = dep.ok("backup", "restore", backup_id, "--yes", "-o", "json").json()
    helpers.assert_same_tree(expected, helpers.snapshot_tree(src))
    assert not _leftover_temps(src)

    # The safety backup of the changed tree undoes the restore.
    dep.ok("backup", "restore", result["safety_backup"], "--yes", "--no-safety-backup")
    helpers.assert_same_tree(changed, helpers.snapshot_tree(src))


# ---- issue 12 item 6 / issue 11 item 14: restores that stop part-way ---------------------


def _entries(dep: Any, backup_id: str) -> int:
    return sum(s["files"] + s["dirs"] for s in _manifest_sources(dep, backup_id))


def _manifest_sources(dep: Any, backup_id: str) -> list[dict[str, Any]]:
    svc = helpers.service(dep.config)
    _record, _repo, manifest = svc._completed(backup_id, None)
    return list(manifest["sources"])


def _paths_under(root: Path) -> int:
    return sum(len(dirs) + len(files) for _d, dirs, files in os.walk(root))


def test_target_restore_that_runs_out_of_space_says_what_it_wrote(
    tmp_path: Path, make_deployment: Any, tmpfs: Any
) -> None:
    src = tmp_path / "src"
    for d in range(4):
        (src / f"d{d}").mkdir(parents=True)
        for f in range(6):
            (src / f"d{d}" / f"f{f}.bin").write_bytes(os.urandom(100_000))
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = dep.create()
    total = _entries(dep, backup_id)

    target = tmpfs(tmp_path / "small", "1m")
    result = dep.run("backup", "restore", backup_id, "--target", target)
    helpers.assert_one_line_error(result, ExitCode.FAILED, "No space left", str(target), "incomplete")
    assert "nothing half-written" not in result.stderr
    written = _paths_under(target)
    assert 0 < written < total
    assert f"after writing {written} of {total} entries" in result.stderr, str(result)
    assert not _leftover_temps(target)
    # What is there is whole: every restored file has the backup's content.
    restored = helpers.restored(target, src)
    for dirpath, _dirs, files in os.walk(restored):
        for name in files:
            rel = Path(dirpath, name).relative_to(restored)
            assert (Path(dirpath) / name).read_bytes() == (src / rel).read_bytes()


def test_in_place_restore_that_runs_out_of_space_keeps_whole_files_and_can_be_undone(
    tmp_path: Path, make_deployment: Any, tmpfs: Any
) -> None:
    mnt = tmpfs(tmp_path / "mnt", "2m")
    app = mnt / "app"
    app.mkdir()
    old = {f"s{i}.txt": b"old small %d\n" % i * 300 for i in range(8)}
    old["z_big.bin"] = os.urandom(600_000)
    for name, data in old.items():
        (app / name).write_bytes(data)
    dep = make_deployment([{"type": "files", "paths": [str(app)]}])
    backup_id = dep.create()

    new = {
        name: (os.urandom(len(data)) if name.endswith(".bin") else data.replace(b"old", b"new"))
        for name, data in old.items()
    }
    for name, data in new.items():
        (app / name).write_bytes(data)
    changed = helpers.snapshot_tree(app)
    # Leave room for the small files' temporary copies but not for the big one.
    free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
    (mnt / "filler").write_bytes(b"\0" * (free - 200_000))

    result = dep.run("backup", "restore", backup_id, "--yes")
    helpers.assert_one_line_error(result, ExitCode.FAILED, "No space left", "in place")
    assert "nothing half-written" not in result.stderr
    assert f"of {_entries(dep, backup_id)} entries" in result.stderr, str(result)
    for name in old:
        content = (app / name).read_bytes()
        assert content in (old[name], new[name]), f"{name} is neither its old nor its new version"
    assert (app / "s0.txt").read_bytes() == old["s0.txt"], "the small files before the failure were restored"
    assert (app / "z_big.bin").read_bytes() == new["z_big.bin"]
    assert not _leftover_temps(mnt)

    # The safety backup, named in the error, undoes the partial restore.
    safety = [b for b in dep.list() if "safety backup" in (b.get("comment") or "")]
    assert len(safety) == 1 and safety[0]["id"][:8] in result.stderr, str(result)
    (mnt / "filler").unlink()
    dep.ok("backup", "restore", safety[0]["id"], "--yes", "--no-safety-backup")
    helpers.assert_same_tree(changed, helpers.snapshot_tree(app))


def test_interrupted_restore_says_what_it_wrote(tmp_path: Path, make_deployment: Any) -> None:
    src = tmp_path / "many"
    for d in range(40):
        (src / f"d{d:02}").mkdir(parents=True)
        for f in range(150):
            (src / f"d{d:02}" / f"f{f:03}").write_bytes(b"%d/%d\n" % (d, f) * 200)
    dep = make_deployment([{"type": "files", "paths": [str(src)]}])
    backup_id = dep.create()
    total = _entries(dep, backup_id)

    target = tmp_path / "target"
    proc = subprocess.Popen(
        helpers.cli_command("backup", "restore", backup_id, "--target", target),
        env=helpers.cli_env(dep.env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Wait until the restore has written something, then interrupt it.
    while proc.poll() is None and not (target.exists() and _paths_under(target) >= 20):
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.INTERRUPTED, err
    assert "Traceback" not in err, err
    written = _paths_under(target)
    assert written < total, "the restore finished before the interrupt; make the tree larger"
    assert f"interrupted after writing {written} of {total} entries into {target}" in err, err
    assert "incomplete" in err and "nothing half-written" not in err, err
    assert not _leftover_temps(target)


def test_in_place_restore_uses_the_backups_own_symlink(tmp_path: Path, make_deployment: Any) -> None:
    """In place, the Capistrano `current` link stays a link and the entries backed up
    through it are written where they were read from: no warning, exit 0."""
    app = tmp_path / "srv" / "app"
    uploads = app / "releases" / "r1" / "uploads"
    uploads.mkdir(parents=True)
    (uploads / "photo.jpg").write_bytes(b"photo as backed up")
    os.symlink(app / "releases" / "r1", app / "current")
    dep = make_deployment([{"type": "files", "paths": [str(app), str(app / "current" / "uploads")]}])
    backup_id = dep.create()
    expected = helpers.snapshot_tree(app)
    (uploads / "photo.jpg").write_bytes(b"changed")

    result = dep.ok("backup", "restore", backup_id, "--yes")
    assert "warning" not in result.stderr, str(result)
    assert os.readlink(app / "current") == str(app / "releases" / "r1")
    helpers.assert_same_tree(expected, helpers.snapshot_tree(app))


def test_a_configured_path_inside_another_does_not_hide_the_outer_one(
    tmp_path: Path, make_deployment: Any, sample_tree: Path
) -> None:
    """paths: [src/docs, src]: the inner path listed first must not make the outer tree's
    other entries vanish from the backup."""
    dep = make_deployment([{"type": "files", "paths": [str(sample_tree / "docs"), str(sample_tree)]}])
    expected = helpers.snapshot_tree(sample_tree)
    backup_id = dep.create()
    target = tmp_path / "target"
    dep.ok("backup", "restore", backup_id, "--target", target)
    helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, sample_tree)))
