#!/usr/bin/env python3
"""Benchmark backupctl against restic on trees of many small files (issue 14), beside the
machine's physical limits measured in the same run.

A tree is NAME:GEN:N (N small files made by gen_small.py in the scratch directory, once per
invocation) or NAME:PATH, where PATH may be a glob matching one or more directories (all of
them are backed up together, as one source with several paths), e.g.

  python bench/run_trees.py --tree small:GEN:500000 --tree doc:/usr/share/doc \\
      --tree stdlib:/usr/lib/python3.11 --runs 3

For each tree and run, on fresh repositories of both tools: full backup, no-change backup,
full restore (of the no-change backup) into an empty directory. Every step is timed (wall),
with user+sys CPU and peak RSS of the tool process. Beside them, in the same run, the limits:
reading the tree (`find ROOTS -type f -print0 | xargs -0 cat > /dev/null`) for the backups,
and writing it (`tar -C / -cf - ROOTS | tar -C EMPTY -xf -`) for the restore; plus the
metadata walk (`find ROOTS -printf '%s %T@ %C@ %i'`), the least a no-change backup has to do.
The tree is cache-warm for every tool and limit (it is read once before each run; nothing
drops the page cache). The tools alternate which goes first from run to run; `sync` runs
(untimed) before every timed step. Each restore is checked: number of files, directories and
symlinks, total bytes, and the content of 200 randomly chosen files byte for byte; a mismatch
stops the benchmark with exit code 1 (the measurements so far are still written to --json).

Report: one Markdown table per tree, medians of --runs (ratios: median of per-run ratios).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_small import generate  # noqa: E402
from measure import (  # noqa: E402
    MB,
    StepFailed,
    Timed,
    backupctl_command,
    git_commit,
    log,
    median,
    run,
    run_pipeline,
    sync,
    warm,
)
from run_files import Backupctl, Restic, Tool  # noqa: E402

SAMPLE_FILES = 200
STEPS = ("full", "nochange", "restore")
STEP_LABELS = {"full": "full backup", "nochange": "no-change backup", "restore": "full restore"}
# The physical limit shown beside each step.
STEP_LIMIT = {"full": "read", "nochange": "read", "restore": "write"}


class RestoreMismatch(RuntimeError):
    pass


@dataclass
class Tree:
    name: str
    spec: str
    roots: list[Path] = field(default_factory=list)
    generated: dict[str, object] | None = None
    inventory: dict[str, int] = field(default_factory=dict)
    files: list[tuple[int, str]] = field(default_factory=list)  # (root number, relative path)


# -- the tools, on several roots -------------------------------------------------------------


class TreeRestic(Restic):
    def __init__(self, work: Path, roots: list[Path], binary: str) -> None:
        super().__init__(work, roots[0], binary)
        self.roots = roots

    def backup(self) -> Timed:
        return run(
            [self.binary, "backup", "--quiet", "--host", "bench", *map(str, self.roots)],
            env=self.env,
            log=self.logfile,
        )


class TreeBackupctl(Backupctl):
    """run_files.py's set-up (`backupctl init` with a key file, then a minimal config), with
    every root as a path of the one files source."""

    def __init__(self, work: Path, roots: list[Path], binary: str) -> None:
        super().__init__(work, roots[0], binary)
        self.roots = roots

    def init(self) -> None:
        super().init()
        one = f"paths: [{json.dumps(str(self.tree))}]"
        text = self.config.read_text()
        if one not in text:
            raise StepFailed(f"unexpected config written by run_files.Backupctl.init:\n{text}")
        self.config.write_text(
            text.replace(one, f"paths: [{', '.join(json.dumps(str(r)) for r in self.roots)}]")
        )


# -- trees, limits, checks -------------------------------------------------------------------


def scan(roots: list[Path]) -> tuple[dict[str, int], list[tuple[int, str]]]:
    """Counts of the entries under roots (lstat, symlinks not followed), and every regular file."""
    inv = {"files": 0, "bytes": 0, "dirs": 0, "symlinks": 0, "other": 0}
    files: list[tuple[int, str]] = []
    for n, root in enumerate(roots):
        for top, dirs, names in os.walk(root):
            inv["dirs"] += 1
            # os.walk lists symlinks to directories in dirs and does not descend into them.
            inv["symlinks"] += sum(os.path.islink(os.path.join(top, d)) for d in dirs)
            for name in names:
                path = os.path.join(top, name)
                st = os.lstat(path)
                if os.path.islink(path):
                    inv["symlinks"] += 1
                elif os.path.isfile(path):
                    inv["files"] += 1
                    inv["bytes"] += st.st_size
                    files.append((n, os.path.relpath(path, root)))
                else:
                    inv["other"] += 1
    return inv, files


def check_restore(tree: Tree, landed: list[Path], rng: random.Random) -> dict[str, Any]:
    """Compare the restored roots with the tree: counts, bytes, and a sample of contents."""
    missing = [str(p) for p in landed if not p.is_dir()]
    if missing:
        raise RestoreMismatch(f"{tree.name}: restored roots not found: {', '.join(missing)}")
    inv, _ = scan(landed)
    problems = [
        f"{k}: {inv[k]} restored, {tree.inventory[k]} in the tree" for k in inv if inv[k] != tree.inventory[k]
    ]
    sample = rng.sample(tree.files, min(SAMPLE_FILES, len(tree.files)))
    for n, rel in sample:
        src, dst = tree.roots[n] / rel, landed[n] / rel
        try:
            same = dst.read_bytes() == src.read_bytes()
        except OSError as e:
            problems.append(f"{dst}: {e}")
            continue
        if not same:
            problems.append(f"content differs: {src} vs {dst}")
        if len(problems) > 20:
            break
    if problems:
        raise RestoreMismatch(f"{tree.name}: restore differs from the tree:\n  " + "\n  ".join(problems[:20]))
    return {"inventory": inv, "sampled": len(sample)}


def limit_read(tree: Tree, logfile: Path) -> Timed:
    return run_pipeline(
        [["find", *map(str, tree.roots), "-type", "f", "-print0"], ["xargs", "-0", "-r", "cat"]],
        stdout=subprocess.DEVNULL,
        log=logfile,
    )


def limit_walk(tree: Tree, logfile: Path) -> Timed:
    return run(
        ["find", *map(str, tree.roots), "-printf", "%s %T@ %C@ %i\\n"], stdout=subprocess.DEVNULL, log=logfile
    )


def limit_write(tree: Tree, target: Path, logfile: Path) -> Timed:
    target.mkdir(parents=True)
    rel = [str(r).lstrip("/") for r in tree.roots]
    return run_pipeline(
        [["tar", "-C", "/", "-cf", "-", *rel], ["tar", "-C", str(target), "-xf", "-"]],
        stdout=subprocess.DEVNULL,
        log=logfile,
    )


def prepare(tree: Tree, work: Path, seed: int) -> None:
    """Generate (GEN:N) or find (glob) the roots, and take the tree's inventory."""
    if tree.spec.startswith("GEN:"):
        n = int(tree.spec[4:].replace(",", "").replace("_", ""))
        out = work / tree.name / "tree"
        log(f"{tree.name}: generating {n:,} small files (gen_small.py, seed {seed})")
        tree.generated = generate(out, n, seed, force=True, quiet=True)
        log(f"{tree.name}: generated in {tree.generated['seconds']} s")
        tree.roots = [out]
    else:
        matches = sorted(glob.glob(tree.spec))
        tree.roots = [Path(m).resolve() for m in matches if os.path.isdir(m) and not os.path.islink(m)]
        if not tree.roots:
            raise SystemExit(f"--tree {tree.name}:{tree.spec}: no directory matches")
    tree.inventory, tree.files = scan(tree.roots)
    log(
        f"{tree.name}: {tree.inventory['files']:,} files, {tree.inventory['bytes'] / MB:,.1f} MB, "
        f"{tree.inventory['dirs']:,} directories, {tree.inventory['symlinks']:,} symlinks in {len(tree.roots)} root(s)"
    )


def set_aside(path: Path, work: Path) -> None:
    """Move a restored (or generated) tree out of the way; it is deleted with the scratch dir
    at the very end. Deleting it between steps would slow the next restores: for some minutes
    after a mass delete, ext4 skips the recently deleted inodes one by one when it allocates
    new ones (`recently_deleted` in ext4_create took ~75% of tar's time in a profile), which
    made the tar copy of 100,000 files take 40 s instead of about 5 s."""
    if path.exists():
        aside = work / ".set-aside"
        aside.mkdir(exist_ok=True)
        path.rename(aside / f"{len(os.listdir(aside)):04d}-{path.name}")


def one_run(
    tree: Tree, tools: list[Tool], work: Path, run_no: int, seed: int, total_runs: int
) -> dict[str, Any]:
    tag = f"{tree.name} run {run_no + 1}/{total_runs}"
    out: dict[str, Any] = {"tree": tree.name, "run": run_no, "load_before": os.getloadavg()[0], "limits": {}}
    out.update({t.name: {} for t in tools})
    for root in tree.roots:
        warm(root)
    # Taken again each run: a live tree (pyc files in the standard library) may have changed.
    tree.inventory, tree.files = scan(tree.roots)
    out["inventory"] = tree.inventory
    order = tools if run_no % 2 == 0 else list(reversed(tools))
    out["order"] = [t.name for t in order]
    for t in order:
        t.reset()
        t.init()
    logfile = work / tree.name / "limits.log"

    def limit(name: str, fn: Any, *args: Any) -> None:
        sync()
        log(f"{tag}: limit: {name}")
        out["limits"][name] = fn(tree, *args, logfile).as_dict()

    limit("read", limit_read)
    for label in ("full", "nochange"):
        if label == "nochange":
            limit("walk", limit_walk)
        for t in order:
            sync()
            log(f"{tag}: {t.name}: {STEP_LABELS[label]}")
            out[t.name][label] = t.backup().as_dict()
    empty = work / tree.name / "limit-write"
    limit("write", limit_write, empty)
    set_aside(empty, work)
    rng = random.Random(f"{seed}:{tree.name}:{run_no}")
    for t in order:
        target = t.work / "restore"
        sync()
        log(f"{tag}: {t.name}: restore")
        timed, _ = t.restore(target)
        out[t.name]["restore"] = timed.as_dict()
        landed = [target / str(r).lstrip("/") for r in tree.roots]
        out[t.name]["restore"]["check"] = check_restore(tree, landed, rng)
        set_aside(target, work)
    logs = work / tree.name / "logs"
    logs.mkdir(exist_ok=True)
    for t in tools:
        if t.logfile.exists():  # stderr of the tool, kept with --keep
            shutil.copy(t.logfile, logs / f"{t.name}-run{run_no + 1}.log")
        shutil.rmtree(t.work, ignore_errors=True)
    return out


# -- report ----------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None or v != v else format(v, spec)


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float | None]]:
    """Per step: medians over runs of each tool's time, CPU and RSS, and of the per-run ratios."""
    s: dict[str, dict[str, float | None]] = {}
    for step in STEPS:
        lim = STEP_LIMIT[step]
        row: dict[str, float | None] = {"limit_s": median([r["limits"][lim]["wall_s"] for r in runs])}
        for n in names:
            row[f"{n}_s"] = median([r[n][step]["wall_s"] for r in runs])
            row[f"{n}_cpu_s"] = median([r[n][step]["cpu_s"] for r in runs])
            row[f"{n}_rss_mib"] = median([r[n][step]["peak_rss_mib"] for r in runs])
        both = "backupctl" in names and "restic" in names
        row["ratio"] = (
            median([r["restic"][step]["wall_s"] / r["backupctl"][step]["wall_s"] for r in runs])
            if both
            else None
        )
        row["fraction"] = (
            median([r["limits"][lim]["wall_s"] / r["backupctl"][step]["wall_s"] for r in runs])
            if "backupctl" in names
            else None
        )
        s[step] = row
    s["walk"] = {"limit_s": median([r["limits"]["walk"]["wall_s"] for r in runs])}
    return s


def tree_table(tree: dict[str, Any], runs: list[dict[str, Any]], names: list[str]) -> str:
    s = summarize(runs, names)
    inv = tree["inventory"]
    roots = ", ".join(tree["roots"]) if len(tree["roots"]) <= 3 else f"{len(tree['roots'])} directories"
    lines = [
        f"### {tree['name']} ({tree['spec']}): {inv['files']:,} files, {inv['bytes'] / MB:,.1f} MB, "
        f"{inv['dirs']:,} directories, {inv['symlinks']:,} symlinks",
        "",
        f"Roots: {roots}. Median of {len(runs)} run(s); the tree is cache-warm for every tool and limit.",
        "",
        "| step | backupctl s | restic s | ratio | physical limit s | backupctl as fraction of limit "
        "| peak RSS backupctl MiB | peak RSS restic MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]

    for step in STEPS:
        r = s[step]
        lines.append(
            f"| {STEP_LABELS[step]} | {_fmt(r.get('backupctl_s'))} | {_fmt(r.get('restic_s'))} "
            f"| {_fmt(r.get('ratio'))} | {_fmt(r.get('limit_s'))} ({STEP_LIMIT[step]}) | {_fmt(r.get('fraction'))} "
            f"| {_fmt(r.get('backupctl_rss_mib'), '.0f')} | {_fmt(r.get('restic_rss_mib'), '.0f')} |"
        )
    cpu = "; ".join(
        f"{n} " + ", ".join(f"{STEP_LABELS[st]} {_fmt(s[st][f'{n}_cpu_s'], '.1f')}" for st in STEPS)
        for n in names
    )
    walk = s["walk"]["limit_s"]
    nochange = s["nochange"].get("backupctl_s")
    walk_note = (
        f" (backupctl's no-change backup: {_fmt(walk / nochange if walk and nochange else None)} of it)"
        if "backupctl" in names
        else ""
    )
    loads = ", ".join(f"{r['load_before']:.1f}" for r in runs)
    lines += [
        "",
        f"CPU user+sys, s: {cpu}.",
        f"Metadata walk (`find -printf` of size, mtime, ctime, inode): {_fmt(walk)} s{walk_note}.",
        f"Load average (1 min) before each run: {loads}.",
    ]
    return "\n".join(lines)


def report(doc: dict[str, Any]) -> str:
    names = doc["meta"]["tools"]
    parts = [
        "ratio = restic s / backupctl s (> 1: backupctl faster); fraction of limit = limit s / backupctl s "
        "(1 = as fast as reading the tree, for backups, or copying it with tar, for the restore).",
    ]
    for tree in doc["trees"]:
        runs = [r for r in doc["runs"] if r["tree"] == tree["name"]]
        if runs:
            parts.append(tree_table(tree, runs, names))
    return "\n\n".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="NAME:GEN:N|NAME:PATH",
        help="a tree to measure (repeatable): N generated small files, or a directory (glob allowed)",
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1, help="seed of the generated trees and the restore samples")
    ap.add_argument("--tools", default="restic,backupctl", help="comma-separated: restic,backupctl")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a new dir under /tmp)")
    ap.add_argument(
        "--json",
        type=Path,
        default=Path(__file__).resolve().parent / "results" / f"{time.strftime('%Y-%m-%d')}-trees.json",
    )
    ap.add_argument("--md", type=Path, default=None, help="also write the Markdown tables here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--restic", default="restic", help="restic binary")
    ap.add_argument(
        "--backupctl",
        default=backupctl_command(),
        help="backupctl binary (default: the script beside this interpreter, see measure.backupctl_command)",
    )
    ap.add_argument(
        "--report", type=Path, metavar="JSON", help="print the tables of an earlier --json and exit"
    )
    args = ap.parse_args()
    if args.report:
        print(report(json.loads(args.report.read_text())))
        return
    if not args.tree:
        ap.error("give at least one --tree NAME:GEN:N or NAME:PATH")
    trees: list[Tree] = []
    for arg in args.tree:
        name, sep, spec = arg.partition(":")
        if not sep or not name or not spec or "/" in name:
            ap.error(f"--tree {arg!r}: expected NAME:GEN:N or NAME:PATH")
        if any(t.name == name for t in trees):
            ap.error(f"--tree {name!r} given twice")
        trees.append(Tree(name, spec))
    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    for n in names:
        if n not in ("restic", "backupctl"):
            ap.error(f"unknown tool {n!r}")
        if shutil.which(getattr(args, n)) is None:
            raise SystemExit(f"{n} is not installed ({getattr(args, n)} not found)")

    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-trees-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "tools": names,
        "runs": args.runs,
        "seed": args.seed,
        "commit": git_commit(),
        "work": str(work),
        "cache": "warm: every tree is read once before each run; the page cache is never dropped",
    }
    doc: dict[str, Any] = {"meta": meta, "trees": [], "runs": []}
    failure: str | None = None
    args.json.parent.mkdir(parents=True, exist_ok=True)
    try:
        for tree in trees:
            prepare(tree, work, args.seed)
            doc["trees"].append(
                {
                    "name": tree.name,
                    "spec": tree.spec,
                    "roots": [str(r) for r in tree.roots],
                    "inventory": tree.inventory,
                    "generated": tree.generated,
                }
            )
            tools: list[Tool] = []
            for n in names:
                cls = TreeRestic if n == "restic" else TreeBackupctl
                tools.append(cls(work / tree.name, tree.roots, getattr(args, n)))
            if not meta.get("versions"):
                meta["versions"] = {t.name: t.version() for t in tools}
            for i in range(args.runs):
                doc["runs"].append(one_run(tree, tools, work, i, args.seed, args.runs))
            if tree.generated is not None and not args.keep:
                set_aside(tree.roots[0], work)
    except (RestoreMismatch, StepFailed) as e:
        failure = str(e)
        doc["failed"] = failure
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    md = report(doc)
    if args.md:
        args.md.write_text(md + "\n")
    print(md)
    if failure:
        print(f"\nFAILED: {failure}", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
