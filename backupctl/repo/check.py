"""`repository check`: is the repository whole, and what exactly is damaged.

Structure (always, under a shared lock so no prune runs meanwhile):
* every index file authenticates and decodes;
* every pack an index lists exists, its header authenticates, lists the blobs where the
  index has them, and the pack's size is exactly its blobs + header + length field;
* every manifest authenticates, its trees read back, and every blob it references
  (tree and data) is in the index.
With `read_data` (all packs, a percentage or the n-th of m parts), the selected packs are
read whole: the pack ID must be the BLAKE3 of its bytes and every blob must authenticate,
decompress and hash to its ID.

Every problem is returned by name ({"kind", "object", "message"}); none stops the check.
Packs that no index lists are not damage (an interrupted backup's leftovers: `backup
prune` removes them, `repository repair index` indexes them) and are only counted.
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import blake3

from backupctl.errors import IntegrityError, UsageError
from backupctl.events import Finished, InfoEvent, Progress, Reporter, Started
from backupctl.repo.items import read_items
from backupctl.repo.pack import BlobEntry, pack_name, read_pack_header
from backupctl.repo.repository import Repository


@dataclass(frozen=True)
class DataSubset:
    """Which packs --read-data reads: all, a random percentage, or part n of m (by pack ID)."""

    percent: float = 100.0
    part: tuple[int, int] | None = None

    @classmethod
    def parse(cls, text: str) -> DataSubset:
        t = text.strip()
        try:
            if t.endswith("%"):
                pct = float(t[:-1])
                if 0 < pct <= 100:
                    return cls(percent=pct)
            elif "/" in t:
                n, m = (int(x) for x in t.split("/", 1))
                if 1 <= n <= m:
                    return cls(part=(n, m))
        except ValueError:
            pass
        raise UsageError(
            f"--read-data-subset {text!r}: use a percentage (10%) or a part n/m with 1 <= n <= m (2/5)"
        )

    def select(self, pack_ids: list[str]) -> list[str]:
        ids = sorted(pack_ids)
        if self.part is not None:
            n, m = self.part
            return [p for p in ids if int(p[:8], 16) % m == n - 1]
        if self.percent >= 100:
            return ids
        count = max(1, round(len(ids) * self.percent / 100)) if ids else 0
        return sorted(random.sample(ids, count))


def check_repository(
    repo: Repository, reporter: Reporter, read_data: DataSubset | None = None
) -> dict[str, Any]:
    problems: list[dict[str, str]] = []

    def problem(kind: str, obj: str, message: str) -> None:
        problems.append({"kind": kind, "object": obj, "message": message})

    with repo.lock(exclusive=False, operation="check"):
        repo.load_index(reload=True)
        for name, why in sorted(repo.damaged_indexes.items()):
            problem("index", name, why)
        listed = {info.name.rsplit("/", 1)[-1]: info.size for info in repo.dest.list("data/")}
        indexed = repo.index.packs()
        by_pack = repo.index.blobs_by_pack()
        reporter.emit(InfoEvent(f"checking {len(indexed)} indexed pack{'s' if len(indexed) != 1 else ''}"))
        # Progress: packs (files_done/total_files) checked, then backups, then the data read.
        reporter.emit(Started("check", repo.id[:12], total_files=len(indexed)))
        with ThreadPoolExecutor(max_workers=max(1, min(8, repo.dest.options.connections))) as pool:
            for n_pack, (pid, message) in enumerate(
                zip(
                    sorted(indexed),
                    pool.map(
                        lambda p: _check_pack(repo, p, listed.get(p), by_pack.get(p, [])), sorted(indexed)
                    ),
                    strict=True,
                ),
                1,
            ):
                if message:
                    problem("pack", pack_name(pid), message)
                reporter.emit(Progress(0, n_pack, 0, len(indexed), pack_name(pid)))
        snapshots = repo.manifest_ids()
        reporter.emit(InfoEvent(f"checking {len(snapshots)} backup{'s' if len(snapshots) != 1 else ''}"))
        for backup_id in sorted(snapshots):
            message = _check_snapshot(repo, backup_id)
            if message:
                problem("snapshot", f"snapshots/{backup_id}", message)
        packs_read = bytes_read = 0
        if read_data is not None:
            chosen = read_data.select([p for p in indexed if p in listed])
            reporter.emit(InfoEvent(f"reading {len(chosen)} packs"))
            to_read = sum(listed.get(p, 0) for p in chosen)
            reporter.emit(Started("read-data", repo.id[:12], total_bytes=to_read, total_files=len(chosen)))
            for pid, (size, messages) in zip(chosen, pool_map(repo, chosen), strict=True):
                packs_read += 1
                bytes_read += size
                for message in messages:
                    problem("data", pack_name(pid), message)
                reporter.emit(Progress(bytes_read, packs_read, to_read, len(chosen)))
            reporter.emit(Finished("read-data", repo.id[:12]))
    reporter.emit(Finished("check", repo.id[:12], ok=not problems))
    return {
        "ok": not problems,
        "index_files": len(repo.index_ids) + len(repo.damaged_indexes),
        "index_files_damaged": sorted(repo.damaged_indexes),
        "packs": len(listed),
        "packs_indexed": len(indexed),
        "packs_unindexed": len(set(listed) - indexed),
        "snapshots": len(snapshots),
        "packs_read": packs_read,
        "bytes_read": bytes_read,
        "problems": problems,
    }


def _check_pack(repo: Repository, pack_id: str, size: int | None, indexed: list[BlobEntry]) -> str | None:
    if size is None:
        return "pack is missing (listed by the index)"
    try:
        entries = repo.read_pack_header(pack_id, size)
    except IntegrityError as exc:
        return exc.message
    listed = {(e.blob_id, e.offset, e.length) for e in entries}
    absent = [e for e in indexed if (e.blob_id, e.offset, e.length) not in listed]
    if absent:
        return f"header does not list blob {absent[0].blob_id.hex()[:16]} where the index has it"
    end = 0
    for e in sorted(entries, key=lambda e: e.offset):
        if e.offset != end:
            return f"header has a gap or overlap at offset {end}"
        end = e.offset + e.length
    hlen = int.from_bytes(repo.dest.get(pack_name(pack_id), size - 4, 4), "little")  # authenticated above
    if end + hlen + 4 != size:
        return f"wrong size: {size} bytes, header says {end + hlen + 4}"
    return None


def _check_snapshot(repo: Repository, backup_id: str) -> str | None:
    try:
        manifest = repo.load_manifest(backup_id)
        missing = 0
        first = b""
        for src in manifest.get("sources", []):
            tree = [bytes.fromhex(b) for b in src.get("tree", [])]
            blobs = list(tree)
            for item in read_items(repo, tree):
                blobs.extend(item.chunks)
            for b in blobs:
                if b not in repo.index:
                    missing += 1
                    first = first or b
    except IntegrityError as exc:
        return exc.message
    if missing:
        return f"{missing} blob(s) missing from the index (e.g. {first.hex()[:16]})"
    return None


def pool_map(repo: Repository, pack_ids: list[str]) -> list[tuple[int, list[str]]]:
    """Read each pack whole and authenticate everything in it (a few packs at a time)."""
    with ThreadPoolExecutor(max_workers=max(1, min(4, repo.dest.options.connections))) as pool:
        return list(pool.map(lambda p: _read_pack(repo, p), pack_ids))


def _read_pack(repo: Repository, pack_id: str) -> tuple[int, list[str]]:
    name = pack_name(pack_id)
    try:
        data = repo.dest.get(name)
    except Exception as exc:  # a read failure is this pack's problem, not the end of the check
        return 0, [f"cannot read: {exc}"]
    messages = []
    if blake3.blake3(data).hexdigest() != pack_id:
        messages.append("content does not match the pack ID")
    try:
        entries = read_pack_header(repo.codec, data, f"{name} (header)")
    except IntegrityError as exc:
        return len(data), [*messages, exc.message]
    for e in entries:
        try:
            repo.codec.decode_blob(
                e.blob_id, data[e.offset : e.offset + e.length], e.raw_length, f"blob {e.blob_id.hex()[:16]}"
            )
        except IntegrityError as exc:
            messages.append(exc.message)
            repo.on_damage(e.blob_id, pack_id)  # the next backup stores this blob again
    return len(data), messages
