"""How long a big repository's index takes to load (issue 14: 10 million blobs in under 10 s).

    python3 bench/index_load.py [--blobs 10000000] [--runs 3] [--dir /var/tmp/bench-index]

Makes (once; kept in --dir for the next run) a local repository whose index files list
--blobs synthetic blobs (random 32-byte IDs, 4,000 to a pack, 8 packs to an index file, as a
backup of large files writes them; no pack data: loading the index never reads packs). Then,
each in a fresh process, alternating: a *cold* load (no index cache: every index file is
fetched, authenticated, decompressed, parsed and added) and a *cached* load (the local index
cache of repo/index_cache.py, written by the cold load, read back). Prints the median and
every run's time (open, load_index and the first lookup, which builds the hash table) and
peak RSS, and the index files' total size. The machine's limit for the cold load is reading
those files (`cat` to /dev/null, from the page cache, where a repository in use keeps them),
also shown.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PACK_BLOBS = 4000
PACKS_PER_FILE = 8

PROBE = r"""
import json, resource, sys, time
from pathlib import Path
from backupctl.destinations.local import LocalDestination, LocalOptions
from backupctl.repo.crypto import KeyMaterial, read_key_file
from backupctl.repo.repository import Repository

root, cache = Path(sys.argv[1]), sys.argv[2]
t0 = time.perf_counter()
dest = LocalDestination("local", LocalOptions(type="local", path=root / "repo", fsync=False))
repo = Repository.open(dest, KeyMaterial("key_file", read_key_file(root / "key")))
repo.index_cache_dir = Path(cache) if cache != "-" else None
index = repo.load_index()
index.lookup(bytes(32))  # the hash table is built by the first query: part of the load
took = time.perf_counter() - t0
print(json.dumps({"s": took, "rows": index.row_count(),
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def make(root: Path, blobs: int) -> None:
    from backupctl.destinations.local import LocalDestination, LocalOptions
    from backupctl.repo.crypto import KeyMaterial, generate_key_file, read_key_file
    from backupctl.repo.pack import BlobEntry
    from backupctl.repo.repository import Repository

    if (root / "done").exists() and (root / "done").read_text() == str(blobs):
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    generate_key_file(root / "key")
    dest = LocalDestination("local", LocalOptions(type="local", path=root / "repo", fsync=False))
    repo = Repository.create(dest, KeyMaterial("key_file", read_key_file(root / "key")))
    per_file = PACK_BLOBS * PACKS_PER_FILE
    t0 = time.perf_counter()
    for start in range(0, blobs, per_file):
        packs: dict[str, list[BlobEntry]] = {}
        for p in range(start, min(blobs, start + per_file), PACK_BLOBS):
            ids = os.urandom(32 * PACK_BLOBS)
            packs[os.urandom(32).hex()] = [
                BlobEntry("d", ids[k * 32 : k * 32 + 32], k << 20, 1 << 20, 2 << 20)
                for k in range(min(PACK_BLOBS, blobs - p))
            ]
        repo.write_index(packs)
    (root / "done").write_text(str(blobs))
    print(f"made {blobs:,} blobs in {time.perf_counter() - t0:.0f} s", flush=True)


def probe(root: Path, cache: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(root), cache], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def read_limit(root: Path) -> float:
    files = sorted((root / "repo" / "index").rglob("*"))
    t0 = time.perf_counter()
    for f in files:
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(1 << 20):
                    pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--blobs", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp/bench-index"))
    args = ap.parse_args()
    root = args.dir / str(args.blobs)
    make(root, args.blobs)
    size = sum(f.stat().st_size for f in (root / "repo" / "index").rglob("*") if f.is_file())
    cache = root / "cache"
    results: dict[str, list[dict[str, float]]] = {"read files": [], "cold": [], "cached": []}
    for _ in range(args.runs):
        shutil.rmtree(cache, ignore_errors=True)
        results["read files"].append({"s": read_limit(root), "peak": 0, "rows": 0})
        results["cold"].append(probe(root, str(cache)))
        if not any(cache.glob("*.idx")):
            sys.exit("the cold load wrote no index cache")
        results["cached"].append(probe(root, str(cache)))
    print(f"{args.blobs:,} blobs, index files {size / 2**20:,.0f} MiB, median of {args.runs} runs")
    print(f"{'load':>12} {'median s':>9} {'peak MiB':>9}  runs (s)")
    for name, runs in results.items():
        times = [r["s"] for r in runs]
        peak = statistics.median(r["peak"] for r in runs) / 2**20
        print(
            f"{name:>12} {statistics.median(times):>9.2f} {peak:>9.0f}  "
            + ", ".join(f"{t:.2f}" for t in times),
            flush=True,
        )
    for r in results["cold"] + results["cached"]:
        if r["rows"] != args.blobs:
            sys.exit(f"loaded {r['rows']} rows, not {args.blobs}")


if __name__ == "__main__":
    main()
