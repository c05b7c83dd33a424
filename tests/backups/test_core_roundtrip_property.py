"""Property: any generated tree round-trips through the engine byte-identical, with metadata.

Drives `backupctl.backups.service.Service` directly (no subprocess) on real files and a
real repository on disk. Content is generated from a seed so large files are cheap to
describe; sizes cover empty files, files below the 512 KiB CDC minimum (one chunk) and
files up to 3 MiB that are cut by content-defined chunking.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import helpers
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from backupctl.backups import archiver

KIB = 1024
MIB = 1024 * KIB

# Valid POSIX names: no "/" or NUL, not "." / "..", at most 255 bytes in UTF-8. Spaces,
# unicode, leading dashes and dots, newlines and the like are all allowed.
names = (
    st.text(
        alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="/\x00"),
        min_size=1,
        max_size=30,
    )
    .filter(lambda s: s not in (".", "..") and len(s.encode()) <= 200)
    .map(lambda s: s)
)

sizes = st.one_of(
    st.just(0),
    st.integers(1, 4 * KIB),
    st.integers(4 * KIB, 512 * KIB + 1),
    st.integers(512 * KIB + 1, 3 * MIB),
)
file_spec = st.fixed_dictionaries(
    {
        "size": sizes,
        "seed": st.integers(0, 2**32 - 1),
        "kind": st.sampled_from(["random", "text", "zeros"]),
        "mode": st.sampled_from([0o644, 0o600, 0o755, 0o400, 0o000, 0o4755, 0o1777 & 0o777]),
        "mtime": st.integers(0, 2_000_000_000 * 10**9),
    }
)


def tree_spec(depth: int) -> st.SearchStrategy[Any]:
    leaf: st.SearchStrategy[Any] = st.one_of(
        file_spec.map(lambda f: ("file", f)),
        names.map(lambda t: ("symlink", t)),
        st.just(("dir", {})),
    )
    if depth == 0:
        return leaf
    return st.one_of(
        leaf,
        st.dictionaries(names, tree_spec(depth - 1), max_size=4).map(lambda d: ("dir", d)),
    )


trees = st.dictionaries(names, tree_spec(2), min_size=0, max_size=6)
dir_modes = st.sampled_from([0o755, 0o700, 0o750, 0o1777])


def _content(spec: dict[str, Any]) -> bytes:
    size = spec["size"]
    rnd = random.Random(spec["seed"])
    if spec["kind"] == "zeros":
        return bytes(size)
    if spec["kind"] == "text":
        words = [b"alpha", b"beta", b"gamma ", b"\n", b"delta,", b"epsilon;", b"0123456789"]
        out = bytearray()
        while len(out) < size:
            out += rnd.choice(words)
        return bytes(out[:size])
    return rnd.randbytes(size)


def _build(root: Path, tree: dict[str, Any], budget: list[int], rnd: random.Random) -> None:
    for name, (kind, spec) in tree.items():
        path = root / name
        if kind == "file":
            size = min(spec["size"], budget[0])
            budget[0] -= size
            path.write_bytes(_content({**spec, "size": size}))
            os.chmod(path, spec["mode"])
            os.utime(path, ns=(spec["mtime"], spec["mtime"]))
        elif kind == "symlink":
            os.symlink(spec, path)
            os.utime(path, ns=(123_000_000_456, 123_000_000_456), follow_symlinks=False)
        else:
            path.mkdir()
            _build(path, spec, budget, rnd)
            os.chmod(path, rnd.choice([0o755, 0o700, 0o750, 0o1777]))
            t = rnd.randrange(0, 2_000_000_000) * 10**9 + rnd.randrange(10**9)
            os.utime(path, ns=(t, t))


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    tree=trees,
    big=st.one_of(st.none(), st.builds(dict, file_spec, size=st.integers(512 * KIB + 1, 3 * MIB))),
    seed=st.integers(0, 2**16),
    hardlink=st.booleans(),
    backup_type=st.sampled_from(["full", "incremental"]),
    readers=st.booleans(),
)
def test_generated_trees_round_trip(
    tree: dict[str, Any],
    big: dict[str, Any] | None,
    seed: int,
    hardlink: bool,
    backup_type: str,
    readers: bool,
) -> None:
    """`readers`: small files go to reader processes (backups/filereaders.py) from the first
    one, instead of being read by the walking thread."""
    with tempfile.TemporaryDirectory(prefix="backupctl-prop-") as tmp, pytest.MonkeyPatch.context() as mp:
        if readers:
            mp.setattr(archiver, "READERS_AFTER", 0)
        base = Path(tmp)
        src = base / "src tree ü"
        src.mkdir()
        rnd = random.Random(seed)
        if big is not None:
            tree = {**tree, "big file ∞.bin": ("file", big)}
        _build(src, tree, [8 * MIB], rnd)
        regular = [p for p in src.rglob("*") if p.is_file() and not p.is_symlink()]
        if hardlink and regular:
            first = regular[0]
            os.link(first, first.parent / (first.name[:100] + " hardlink"))
        os.utime(src, ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))
        expected = helpers.snapshot_tree(src)
        biggest = max((p.stat().st_size for p in regular), default=0)
        event("has a CDC-chunked file (> 512 KiB)" if biggest > 512 * KIB else "only small files")
        event(f"{len(expected)} objects" if len(expected) < 3 else "3+ objects")

        config = helpers.write_config(
            base / "config.yaml",
            sources=[{"type": "files", "paths": [str(src)]}],
            repository=base / "repo",
            settings={"state_dir": str(base / "state")},
        )
        svc = helpers.service(config)
        try:
            record = svc.create_backup("app", type=backup_type)
            assert record["status"] == "Completed"
            assert record["warnings"] == 0, record
            # Every source byte counted once (hard links share content).
            assert record["size_bytes"] == sum({p.stat().st_ino: p.stat().st_size for p in regular}.values())
            target = base / "restore"
            svc.restore_backup(record["id"][:10], target_dir=target)
            actual = helpers.snapshot_tree(helpers.restored(target, src))
            helpers.assert_same_tree(expected, actual)
            root_st = helpers.restored(target, src).stat()
            assert root_st.st_mtime_ns == 1_500_000_000_000_000_001
            assert svc.verify_backup(record["id"])["ok"]
        finally:
            svc.close()
