"""A repository stored on one destination: config, keys, packs, indexes, manifests.

Object names (see docs/design.md for the byte-level format)::

    config                 plaintext JSON: format version, repository id, chunker params
    keys/<slot>            master keys wrapped by a key file or passphrase (crypto.py)
    data/<xx>/<pack-id>    packs of encrypted blobs (pack.py)
    index/<index-id>       encrypted index files (index.py)
    snapshots/<backup-id>  encrypted manifests, one per completed backup: the commit point
    locks/<lock-id>        plaintext lock objects (lock.py)

Write order is packs -> index -> manifest, so a manifest only ever references blobs
that are durable and indexed. An interrupted backup leaves packs (and maybe index
files) but no manifest: invisible, and its blobs are reused by the next backup.
"""

from __future__ import annotations

import json
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import blake3

from backupctl import __version__
from backupctl.destinations.base import AlreadyExists, Destination, NotFound
from backupctl.errors import (
    DestinationError,
    FormatVersionError,
    IntegrityError,
    NoRepositoryError,
    NotFoundError,
)
from backupctl.events import NullReporter, Reporter, WarningEvent
from backupctl.records import Manifest
from backupctl.repo import index_cache
from backupctl.repo.chunker import DATA_CHUNKS, TREE_CHUNKS
from backupctl.repo.codec import Codec
from backupctl.repo.crypto import (
    Cipher,
    KeyMaterial,
    MasterKeys,
    master_key_check,
    no_slot_opened,
    unwrap_master_keys,
    wrap_master_keys,
)
from backupctl.repo.index import Index, Location
from backupctl.repo.index_doc import index_doc
from backupctl.repo.index_files import read_index_files
from backupctl.repo.lock import RepositoryLock
from backupctl.repo.pack import BlobEntry, header_entries, pack_name
from backupctl.timefmt import iso_s, utcnow

FORMAT_VERSION = 1


# Seconds a creator on a destination without atomic conditional create waits before
# reading the config back to learn whether it won.
_CONFIRM_DELAY = 1.0

# Objects written only into an existing repository (backups, and the WAL / binary log
# archives of backups/logarchive.py): finding any without a config means the config was
# lost. (A key slot alone is what a creator killed before its config leaves: creating
# over it is safe, the slot's keys are never used.)
_REPOSITORY_PREFIXES = ("snapshots/", "index/", "data/", "wal/", "binlog/")


def _refuse_objects_without_config(dest: Destination) -> None:
    """Raise IntegrityError if `dest` holds repository objects but no config."""
    for prefix in _REPOSITORY_PREFIXES:
        if next(iter(dest.list(prefix)), None) is None:
            continue
        if dest.exists("config"):  # created meanwhile by a concurrent creator
            return
        raise IntegrityError(
            f"{dest.location} holds repository objects ({prefix}) but no config: the repository is damaged",
            hint="restore the `config` object from another copy of this repository (an upload target, "
            "a storage snapshot); backupctl never creates a new repository over existing objects",
        )


def _open_master_keys(dest: Destination, config: dict[str, Any], material: KeyMaterial) -> MasterKeys:
    """The repository's master keys from the first key slot that `material` opens.

    With `master_key_check` in the config (repositories created since it was added), only
    keys with that fingerprint are the repository's; other slots are ignored. Without it
    (older repositories), every slot the material opens must hold the same keys: slots that
    disagree (two creators raced) make the repository refuse to open rather than guess.
    A damaged slot is skipped when another slot opens, and named when none does.
    """
    what = "key file" if material.kind == "key_file" else "passphrase"
    check = config.get("master_key_check")
    names = sorted(info.name for info in dest.list("keys/"))
    designated = f"keys/{config.get('key_slot')}"
    if designated in names:  # try the creator's slot first
        names.remove(designated)
        names.insert(0, designated)
    opened: dict[str, MasterKeys] = {}
    damaged: list[IntegrityError] = []
    for name in names:
        try:
            raw = dest.get(name)
        except NotFound:
            continue  # a losing creator removed its own slot meanwhile
        try:
            keys = unwrap_master_keys(raw, material, f"{dest.location}/{name}")
        except IntegrityError as exc:
            damaged.append(exc)
            continue
        if keys is None:
            continue
        if check is not None:
            if master_key_check(keys) == check:
                return keys
            continue  # a slot of another creator's keys: not this repository's
        opened[name] = keys
    if len(set(opened.values())) > 1:
        raise IntegrityError(
            f"{dest.location}: key slots {', '.join(opened)} all open with this {what} but hold different "
            "master keys (the repository was created by two processes at once); refusing to guess",
            hint="move all slots but one out of keys/ (keep copies) and run `backupctl backup verify` on the "
            "backups; keep the slot under which they verify (see docs/design.md, Repository creation and "
            "opening)",
        )
    if opened:
        return next(iter(opened.values()))
    if damaged:
        first = damaged[0]
        others = f" (and {len(damaged) - 1} more damaged slots)" if len(damaged) > 1 else ""
        raise IntegrityError(
            first.message + others,
            hint="restore keys/ from another copy of this repository (an upload target); no other slot opens "
            f"with this {what}",
        )
    if not names:
        raise IntegrityError(
            f"{dest.location}: the repository has no key slot (keys/ is empty or missing): it is damaged",
            hint="restore keys/ from another copy of this repository (an upload target)",
        )
    raise no_slot_opened(what)


class Repository:
    def __init__(
        self, dest: Destination, keys: MasterKeys, config: dict[str, Any], compression_level: int = 3
    ):
        self.dest = dest
        self.config = config
        self.id: str = config["id"]
        self.cipher = Cipher(keys)
        self.codec = Codec(self.cipher, compression_level)
        self.index = Index()
        self._index_loaded = False
        self._index_ids: set[str] = set()
        self._load_lock = threading.Lock()
        # Where the local index cache lives (repo/index_cache.py); None: no cache. The
        # Service sets it to a directory of its state dir.
        self.index_cache_dir: Path | None = None

    # ---- opening ---------------------------------------------------------------

    @staticmethod
    def exists(dest: Destination) -> bool:
        return dest.exists("config")

    @classmethod
    def create(cls, dest: Destination, material: KeyMaterial, compression_level: int = 3) -> Repository:
        """Create a new repository at `dest`, or open the one a concurrent creator made first.

        One winner: the exclusive put of `config` decides. Each creator first writes its own
        key slot (so a visible config always has its slot), and the config names that slot
        and a fingerprint of its master keys. A loser removes its slot and opens the
        winner's; a slot it leaves behind (killed in between) holds keys that do not match
        the fingerprint and is never used. A destination that holds repository objects but
        no config is damaged: refused, never initialised over.
        """
        if dest.exists("config"):
            return cls.open(dest, material, compression_level)
        _refuse_objects_without_config(dest)
        keys = MasterKeys.generate()
        slot = uuid.uuid4().hex
        config = {
            "format_version": FORMAT_VERSION,
            "id": uuid.uuid4().hex,
            "created": iso_s(utcnow()),
            "created_by": f"backupctl {__version__}",
            "chunker": {
                "algorithm": "fastcdc-2016",
                "data": [DATA_CHUNKS.min_size, DATA_CHUNKS.avg_size, DATA_CHUNKS.max_size],
                "tree": [TREE_CHUNKS.min_size, TREE_CHUNKS.avg_size, TREE_CHUNKS.max_size],
            },
            "cipher": "aes-256-gcm",
            "id_hash": "blake3-keyed",
            "compression": "zstd",
            "key_slot": slot,
            "master_key_check": master_key_check(keys),
        }
        slot_name = f"keys/{slot}"
        dest.put_metadata(slot_name, wrap_master_keys(keys, material))
        won = True
        try:
            dest.put_metadata("config", json.dumps(config, indent=1).encode(), exclusive=True)
        except AlreadyExists:
            won = False
        if won and not dest.capabilities.conditional_create:
            # Check-then-write destinations (FTP) may let two creators both "win"; the last
            # rename stays. Let a racing rename land, then see whose config is there.
            time.sleep(_CONFIRM_DELAY)
            try:
                won = json.loads(dest.get("config")).get("id") == config["id"]
            except (ValueError, AttributeError, NotFound):
                won = False
        if not won:
            try:
                dest.delete(slot_name)
            except (NotFound, DestinationError):
                pass  # best effort: a slot left behind fails the winner's fingerprint, never used
            return cls.open(dest, material, compression_level)
        return cls(dest, keys, config, compression_level)

    @classmethod
    def open(cls, dest: Destination, material: KeyMaterial, compression_level: int = 3) -> Repository:
        try:
            raw = dest.get("config")
        except NotFound:
            _refuse_objects_without_config(dest)
            raise NoRepositoryError(
                f"no repository at {dest.location} (destination {dest.name!r})",
                hint="run `backupctl backup create` to create it, or check the destination's path",
            ) from None
        try:
            config = json.loads(raw)
            version = int(config["format_version"])
        except (ValueError, KeyError, TypeError):
            raise IntegrityError(f"{dest.location}/config: not a backupctl repository config") from None
        if version > FORMAT_VERSION:
            raise FormatVersionError(
                f"repository at {dest.location} has format version {version}; this backupctl reads up to "
                f"{FORMAT_VERSION}",
                hint="upgrade backupctl",
            )
        return cls(dest, _open_master_keys(dest, config, material), config, compression_level)

    def copy_identity_to(self, other: Destination) -> None:
        """Make `other` the same repository: copy config and key slots (upload target)."""
        for info in self.dest.list("keys/"):
            if not other.exists(info.name):
                other.put_metadata(info.name, self.dest.get(info.name))
        try:
            other.put_metadata("config", self.dest.get("config"), exclusive=True)
        except AlreadyExists:
            theirs = json.loads(other.get("config"))
            if theirs.get("id") != self.id:
                raise IntegrityError(
                    f"{other.location} holds a different repository ({theirs.get('id')}, not {self.id})",
                    hint="point the destination at an empty path or the same repository",
                ) from None

    # ---- index -----------------------------------------------------------------

    def load_index(self, reload: bool = False) -> Index:
        """Read every index file (in parallel); cheap when already loaded.

        A damaged index file (fails authentication or decoding) is skipped, recorded in
        `damaged_indexes` and reported once as a WarningEvent: backups that do not need its
        blobs stay usable, the others fail naming the missing blob. Anything that deletes
        packs must refuse while `index_complete` is false (see repo/prune.py).
        """
        with self._load_lock:
            if self._index_loaded and not reload:
                return self.index
            if reload:
                self.index = Index()
                self._index_ids = set()
            self.damaged_indexes: dict[str, str] = {}
            names = [i.name for i in self.dest.list("index/")]
            cache = self._index_cache_file()
            fresh = self.index.row_count() == 0  # nothing but index files in it (cache contract)
            cached_rows = 0
            if cache is not None and fresh and not reload:
                hit = index_cache.read(cache, self._cache_key(), self.id, {n.split("/", 1)[1] for n in names})
                if hit is not None:
                    self.index, covered = hit
                    self._index_ids |= covered
                    cached_rows = self.index.row_count()
                    names = [n for n in names if n.split("/", 1)[1] not in covered]
            self._index_ids |= read_index_files(self.dest, self.codec, names, self.index, self._index_damaged)
            rows = self.index.row_count()
            # Written again only when a good share of the rows came from the files: a backup
            # adds a few index files, each of them read again until then.
            if (
                cache is not None
                and fresh
                and rows >= index_cache.MIN_ROWS > 0
                and (rows - cached_rows >= index_cache.REFRESH_SHARE * rows)
            ):
                index_cache.write(cache, self._cache_key(), self.id, self.index, self._index_ids)
            self._index_loaded = True
            return self.index

    def _index_damaged(self, name: str, why: str) -> None:
        self.damaged_indexes[name] = why
        self.reporter.emit(
            WarningEvent(
                f"{why}: index file skipped; backups that need its blobs cannot be restored "
                "until `backupctl repository repair index` rebuilds the index"
            )
        )

    def _index_cache_file(self) -> Path | None:
        if self.index_cache_dir is None:
            return None
        return index_cache.cache_file(self.index_cache_dir, self.id, self.dest.location)

    def _cache_key(self) -> bytes:
        return index_cache.mac_key(self.cipher.keys.id_key)

    @property
    def index_ids(self) -> set[str]:
        return set(self._index_ids)

    def write_index(
        self, packs: dict[str, list[BlobEntry]], supersedes: set[str] | frozenset[str] = frozenset()
    ) -> str:
        data = self.codec.encode_doc(index_doc(packs, supersedes), b"index", plain=True)
        index_id = blake3.blake3(data).hexdigest()
        self.dest.put_metadata(f"index/{index_id}", data)
        self._index_ids.add(index_id)
        return index_id

    # ---- blobs -----------------------------------------------------------------

    def load_blob(self, blob_id: bytes) -> bytes:
        """Read and authenticate one blob. A copy that is missing, short or fails
        authentication is reported to `on_damage` and the next copy is tried; when none is
        left, the error of the first copy (naming its pack) is raised."""
        locations = self.index.locations(blob_id)
        if not locations:
            lost = self.index.dropped.get(blob_id)
            if lost is not None:
                raise IntegrityError(
                    f"{pack_name(lost)}: pack is missing or damaged (needed for blob {blob_id.hex()[:16]})"
                )
            raise IntegrityError(f"blob {blob_id.hex()[:16]} is missing from the index (repository damaged)")
        first: IntegrityError | None = None
        for loc in locations:
            try:
                return self._read_copy(blob_id, loc)
            except IntegrityError as exc:
                self.on_damage(blob_id, loc.pack_id)
                first = first or exc
        assert first is not None
        raise first

    def _read_copy(self, blob_id: bytes, loc: Location) -> bytes:
        name = pack_name(loc.pack_id)
        try:
            data = self.dest.get(name, loc.offset, loc.length)
        except NotFound:
            raise IntegrityError(f"{name}: pack is missing (needed for blob {blob_id.hex()[:16]})") from None
        if len(data) != loc.length:
            raise IntegrityError(f"{name}: truncated at blob {blob_id.hex()[:16]}")
        return self.codec.decode_blob(blob_id, data, loc.raw_length, f"{name} (blob {blob_id.hex()[:16]})")

    def on_damage(self, blob_id: bytes, pack_id: str) -> None:
        """Called for every copy of a blob found missing, short or unauthentic. The Service
        replaces it to remember the damage (see exclude_unusable); the default forgets it."""

    def exclude_unusable(self, damaged: Mapping[bytes, Iterable[str]]) -> dict[str, str]:
        """Before a backup deduplicates: drop from the in-memory index every copy that cannot
        be read back - the copies in packs that are missing or shorter than the index says
        (one listing of data/), and `damaged` (blob ID -> packs where an earlier read found
        it damaged). Blobs with no usable copy left are stored again by the backup, which
        otherwise would be listed Completed and be unrestorable. Returns pack ID -> what is
        wrong with it, for the missing and truncated ones. Call it under the backup's lock,
        after load_index."""
        sizes = {info.name.rsplit("/", 1)[-1]: info.size for info in self.dest.list("data/")}
        bad: dict[str, str] = {}
        for pack_id, end in self.index.pack_extents().items():
            size = sizes.get(pack_id)
            if size is None:
                bad[pack_id] = "missing"
            elif size < end:
                bad[pack_id] = f"truncated ({size} of at least {end} bytes)"
        self.index.drop(bad, damaged)
        return bad

    def read_stream(self, blob_ids: list[bytes]) -> Iterator[bytes]:
        for blob_id in blob_ids:
            yield self.load_blob(blob_id)

    # ---- manifests ---------------------------------------------------------------

    def save_manifest(self, manifest: Manifest) -> None:
        backup_id = manifest["id"]
        data = self.codec.encode_doc(manifest, b"snapshot:" + backup_id.encode())
        self.dest.put_metadata(f"snapshots/{backup_id}", data, exclusive=True)

    def manifest_ids(self) -> list[str]:
        return [i.name.split("/", 1)[1] for i in self.dest.list("snapshots/")]

    def load_manifest(self, backup_id: str) -> Manifest:
        name = f"snapshots/{backup_id}"
        try:
            data = self.dest.get(name)
        except NotFound:
            raise NoBackup(backup_id) from None
        doc: Manifest = self.codec.decode_doc(data, b"snapshot:" + backup_id.encode(), name)
        return doc

    def delete_manifest(self, backup_id: str) -> None:
        self.dest.delete(f"snapshots/{backup_id}")

    def lock(self, *, exclusive: bool, operation: str) -> RepositoryLock:
        return RepositoryLock(self.dest, exclusive=exclusive, operation=operation, wait=self.lock_wait)

    # ---- health (repository check / repair, prune's safety checks) ----------------

    # Where load_index reports damaged index files; the Service sets its own reporter.
    reporter: Reporter = NullReporter()
    # Seconds to keep retrying a lock held by another process (`--retry-lock`).
    lock_wait: float = 0.0

    @property
    def index_complete(self) -> bool:
        """True when every index file was read cleanly (loads the index if needed)."""
        self.load_index()
        return not self.damaged_indexes

    def read_pack_header(self, pack_id: str, size: int | None = None) -> list[BlobEntry]:
        """Authenticate and decode a pack's header (two range reads); IntegrityError names it."""
        name = pack_name(pack_id)
        try:
            if size is None:
                size = self.dest.stat(name).size
            if size < 4:
                raise IntegrityError(f"{name}: truncated pack ({size} bytes)")
            (hlen,) = struct.unpack("<I", self.dest.get(name, size - 4, 4))
            if hlen + 4 > size:
                raise IntegrityError(f"{name}: damaged pack header (length {hlen} > pack size {size})")
            header = self.dest.get(name, size - 4 - hlen, hlen)
        except NotFound:
            raise IntegrityError(f"{name}: pack is missing") from None
        entries = header_entries(self.codec, header, f"{name} (header)")
        for e in entries:
            if e.offset < 0 or e.length < 0 or e.offset + e.length > size - 4 - hlen:
                raise IntegrityError(f"{name}: header lists a blob outside the pack")
        return entries


class NoBackup(NotFoundError):
    """A manifest that is not in this repository."""

    def __init__(self, backup_id: str) -> None:
        super().__init__(f"backup {backup_id[:12]} is not in this repository")
