"""Repacking: copy the live blobs of mostly-dead packs into new packs (used by prune).

Contract (repo/prune.py calls this under the EXCLUSIVE lock, after it has proven the
index complete and computed the live blob set):

* `choose_packs` picks, like restic's `prune --max-unused`, the packs with the largest
  unused share until the unused bytes left in the repository are at most `max_unused` of
  its total (unused / (used + unused) <= max_unused). `max_unused=None` (100%) picks none.
* `repack` reads each chosen pack whole, authenticates every live blob in it (decrypt +
  keyed-hash check) and appends the encrypted blob, unchanged, to a new pack of its type.
  It only PUTS new packs; it never deletes or writes an index file. The caller writes one
  index file listing the new packs (and superseding the old index files) and deletes the
  old packs only after that index is durable and the old index files are gone. So a kill
  at any point leaves every live blob indexed in a pack that exists: before the index,
  the new packs are unindexed leftovers (freed by a later prune after the grace period);
  after it, the blobs are in two places, both valid.
* A pack whose live blobs do not all authenticate is NOT repacked (a warning names it):
  repacking never turns damage into silent loss; `repository check --read-data` names it.

Memory: one old pack plus one open new pack per blob type, whatever the repository size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backupctl.errors import IntegrityError, UsageError
from backupctl.events import Finished, Progress, Reporter, Started, WarningEvent
from backupctl.repo.pack import DATA, TREE, BlobEntry, PackBuilder, pack_name
from backupctl.repo.repository import Repository

DEFAULT_MAX_UNUSED = "5%"


def parse_max_unused(text: str) -> float | None:
    """'5%' -> 0.05; '100%' or 'unlimited' -> None (never repack). UsageError otherwise."""
    value = text.strip().lower()
    if value == "unlimited":
        return None
    try:
        if not value.endswith("%"):
            raise ValueError
        pct = float(value[:-1])
    except ValueError:
        raise UsageError(
            f"--max-unused {text!r}: not a percentage",
            hint="give a percentage of the repository that may stay unused, e.g. --max-unused 5% "
            "(0% repacks every pack with a dead blob, 100% or 'unlimited' never repacks)",
        ) from None
    if not 0 <= pct <= 100:
        raise UsageError(f"--max-unused {text!r}: must be between 0% and 100%", hint="e.g. --max-unused 5%")
    return None if pct >= 100 else pct / 100


@dataclass
class PackUse:
    pack_id: str
    size: int  # bytes of the pack object
    used: int  # bytes of its live blobs
    unused: int  # bytes of its indexed blobs that no surviving backup references


def pack_usage(keep: dict[str, list[BlobEntry]], live: set[bytes], sizes: dict[str, int]) -> list[PackUse]:
    """Used/unused bytes of each listed pack; its header counts as neither."""
    out = []
    for pid, entries in keep.items():
        size = sizes.get(pid)
        if size is None:  # indexed but not listed: not ours to judge (check names it)
            continue
        used = sum(e.length for e in entries if e.blob_id in live)
        unused = sum(e.length for e in entries if e.blob_id not in live)
        out.append(PackUse(pid, size, used, unused))
    return out


def choose_packs(usage: list[PackUse], max_unused: float | None) -> list[PackUse]:
    """The packs to repack so that unused <= max_unused * (used + unused) afterwards."""
    if max_unused is None:
        return []
    used = sum(u.used for u in usage)
    unused = sum(u.unused for u in usage)
    # After repacking, the repository is about `used` bytes plus what stays unused:
    # unused_left / (used + unused_left) <= p  <=>  unused_left <= p / (1 - p) * used.
    limit = used * max_unused / (1 - max_unused) if max_unused < 1 else float("inf")
    # Emptiest first: each byte read and rewritten frees the most unused bytes.
    candidates = [u for u in usage if u.unused > 0]
    candidates.sort(key=lambda u: (u.used / (u.used + u.unused), u.pack_id))
    chosen = []
    for u in candidates:
        if unused <= limit:
            break
        chosen.append(u)
        unused -= u.unused
    return chosen


@dataclass
class RepackResult:
    new_packs: dict[str, list[BlobEntry]] = field(default_factory=dict)
    repacked: set[str] = field(default_factory=set)  # old packs whose live blobs are now in new_packs
    blobs: int = 0
    bytes_written: int = 0
    bytes_read: int = 0


def repack(
    repo: Repository,
    chosen: list[PackUse],
    keep: dict[str, list[BlobEntry]],
    live: set[bytes],
    reporter: Reporter,
    *,
    pack_size: int = 16 << 20,
) -> RepackResult:
    """Copy the live blobs of `chosen` into new packs (PUTs only; see the module contract)."""
    result = RepackResult()
    total = sum(u.size for u in chosen)
    reporter.emit(Started("repack", repo.id[:12], total_bytes=total, total_files=len(chosen)))
    open_: dict[str, PackBuilder] = {DATA: PackBuilder(DATA), TREE: PackBuilder(TREE)}

    def flush(blob_type: str) -> None:
        builder = open_[blob_type]
        if not builder.entries:
            return
        open_[blob_type] = PackBuilder(blob_type)
        entries = list(builder.entries)
        pack_id, data = builder.finish(repo.codec)
        repo.dest.put(pack_name(pack_id), data)
        result.new_packs[pack_id] = entries
        result.bytes_written += len(data)

    done = 0
    for n, use in enumerate(chosen, 1):
        name = pack_name(use.pack_id)
        blobs = [e for e in keep[use.pack_id] if e.blob_id in live]
        copies: list[tuple[BlobEntry, bytes]] = []
        try:
            data = repo.dest.get(name) if blobs else b""
            result.bytes_read += len(data)
            for e in blobs:
                encoded = data[e.offset : e.offset + e.length]
                if len(encoded) != e.length:
                    raise IntegrityError(f"{name}: truncated at blob {e.blob_id.hex()[:16]}")
                repo.codec.decode_blob(
                    e.blob_id, encoded, e.raw_length, f"{name} (blob {e.blob_id.hex()[:16]})"
                )
                copies.append((e, encoded))
        except IntegrityError as exc:
            reporter.emit(WarningEvent(f"{exc.message}: pack not repacked (kept whole)"))
            continue
        del data
        for e, encoded in copies:
            builder = open_.setdefault(e.type, PackBuilder(e.type))
            builder.add(e.blob_id, encoded, e.raw_length)
            result.blobs += 1
            if builder.size >= pack_size:
                flush(e.type)
        # Its blobs are written once the open builders are flushed below (or an exception
        # ends the prune before any index or deletion): only then may the caller drop it.
        result.repacked.add(use.pack_id)
        done += use.size
        reporter.emit(Progress(done, n, total, len(chosen), use.pack_id[:12]))
    for blob_type in list(open_):
        flush(blob_type)
    reporter.emit(
        Finished("repack", repo.id[:12], extra={"packs": len(result.repacked), "blobs": result.blobs})
    )
    return result
