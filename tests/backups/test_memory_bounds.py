"""Memory of backup and restore does not grow with the number of files (issue 14 item 2),
and the streaming parent merge that makes the no-change backup bounded is exact.

The memory test backs up trees of N_SMALL and N_LARGE tiny files (few distinct contents, so
the repository index stays small and what is measured is the per-file cost of the walk, the
parent comparison and the item stream) and compares the peak RSS of the CLI process for the
full backup, the no-change backup and the restore. Before the merge, the no-change backup
held the whole parent in a dict: measured 19 MiB more at N_LARGE than at N_SMALL
(about 1,000 bytes per file); with the merge 2 MiB (docs/performance.md).

The merge tests put names that sort tricky ("a", "a/b", "a-", "a.b", non-UTF-8 bytes,
255-byte names) around a changed, an added and a removed file, and check that every
unchanged file and only those are reused and that both backups restore byte for byte.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import helpers

from backupctl.backups.archiver import ParentCursor
from backupctl.events import CollectingReporter
from backupctl.repo.items import Item, path_key

N_SMALL = 5_000
N_LARGE = 25_000
MAX_GROWTH_MIB = 10

# Runs a command and writes the peak RSS (KiB) of its process tree to argv[1]. A small
# process in between, because a child forked from the (large) pytest process inherits its
# high-water mark across exec (bench/measure.py has the details).
_RSS_WRAPPER = (
    "import resource, subprocess, sys\n"
    "r = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)\n"
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.stdout.buffer.write(r.stdout); sys.stderr.buffer.write(r.stderr)\n"
    "sys.exit(r.returncode)\n"
)


def _tiny_tree(root: Path, n: int) -> Path:
    """n files of 0-190 bytes (64 distinct contents), 100 per directory, two levels deep."""
    contents = [b"%d:" % i * (i % 64) for i in range(64)]
    for i in range(n):
        d, f = divmod(i, 100)
        folder = root / f"d{d // 100:03d}" / f"s{d % 100:03d}"
        if f == 0:
            folder.mkdir(parents=True)
        fd = os.open(folder / f"f{f:02d}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, contents[i % 64])
        os.close(fd)
    return root


def _peak_rss_mib(dep: Any, tmp: Path, *args: str | Path) -> tuple[float, str]:
    rss_file = tmp / "rss"
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, str(rss_file), *helpers.cli_command(*args)],
        env=helpers.cli_env(dep.env),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{args} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return int(rss_file.read_text()) / 1024, proc.stdout


def _measure(make_deployment: Any, tmp: Path, n: int) -> dict[str, float]:
    tree = _tiny_tree(tmp / f"tree-{n}", n)
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    full, out = _peak_rss_mib(dep, tmp, "backup", "create", "app", "--type", "full")
    first = out.strip().splitlines()[-1]
    no_change, out = _peak_rss_mib(dep, tmp, "backup", "create", "app")
    second = out.strip().splitlines()[-1]
    shown = dep.show(second)
    assert shown["type"] == "incremental" and shown["parent"] == first
    assert shown["sources"][0]["reused_files"] == n, "the no-change backup must reuse every file"
    target = tmp / f"restore-{n}"
    restore, _ = _peak_rss_mib(dep, tmp, "backup", "restore", second, "--target", target)
    restored = helpers.restored(target, tree)
    assert sum(len(files) for _, _, files in os.walk(restored)) == n
    return {"full": full, "no-change": no_change, "restore": restore}


def test_peak_rss_does_not_grow_with_the_file_count(tmp_path: Path, make_deployment: Any) -> None:
    small = _measure(make_deployment, tmp_path, N_SMALL)
    large = _measure(make_deployment, tmp_path, N_LARGE)
    growth = {step: large[step] - small[step] for step in small}
    report = {step: (round(small[step], 1), round(large[step], 1)) for step in small}
    for step, mib in growth.items():
        assert mib < MAX_GROWTH_MIB, (
            f"peak RSS of the {step} step grew by {mib:.1f} MiB from {N_SMALL} to {N_LARGE} files: {report}"
        )


# ---- the merge is exact ------------------------------------------------------------------

# Names around "a" in every way the component order and the byte order can disagree: "/"
# (inside "a") against "-" and "." (which sort below "/" as bytes), non-UTF-8 bytes (stored
# as surrogate escapes) against UTF-8 letters above U+0080, names of 255 bytes.
_NAMES: list[bytes] = [
    b"a-",
    b"a.b",
    b"a b",
    b"a0",
    b"A",
    b"a\x80",
    b"a\xc3\xa9",  # a + e-acute (UTF-8)
    b"\xff\xfe",
    b"\xef\xbf\xbd",  # U+FFFD
    b"z",
    b"n" * 255,
    b"\xc3\xa9" * 127 + b"x",  # 255 bytes of UTF-8
    b"\x01ctl",
]
_IN_A: list[bytes] = [b"b0", b"b.d/x", b"b-", b"b/c", b"\xe2\x82\xac"]


def _write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(data)


def _tricky_tree(root: Path) -> Path:
    base = os.fsencode(root)
    for name in _NAMES:
        _write(base + b"/" + name, b"top " + name)
        _write(base + b"/sub/" + name, b"sub " + name)
    for name in _IN_A:
        _write(base + b"/a/" + name, b"in a " + name)
    t = 1_600_000_000_000_000_000
    for dirpath, dirnames, filenames in os.walk(base, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(t, t))
    return root


def _regular_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root))


def test_merge_reuses_exactly_the_unchanged_files_with_tricky_names(
    tmp_path: Path, make_deployment: Any
) -> None:
    tree = _tricky_tree(tmp_path / "tree")
    dep = make_deployment([{"type": "files", "paths": [str(tree)]}])
    first = dep.create()
    before = helpers.snapshot_tree(tree)
    base = os.fsencode(tree)

    # In the middle of the order: same size and mtime, new content (only the ctime tells) ...
    changed = base + b"/a.b"
    st = os.stat(changed)
    _write(changed, b"TOP " + b"a.b")
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns))
    # ... a new size, right after "a" and its subtree ...
    _write(base + b"/sub/a\x80", b"grown " * 10)
    # ... a file removed and two added between names that sort next to each other.
    os.unlink(base + b"/a-")
    _write(base + b"/a/b/c0", b"added in a/b")
    _write(base + b"/sub/a\xc3\xa9\xc3\xa9", b"added in sub")
    expected = helpers.snapshot_tree(tree)

    result = dep.ok("backup", "create", "app")
    second = result.stdout.strip().splitlines()[-1]
    assert "not in the same path order" not in result.stderr, result.stderr
    src = dep.show(second)["sources"][0]
    assert src["reused_files"] == _regular_files(tree) - 4, src
    assert src["files"] == _regular_files(tree), src

    for backup_id, snapshot in ((first, before), (second, expected)):
        target = tmp_path / f"restore-{backup_id[:8]}"
        dep.ok("backup", "restore", backup_id, "--target", target)
        helpers.assert_same_tree(snapshot, helpers.snapshot_tree(helpers.restored(target, tree)))


def test_merge_with_several_paths_listed_out_of_order(tmp_path: Path, make_deployment: Any) -> None:
    """Listed deeper path first and sorting first: the scan still runs in path order, so the
    no-change backup reuses every file (a scan in depth order would miss the first tree)."""
    top = tmp_path / "top"
    for rel in ("aa/deep/x1", "aa/deep/x2", "aa/other", "zz/y1", "zz/y2/y3", "m/skipped"):
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_text(rel)
    dep = make_deployment([{"type": "files", "paths": [str(top / "zz"), str(top / "aa" / "deep")]}])
    dep.create()
    result = dep.ok("backup", "create", "app")
    second = result.stdout.strip().splitlines()[-1]
    assert "not in the same path order" not in result.stderr, result.stderr
    assert dep.show(second)["sources"][0]["reused_files"] == 4
    target = tmp_path / "restore"
    dep.ok("backup", "restore", second, "--target", target)
    for root in (top / "zz", top / "aa" / "deep"):
        helpers.assert_same_tree(
            helpers.snapshot_tree(root), helpers.snapshot_tree(helpers.restored(target, root))
        )


def _file(path: str, inode: int) -> Item:
    return Item(path, "file", size=1, mtime_ns=1, inode=inode)


def test_cursor_over_an_out_of_order_parent_only_returns_the_same_path() -> None:
    """A parent whose items are not in path order (an older version with several roots)
    makes lookups miss, never return another path's item; the disorder is reported."""
    paths = ["b/x", "b/y", "a", "a/b", "a-", "c", "a.b", "b"]
    reporter = CollectingReporter()
    cursor = ParentCursor(iter([_file(p, i) for i, p in enumerate(paths)]), reporter)
    walk = sorted({*paths, "a/a", "b/w", "d"}, key=path_key)
    found = {p: cursor.find(p) for p in walk}
    for path, item in found.items():
        assert item is None or item.path == path, (path, item)
    hits = {p for p, item in found.items() if item is not None}
    assert hits and hits < set(paths), hits
    cursor.report()
    assert cursor.parent_disorder > 0
    assert any("not in the same path order" in str(e) for e in reporter.events)


def test_cursor_over_an_ordered_parent_finds_every_path() -> None:
    paths = sorted(
        ["a", "a/b", "a/b/c", "a-", "a.b", "a\udc80", "a\u00e9", "b", "\uffff", "é" * 127], key=path_key
    )
    cursor = ParentCursor(iter([_file(p, i) for i, p in enumerate(paths)]), CollectingReporter())
    extra = ["a/a", "a/c", "a0", "c"]
    for path in sorted([*paths, *extra], key=path_key):
        item = cursor.find(path)
        assert (item is not None and item.path == path) == (path in paths), path
    assert cursor.parent_disorder == cursor.walk_disorder == 0
    # A walk that goes back misses (the cursor never rewinds) but is still exact.
    assert cursor.find("a") is None and cursor.walk_disorder == 1
    time.sleep(0)
