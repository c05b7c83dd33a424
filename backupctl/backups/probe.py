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


def probe_destination(dest: Destination, size_mib: int = 8) -> dict[str, Any]:
    base = f"backupctl-check/{uuid.uuid4().hex[:12]}"
    small = os.urandom(4096)
    big = os.urandom(size_mib << 20)
    checks: list[dict[str, Any]] = []
    latencies: list[float] = []

    def step(name: str, fn: Callable[[], object]) -> bool:
        t0 = time.monotonic()
        try:
            outcome = fn()
        except BackupctlError as exc:
            checks.append({"check": name, "ok": False, "error": exc.message})
            return False
        except Exception as exc:
            checks.append({"check": name, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return False
        elapsed = time.monotonic() - t0
        if outcome is False:
            checks.append({"check": name, "ok": False, "error": "returned wrong data"})
            return False
        checks.append({"check": name, "ok": True, "seconds": round(elapsed, 4)})
        return True

    def timed_put() -> None:
        for i in range(5):
            t0 = time.monotonic()
            dest.put(f"{base}/small-{i}", small)
            latencies.append(time.monotonic() - t0)

    def exclusive() -> bool:
        dest.put(f"{base}/excl", b"first", exclusive=True)
        try:
            dest.put(f"{base}/excl", b"second", exclusive=True)
        except AlreadyExists:
            return dest.get(f"{base}/excl") == b"first"
        return False

    def missing() -> bool:
        try:
            dest.get(f"{base}/does-not-exist")
        except NotFound:
            return True
        return False

    throughput: dict[str, float] = {}

    def big_put() -> None:
        t0 = time.monotonic()
        dest.put(f"{base}/big", big)
        throughput["write_mb_s"] = round(len(big) / 1e6 / max(time.monotonic() - t0, 1e-6), 1)

    def big_get() -> bool:
        t0 = time.monotonic()
        data = dest.get(f"{base}/big")
        throughput["read_mb_s"] = round(len(big) / 1e6 / max(time.monotonic() - t0, 1e-6), 1)
        return data == big

    reachable = step("write", timed_put)
    if reachable:
        step("read", lambda: dest.get(f"{base}/small-0") == small)
        step("range read", lambda: dest.get(f"{base}/small-1", 100, 50) == small[100:150])
        step("stat", lambda: dest.stat(f"{base}/small-2").size == len(small))
        step("list", lambda: len([i for i in dest.list(f"{base}/") if "/small-" in i.name]) == 5)
        step("overwrite", lambda: (dest.put(f"{base}/small-3", b"x"), dest.get(f"{base}/small-3") == b"x")[1])
        step("missing object is NotFound", missing)
        if dest.capabilities.conditional_create:
            step("conditional create", exclusive)
        step(f"write {size_mib} MiB", big_put)
        step(f"read {size_mib} MiB", big_get)

        def delete_all() -> bool:
            for info in list(dest.list(f"{base}/")):
                dest.delete(info.name)
            return not list(dest.list(f"{base}/"))

        step("delete", delete_all)
    caps = dest.capabilities
    return {
        "destination": dest.name,
        "type": dest.options.type,
        "location": dest.location,
        "ok": all(c["ok"] for c in checks),
        "checks": checks,
        "capabilities": {
            "conditional_create": caps.conditional_create,
            "range_reads": caps.range_reads,
            "archive_tiers": caps.archive_tiers,
            "notes": list(caps.notes),
        },
        "latency_ms": round(1000 * sorted(latencies)[len(latencies) // 2], 2) if latencies else None,
        **throughput,
    }
