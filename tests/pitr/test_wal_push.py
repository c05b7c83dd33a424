"""`wal push` from pg_wal archives the files PostgreSQL has marked ready ahead of their own
archive_command calls (pitr.walspool): what it archives ahead is really in the archive,
byte for byte, and a marker is trusted only while its file and its object are the ones it
describes. The pg_wal directory here is laid out as PostgreSQL does it (segments plus
archive_status/<file>.ready); tests/pitr/test_pitr_postgres.py runs the same command under a
real server."""

from __future__ import annotations

import os
import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pitr_helpers import PitrDeployment, light_command

from backupctl.pitr import walspool

SEG = 16 << 20
DEP = "app"


def segment_bytes(seed: int) -> bytes:
    """A WAL-like segment: some random records, much zero padding (compressible)."""
    rnd = random.Random(seed)
    return rnd.randbytes(1 << 20) + bytes(SEG - (1 << 20) - 8) + seed.to_bytes(8, "big")


@pytest.fixture
def pg_wal(tmp_path: Path) -> Iterator[tuple[PitrDeployment, Path, list[str]]]:
    dep = PitrDeployment([{"type": "postgres", "host": "127.0.0.1", "port": 1, "method": "pg_basebackup"}])
    dep.ok("pitr", "setup", DEP)  # creates the repository
    wal_dir = tmp_path / "pg_wal"
    (wal_dir / "archive_status").mkdir(parents=True)
    names = [f"0000000100000000000000{n:02X}" for n in range(0x10, 0x16)]
    for i, name in enumerate(names):
        (wal_dir / name).write_bytes(segment_bytes(i))
        (wal_dir / "archive_status" / f"{name}.ready").touch()
    (wal_dir / "00000002.history").write_text("1\t0/16000000\tno recovery target specified\n")
    (wal_dir / "archive_status" / "00000002.history.ready").touch()
    (wal_dir / "archive_status" / "000000010000000000000009.done").touch()  # archived: ignored
    try:
        yield dep, wal_dir, [*names, "00000002.history"]
    finally:
        dep.cleanup()


def light_push(dep: PitrDeployment, path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """archive_command as `pitr setup` writes it (the light entry point, --deployment given)."""
    prefix = light_command(user="root").split()
    return subprocess.run(
        [*prefix, "--config", str(dep.config), "--deployment", DEP, "push", str(path), *extra],
        capture_output=True,
        text=True,
        cwd=path.parent.parent,
    )


def cli_push(dep: PitrDeployment, path: Path, *extra: str) -> dict[str, Any]:
    doc: dict[str, Any] = dep.ok("wal", "push", str(path), "--deployment", DEP, *extra, "-o", "json").json()
    return doc


def stored(dep: PitrDeployment, filename: str) -> Path:
    return dep.repository / "wal" / DEP / filename[:8] / filename


def spool(wal_dir: Path) -> Path:
    return wal_dir / ".backupctl-spool" / DEP


def fetched(dep: PitrDeployment, filename: str, tmp_path: Path) -> bytes:
    out = tmp_path / f"fetched-{filename}"
    dep.ok("wal", "fetch", filename, str(out), "--deployment", DEP)
    return out.read_bytes()


def test_one_push_archives_the_ready_files_and_their_own_calls_then_return_at_once(
    pg_wal: tuple[PitrDeployment, Path, list[str]], tmp_path: Path
) -> None:
    dep, wal_dir, names = pg_wal
    first = light_push(dep, wal_dir / names[0])
    assert first.returncode == 0 and first.stderr == "", first.stderr

    # Everything marked ready is in the archive, byte for byte; a file already .done is not.
    for name in names:
        assert stored(dep, name).exists(), name
        assert fetched(dep, name, tmp_path) == (wal_dir / name).read_bytes(), name
    assert not stored(dep, "000000010000000000000009").exists()
    assert sorted(os.listdir(spool(wal_dir))) == sorted(names[1:])  # the first one is PostgreSQL's

    # PostgreSQL's own calls for those files: nothing rewritten, the markers are consumed.
    before = {n: stored(dep, n).stat() for n in names}
    second = cli_push(dep, wal_dir / names[1])
    assert second["state"] == "archived ahead" and second["ahead"] == {}, second
    assert second["object"] == f"wal/{DEP}/00000001/{names[1]}" and second["size"] == SEG, second
    for name in names[2:]:
        result = light_push(dep, wal_dir / name)
        assert result.returncode == 0 and result.stderr == "", (name, result.stderr)
    assert os.listdir(spool(wal_dir)) == []
    for name in names:
        after = stored(dep, name).stat()
        assert (after.st_ino, after.st_mtime_ns) == (before[name].st_ino, before[name].st_mtime_ns), name

    # A re-sent file without a marker is still idempotent (the normal path).
    again = cli_push(dep, wal_dir / names[3], "--ahead", "0")
    assert again["state"] == "already archived", again


def test_a_marker_is_not_trusted_without_its_object_or_for_another_file(
    pg_wal: tuple[PitrDeployment, Path, list[str]], tmp_path: Path
) -> None:
    dep, wal_dir, names = pg_wal
    history = names[-1]
    ahead = cli_push(dep, wal_dir / names[0], "--ahead", "5")["ahead"]
    assert ahead == {n: "stored" for n in [history, *names[1:5]]}, ahead  # history first, as PostgreSQL
    assert not stored(dep, names[5]).exists()  # the limit holds

    # The object is gone from the primary: the marker is not trusted, the file is stored again.
    stored(dep, names[1]).unlink()
    redo = light_push(dep, wal_dir / names[1], "--ahead", "0")
    assert redo.returncode == 0, redo.stderr
    assert fetched(dep, names[1], tmp_path) == (wal_dir / names[1]).read_bytes()
    assert not (spool(wal_dir) / names[1]).exists()

    # The object was replaced (another size than the marker's): the push goes the normal way,
    # which finds no archived object under the name and fails.
    stored(dep, names[2]).write_bytes(b"damaged")
    refused = light_push(dep, wal_dir / names[2], "--ahead", "0")
    assert refused.returncode != 0 and "not an archived log object" in refused.stderr, refused.stderr

    # Another file under the marker's name (rewritten in place): refused as a different file.
    (wal_dir / names[3]).write_bytes(segment_bytes(99))
    conflict = light_push(dep, wal_dir / names[3], "--ahead", "0")
    assert conflict.returncode != 0 and "DIFFERENT" in conflict.stderr, conflict.stderr
    assert fetched(dep, names[3], tmp_path) == segment_bytes(3)

    # A marker whose WAL file has left pg_wal is removed by the next full push.
    assert (spool(wal_dir) / names[4]).exists()
    (wal_dir / names[4]).unlink()
    (wal_dir / "archive_status" / f"{names[4]}.ready").unlink()
    assert cli_push(dep, wal_dir / names[5], "--ahead", "0")["state"] == "stored"
    assert not (spool(wal_dir) / names[4]).exists()
    assert (spool(wal_dir) / history).exists()


def test_a_file_outside_pg_wal_is_pushed_alone(tmp_path: Path) -> None:
    dep = PitrDeployment([{"type": "postgres", "host": "127.0.0.1", "port": 1, "method": "pg_basebackup"}])
    try:
        dep.ok("pitr", "setup", DEP)
        for i in range(2):
            (tmp_path / f"00000001000000000000003{i}").write_bytes(segment_bytes(i))
        doc = cli_push(dep, tmp_path / "000000010000000000000030")
        assert doc["state"] == "stored" and doc["ahead"] == {}, doc
        assert not stored(dep, "000000010000000000000031").exists()
        assert not (tmp_path / ".backupctl-spool").exists()
    finally:
        dep.cleanup()


def test_with_an_s3_primary_a_marker_is_checked_against_the_bucket(
    pg_wal: tuple[PitrDeployment, Path, list[str]], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    from conftest_servers import build_destination, destination_config
    from helpers import dump_yaml, load_yaml

    dep, wal_dir, names = pg_wal
    s3 = destination_config("s3", request, tmp_path)
    doc = load_yaml(dep.config)
    doc["destinations"] = {"offsite": s3}
    doc["deployments"][DEP]["destinations"] = ["offsite"]
    dump_yaml(doc, dep.config)
    dep.ok("pitr", "setup", DEP)  # the repository on S3
    bucket = build_destination(s3, "inspect")

    first = cli_push(dep, wal_dir / names[0], "--ahead", "3")
    assert first["state"] == "stored" and set(first["ahead"]) == {names[-1], *names[1:3]}, first
    marker = walspool.read_marker(spool(wal_dir), names[1])
    assert marker is not None
    assert marker["local_path"] is None and marker["stored_size"] == bucket.stat(marker["object"]).size
    for name in [names[0], *names[1:3]]:
        assert fetched(dep, name, tmp_path) == (wal_dir / name).read_bytes(), name

    # The later call checks the object in the bucket (no upload) and trusts the marker...
    assert cli_push(dep, wal_dir / names[1])["state"] == "archived ahead"
    # ...but not when the object is gone from the bucket: stored again.
    bucket.delete(f"wal/{DEP}/00000001/{names[2]}")
    again = cli_push(dep, wal_dir / names[2], "--ahead", "0")
    assert again["state"] == "stored", again
    assert fetched(dep, names[2], tmp_path) == (wal_dir / names[2]).read_bytes()
    bucket.close()


@pytest.mark.server
def test_a_real_servers_backlog_is_archived_ahead_byte_for_byte(fresh_pg_server: Any, tmp_path: Path) -> None:
    """archive_command as `pitr setup --apply` sets it, run by PostgreSQL as postgres: a backlog
    built while the archiver was held back is archived with no failure, every segment equal
    to the file PostgreSQL wrote, and no marker left behind."""
    server = fresh_pg_server
    dep = PitrDeployment([server.options(method="pg_basebackup")])
    try:
        prefix = light_command()
        dep.ok("pitr", "setup", DEP, "--command", prefix)
        dep.hand_over()
        dep.ok("pitr", "setup", DEP, "--apply", "--command", prefix)
        command = server.psql("SHOW archive_command")
        assert f"--deployment {DEP} push %p" in command, command

        server.psql("ALTER SYSTEM SET archive_command = 'false'")
        server.psql("SELECT pg_reload_conf()")
        server.psql("CREATE TABLE t (id int, pad text)")
        held = []
        for i in range(6):
            server.psql(
                f"INSERT INTO t SELECT g, md5(g::text) FROM generate_series({i * 1000}, {i * 1000 + 999}) g"
            )
            held.append(server.psql("SELECT pg_walfile_name(pg_current_wal_lsn())"))
            server.psql("SELECT pg_switch_wal()")
        wal_dir = server.data / "pg_wal"
        deadline = time.monotonic() + 30  # the segments are .ready (not recycled) until archived
        while not all((wal_dir / "archive_status" / f"{n}.ready").exists() for n in held):
            assert time.monotonic() < deadline, sorted(os.listdir(wal_dir / "archive_status"))
            time.sleep(0.2)
        written = {n: (wal_dir / n).read_bytes() for n in held}

        server.psql(f"ALTER SYSTEM SET archive_command = '{command.replace(chr(39), chr(39) * 2)}'")
        server.psql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 120
        while any(n.endswith(".ready") for n in os.listdir(wal_dir / "archive_status")):
            assert time.monotonic() < deadline, sorted(os.listdir(wal_dir / "archive_status"))
            time.sleep(0.3)
        # Only 'false' failed (PostgreSQL logs each failed command); backupctl wrote no error.
        log = server.log.read_text()
        failed = [ln for ln in log.splitlines() if "The failed archive command was:" in ln]
        assert all(ln.rstrip().endswith("was: false") for ln in failed), failed
        assert "backupctl wal push" not in log, log[-3000:]
        for name, data in written.items():
            assert fetched(dep, name, tmp_path) == data, name
        assert os.listdir(spool(wal_dir)) == []  # made by the first push's markers, all consumed
    finally:
        dep.cleanup()
