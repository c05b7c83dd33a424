"""The local index cache (repo/index_cache.py, issue 14): a load from the cache gives exactly
the index a full load from the index files gives, reads only the index files written since,
and is never used when it could be wrong (damaged, forged, stale, another repository's).

MIN_ROWS is lowered to 1 so that small repositories are cached too.
"""

from __future__ import annotations

import json
import os
import random
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.backups.service import Service
from backupctl.config.loader import load_config
from backupctl.destinations.base import Destination
from backupctl.destinations.local import LocalDestination, LocalOptions
from backupctl.repo import index_cache, repository
from backupctl.repo.crypto import KeyMaterial, generate_key_file, read_key_file
from backupctl.repo.pack import BlobEntry
from backupctl.repo.repository import Repository


@pytest.fixture(autouse=True)
def cache_small_indexes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cache, "MIN_ROWS", 1)


@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The index file names each load_index read from the destination, one list per load."""
    calls: list[list[str]] = []
    from backupctl.repo.index_files import read_index_files as real

    def counting(dest: Any, codec: Any, names: list[str], *args: Any) -> set[str]:
        calls.append(sorted(names))
        return real(dest, codec, names, *args)

    monkeypatch.setattr(repository, "read_index_files", counting)
    return calls


class Repo:
    """A local repository and ways to open it as a new process would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        generate_key_file(root / "key")
        self.material = KeyMaterial("key_file", read_key_file(root / "key"))
        self.cache_dir = root / "state" / "index-cache"
        Repository.create(self.dest(), self.material)
        self.rnd = random.Random(7)

    def dest(self) -> Destination:
        return LocalDestination("local", LocalOptions(type="local", path=self.root / "repo", fsync=False))

    def open(self, cache: bool = True) -> Repository:
        repo = Repository.open(self.dest(), self.material)
        repo.index_cache_dir = self.cache_dir if cache else None
        return repo

    def add_index(self, packs: int = 3, blobs: int = 50) -> str:
        """A new index file of random blobs (and a few blobs that other files list too)."""
        doc: dict[str, list[BlobEntry]] = {}
        for _ in range(packs):
            entries = [
                BlobEntry(self.rnd.choice("dt"), self.rnd.randbytes(32), k * 100, 100, 300)
                for k in range(blobs)
            ]
            entries.append(BlobEntry("d", bytes(32), 0, 7, 7))  # the same blob in every pack: copies
            doc[self.rnd.randbytes(32).hex()] = entries
        return self.open(cache=False).write_index(doc)

    def index_path(self, index_id: str) -> Path:
        (path,) = (p for p in (self.root / "repo" / "index").rglob(index_id) if p.is_file())
        return path

    def cache_files(self) -> list[Path]:
        return sorted(self.cache_dir.glob("*.idx")) if self.cache_dir.exists() else []


def full_load(r: Repo) -> tuple[list[Any], set[str]]:
    repo = r.open(cache=False)
    index = repo.load_index()
    return contents(index), repo.index_ids


def contents(index: Any) -> list[Any]:
    """Everything the index answers: every (pack, entry), and each blob's primary location
    (which copy is primary may differ from a full load only between equal copies)."""
    entries = sorted(index.iter_entries(), key=repr)
    return [entries, len(index), sorted(index.packs())]


@pytest.fixture
def r(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


def test_second_load_comes_from_the_cache_and_equals_a_full_load(r: Repo, reads: list[list[str]]) -> None:
    ids = {r.add_index() for _ in range(3)}
    first = r.open()
    assert contents(first.load_index()) == full_load(r)[0]
    assert len(reads[-2]) == 3  # the first load read every file (then full_load read them again)
    (cache,) = r.cache_files()

    second = r.open()
    index = second.load_index()
    assert reads[-1] == []  # nothing read from the destination
    assert contents(index) == full_load(r)[0]
    assert second.index_ids == ids
    for _pack, entry in index.iter_entries():
        assert entry.blob_id in index
        assert index.lookup(entry.blob_id) is not None


CHILD = r"""
import json, sys
from pathlib import Path
from backupctl.destinations.local import LocalDestination, LocalOptions
from backupctl.repo import repository
from backupctl.repo.crypto import KeyMaterial, read_key_file
from backupctl.repo.index_files import read_index_files

read = []
def counting(dest, codec, names, *args):
    read.extend(names)
    return read_index_files(dest, codec, names, *args)
repository.read_index_files = counting
root = Path(sys.argv[1])
dest = LocalDestination("local", LocalOptions(type="local", path=root / "repo", fsync=False))
repo = repository.Repository.open(dest, KeyMaterial("key_file", read_key_file(root / "key")))
repo.index_cache_dir = root / "state" / "index-cache"
index = repo.load_index()
entries = list(index.iter_entries())
print(json.dumps({
    "read": read,
    "rows": len(entries),
    "found": sum(e.blob_id in index for _, e in entries),
    "located": sum(index.lookup(e.blob_id) is not None for _, e in entries),
}))
"""


@pytest.mark.parametrize("seed", ["0", "1", "random"])
def test_the_cache_works_in_another_process(r: Repo, seed: str) -> None:
    """The cache is read by later processes: the hash table in it must not depend on the
    process that wrote it (str/bytes hash() is salted per process)."""
    for _ in range(3):
        r.add_index(blobs=300)
    expected = contents(r.open().load_index())
    assert r.cache_files()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(r.root)],
        env={**os.environ, "PYTHONHASHSEED": seed},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    got = json.loads(out)
    assert got["read"] == []  # from the cache
    assert got["rows"] == len(expected[0])
    assert got["found"] == got["located"] == got["rows"]


def test_an_index_file_written_since_is_read_on_top_of_the_cache(r: Repo, reads: list[list[str]]) -> None:
    old = [r.add_index() for _ in range(4)]
    r.open().load_index()
    new = r.add_index()
    repo = r.open()
    index = repo.load_index()
    assert reads[-1] == [f"index/{new}"]
    assert (contents(index), repo.index_ids) == full_load(r)
    assert repo.index_ids == {*old, new}


def test_a_cache_standing_for_a_deleted_index_file_is_not_used(r: Repo, reads: list[list[str]]) -> None:
    keep, gone = r.add_index(), r.add_index()
    r.open().load_index()
    r.dest().delete(f"index/{gone}")
    repo = r.open()
    index = repo.load_index()
    assert reads[-1] == [f"index/{keep}"]  # every listed file read again: the cache was refused
    assert (contents(index), repo.index_ids) == full_load(r)
    assert repo.index_ids == {keep}


@pytest.mark.parametrize("damage", ["flip-meta", "flip-column", "flip-mac", "truncate", "append", "empty"])
def test_a_damaged_cache_is_ignored_and_written_again(r: Repo, reads: list[list[str]], damage: str) -> None:
    ids = [r.add_index() for _ in range(2)]
    r.open().load_index()
    (cache,) = r.cache_files()
    data = bytearray(cache.read_bytes())
    at = {"flip-meta": len(index_cache.MAGIC) + 20, "flip-column": len(data) - 100, "flip-mac": len(data) - 1}
    if damage in at:
        data[at[damage]] ^= 0x01
    elif damage == "truncate":
        data = data[:-33]
    elif damage == "append":
        data += b"\0"
    else:
        data = bytearray()
    cache.write_bytes(bytes(data))

    repo = r.open()
    assert (contents(repo.load_index()), repo.index_ids) == full_load(r)
    assert sorted(reads[-2]) == sorted(f"index/{i}" for i in ids)  # read from the files
    assert cache.read_bytes() != bytes(data)  # and written again
    r.open().load_index()
    assert reads[-1] == []


def test_another_keys_cache_is_not_used(r: Repo, reads: list[list[str]]) -> None:
    """A cache made without the repository's key (forged, or another repository's) fails its MAC."""
    r.add_index()
    repo = r.open()
    repo.load_index()
    (cache,) = r.cache_files()
    forged = Repo(r.root / "other")
    fake = forged.open(cache=False)
    forged.add_index()
    index_cache.write(cache, index_cache.mac_key(os.urandom(32)), repo.id, fake.load_index(), repo.index_ids)
    assert (contents(r.open().load_index()), None) == (full_load(r)[0], None)
    assert len(reads[-2]) == 1


def test_check_reads_every_index_file_and_reports_damage_the_cache_would_hide(
    r: Repo, reads: list[list[str]]
) -> None:
    good, bad = r.add_index(), r.add_index()
    r.open().load_index()
    path = r.index_path(bad)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))

    repo = r.open()
    repo.load_index(reload=True)
    assert sorted(reads[-1]) == sorted([f"index/{good}", f"index/{bad}"])
    assert list(repo.damaged_indexes) == [f"index/{bad}"]
    assert not repo.index_complete


def test_cache_file_is_private_and_killed_writers_temporaries_are_removed(r: Repo) -> None:
    r.add_index()
    r.cache_dir.mkdir(parents=True)
    os.chmod(r.cache_dir, 0o700)
    stale = r.cache_dir / ".x.idx.999999999.tmp"  # a pid that is not running
    live = r.cache_dir / f".y.idx.{os.getpid()}.tmp"
    stale.write_bytes(b"half")
    live.write_bytes(b"being written")
    r.open().load_index()
    (cache,) = r.cache_files()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(r.cache_dir.stat().st_mode) == 0o700
    assert not stale.exists()
    assert live.exists()


def test_a_small_index_writes_no_cache(r: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(index_cache, "MIN_ROWS", 100_000)
    r.add_index()
    r.open().load_index()
    assert r.cache_files() == []


def test_backups_and_restores_through_the_cache_round_trip(
    tmp_path: Path, make_deployment: Any, reads: list[list[str]]
) -> None:
    """End to end through the Service (as the CLI runs it): each step in a new Service, as a
    new process would; the later ones load the index from the cache plus the new files."""
    src = helpers.make_sample_tree(tmp_path / "src")
    d = make_deployment([{"type": "files", "paths": [str(src)]}])
    ids = []
    for step in range(3):
        (src / f"new-{step}.bin").write_bytes(random.Random(step).randbytes(300_000))
        service = Service(load_config(d.config))
        ids.append(service.create_backup("app", type="full" if step == 0 else "incremental")["id"])
        service.close()
    caches = list(Path(os.environ["XDG_STATE_HOME"]).rglob("index-cache/*.idx"))
    assert len(caches) == 1
    loads_before = len(reads)
    for n, backup_id in enumerate(ids):
        target = tmp_path / f"restore-{n}"
        service = Service(load_config(d.config))
        service.restore_backup(backup_id, target_dir=target)
        service.close()
        if n == len(ids) - 1:
            helpers.assert_same_tree(
                helpers.snapshot_tree(src), helpers.snapshot_tree(helpers.restored(target, src))
            )
        else:
            assert (helpers.restored(target, src) / "new-0.bin").read_bytes() == (
                src / "new-0.bin"
            ).read_bytes()
    # the restores read only index files written after the cache was (each backup wrote one;
    # the cache is rewritten once they hold a quarter of the rows), the last one none
    assert all(len(names) < len(ids) for names in reads[loads_before:]), reads
    assert reads[-1] == []


def test_packs_and_index_files_of_tiny_blobs_stay_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """repo/writer.py: a pack holds at most PACK_BLOBS blobs and an index file is written once
    the written packs hold FLUSH_BLOBS, so neither grows with a backup of many tiny files (their
    decoded JSON is what bounds a backup's memory); every blob stays findable and readable."""
    from backupctl.repo import writer as writer_mod

    monkeypatch.setattr(writer_mod, "PACK_BLOBS", 7)
    monkeypatch.setattr(writer_mod, "FLUSH_BLOBS", 20)
    r = Repo(tmp_path)
    repo = r.open(cache=False)
    repo.load_index()
    w = writer_mod.BlobWriter(repo)
    blobs = {w.add(f"tiny file {i}".encode()): f"tiny file {i}".encode() for i in range(100)}
    w.finish()
    assert len(blobs) == 100

    fresh = r.open(cache=False)
    index = fresh.load_index()
    packs: dict[str, int] = {}
    for blob_id, data in blobs.items():
        entry = index.lookup(blob_id)
        assert entry is not None
        packs[entry.pack_id] = packs.get(entry.pack_id, 0) + 1
        assert fresh.load_blob(blob_id) == data
    assert max(packs.values()) <= 7 and len(packs) >= 100 // 7
    index_files = list(fresh.dest.list("index/"))
    assert len(index_files) >= 100 // 21  # one per 20 blobs (in whole packs), not one for all
