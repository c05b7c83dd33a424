"""`destination check`: a quick probe of a real destination, like kopia's validate-provider.

Runs write, read, byte-range read, stat, list, overwrite, conditional create and
delete against objects under `backupctl-check/<random>/`, measures latency (small
objects) and throughput (one larger object), and always cleans up after itself.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Any

from backupctl.destinations.base import AlreadyExists, Destination, NotFound
from backupctl.errors import BackupctlError


class _Probe:
    """The objects of one probe under `base`, the checks run so far and what they measured."""

    def __init__(self, dest: Destination, size_mib: int) -> None:
        self.dest = dest
        self.base = f"backupctl-check/{uuid.uuid4().hex[:12]}"
        self.small = os.urandom(4096)
        self.big = os.urandom(size_mib << 20)
        self.checks: list[dict[str, Any]] = []
        self.latencies: list[float] = []
        self.throughput: dict[str, float] = {}

    def step(self, name: str, fn: Callable[[], object]) -> bool:
        """Run one check and record it: failed on an error or a False result, else timed."""
        t0 = time.monotonic()
        try:
            outcome = fn()
        except BackupctlError as exc:
            self.checks.append({"check": name, "ok": False, "error": exc.message})
            return False
        except Exception as exc:
            self.checks.append({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return False
        elapsed = time.monotonic() - t0
        if outcome is False:
            self.checks.append({"check": name, "ok": False, "error": "returned wrong data"})
            return False
        self.checks.append({"check": name, "ok": True, "seconds": round(elapsed, 4)})
        return True

    def timed_put(self) -> None:
        for i in range(5):
            t0 = time.monotonic()
            self.dest.put(f"{self.base}/small-{i}", self.small)
            self.latencies.append(time.monotonic() - t0)

    def overwrite(self) -> bool:
        self.dest.put(f"{self.base}/small-3", b"x")
        return self.dest.get(f"{self.base}/small-3") == b"x"

    def exclusive(self) -> bool:
        self.dest.put(f"{self.base}/excl", b"first", exclusive=True)
        try:
            self.dest.put(f"{self.base}/excl", b"second", exclusive=True)
        except AlreadyExists:
            return self.dest.get(f"{self.base}/excl") == b"first"
        return False

    def missing(self) -> bool:
        try:
            self.dest.get(f"{self.base}/does-not-exist")
        except NotFound:
            return True
        return False

    def big_put(self) -> None:
        t0 = time.monotonic()
        self.dest.put(f"{self.base}/big", self.big)
        self.throughput["write_mb_s"] = round(len(self.big) / 1e6 / max(time.monotonic() - t0, 1e-6), 1)

    def big_get(self) -> bool:
        t0 = time.monotonic()
        data = self.dest.get(f"{self.base}/big")
        self.throughput["read_mb_s"] = round(len(self.big) / 1e6 / max(time.monotonic() - t0, 1e-6), 1)
        return data == self.big

    def delete_all(self) -> bool:
        for info in list(self.dest.list(f"{self.base}/")):
            self.dest.delete(info.name)
        return not list(self.dest.list(f"{self.base}/"))

    def run_checks(self, size_mib: int) -> None:
        """Every check, in order; nothing after `write` when the destination cannot be written."""
        dest, base, small = self.dest, self.base, self.small
        if not self.step("write", self.timed_put):
            return
        self.step("read", lambda: dest.get(f"{base}/small-0") == small)
        self.step("range read", lambda: dest.get(f"{base}/small-1", 100, 50) == small[100:150])
        self.step("stat", lambda: dest.stat(f"{base}/small-2").size == len(small))
        self.step("list", lambda: len([i for i in dest.list(f"{base}/") if "/small-" in i.name]) == 5)
        self.step("overwrite", self.overwrite)
        self.step("missing object is NotFound", self.missing)
        if dest.capabilities.conditional_create:
            self.step("conditional create", self.exclusive)
        self.step(f"write {size_mib} MiB", self.big_put)
        self.step(f"read {size_mib} MiB", self.big_get)
        self.step("delete", self.delete_all)


def probe_destination(dest: Destination, size_mib: int = 8) -> dict[str, Any]:
    probe = _Probe(dest, size_mib)
    probe.run_checks(size_mib)
    caps = dest.capabilities
    latencies = probe.latencies
    return {
        "destination": dest.name,
        "type": dest.options.type,
        "location": dest.location,
        "ok": all(c["ok"] for c in probe.checks),
        "checks": probe.checks,
        "capabilities": {
            "conditional_create": caps.conditional_create,
            "range_reads": caps.range_reads,
            "archive_tiers": caps.archive_tiers,
            "notes": list(caps.notes),
        },
        "latency_ms": round(1000 * sorted(latencies)[len(latencies) // 2], 2) if latencies else None,
        **probe.throughput,
    }
