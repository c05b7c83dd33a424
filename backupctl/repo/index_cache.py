"""A local cache of a repository's loaded index, so that a big index loads in seconds.

Issue 14: an index of 10 million blobs must load in under 10 s. Read from its index files it
cannot: decrypting, decompressing and parsing ~1 GB of JSON and building the hash table is
~1.5 s per million blobs. After a full load, the in-memory index (repo/index.py: flat columns
plus the hash table) is written here as it is; the next process reads the columns straight
into its arrays and only parses the index files written since.

File ``<state_dir>/index-cache/<repo id>-<destination hash>.idx``, 0600 in a 0700 directory::

    MAGIC || u64 len(meta) || meta (JSON) || column_0 || ... || column_k || MAC

meta: the repository ID, the destination, the index files the cache stands for
(`index_ids`), the byte order, and the index's own state (Index.export_columns). MAC: keyed
BLAKE3 of everything before it, under a key derived from the repository's ID key, so a
damaged, truncated or forged cache (the key is needed to make one) is never used.

Contract: a cache is used only when every index file it stands for is still listed on the
destination. Index files are named by the hash of their content, so the cached rows are
exactly what reading those files would give, and the rest are read as usual: the loaded
index equals a full load (up to which of two copies of a blob is the primary). Commands that
must read every index file (check, repair, prune, stats: `load_index(reload=True)`) do not
read the cache; they may write it.

Everything here is best effort: a cache that cannot be read or written is ignored (the
index files are the truth), never an error.
"""

from __future__ import annotations

import hmac
import json
import os
import struct
import sys
from array import array
from pathlib import Path
from typing import Any

import blake3

from backupctl.procs import pid_running
from backupctl.repo.index import Index

MAGIC = b"backupctl index cache 2\n"  # 2: the table hashes with index_rows.ID_HASH, not hash()
MIN_ROWS = 10_000  # smaller indexes load from their files in a few tens of milliseconds
REFRESH_SHARE = 0.25  # rewrite when this share of the rows came from index files
_MAC_CONTEXT = "backupctl 2026-12-05 index cache MAC"
_LEN = struct.Struct("<Q")


def mac_key(id_key: bytes) -> bytes:
    return blake3.blake3(id_key, derive_key_context=_MAC_CONTEXT).digest()


def cache_file(directory: Path, repo_id: str, location: str) -> Path:
    where = blake3.blake3(location.encode()).hexdigest()[:16]
    return directory / f"{repo_id}-{where}.idx"


def _hasher(key: bytes) -> Any:
    return blake3.blake3(key=key, max_threads=blake3.blake3.AUTO)


def read(path: Path, key: bytes, repo_id: str, listed: set[str]) -> tuple[Index, set[str]] | None:
    """The cached index and the index files it stands for, or None when there is no usable
    cache: absent, unreadable, failing its MAC, another repository's, or standing for an
    index file that is no longer listed."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC) + _LEN.size)
            if len(head) != len(MAGIC) + _LEN.size or not head.startswith(MAGIC):
                return None
            (meta_len,) = _LEN.unpack_from(head, len(MAGIC))
            if meta_len > 1 << 31:
                return None
            raw_meta = f.read(meta_len)
            mac = _hasher(key)
            mac.update(head)
            mac.update(raw_meta)
            meta = json.loads(raw_meta)
            ids = set(meta["index_ids"])
            if meta["repo"] != repo_id or meta["byteorder"] != sys.byteorder or not ids <= listed:
                return None
            columns = {}
            for name, typecode, count in meta["columns"]:
                column = Index.empty_column(typecode, count)
                with memoryview(column) as view, view.cast("B") as raw:
                    if f.readinto(raw) != len(raw):
                        return None
                    mac.update(raw)
                columns[name] = column
            if not hmac.compare_digest(f.read(32), mac.digest()) or f.read(1):
                return None
            return Index.import_columns(meta["index"], columns), ids
    except (OSError, ValueError, KeyError, TypeError, OverflowError, MemoryError):
        return None


def write(path: Path, key: bytes, repo_id: str, index: Index, index_ids: set[str]) -> None:
    """Write the cache of `index`, which must hold exactly the rows of `index_ids` (a full
    load, before anything dropped or added rows). Atomic: a temporary file renamed over the
    old cache; a temporary left by a killed writer is removed by the next write."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        state, columns = index.export_columns()
        meta = {
            "repo": repo_id,
            "index_ids": sorted(index_ids),
            "byteorder": sys.byteorder,
            "index": state,
            "columns": [[name, _typecode(column), len(column)] for name, column in columns],
        }
        raw_meta = json.dumps(meta, separators=(",", ":")).encode()
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                mac = _hasher(key)
                head = MAGIC + _LEN.pack(len(raw_meta))
                for part in (head, raw_meta):
                    f.write(part)
                    mac.update(part)
                for _name, column in columns:
                    with memoryview(column) as view, view.cast("B") as raw:
                        f.write(raw)
                        mac.update(raw)
                f.write(mac.digest())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except (OSError, ValueError):
        pass  # best effort (module docstring)


def _remove_stale_temporaries(directory: Path) -> None:
    for tmp in directory.glob(".*.tmp"):
        pid = tmp.name.rsplit(".", 2)[-2]
        if pid.isdigit() and not pid_running(int(pid)):
            tmp.unlink(missing_ok=True)


def _typecode(column: bytearray | array[int]) -> str:
    return column.typecode if isinstance(column, array) else "B"
