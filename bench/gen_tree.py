#!/usr/bin/env python3
"""Generate the seeded benchmark tree described in docs/performance.md.

At --size-scale 1 (the default): about 2,149 MB (10^6 bytes) in 20,273 files:
  * about 65% text (CSV exports, JSON-lines events, logs, Markdown prose) in 180 larger
    files, which zstd level 3 shrinks about 3x;
  * about 31% random bytes (incompressible, like photos and video) in 93 larger files;
  * 20,000 small text files of 1-8 KiB in nested folders (about 4%).
--size-scale shrinks every size and the number of small files (0.05 gives ~107 MB for a
quick run); the 273 larger files stay so that the mutation touches the same kinds of files.

The same seed and scale always give byte-identical file contents. A sidecar
<out>.manifest.json (outside the tree, so neither tool backs it up) records the parameters
and marks the directory as generated, so that --force may delete it.

Usage: python bench/gen_tree.py OUT [--seed 1] [--size-scale 1.0] [--force]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

try:
    import numpy as np
except ImportError:  # pragma: no cover - a set-up problem, said plainly
    raise SystemExit("the benchmark tree generator needs numpy: pip install numpy") from None

sys.path.insert(0, str(Path(__file__).resolve().parent))
from textgen import TextSource  # noqa: E402

FULL_BYTES = 2_149_000_000
N_SMALL = 20_000
N_TEXT = 180
N_RANDOM = 93
RANDOM_SHARE = 0.31
SMALL_MIN, SMALL_MAX = 1024, 8192
SMALL_PER_DIR = 25
# Text kinds of the larger files: (kind, share of files, folder, extension).
TEXT_KINDS = [
    ("csv", 0.30, "data/exports", "csv"),
    ("jsonl", 0.20, "data/events", "jsonl"),
    ("log", 0.20, "logs", "log"),
    ("prose", 0.30, "docs", "md"),
]
SMALL_EXT = {"csv": "csv", "jsonl": "json", "log": "log", "prose": "txt"}
RANDOM_KINDS = [("media/photos", "jpg"), ("media/video", "mp4"), ("archives", "bin")]


@dataclass
class FileSpec:
    path: str
    size: int
    kind: str  # a text kind, or "random"
    number: int  # seeds this file's content


def _split(total: int, n: int, rng: np.random.Generator, sigma: float, minimum: int) -> list[int]:
    """n log-normally distributed sizes that sum to exactly total."""
    raw = rng.lognormal(0.0, sigma, n)
    sizes = np.maximum(minimum, np.floor(raw / raw.sum() * total)).astype(np.int64)
    sizes[int(np.argmax(sizes))] += total - int(sizes.sum())
    return [int(x) for x in sizes]


def plan(seed: int, scale: float) -> list[FileSpec]:
    """Every file of the tree with its size and kind; cheap, and deterministic."""
    rng = np.random.default_rng([seed, 1])
    total = int(FULL_BYTES * scale)
    specs: list[FileSpec] = []

    n_small = max(1, round(N_SMALL * scale))
    small_sizes = rng.integers(SMALL_MIN, SMALL_MAX + 1, n_small)
    small_kinds = rng.choice(len(TEXT_KINDS), n_small, p=[k[1] for k in TEXT_KINDS])
    for i in range(n_small):
        d = i // SMALL_PER_DIR
        kind = TEXT_KINDS[small_kinds[i]][0]
        path = f"src/proj{d // 40:02d}/mod{d // 4 % 10}/part{d % 4}/f{i:05d}.{SMALL_EXT[kind]}"
        specs.append(FileSpec(path, int(small_sizes[i]), kind, len(specs)))
    small_total = sum(s.size for s in specs)

    random_total = int(total * RANDOM_SHARE)
    text_total = total - random_total - small_total
    text_sizes = _split(text_total, N_TEXT, rng, 1.0, 4096)
    text_kinds = rng.choice(len(TEXT_KINDS), N_TEXT, p=[k[1] for k in TEXT_KINDS])
    for i, size in enumerate(text_sizes):
        kind, _, folder, ext = TEXT_KINDS[text_kinds[i]]
        sub = f"/{['api', 'auth', 'billing', 'worker'][i % 4]}" if kind == "log" else f"/{2019 + i % 6}"
        specs.append(FileSpec(f"{folder}{sub}/{kind}_{i:03d}.{ext}", size, kind, len(specs)))
    random_sizes = _split(random_total, N_RANDOM, rng, 1.2, 4096)
    for i, size in enumerate(random_sizes):
        folder, ext = RANDOM_KINDS[i % len(RANDOM_KINDS)]
        specs.append(FileSpec(f"{folder}/{2019 + i % 6}/item_{i:03d}.{ext}", size, "random", len(specs)))
    return specs


def write_file(path: Path, spec: FileSpec, seed: int, text: TextSource) -> None:
    rng = np.random.default_rng([seed, 2, spec.number])
    with open(path, "wb") as f:
        if spec.kind == "random":
            left = spec.size
            while left > 0:
                n = min(left, 16 << 20)
                f.write(rng.bytes(n))
                left -= n
        else:
            for piece in text.generate(rng, spec.kind, spec.size):
                f.write(piece)


def manifest_path(out: Path) -> Path:
    return out.parent / (out.name + ".manifest.json")


def generate(
    out: Path, seed: int, scale: float, force: bool = False, quiet: bool = False
) -> dict[str, object]:
    out = out.resolve()
    if out.exists() and any(out.iterdir()):
        if not force:
            raise SystemExit(f"{out} exists and is not empty (use --force to replace a generated tree)")
        if not manifest_path(out).exists():
            raise SystemExit(
                f"{out} was not made by gen_tree.py (no {manifest_path(out).name}); not deleting it"
            )
        shutil.rmtree(out)
    t0 = time.perf_counter()
    text = TextSource()
    specs = plan(seed, scale)
    made: set[str] = set()
    for spec in specs:
        path = out / spec.path
        parent = str(path.parent)
        if parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            made.add(parent)
        write_file(path, spec, seed, text)
    elapsed = time.perf_counter() - t0
    summary: dict[str, object] = {
        "seed": seed,
        "size_scale": scale,
        "files": len(specs),
        "bytes": sum(s.size for s in specs),
        "text_bytes": sum(s.size for s in specs if s.kind != "random"),
        "random_bytes": sum(s.size for s in specs if s.kind == "random"),
        "small_files": sum(1 for s in specs if s.path.startswith("src/")),
        "seconds": round(elapsed, 2),
    }
    manifest_path(out).write_text(json.dumps(summary, indent=2) + "\n")
    if not quiet:
        print(json.dumps(summary))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="directory to create")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--size-scale", type=float, default=1.0, help="1.0 = ~2,149 MB; 0.05 = ~107 MB")
    ap.add_argument("--force", action="store_true", help="replace an earlier generated tree")
    args = ap.parse_args()
    generate(args.out, args.seed, args.size_scale, args.force)


if __name__ == "__main__":
    main()
