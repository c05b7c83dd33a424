"""Memory and lookup rate of the in-memory index (issue 14 item 2).

    python3 bench/index_memory.py [--sizes 1000000,10000000] [--baseline]

For each size, in a fresh subprocess: N synthetic blobs (random 32-byte IDs, 1,000 to a
pack, as index files list them) are added pack by pack and the table is built by the first
query; it prints the RSS the index added (and per blob), the peak RSS above the start, the
build time, and `blob_id in index` per second for hits and for misses (the backup hot path:
one test per chunk). --baseline runs the same against the dict of tuples the index used to
be (the previous implementation, inlined below) for comparison; it needs ~300 B a blob, so
leave it off at 10M unless the memory is free. A size whose estimated need exceeds half of
MemAvailable is skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

PROBE = r"""
import gc, json, os, resource, sys, time
from backupctl.repo.pack import BlobEntry

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

class DictIndex:  # the index before issue 14: blob id -> (pack number, offset, length, raw length, type)
    def __init__(self):
        self._packs, self._pack_no, self._blobs, self._more = [], {}, {}, {}
    def __contains__(self, blob_id):
        return blob_id in self._blobs
    def add_pack(self, pack_id, entries):
        no = self._pack_no.setdefault(pack_id, len(self._packs))
        if no == len(self._packs):
            self._packs.append(pack_id)
        for e in entries:
            hit = (no, e.offset, e.length, e.raw_length, e.type)
            first = self._blobs.setdefault(e.blob_id, hit)
            if first[0] != no:
                self._more.setdefault(e.blob_id, []).append(hit)

n, kind = int(sys.argv[1]), sys.argv[2]
if kind == "dict":
    index = DictIndex()
else:
    from backupctl.repo.index import Index
    index = Index()
per_pack = 1000
sample = []
gc.collect()
before = rss()
t0 = time.perf_counter()
for p in range(n // per_pack):
    ids = [os.urandom(32) for _ in range(per_pack)]
    if p % max(1, n // per_pack // 200) == 0:
        # copies: a backup looks up freshly hashed IDs, never the very objects the index holds
        sample.extend(bytes(bytearray(b)) for b in ids[:100])
    index.add_pack(os.urandom(32).hex(), [BlobEntry("d", b, k << 16, 65536, 131072) for k, b in enumerate(ids)])
    del ids
assert sample[0] in index
build = time.perf_counter() - t0
gc.collect()
held = rss() - before - sum(map(sys.getsizeof, sample)) - sys.getsizeof(sample)  # the index alone
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
misses = [os.urandom(32) for _ in range(len(sample))]
rates = {}
for name, keys in (("hit", sample), ("miss", misses)):
    best = 0.0
    for _ in range(10):
        t = time.perf_counter()
        for b in keys:
            b in index
        best = max(best, len(keys) / (time.perf_counter() - t))
    rates[name] = best
print(json.dumps({"n": n, "kind": kind, "held": held, "peak": peak, "build_s": build, **rates}))
"""


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--baseline", action="store_true", help="also measure the old dict of tuples")
    args = ap.parse_args()
    print(
        f"{'blobs':>10} {'index':>8} {'RSS MiB':>8} {'B/blob':>7} {'peak MiB':>9} {'build s':>8} "
        f"{'hit M/s':>8} {'miss M/s':>9}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in ("compact", "dict") if args.baseline else ("compact",):
            need = n * (350 if kind == "dict" else 120)
            if need > mem_available() // 2:
                print(f"{n:>10} {kind:>8}  skipped: needs ~{need >> 20} MiB, not free")
                continue
            out = subprocess.run(
                [sys.executable, "-c", PROBE, str(n), kind], capture_output=True, text=True, check=True
            ).stdout
            r = json.loads(out)
            print(
                f"{n:>10} {kind:>8} {r['held'] / 2**20:>8.1f} {r['held'] / n:>7.1f} {r['peak'] / 2**20:>9.1f} "
                f"{r['build_s']:>8.1f} {r['hit'] / 1e6:>8.2f} {r['miss'] / 1e6:>9.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
