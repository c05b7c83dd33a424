"""Continuous log archiving: PostgreSQL WAL segments and MariaDB/MySQL binary logs.

Log files live in the deployment's repository next to the backups, one object per file:

    wal/<deployment>/<timeline>/<file>   WAL segment (24 hex digits), <tl>.history,
                                         <segment>.<offset>.backup, <segment>.partial
    binlog/<deployment>/<file>           one closed binary log (e.g. mariadb-bin.000042)
    binlog-partial/<deployment>/<file>   the binary log being written, as far as `binlog sync
                                         --follow --stream` has received it (replaced as it grows,
                                         deleted once the closed file is archived)

Object layout (docs/pitr.md)::

    magic "BCLOG1\\n\\0" (8) | keyed hash of the plaintext (32) | u32 length of meta | meta | data

* `data` is the file, zstd-compressed when that pays, AES-256-GCM encrypted with the
  repository key; its AAD is the object name, so an object cannot be moved to another name.
* `meta` is a small JSON document (archived_at, size, and for binlogs the first/last event
  times and positions), encrypted with the AAD `<name>#meta`.
* The keyed hash (BLAKE3 with the repository's ID key) of the plaintext makes a re-sent file
  idempotent without decrypting anything: same name + same hash = already archived
  (success, nothing rewritten); same name + different hash = `ArchiveConflictError` (two
  servers archiving into one place).

Writes are conditional creates on the primary destination (`put(exclusive=True)`), so a
push is acknowledged only once the object is durable there; copies to the deployment's
other destinations are best effort (`copy_to_others`) and `pitr sync` fills what is missing.
Nothing here takes the repository lock: log objects are write-once and never referenced
by packs or indexes, so they cannot race with a backup or a prune. The one exception to
write-once is a partial binary log (`store_partial`): it is replaced by a longer prefix of
the same file, and only ever read as the tail of the archive.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.destinations.base import AlreadyExists, Destination, NotFound
from backupctl.errors import BackupctlError, IntegrityError, NotFoundError
from backupctl.timefmt import now_iso_ms

if TYPE_CHECKING:
    from backupctl.repo.repository import Repository

MAGIC = b"BCLOG1\n\0"
_HASH = 32
_FIXED = len(MAGIC) + _HASH + 4
WAL_SEGMENT_SIZE = 16 * 1024 * 1024

SEGMENT_RE = re.compile(r"^[0-9A-F]{24}$")
WAL_FILE_RE = re.compile(r"^([0-9A-F]{8})(?:[0-9A-F]{16}(?:\.partial|\.[0-9A-F]{8}\.backup)?|\.history)$")
BINLOG_RE = re.compile(r"^[A-Za-z0-9_.-]+\.[0-9]{6,}$")


class ArchiveConflictError(BackupctlError):
    """A different file is already archived under the same name."""

    kind = "archive_conflict"


class LogNotFoundError(NotFoundError):
    """A requested log file is not in the archive."""


# ---- object names ----------------------------------------------------------------------


def _check_deployment(deployment: str) -> None:
    if not deployment or "/" in deployment or deployment in (".", ".."):
        raise BackupctlError(f"invalid deployment name {deployment!r} for the log archive")


def wal_object(deployment: str, filename: str) -> str:
    _check_deployment(deployment)
    m = WAL_FILE_RE.match(filename)
    if not m:
        raise BackupctlError(
            f"{filename!r} is not a WAL file name (segment, .history, .backup or .partial)",
            hint="archive_command must pass %p (the path of the file PostgreSQL archives)",
        )
    return f"wal/{deployment}/{m.group(1)}/{filename}"


def wal_prefix(deployment: str) -> str:
    _check_deployment(deployment)
    return f"wal/{deployment}/"


def binlog_object(deployment: str, filename: str) -> str:
    _check_deployment(deployment)
    if not BINLOG_RE.match(filename):
        raise BackupctlError(f"{filename!r} is not a binary log file name (like mariadb-bin.000042)")
    return f"binlog/{deployment}/{filename}"


def binlog_prefix(deployment: str) -> str:
    _check_deployment(deployment)
    return f"binlog/{deployment}/"


def binlog_partial_object(deployment: str, filename: str) -> str:
    """The partial (still being written) copy of `filename`: a prefix of the closed file."""
    binlog_object(deployment, filename)  # validates both
    return f"{binlog_partial_prefix(deployment)}{filename}"


def binlog_partial_prefix(deployment: str) -> str:
    _check_deployment(deployment)
    return f"binlog-partial/{deployment}/"


# ---- encoding ----------------------------------------------------------------------------


def encode_log(repo: Repository, name: str, data: bytes, meta: dict[str, Any]) -> bytes:
    codec = repo.codec
    digest = codec.cipher.blob_id(data)
    meta_ct = codec.cipher.encrypt(json.dumps(meta, sort_keys=True).encode(), (name + "#meta").encode())
    flag, payload = codec.compress(data)
    data_ct = codec.cipher.encrypt(bytes((flag,)) + payload, name.encode())
    return MAGIC + digest + struct.pack(">I", len(meta_ct)) + meta_ct + data_ct


def _split(blob: bytes, name: str) -> tuple[bytes, bytes, bytes]:
    if len(blob) < _FIXED or blob[: len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{name}: not an archived log object (bad header)")
    digest = blob[len(MAGIC) : len(MAGIC) + _HASH]
    (meta_len,) = struct.unpack(">I", blob[len(MAGIC) + _HASH : _FIXED])
    if _FIXED + meta_len > len(blob):
        raise IntegrityError(f"{name}: truncated")
    return digest, blob[_FIXED : _FIXED + meta_len], blob[_FIXED + meta_len :]


def decode_log(repo: Repository, name: str, blob: bytes) -> tuple[bytes, dict[str, Any]]:
    """Decrypt, decompress and hash-check an archived log file: (data, meta)."""
    import zstandard  # lazy on purpose: `python -m backupctl.wal` start-up (not a cycle)

    digest, meta_ct, data_ct = _split(blob, name)
    cipher = repo.codec.cipher
    meta = json.loads(cipher.decrypt(meta_ct, (name + "#meta").encode(), name + " (meta)"))
    plain = cipher.decrypt(data_ct, name.encode(), name)
    flag, payload = plain[0], memoryview(plain)[1:]
    if flag == 1:
        try:
            data = zstandard.ZstdDecompressor().decompress(
                payload, max_output_size=int(meta.get("size", 0)) or 0
            )
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{name}: cannot decompress: {exc}") from None
    elif flag == 0:
        data = bytes(payload)
    else:
        raise IntegrityError(f"{name}: unknown compression flag {flag}")
    if cipher.blob_id(data) != digest:
        raise IntegrityError(f"{name}: content does not match its hash")
    return data, meta


def read_meta(repo: Repository, name: str, dest: Destination | None = None) -> tuple[bytes, dict[str, Any]]:
    """The keyed hash and the metadata of an archived object, with range reads only."""
    dest = dest or repo.dest
    head = dest.get(name, 0, _FIXED)
    if len(head) < _FIXED or head[: len(MAGIC)] != MAGIC:
        raise IntegrityError(f"{name}: not an archived log object (bad header)")
    digest = head[len(MAGIC) : len(MAGIC) + _HASH]
    (meta_len,) = struct.unpack(">I", head[len(MAGIC) + _HASH :])
    meta_ct = dest.get(name, _FIXED, meta_len)
    meta = json.loads(repo.codec.cipher.decrypt(meta_ct, (name + "#meta").encode(), name + " (meta)"))
    return digest, meta


# ---- storing and fetching ---------------------------------------------------------------


@dataclass
class StoreResult:
    name: str
    state: str  # "stored" | "already archived"
    size: int
    copies: dict[str, str] = field(default_factory=dict)

    def to_doc(self) -> dict[str, Any]:
        return {"object": self.name, "state": self.state, "size": self.size, "copies": self.copies}


def store_log(repo: Repository, name: str, data: bytes, meta: dict[str, Any]) -> StoreResult:
    """Write-once store into the repository's destination (the primary): see the module docstring."""
    meta = {"archived_at": now_iso_ms(), "size": len(data), **meta}
    blob = encode_log(repo, name, data, meta)
    dest = repo.dest
    try:
        if not dest.capabilities.conditional_create and dest.exists(name):
            raise AlreadyExists(name)
        dest.put(name, blob, exclusive=True)
        return StoreResult(name, "stored", len(data))
    except AlreadyExists:
        pass
    existing, _ = read_meta(repo, name)
    if existing != repo.codec.cipher.blob_id(data):
        raise ArchiveConflictError(
            f"refusing to archive {name}: a DIFFERENT file is already archived under this name",
            hint="two servers seem to archive into the same deployment; give each server its own deployment "
            "(after a restore, the restored server must not archive into the original's deployment)",
        )
    return StoreResult(name, "already archived", len(data))


def copy_object(repo: Repository, name: str, other: Destination) -> str:
    """Copy one archived object to another destination of the deployment (write-once there too)."""
    if not other.exists("config"):
        repo.copy_identity_to(other)
    if other.exists(name):
        return "present"
    try:
        other.put(name, repo.dest.get(name), exclusive=True)
    except AlreadyExists:
        return "present"
    return "copied"


def copy_to_others(repo: Repository, name: str, others: Iterable[Destination]) -> dict[str, str]:
    """Best effort: each destination's state, or the error text; never raises."""
    states: dict[str, str] = {}
    for other in others:
        try:
            states[other.name] = copy_object(repo, name, other)
        except Exception as exc:  # best effort: the primary copy is what counts
            message = exc.message if isinstance(exc, BackupctlError) else f"{type(exc).__name__}: {exc}"
            states[other.name] = f"failed: {message}"
    return states


def fetch_log(repo: Repository, name: str) -> tuple[bytes, dict[str, Any]]:
    try:
        blob = repo.dest.get(name)
    except NotFound:
        raise LogNotFoundError(f"{name} is not in the archive") from None
    return decode_log(repo, name, blob)


def write_file_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.backupctl-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def wal_push(repo: Repository, deployment: str, path: Path) -> StoreResult:
    name = wal_object(deployment, path.name)
    data = path.read_bytes()
    if SEGMENT_RE.match(path.name) and len(data) not in (1 << n for n in range(20, 31)):
        raise IntegrityError(f"{path}: {len(data)} bytes is not a WAL segment size")
    return store_log(repo, name, data, {})


def push_ahead(
    repo: Repository,
    deployment: str,
    others: list[Destination],
    wal_dir: Path,
    current: str,
    spool: str,
    config: Path,
    limit: int,
) -> dict[str, str]:
    """Archive up to `limit` more WAL files that PostgreSQL has marked ready (other than
    `current`, which the caller pushed), two at a time, and leave a walspool marker for each
    one that is durable in the primary destination, so that its own archive_command call
    returns at once (see pitr.walspool). Never raises: {file: state}, where a state with
    "failed" means that file has no marker (it is archived, or refused, by its own call) or
    that a copy to another destination failed (`pitr sync` makes it)."""
    # Lazy on purpose: only a push with ready files pays for these (wal.py's start-up), not a cycle.
    from concurrent.futures import ThreadPoolExecutor

    from backupctl.destinations.local import LocalDestination
    from backupctl.pitr import walspool

    # A local primary's object is a file: its marker names it, so the later call needs only a stat.
    local_root = repo.dest.root if isinstance(repo.dest, LocalDestination) else None
    config_id = walspool.config_identity(config)
    todo: list[str] = []
    for filename in walspool.ready_files(wal_dir, current, WAL_FILE_RE.match):
        if len(todo) >= limit:
            break
        if walspool.matching_marker(spool, wal_dir / filename, config) is None:
            todo.append(filename)

    def one(filename: str) -> str:
        path = wal_dir / filename
        try:
            before = walspool.identity(path)
            result = wal_push(repo, deployment, path)
            copies = copy_to_others(repo, result.name, others) if others else {}
            if walspool.identity(path) != before:  # changed while read: no marker
                return "failed: the file changed while it was archived"
            marker = {
                "object": result.name,
                "size": result.size,
                "stored_size": repo.dest.stat(result.name).size,
                "source": before,
                "config": config_id,
                "local_path": str(local_root / result.name) if local_root else None,
            }
            walspool.write_marker(spool, filename, marker)
        except Exception as exc:  # best effort: this file's own archive_command call retries it
            return f"failed: {exc.message if isinstance(exc, BackupctlError) else f'{type(exc).__name__}: {exc}'}"
        failed = {k: v for k, v in copies.items() if v.startswith("failed")}
        return f"{result.state}; copies {failed}" if failed else result.state

    if not todo:
        return {}
    # Two at a time: zstd, AES-GCM, BLAKE3 and the fsync release the GIL, and PostgreSQL
    # itself needs the rest of the machine.
    with ThreadPoolExecutor(max_workers=min(2, len(todo)), thread_name_prefix="wal-ahead") as pool:
        return dict(zip(todo, pool.map(one, todo), strict=True))


def wal_fetch(repo: Repository, deployment: str, filename: str, target: Path) -> int:
    data, _ = fetch_log(repo, wal_object(deployment, filename))
    write_file_atomically(target, data)
    return len(data)


# ---- listing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Segment:
    timeline: int
    segno: int
    name: str
    object: str
    size: int  # stored size


def segment_parts(name: str, seg_size: int = WAL_SEGMENT_SIZE) -> tuple[int, int]:
    """'000000010000000A000000FF' -> (timeline 1, segment number)."""
    per_id = 0x100000000 // seg_size
    return int(name[:8], 16), int(name[8:16], 16) * per_id + int(name[16:24], 16)


def segment_name(timeline: int, segno: int, seg_size: int = WAL_SEGMENT_SIZE) -> str:
    per_id = 0x100000000 // seg_size
    return f"{timeline:08X}{segno // per_id:08X}{segno % per_id:08X}"


def lsn_to_int(lsn: str) -> int:
    hi, lo = lsn.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def lsn_segment(lsn: str, seg_size: int = WAL_SEGMENT_SIZE) -> int:
    return lsn_to_int(lsn) // seg_size


def list_wal(dest: Destination, deployment: str) -> tuple[dict[int, list[Segment]], list[str]]:
    """Archived segments per timeline (sorted), and the other files (history, backup labels)."""
    timelines: dict[int, list[Segment]] = {}
    others: list[str] = []
    for info in dest.list(wal_prefix(deployment)):
        filename = info.name.rsplit("/", 1)[-1]
        if filename.startswith("."):
            continue
        if SEGMENT_RE.match(filename):
            tl, segno = segment_parts(filename)
            timelines.setdefault(tl, []).append(Segment(tl, segno, filename, info.name, info.size))
        elif WAL_FILE_RE.match(filename):
            others.append(info.name)
    for segs in timelines.values():
        segs.sort(key=lambda s: s.segno)
    return timelines, sorted(others)


def list_binlogs(dest: Destination, deployment: str) -> list[str]:
    names = [
        i.name for i in dest.list(binlog_prefix(deployment)) if not i.name.rsplit("/", 1)[-1].startswith(".")
    ]
    return sorted(names, key=binlog_sort_key)


def list_binlog_partials(dest: Destination, deployment: str) -> list[str]:
    names = [i.name for i in dest.list(binlog_partial_prefix(deployment))]
    return sorted((n for n in names if BINLOG_RE.match(n.rsplit("/", 1)[-1])), key=binlog_sort_key)


def store_partial(repo: Repository, name: str, data: bytes, meta: dict[str, Any]) -> None:
    """Replace the partial object `name` (not write-once: each copy is a longer prefix of the
    same file). Only the primary holds it; a destination's put replaces atomically."""
    meta = {"archived_at": now_iso_ms(), "size": len(data), "partial": True, **meta}
    repo.dest.put(name, encode_log(repo, name, data, meta))


def binlog_sort_key(name: str) -> tuple[str, int]:
    base = name.rsplit("/", 1)[-1]
    stem, _, num = base.rpartition(".")
    return stem, int(num) if num.isdigit() else -1


def contiguous_from(segments: list[Segment], start_segno: int) -> tuple[list[Segment], int | None]:
    """The run of consecutive segments from `start_segno`, and the first missing number after
    the run when later segments exist (a gap), else None."""
    by_no = {s.segno: s for s in segments}
    run: list[Segment] = []
    n = start_segno
    while n in by_no:
        run.append(by_no[n])
        n += 1
    later = any(s.segno > n for s in segments)
    if not run:
        return [], start_segno if (later or segments) else None
    return run, n if later else None


def gaps_in(segments: list[Segment]) -> list[tuple[int, int]]:
    """(first missing, last missing) segment numbers between the first and the last archived."""
    out = []
    for prev, cur in zip(segments, segments[1:], strict=False):
        if cur.segno != prev.segno + 1:
            out.append((prev.segno + 1, cur.segno - 1))
    return out


# ---- retention ----------------------------------------------------------------------------


def verify_archive(
    repo: Any,
    names: Iterable[str],
    window: dict[str, Any],
    *,
    check: Callable[[bytes, str], object],
    unusable_kind: str,
    fatal_kinds: frozenset[str] | None = None,
) -> dict[str, Any]:
    """`pitr verify` for either engine: decrypt and hash-check every archived log (plus the
    engine's own `check` of its content), and list the window's gaps and the backups it
    cannot recover from. `fatal_kinds`: problem kinds that fail verification (None: all)."""
    damaged = []
    checked = 0
    for name in names:
        try:
            data, _ = fetch_log(repo, name)
            check(data, name)
            checked += 1
        except (IntegrityError, NotFoundError) as exc:
            damaged.append({"object": name, "error": exc.message})
    problems = list(window["gaps"])
    for r in window["backups"]:
        if not r["usable"]:
            problems.append({"kind": unusable_kind, "backup": r["id"], "reason": r.get("reason")})
    ok = not damaged and not any(fatal_kinds is None or p["kind"] in fatal_kinds for p in problems)
    return {**window, "checked": checked, "damaged": damaged, "problems": problems, "ok": ok}
