#!/usr/bin/env python3
"""Benchmark backupctl against restic on the generated file tree, side by side in one run.

Each run: generate the tree (gen_tree.py), read it once (cache-warm), then for both tools on
fresh repositories: full backup, no-change backup, the 1% mutation (mutate_tree.py), backup
after it, full restore of that last backup. Repository sizes are measured after each backup,
peak RSS of every tool process through wait4. The tools alternate which goes first from run
to run; `sync` runs (untimed) before every timed step. The report is the median of --runs.

Usage:
  python bench/run_files.py                        # full size (~2,149 MB), 3 runs
  python bench/run_files.py --size-scale 0.05 --runs 1   # quick check, ~107 MB
  python bench/run_files.py --tools restic         # one tool only
Writes a Markdown table to stdout and --md, and every measurement to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_tree import generate  # noqa: E402
from measure import MB, StepFailed, Timed, git_commit, json_doc, log, median, run, sync, tree_bytes, warm  # noqa: E402
from mutate_tree import mutate  # noqa: E402

# Targets of issue 2, section 11 (ratios from the same run).
TARGET_BACKUP_THROUGHPUT = 1.5
TARGET_RESTORE_THROUGHPUT = 1.5
TARGET_RSS_MIB = 250.0


class Tool:
    name = "tool"

    def __init__(self, work: Path, tree: Path) -> None:
        self.work = work / self.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.tree = tree
        self.repo = self.work / "repo"
        self.logfile = self.work / "stderr.log"

    def version(self) -> str:
        raise NotImplementedError

    def init(self) -> None:
        raise NotImplementedError

    def backup(self) -> Timed:
        raise NotImplementedError

    def restore(self, target: Path) -> tuple[Timed, Path]:
        """Restore the newest backup into target; returns the timing and where the tree landed."""
        raise NotImplementedError

    def reset(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)


class Restic(Tool):
    name = "restic"

    def __init__(self, work: Path, tree: Path, binary: str = "restic") -> None:
        super().__init__(work, tree)
        self.binary = binary

    @property
    def env(self) -> dict[str, str]:
        pw = self.work / "password"
        if not pw.exists():
            pw.write_text("bench-password-not-secret\n")
            pw.chmod(0o600)
        return {
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD_FILE": str(pw),
            "RESTIC_CACHE_DIR": str(self.work / "cache"),
        }

    def version(self) -> str:
        return subprocess.run(
            [self.binary, "version"], capture_output=True, text=True, check=True
        ).stdout.strip()

    def init(self) -> None:
        # Format version 2: compressed (zstd), the default of restic >= 0.14 ("stable").
        run([self.binary, "init", "--repository-version", "2"], env=self.env, log=self.logfile)

    def backup(self) -> Timed:
        return run(
            [self.binary, "backup", "--quiet", "--host", "bench", str(self.tree)],
            env=self.env,
            log=self.logfile,
        )

    def restore(self, target: Path) -> tuple[Timed, Path]:
        t = run([self.binary, "restore", "latest", "--target", str(target)], env=self.env, log=self.logfile)
        # restic recreates the absolute source path below the target.
        return t, target / str(self.tree).lstrip("/")


class Backupctl(Tool):
    name = "backupctl"

    def __init__(self, work: Path, tree: Path, binary: str = "backupctl") -> None:
        super().__init__(work, tree)
        self.binary = binary
        self.last_id: str | None = None

    @property
    def config(self) -> Path:
        return self.work / "backupctl.yaml"

    @property
    def env(self) -> dict[str, str]:
        base = self.work / "xdg"
        return {
            "XDG_STATE_HOME": str(base / "state"),
            "XDG_CONFIG_HOME": str(base / "config"),
            "XDG_DATA_HOME": str(base / "data"),
            "XDG_CACHE_HOME": str(base / "cache"),
        }

    def cli(self, *args: str) -> list[str]:
        return [self.binary, "--config", str(self.config), *args]

    def version(self) -> str:
        r = subprocess.run([self.binary, "--version"], capture_output=True, text=True)
        return (r.stdout or r.stderr).strip() or "unknown"

    def init(self) -> None:
        """`backupctl init` creates the key; the config is then replaced by a minimal one.

        The starter config's example deployment excludes *.tmp and *.key and carries the
        default schedule; the benchmark wants the plain tree and no policy.
        """
        key = self.work / "repo.key"
        run(
            self.cli(
                "init",
                "--repository",
                str(self.repo),
                "--example-path",
                str(self.tree),
                "--key-file",
                str(key),
            ),
            env=self.env,
            log=self.logfile,
        )
        if not key.exists():
            raise StepFailed(f"`backupctl init` did not create {key}")
        self.config.write_text(
            "destinations:\n"
            f"  local: {{type: local, path: {json.dumps(str(self.repo))}}}\n"
            "deployments:\n"
            "  bench:\n"
            "    sources:\n"
            f"      - {{type: files, paths: [{json.dumps(str(self.tree))}]}}\n"
            "    destinations: [local]\n"
            "    policy: none\n"
            "encryption:\n"
            f"  key_file: {json.dumps(str(key))}\n"
        )

    def backup(self) -> Timed:
        t = run(self.cli("-o", "json", "backup", "create", "bench"), env=self.env, log=self.logfile)
        doc = json_doc(t.stdout)
        self.last_id = str(doc["id"])
        return t

    def restore(self, target: Path) -> tuple[Timed, Path]:
        assert self.last_id, "no backup to restore"
        t = run(
            self.cli("backup", "restore", self.last_id, "--target", str(target), "--yes"),
            env=self.env,
            log=self.logfile,
        )
        # Restored like restic (absolute source path below the target) or at the top.
        nested = target / str(self.tree).lstrip("/")
        return t, nested if nested.is_dir() else target


def repo_bytes(repo: Path) -> int:
    return tree_bytes(repo)[1]


def compare_trees(src: Path, restored: Path, sample_every: int = 97) -> list[str]:
    """Differences in file list and sizes, and in the content of a sample of files."""
    problems: list[str] = []
    a = {str(p.relative_to(src)): p for p in src.rglob("*") if p.is_file()}
    b = {str(p.relative_to(restored)): p for p in restored.rglob("*") if p.is_file()}
    for name in sorted(a.keys() - b.keys())[:5]:
        problems.append(f"missing: {name}")
    for name in sorted(b.keys() - a.keys())[:5]:
        problems.append(f"extra: {name}")
    for i, name in enumerate(sorted(a.keys() & b.keys())):
        sa, sb = a[name].stat().st_size, b[name].stat().st_size
        if sa != sb:
            problems.append(f"size differs: {name} ({sa} != {sb})")
        elif i % sample_every == 0 and a[name].read_bytes() != b[name].read_bytes():
            problems.append(f"content differs: {name}")
        if len(problems) > 20:
            break
    return problems


def one_run(tools: list[Tool], tree: Path, seed: int, scale: float, run_no: int) -> dict[str, Any]:
    out: dict[str, Any] = {t.name: {} for t in tools}
    log(f"run {run_no}: generating the tree (scale {scale})")
    gen = generate(tree, seed, scale, force=True, quiet=True)
    out["tree"] = gen
    out["load_before"] = os.getloadavg()[0]
    log(f"run {run_no}: warming the page cache ({warm(tree):.1f} s)")
    order = tools if run_no % 2 == 0 else list(reversed(tools))
    for t in order:
        t.reset()
        t.init()

    def step(label: str, source_bytes: int) -> None:
        for t in order:
            sync()
            log(f"run {run_no}: {t.name}: {label}")
            timed = t.backup()
            r = out[t.name]
            r[label] = timed.as_dict() | {"mb_s": source_bytes / MB / timed.wall_s}
            r[label]["repo_bytes"] = repo_bytes(t.repo)

    src_files, src_bytes = tree_bytes(tree)
    step("full", src_bytes)
    step("nochange", src_bytes)
    log(f"run {run_no}: mutating the tree")
    out["mutation"] = mutate(tree, seed, quiet=True)
    warm(tree)
    src_files, src_bytes = tree_bytes(tree)
    step("mutated", src_bytes)
    for t in order:
        r = out[t.name]
        r["mutated"]["repo_growth_bytes"] = r["mutated"]["repo_bytes"] - r["nochange"]["repo_bytes"]
        target = t.work / "restore"
        sync()
        log(f"run {run_no}: {t.name}: restore")
        timed, landed = t.restore(target)
        sync()
        r["restore"] = timed.as_dict() | {"mb_s": src_bytes / MB / timed.wall_s}
        problems = compare_trees(tree, landed)
        r["restore"]["ok"] = not problems
        if problems:
            log(f"run {run_no}: {t.name}: RESTORE DIFFERS: " + "; ".join(problems[:5]))
        shutil.rmtree(target, ignore_errors=True)
        r["peak_rss_mib"] = max(r[s]["peak_rss_mib"] for s in ("full", "nochange", "mutated", "restore"))
    for t in tools:
        shutil.rmtree(t.work, ignore_errors=True)
    return out


def summarize(runs: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """Median over runs of every figure the table shows."""
    s: dict[str, dict[str, float]] = {}
    for n in names:
        rs = [r[n] for r in runs]
        s[n] = {
            "full_s": median([r["full"]["wall_s"] for r in rs]),
            "full_mb_s": median([r["full"]["mb_s"] for r in rs]),
            "full_cores": median([r["full"]["cpu_s"] / r["full"]["wall_s"] for r in rs]),
            "full_cpu_s": median([r["full"]["cpu_s"] for r in rs]),
            "nochange_cpu_s": median([r["nochange"]["cpu_s"] for r in rs]),
            "mutated_cpu_s": median([r["mutated"]["cpu_s"] for r in rs]),
            "restore_cpu_s": median([r["restore"]["cpu_s"] for r in rs]),
            "nochange_s": median([r["nochange"]["wall_s"] for r in rs]),
            "mutated_s": median([r["mutated"]["wall_s"] for r in rs]),
            "mutated_growth_mb": median([r["mutated"]["repo_growth_bytes"] / MB for r in rs]),
            "restore_s": median([r["restore"]["wall_s"] for r in rs]),
            "restore_mb_s": median([r["restore"]["mb_s"] for r in rs]),
            "repo_mb": median([r["full"]["repo_bytes"] / MB for r in rs]),
            "peak_rss_mib": median([r["peak_rss_mib"] for r in rs]),
            "full_rss_mib": median([r["full"]["peak_rss_mib"] for r in rs]),
            "restore_rss_mib": median([r["restore"]["peak_rss_mib"] for r in rs]),
            "restore_ok": float(all(r["restore"]["ok"] for r in rs)),
        }
    return s


def table(s: dict[str, dict[str, float]], names: list[str], runs: list[dict[str, Any]] | None = None) -> str:
    def cell(n: str, key: str) -> str:
        v = s[n]
        return {
            "full": f"{v['full_s']:.2f} s, {v['full_mb_s']:.0f} MB/s, CPU {v['full_cpu_s']:.1f} s",
            "nochange": f"{v['nochange_s']:.2f} s, CPU {v['nochange_cpu_s']:.1f} s",
            "mutated": f"{v['mutated_s']:.2f} s, CPU {v['mutated_cpu_s']:.1f} s, +{v['mutated_growth_mb']:.1f} MB in repo",
            "restore": f"{v['restore_s']:.2f} s, {v['restore_mb_s']:.0f} MB/s, CPU {v['restore_cpu_s']:.1f} s"
            + ("" if v["restore_ok"] else " (MISMATCH)"),
            "repo": f"{v['repo_mb']:.0f} MB",
            "rss": f"{v['peak_rss_mib']:.0f} MiB (backup {v['full_rss_mib']:.0f}, restore {v['restore_rss_mib']:.0f})",
        }[key]

    rows = [
        ("full backup", "full"),
        ("no-change backup", "nochange"),
        ("after the 1% change", "mutated"),
        ("full restore", "restore"),
        ("repository after full", "repo"),
        ("peak RSS", "rss"),
    ]
    head = "| case | " + " | ".join(names) + " |"
    lines = [head, "|" + "---|" * (len(names) + 1)]
    for label, key in rows:
        lines.append(f"| {label} | " + " | ".join(cell(n, key) for n in names) + " |")
    if "backupctl" in s and "restic" in s and runs:
        # Verdicts use the median of the per-run ratios: both tools of one run saw the same
        # machine, so a ratio is fairer than a ratio of medians taken from different runs when
        # other jobs share the machine. Peak RSS is a limit: the largest run decides.
        checks: list[
            tuple[str, Callable[[dict[str, Any], dict[str, Any]], float], str, Callable[[list[float]], bool]]
        ] = [
            (
                "full-backup throughput vs restic",
                lambda b_, r_: b_["full"]["mb_s"] / r_["full"]["mb_s"],
                ">= 1.5x",
                lambda v: median(v) >= TARGET_BACKUP_THROUGHPUT,
            ),
            (
                "no-change backup time vs restic",
                lambda b_, r_: b_["nochange"]["wall_s"] / r_["nochange"]["wall_s"],
                "<= 1.0x",
                lambda v: median(v) <= 1.0,
            ),
            (
                "after-change backup time vs restic",
                lambda b_, r_: b_["mutated"]["wall_s"] / r_["mutated"]["wall_s"],
                "<= 1.0x",
                lambda v: median(v) <= 1.0,
            ),
            (
                "restore throughput vs restic",
                lambda b_, r_: b_["restore"]["mb_s"] / r_["restore"]["mb_s"] if b_["restore"]["ok"] else 0.0,
                ">= 1.5x",
                lambda v: median(v) >= TARGET_RESTORE_THROUGHPUT,
            ),
            (
                "repository size vs restic",
                lambda b_, r_: b_["full"]["repo_bytes"] / r_["full"]["repo_bytes"],
                "<= 1.0x",
                lambda v: median(v) <= 1.0,
            ),
            (
                "backupctl CPU time, full backup, vs restic",
                lambda b_, r_: b_["full"]["cpu_s"] / r_["full"]["cpu_s"],
                "(no target)",
                lambda v: True,
            ),
            (
                "backupctl CPU time, restore, vs restic",
                lambda b_, r_: b_["restore"]["cpu_s"] / r_["restore"]["cpu_s"],
                "(no target)",
                lambda v: True,
            ),
        ]
        lines += [
            "",
            "| target | median of per-run ratios | each run | target | verdict |",
            "|---|---|---|---|---|",
        ]
        for label, fn, target, ok in checks:
            values = [fn(x["backupctl"], x["restic"]) for x in runs]
            verdict = "-" if target == "(no target)" else ("met" if ok(values) else "**missed**")
            each = " / ".join(f"{v:.2f}" for v in values)
            lines.append(f"| {label} | {median(values):.2f}x | {each} | {target} | {verdict} |")
        rss = [x["backupctl"]["peak_rss_mib"] for x in runs]
        each = " / ".join(f"{v:.0f}" for v in rss)
        verdict = (
            "met"
            if max(rss) < TARGET_RSS_MIB
            else f"**missed** in {sum(v >= TARGET_RSS_MIB for v in rss)} of {len(rss)} runs"
        )
        lines.append(
            f"| backupctl peak RSS (largest run) | {max(rss):.0f} MiB | {each} | < 250 MiB | {verdict} |"
        )
    if runs:
        loads = ", ".join("n/a" if x.get("load_before") is None else f"{x['load_before']:.1f}" for x in runs)
        lines += ["", f"Load average (1 min) before each run: {loads} (2 cores is the machine's own share)."]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-scale", type=float, default=1.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tools", default="restic,backupctl", help="comma-separated: restic,backupctl")
    ap.add_argument("--work", type=Path, default=None, help="scratch dir (default: a new dir under /tmp)")
    ap.add_argument("--json", type=Path, default=Path("bench-results.json"))
    ap.add_argument("--md", type=Path, default=None, help="also write the Markdown table here")
    ap.add_argument("--keep", action="store_true", help="keep the scratch dir")
    ap.add_argument("--restic", default="restic", help="restic binary")
    ap.add_argument("--backupctl", default="backupctl", help="backupctl binary")
    ap.add_argument(
        "--report",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the table of earlier result files (their runs pooled) and exit",
    )
    args = ap.parse_args()
    if args.report:
        pooled = [run for f in args.report for run in json.loads(f.read_text())["runs"]]
        pooled_names = [n for n in ("restic", "backupctl") if n in pooled[0]]
        print(table(summarize(pooled, pooled_names), pooled_names, pooled))
        return

    names = [n.strip() for n in args.tools.split(",") if n.strip()]
    work = args.work or Path(tempfile.mkdtemp(prefix="backupctl-bench-", dir="/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "tree"
    tools: list[Tool] = []
    for n in names:
        if n == "restic":
            tools.append(Restic(work, tree, args.restic))
        elif n == "backupctl":
            if shutil.which(args.backupctl) is None:
                raise SystemExit("backupctl is not installed (pip install -e . in the repository)")
            tools.append(Backupctl(work, tree, args.backupctl))
        else:
            raise SystemExit(f"unknown tool {n!r}")

    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "versions": {t.name: t.version() for t in tools},
        "size_scale": args.size_scale,
        "runs": args.runs,
        "seed": args.seed,
        "commit": git_commit(),
    }
    runs: list[dict[str, Any]] = []
    try:
        for i in range(args.runs):
            runs.append(one_run(tools, tree, args.seed, args.size_scale, i))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    s = summarize(runs, names)
    md = table(s, names, runs)
    args.json.write_text(json.dumps({"meta": meta, "summary": s, "runs": runs}, indent=2) + "\n")
    if args.md:
        args.md.write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
