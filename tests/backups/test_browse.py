"""`backup ls`, `backup diff` and `backup restore --include/--exclude` through the real CLI."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from helpers import assert_one_line_error, assert_same_tree, restored, snapshot_tree


def _abs(path: Path) -> str:
    return os.path.abspath(path)


def _shown(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _kind(st: os.stat_result) -> str:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "file"


def test_ls_lists_every_entry_of_a_tree_and_a_subtree(files_deployment: Any, sample_tree: Path) -> None:
    bad = os.path.join(os.fsencode(sample_tree), b"bad-\xff-name")
    with open(bad, "wb") as fh:
        fh.write(b"not utf-8 name\n")
    backup = files_deployment.create()

    rows = files_deployment.ok("backup", "ls", backup, "-o", "json").json()
    by_path = {r["path"]: r for r in rows}
    assert [r["path"] for r in rows] == sorted(
        (r["path"] for r in rows), key=lambda p: p.encode("utf-8", "surrogatepass").replace(b"/", b"\0")
    )
    expected = [_abs(sample_tree)] + [
        os.path.join(d, n)
        for d, dirs, files in os.walk(sample_tree)
        for n in dirs + files  # os.walk lists symlinks to directories under dirs
    ]
    for path in expected:
        st = os.lstat(path)
        row = by_path[_shown(path)]
        assert row["mode"] == f"{stat.S_IMODE(st.st_mode):04o}", row
        assert row["mtime_ns"] == st.st_mtime_ns, row
        ms = (st.st_mtime_ns // 1_000_000) % 1000  # JSON times carry milliseconds, not .000
        assert row["mtime"].endswith(f".{ms:03d}Z"), row
        if row["type"] != "hardlink":
            assert row["type"] == _kind(st), row
        if row["type"] == "file":
            assert row["size"] == st.st_size, row
        if row["type"] == "symlink":
            assert row["target"] == os.readlink(path), row
    assert by_path[_shown(os.fsdecode(bad))]["size"] == 15
    assert _shown(os.fsdecode(bad)).endswith("bad-\\xff-name")
    # The parents of the configured path are listed too, and nothing else.
    assert set(by_path) - {_shown(p) for p in expected} == {
        str(p) for p in Path(_abs(sample_tree)).parents if str(p) != "/"
    }

    docs = _abs(sample_tree / "docs")
    sub = files_deployment.ok("backup", "ls", backup, docs, "-o", "json").json()
    assert [r["path"] for r in sub] == [docs] + sorted(os.path.join(docs, n) for n in os.listdir(docs))
    table = files_deployment.ok("backup", "ls", backup, docs).stdout
    assert table.splitlines()[0].split() == ["TYPE", "MODE", "USER", "GROUP", "SIZE", "MODIFIED", "PATH"]
    spaces = sample_tree / "docs" / "name with spaces ü€.md"
    assert any(
        ln.split()[4] == str(spaces.stat().st_size) and ln.endswith(str(spaces)) for ln in table.splitlines()
    )
    assert "random.bin" not in table

    # The record's own path in value/CSV/-c output (the table's "shown" is path -> target).
    picked = files_deployment.ok("backup", "ls", backup, sub[-1]["path"], "-o", "json", "-c", "path").json()
    assert picked == [{"path": sub[-1]["path"]}]
    csv_rows = files_deployment.ok("backup", "ls", backup, docs, "-o", "csv").stdout.splitlines()
    assert csv_rows[0].split(",")[-2:] == ["path", "target"], csv_rows[0]
    assert all(row.split(",")[-2].strip('"') for row in csv_rows[1:]), csv_rows

    # Narrow: the path (the point of `ls`) is wrapped and kept; owner columns go first.
    narrow = files_deployment.ok("backup", "ls", backup, docs, "--max-width", "60").stdout.splitlines()
    assert "PATH" in narrow[0].split() and "GROUP" not in narrow[0].split(), narrow[0]

    missing = files_deployment.run("backup", "ls", backup, "/no/such/path")
    assert_one_line_error(missing, 5, "/no/such/path")


def test_diff_shows_added_removed_and_changed_with_what_changed(
    files_deployment: Any, sample_tree: Path
) -> None:
    a = files_deployment.create()
    (sample_tree / "added.txt").write_bytes(b"new\n")
    (sample_tree / "data" / "small.bin").unlink()
    (sample_tree / "docs" / "empty.txt").write_bytes(b"now with content")
    os.chmod(sample_tree / "data" / "script.sh", 0o700)
    b = files_deployment.create()

    rows = files_deployment.ok("backup", "diff", a, b, "-o", "json").json()
    not_dirs = {
        (r["change"], r["path"], tuple(r["changes"]), r["old_size"], r["new_size"])
        for r in rows
        if r["type"] != "dir"
    }
    root = _abs(sample_tree)
    assert not_dirs == {
        ("added", f"{root}/added.txt", (), None, 4),
        ("removed", f"{root}/data/small.bin", (), 3000, None),
        ("changed", f"{root}/docs/empty.txt", ("content", "mtime"), 0, 16),
        ("changed", f"{root}/data/script.sh", ("mode",), 18, 18),
    }
    # Directories whose entries changed show their mtime change, nothing more.
    assert {r["change"] for r in rows if r["type"] == "dir"} <= {"changed"}
    assert files_deployment.ok("backup", "diff", a, a, "-o", "json").json() == []
    table = files_deployment.ok("backup", "diff", a, b).stdout
    assert "added    file" in table and f"{root}/added.txt" in table


def test_restore_include_one_file_and_one_directory_into_target(
    files_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    backup = files_deployment.create()
    before = snapshot_tree(sample_tree)
    (sample_tree / "data" / "random.bin").write_bytes(b"changed after the backup")
    target = tmp_path / "out"
    files_deployment.ok(
        "backup", "restore", backup,
        "--include", _abs(sample_tree / "data" / "random.bin"),
        "--include", _abs(sample_tree / "deep" / "a"),
        "--target", target,
    )  # fmt: skip
    got = snapshot_tree(restored(target, sample_tree))
    wanted = {"data/random.bin", "deep", "deep/a", "deep/a/b", "deep/a/b/c", "deep/a/b/c/leaf", "data"}
    assert set(got) == wanted
    assert_same_tree({p: before[p] for p in wanted}, got)
    # Nothing outside the source tree but the directories above it.
    assert sorted(p.name for p in target.iterdir()) == [Path(_abs(sample_tree)).parts[1]]


def test_restore_exclude_leaves_out_matching_paths_and_what_is_below(
    files_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    backup = files_deployment.create()
    before = snapshot_tree(sample_tree)
    target = tmp_path / "out"
    files_deployment.ok(
        "backup",
        "restore",
        backup,
        "--exclude",
        "*.bin",
        "--exclude",
        _abs(sample_tree / "deep"),
        "--target",
        target,
    )
    got = snapshot_tree(restored(target, sample_tree))
    wanted = {p: v for p, v in before.items() if not p.endswith(".bin") and not p.startswith("deep")}
    # Hard-link groups are recorded by path; the excluded files are not in them any more.
    assert_same_tree(
        {p: v for p, v in wanted.items() if v[0] != "file"},
        {p: v for p, v in got.items() if v[0] != "file"},
    )
    assert {p: v[:7] for p, v in wanted.items() if v[0] == "file"} == {
        p: v[:7] for p, v in got.items() if v[0] == "file"
    }


def test_restore_include_in_place_changes_only_the_included_paths(
    files_deployment: Any, sample_tree: Path
) -> None:
    backup = files_deployment.create()
    original = snapshot_tree(sample_tree)
    (sample_tree / "data" / "random.bin").write_bytes(b"damaged")
    os.chmod(sample_tree / "data" / "random.bin", 0o666)
    (sample_tree / "docs" / "empty.txt").write_bytes(b"kept change")
    (sample_tree / "new.txt").write_bytes(b"kept new file")
    (sample_tree / "deep" / "a" / "b" / "c" / "leaf").unlink()
    changed = snapshot_tree(sample_tree)

    result = files_deployment.ok(
        "backup", "restore", backup, "--yes", "-o", "json",
        "--include", _abs(sample_tree / "data" / "random.bin"),
        "--include", "leaf",
    ).json()  # fmt: skip
    after = snapshot_tree(sample_tree)
    assert after["data/random.bin"] == original["data/random.bin"]
    assert after["deep/a/b/c/leaf"] == original["deep/a/b/c/leaf"]
    ancestors = {"data", "deep", "deep/a", "deep/a/b", "deep/a/b/c"}
    untouched = set(changed) - ancestors - {"data/random.bin"}
    assert {p: after[p] for p in untouched} == {p: changed[p] for p in untouched}
    assert (sample_tree / "new.txt").read_bytes() == b"kept new file"
    # The directories above get their stored metadata back.
    assert {p: after[p] for p in ancestors} == {p: original[p] for p in ancestors}

    safety = result["safety_backup"]
    assert safety and any(r["id"] == safety for r in files_deployment.list())
    stored = {r["path"]: r for r in files_deployment.ok("backup", "ls", safety, "-o", "json").json()}
    assert stored[_abs(sample_tree / "data" / "random.bin")]["size"] == len(b"damaged")


def test_include_that_matches_nothing_or_a_database_source_is_refused(
    files_deployment: Any, make_deployment: Any, tmp_path: Path
) -> None:
    backup = files_deployment.create()
    nothing = files_deployment.run(
        "backup", "restore", backup, "--include", "/no/such", "--target", tmp_path / "x"
    )
    assert_one_line_error(nothing, 2, "matches")
    assert not (tmp_path / "x").exists()

    db = tmp_path / "app.db"
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    dep = make_deployment([{"type": "sqlite", "path": str(db)}])
    db_backup = dep.create()
    stored = dep.ok("backup", "ls", db_backup, "-o", "json").json()
    assert [(r["type"], r["source"]) for r in stored] == [("file", "sqlite")]
    assert stored[0]["size"] > 0
    refused = dep.run("backup", "restore", db_backup, "--include", "*.db", "--target", tmp_path / "y")
    assert_one_line_error(refused, 2, "sqlite")


def test_several_roots_are_listed_and_diffed_in_path_order(
    make_deployment: Any, sample_tree: Path, tmp_path: Path
) -> None:
    from helpers import dump_yaml, load_yaml

    # Stored outer-root first: docs/..., then deep, deep/a/... - not in path order.
    roots = [str(sample_tree / "docs"), str(sample_tree / "deep" / "a")]
    dep = make_deployment([{"type": "files", "paths": roots}])
    a = dep.create()
    rows = dep.ok("backup", "ls", a, "-o", "json").json()
    paths = [r["path"] for r in rows]
    assert paths == sorted(paths, key=lambda p: p.encode().replace(b"/", b"\0"))
    root = _abs(sample_tree)
    assert paths.index(f"{root}/deep/a/b/c/leaf") < paths.index(f"{root}/docs")
    assert f"{root}/docs/readme.txt" in paths and f"{root}/data" not in paths

    # The source's options change (a new exclude): still compared path by path.
    config = load_yaml(dep.config)
    config["deployments"]["app"]["sources"][0]["exclude"] = ["*.md"]
    dump_yaml(config, dep.config)
    b = dep.create()
    diff = dep.ok("backup", "diff", a, b, "-o", "json").json()
    # (Directories above the source tree, such as /tmp, change under other programs.)
    inside = [(r["change"], r["path"]) for r in diff if r["path"].startswith(root + "/")]
    assert inside == [("removed", f"{root}/docs/name with spaces ü€.md")]

    target = tmp_path / "out"
    dep.ok("backup", "restore", a, "--include", "docs", "--exclude", "*.md", "--target", target)
    got = snapshot_tree(restored(target, sample_tree))
    assert sorted(got) == ["docs", "docs/empty.txt", "docs/readme.txt"]
    assert (restored(target, sample_tree) / "docs" / "readme.txt").read_bytes() == (
        sample_tree / "docs" / "readme.txt"
    ).read_bytes()
    pitr = dep.run("backup", "restore", "-d", "app", "--to-time", "2026-01-01 00:00 UTC", "--include", "*.db")
    assert_one_line_error(pitr, 2, "point-in-time")
