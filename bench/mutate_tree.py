#!/usr/bin/env python3
"""Apply the seeded "1% change" to a tree made by gen_tree.py.

Edits 50 files in place (40 small files, 5 larger text and 5 random files; same size, new
bytes in one region), appends to 20 larger text files, adds 10 files (4 text, 3 random,
3 small) and deletes 10 (8 small, 1 text, 1 random). New or changed bytes come to about
1.07% of the tree (23 MB of 2,149 MB at full size). The choice of files and the new bytes
depend only on the seed and the tree, so the same tree mutates the same way every time.

Usage: python bench/mutate_tree.py TREE [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - a set-up problem, said plainly
    raise SystemExit("the benchmark tree generator needs numpy: pip install numpy") from None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textgen import TextSource  # noqa: E402

CHANGE_SHARE = 23 / 2149
KIND_BY_EXT = {"csv": "csv", "jsonl": "jsonl", "json": "jsonl", "log": "log", "md": "prose", "txt": "prose"}


def _kind(path: Path) -> str:
    return KIND_BY_EXT.get(path.suffix.lstrip("."), "random")


def _new_bytes(rng: np.random.Generator, text: TextSource, kind: str, size: int) -> bytes:
    if kind == "random":
        return rng.bytes(size)
    return b"".join(text.generate(rng, kind, size))


def mutate(tree: Path, seed: int = 1, quiet: bool = False) -> dict[str, int]:
    tree = tree.resolve()
    files = sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink())
    if not files:
        raise SystemExit(f"{tree}: no files")
    total = sum(p.stat().st_size for p in files)
    budget = int(total * CHANGE_SHARE)
    rng = np.random.default_rng([seed, 99])
    text = TextSource(pool_bytes=8 << 20)

    rel = [p.relative_to(tree).parts[0] for p in files]
    small = [p for p, top in zip(files, rel, strict=True) if top == "src"]
    large_text = [p for p, top in zip(files, rel, strict=True) if top != "src" and _kind(p) != "random"]
    large_random = [p for p, top in zip(files, rel, strict=True) if top != "src" and _kind(p) == "random"]

    def pick(pool: list[Path], n: int) -> list[Path]:
        chosen = sorted(rng.choice(len(pool), min(n, len(pool)), replace=False).tolist())
        picked = [pool[i] for i in chosen]
        for p in picked:
            pool.remove(p)
        return picked

    stats = {"edited": 0, "appended": 0, "added": 0, "deleted": 0, "changed_bytes": 0}

    # In place: same size, one region rewritten, same inode (only mtime/ctime tell).
    edit_large = budget // 5 // 10
    for group, region in (
        (pick(small, 40), None),
        (pick(large_text, 5), edit_large),
        (pick(large_random, 5), edit_large),
    ):
        for p in group:
            size = p.stat().st_size
            length = min(size // 2, region) if region else int(rng.integers(size // 8, size // 2 + 1))
            offset = int(rng.integers(0, size - length + 1))
            with open(p, "r+b") as f:
                f.seek(offset)
                f.write(_new_bytes(rng, text, _kind(p), length))
            stats["edited"] += 1
            stats["changed_bytes"] += length

    append_each = budget // 5 // 20
    growing = pick([q for q in large_text if _kind(q) in ("log", "jsonl", "csv")], 20)
    for p in growing:
        large_text.remove(p)
        with open(p, "ab") as out:
            out.write(_new_bytes(rng, text, _kind(p), append_each))
        stats["appended"] += 1
        stats["changed_bytes"] += append_each

    add_large = (budget - stats["changed_bytes"]) // 7
    adds: list[tuple[Path, str, int]] = []
    for i in range(4):
        adds.append((tree / f"data/exports/new/added_{seed}_{i}.csv", "csv", add_large))
    for i in range(3):
        adds.append((tree / f"media/photos/new/added_{seed}_{i}.jpg", "random", add_large))
    for i in range(3):
        adds.append((tree / f"src/new/added_{seed}_{i}.txt", "prose", int(rng.integers(1024, 8193))))
    for path, kind, size in adds:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_new_bytes(rng, text, kind, size))
        stats["added"] += 1
        stats["changed_bytes"] += size

    for p in pick(small, 8) + pick(large_text, 1) + pick(large_random, 1):
        os.unlink(p)
        stats["deleted"] += 1

    if not quiet:
        print(json.dumps(stats))
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    mutate(args.tree, args.seed)


if __name__ == "__main__":
    main()
