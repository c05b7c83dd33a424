#!/usr/bin/env python3
"""Differential fidelity run: backupctl against restic on the fidelity corpus.

Builds the seeded corpus of tests/fidelity.py (every kind of entry and metadata Linux
offers; run as root for device nodes, foreign owners, capabilities), backs it up with
each tool into a fresh repository, restores into an empty directory and compares the
restored tree with the original (type, mode, owner, size, content, mtime, link target,
hard-link identity, xattrs/ACLs/capabilities, device numbers, holes of sparse files).

Prints, per tool, what it did not reproduce, and exits 1 when backupctl lost anything
that restic kept (the issue's bar: backupctl preserves at least everything restic does).

Usage:
  sudo python bench/run_fidelity.py [--work DIR] [--keep] [--wide 20000] [--seed 12]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
import fidelity  # noqa: E402
from run_files import Backupctl, Restic, Tool  # noqa: E402


def lost_by(tool: Tool, tree: Path, expected: dict[bytes, dict[str, object]]) -> list[tuple[bytes, str, str]]:
    tool.init()
    tool.backup()
    target = tool.work / "restored"
    _timed, restored = tool.restore(target)
    return fidelity.difference_items(expected, fidelity.snapshot(restored))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, help="scratch directory (default: a new one under /tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the scratch directory")
    ap.add_argument("--wide", type=int, default=20_000, help="entries in the wide directory")
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--restic", default="restic")
    ap.add_argument("--backupctl", default="backupctl")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    try:
        tree = fidelity.build_corpus(work / "corpus", seed=args.seed, big_dir=args.wide)
        expected = fidelity.snapshot(tree)
        results = {}
        for tool in (Restic(work, tree, args.restic), Backupctl(work, tree, args.backupctl)):
            results[tool.name] = lost_by(tool, tree, expected)
        print(f"# Fidelity: restic vs backupctl on the corpus ({len(expected)} entries, seed {args.seed})\n")
        print("| not reproduced | restic | backupctl |\n|---|---|---|")
        kinds = sorted({what for items in results.values() for _p, what, _t in items})
        counts = {name: Counter(what for _p, what, _t in items) for name, items in results.items()}
        for what in kinds:
            print(f"| {what} | {counts['restic'][what]} | {counts['backupctl'][what]} |")
        kept_by_restic = {(p, w) for p, w, _t in results["backupctl"]} - {
            (p, w) for p, w, _t in results["restic"]
        }
        print()
        for name, items in results.items():
            print(f"## {name}: {len(items)} differences")
            for _p, _w, text in items[:30]:
                print(f"- {text[:200]}")
            print()
        if kept_by_restic:
            print(f"FAIL: backupctl lost {len(kept_by_restic)} things restic kept:")
            for p, w in sorted(kept_by_restic)[:30]:
                print(f"- {p!r}: {w}")
            return 1
        print("OK: backupctl preserves everything restic preserves.")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
