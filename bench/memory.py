#!/usr/bin/env python3
"""Peak RSS of backup, no-change backup and restore over trees of many small files.

For each --files count: generate a seeded tree of that many small files (gen_small()),
then for each tool (backupctl, and restic beside it when installed) on a fresh repository:
full backup, no-change backup (backupctl: an incremental against the first, i.e. the
streaming parent merge), full restore into an empty directory. Peak RSS of every process
comes from GNU time (measure.py explains why not the benchmark's own wait4), wall time
from the same run. The point is the growth of RSS with the file count (issue 14 item 2:
it must not grow with the number of files beyond a small constant per directory being
walked), so the report also gives the RSS difference per extra 1,000 files.

Usage:
  python bench/memory.py                              # 100k and 500k files, both tools
  python bench/memory.py --files 20000 60000 --tools backupctl
  python bench/memory.py --distinct 64                # only 64 distinct contents (index stays tiny)
Writes a Markdown table to stdout and every measurement to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import git_commit, log, sync, warm  # noqa: E402
from run_files import Backupctl, Restic, Tool  # noqa: E402

FILES_PER_DIR = 100
DIRS_PER_DIR = 100


def gen_small(out: Path, n: int, seed: int = 1, distinct: int = 0) -> None:
    """n files of 0-2,047 bytes, FILES_PER_DIR per directory, directories two levels deep
    (d0042/s0017/f00.txt). Contents are seeded text; with `distinct` > 0 only that many
    different contents exist (so the repository index stays small and what grows is the
    per-file cost alone)."""
    rng = random.Random(seed)
    out.mkdir(parents=True)
    pool = [f"{seed}:{i}:".encode() * rng.randrange(0, 200) for i in range(distinct)] if distinct else []
    for i in range(n):
        d, f = divmod(i, FILES_PER_DIR)
        top, sub = divmod(d, DIRS_PER_DIR)
        folder = out / f"d{top:04d}" / f"s{sub:04d}"
        if f == 0:
            folder.mkdir(parents=True, exist_ok=True)
        data = pool[i % distinct] if distinct else f"{seed}:{i}:".encode() * rng.randrange(0, 200)
        (folder / f"f{f:02d}.txt").write_bytes(data)


def measure(tools: list[Tool], tree: Path, work: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in tools:
        tool.init()
        steps: dict[str, Any] = {}
        for label in ("full", "no-change"):
            sync()
            t = tool.backup()
            steps[label] = t.as_dict()
            log(f"{tool.name} {label}: {t.wall_s:.1f} s, {t.peak_rss_mib:.0f} MiB")
        target = work / f"restore-{tool.name}"
        sync()
        t, _ = tool.restore(target)
        steps["restore"] = t.as_dict()
        log(f"{tool.name} restore: {t.wall_s:.1f} s, {t.peak_rss_mib:.0f} MiB")
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(tool.work, ignore_errors=True)
        out[tool.name] = steps
    return out


def table(results: dict[int, dict[str, dict[str, Any]]]) -> str:
    rows = ["| files | tool | full backup | no-change backup | restore |", "|---:|---|---:|---:|---:|"]
    for n, by_tool in sorted(results.items()):
        for name, steps in by_tool.items():
            cells = [
                f"{steps[s]['wall_s']:.1f} s, {steps[s]['peak_rss_mib']:.0f} MiB"
                for s in ("full", "no-change", "restore")
            ]
            rows.append(f"| {n:,} | {name} | " + " | ".join(cells) + " |")
    counts = sorted(results)
    if len(counts) >= 2:
        lo, hi = counts[0], counts[-1]
        rows.append("")
        rows.append(f"RSS growth from {lo:,} to {hi:,} files, KiB per 1,000 extra files:")
        for name in results[hi]:
            if name not in results[lo]:
                continue
            growth = [
                (results[hi][name][s]["peak_rss_mib"] - results[lo][name][s]["peak_rss_mib"])
                * 1024
                / ((hi - lo) / 1000)
                for s in ("full", "no-change", "restore")
            ]
            rows.append(f"- {name}: full {growth[0]:.0f}, no-change {growth[1]:.0f}, restore {growth[2]:.0f}")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, nargs="+", default=[100_000, 500_000])
    ap.add_argument("--tools", nargs="+", default=["backupctl", "restic"])
    ap.add_argument("--distinct", type=int, default=0, help="distinct file contents (0: all differ)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="scratch directory (default: a temp dir)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--backupctl", default="backupctl", help="the backupctl command to measure")
    args = ap.parse_args()
    tools_wanted = [t for t in args.tools if t != "restic" or shutil.which("restic")]
    work_root = Path(tempfile.mkdtemp(prefix="bench-memory-", dir=args.work))
    results: dict[int, dict[str, dict[str, Any]]] = {}
    versions: dict[str, str] = {}
    try:
        for n in args.files:
            tree = work_root / f"tree-{n}"
            log(f"generating {n:,} files in {tree}")
            gen_small(tree, n, args.seed, args.distinct)
            warm(tree)
            tools: list[Tool] = []
            for name in tools_wanted:
                tool: Tool = (
                    Backupctl(work_root / f"work-{n}", tree, args.backupctl)
                    if name == "backupctl"
                    else Restic(work_root / f"work-{n}", tree)
                )
                versions.setdefault(name, tool.version())
                tools.append(tool)
            results[n] = measure(tools, tree, work_root)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)
    text = table(results)
    print(text)
    if args.json:
        doc = {"commit": git_commit(), "cpus": os.cpu_count(), "versions": versions, "results": results}
        args.json.write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
