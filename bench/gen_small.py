#!/usr/bin/env python3
"""Generate a seeded tree of many small files (issue 14: "trees of many small files").

At the default --files 500000: about 2.0 GB (10^6 bytes) in 500,000 files.
  * Sizes are log-normal with a median of 1.5 KiB (sigma 1.4), capped at 256 KiB, mean about
    4 KiB; 1% of the files are empty. So every file is below both tools' minimum chunk size
    (512 KiB): one file, one blob, and the per-file cost is what is measured.
  * 75% of the files are text (CSV, JSON lines, logs, Markdown prose from textgen.py, which
    zstd shrinks about 3x), 25% random bytes (incompressible, like thumbnails and archives).
  * Leaf directories hold 100-1,000 files each (uniform), 20 leaf directories per middle
    directory, 10 middle directories per top directory: t000/m007/d013/log_0123456.log.
  * Every file starts with a line naming the seed and the file number, so no two non-empty
    files have the same content (no accidental whole-file deduplication); the rest of a file
    is a slice, at a seeded offset, of a 64 MiB text buffer of its kind or of a 64 MiB random
    buffer.

The same seed and file count always give byte-identical trees (names and contents; not
mtimes). A sidecar <out>.manifest.json (outside the tree, so neither tool backs it up)
records the parameters and marks the directory as generated, so that --force may delete it.
Files are written with os.open/os.writev relative to a directory descriptor and all random
draws are made up front with numpy, leaf directories are written by --jobs threads: the
time goes to the file system (file creation), not to Python.

Usage: python bench/gen_small.py OUT [--files 500000] [--seed 1] [--force]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - a set-up problem, said plainly
    raise SystemExit("the benchmark tree generator needs numpy: pip install numpy") from None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textgen import TextSource  # noqa: E402

DEFAULT_FILES = 500_000
MEDIAN_BYTES = 1536
SIGMA = 1.4
MAX_BYTES = 256 * 1024
EMPTY_SHARE = 0.01
LEAF_MIN, LEAF_MAX = 100, 1000  # files per leaf directory
LEAVES_PER_MID = 20
MIDS_PER_TOP = 10
BUFFER_BYTES = 64 << 20
# (kind, share of files, name stem, extension); "random" is incompressible.
KINDS = [
    ("csv", 0.20, "rows_", "csv"),
    ("jsonl", 0.15, "event_", "json"),
    ("log", 0.20, "log_", "log"),
    ("prose", 0.20, "note_", "md"),
    ("random", 0.15, "img_", "png"),
    ("random", 0.10, "blob_", "gz"),
]
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)


def manifest_path(out: Path) -> Path:
    return out.parent / (out.name + ".manifest.json")


def plan(files: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """(sizes, kind numbers, buffer offsets, files per leaf directory); cheap, deterministic."""
    rng = np.random.default_rng([seed, 14, 1])
    sizes = np.minimum(rng.lognormal(np.log(MEDIAN_BYTES), SIGMA, files), MAX_BYTES).astype(np.int64)
    sizes[rng.random(files) < EMPTY_SHARE] = 0
    kinds = rng.choice(len(KINDS), files, p=[k[1] for k in KINDS])
    offsets = rng.integers(0, BUFFER_BYTES - MAX_BYTES, files)
    leaves: list[int] = []
    left = files
    while left > 0:
        n = min(left, int(rng.integers(LEAF_MIN, LEAF_MAX + 1)))
        leaves.append(n)
        left -= n
    return sizes, kinds, offsets, leaves


def buffers(seed: int) -> dict[str, bytes]:
    """One BUFFER_BYTES buffer per text kind, and one of random bytes."""
    text = TextSource(pool_bytes=4 << 20)
    out: dict[str, bytes] = {}
    for i, kind in enumerate(k[0] for k in KINDS if k[0] != "random"):
        if kind not in out:
            rng = np.random.default_rng([seed, 14, 2, i])
            out[kind] = b"".join(text.generate(rng, kind, BUFFER_BYTES))
    out["random"] = np.random.default_rng([seed, 14, 3]).bytes(BUFFER_BYTES)
    return out


def generate(
    out: Path,
    files: int = DEFAULT_FILES,
    seed: int = 1,
    force: bool = False,
    quiet: bool = False,
    jobs: int = 2,
) -> dict[str, object]:
    """Create the tree at `out` (which must be absent or empty, or generated before with --force)."""
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} exists and is not empty (use --force to replace a generated tree)")
        if not manifest_path(out).exists():
            raise SystemExit(
                f"{out} was not made by a generator (no {manifest_path(out).name}); not deleting it"
            )
        shutil.rmtree(out)
    t0 = time.perf_counter()
    sizes, kinds, offsets, leaves = plan(files, seed)
    bufs = {kind: memoryview(b) for kind, b in buffers(seed).items()}
    t_ready = time.perf_counter()
    kind_buf = [bufs[k[0]] for k in KINDS]
    kind_name = [(k[2], k[3]) for k in KINDS]
    size_l, kind_l, off_l = sizes.tolist(), kinds.tolist(), offsets.tolist()
    out.mkdir(parents=True, exist_ok=True)
    starts = np.concatenate([[0], np.cumsum(leaves)[:-1]]).astype(np.int64).tolist() if leaves else []

    def write_leaf(leaf_no: int) -> None:
        mid_no = leaf_no // LEAVES_PER_MID
        leaf = (
            out
            / f"t{mid_no // MIDS_PER_TOP:03d}"
            / f"m{mid_no % MIDS_PER_TOP:03d}"
            / f"d{leaf_no % LEAVES_PER_MID:03d}"
        )
        leaf.mkdir(parents=True, exist_ok=True)
        dfd = os.open(leaf, os.O_RDONLY | os.O_DIRECTORY)
        try:
            first = starts[leaf_no]
            for j in range(first, first + leaves[leaf_no]):
                k = kind_l[j]
                stem, ext = kind_name[k]
                fd = os.open(f"{stem}{j:07d}.{ext}", _FLAGS, 0o644, dir_fd=dfd)
                try:
                    size = size_l[j]
                    if size:
                        head = f"# {seed}:{j}\n".encode()[:size]
                        off = off_l[j]
                        body = kind_buf[k][off : off + size - len(head)]
                        if os.writev(fd, [head, body]) != size:
                            raise OSError(f"short write in {leaf}")
                finally:
                    os.close(fd)
        finally:
            os.close(dfd)

    # The work is system calls (which release the GIL): threads help on an idle machine.
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(write_leaf, range(len(leaves))))
    elapsed = time.perf_counter() - t0
    summary: dict[str, object] = {
        "generator": "gen_small",
        "seed": seed,
        "files": files,
        "bytes": int(sizes.sum()),
        "random_bytes": int(
            sizes[np.isin(kinds, [n for n, k in enumerate(KINDS) if k[0] == "random"])].sum()
        ),
        "median_bytes": float(np.median(sizes)) if files else 0.0,
        "max_bytes": int(sizes.max()) if files else 0,
        "leaf_dirs": len(leaves),
        "setup_seconds": round(t_ready - t0, 2),
        "seconds": round(elapsed, 2),
    }
    manifest_path(out).write_text(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print(json.dumps(summary))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="directory to create")
    ap.add_argument(
        "--files", type=int, default=DEFAULT_FILES, help="number of files (default 500,000, ~2 GB)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--force", action="store_true", help="replace an earlier generated tree")
    ap.add_argument("--jobs", type=int, default=2, help="writer threads (default 2; output is the same)")
    args = ap.parse_args()
    if args.files < 0:
        ap.error("--files must be >= 0")
    generate(args.out, args.files, args.seed, args.force, jobs=args.jobs)


if __name__ == "__main__":
    main()
