"""backups/filereaders.py: small files read, hashed and encoded in reader processes.

Real processes (`python -m backupctl.backups.filereaders`) on real files: what comes back
decodes to the file's bytes, a file that vanished or changed is said, a file that grew is
handed back, the key material reaches a reader only through its stdin, and a reader that
dies fails the batches it held (and the backup) instead of losing files silently.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import helpers
import pytest

from backupctl.backups import archiver
from backupctl.backups.filereaders import LARGE, OK, SKIP, FileReaders, ReaderDied
from backupctl.repo.codec import Codec
from backupctl.repo.crypto import Cipher, MasterKeys

KEYS = MasterKeys(os.urandom(32), os.urandom(32))
LIMIT = 4096


def _job(path: Path) -> tuple[str, int, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@pytest.fixture
def readers() -> Any:
    pool = FileReaders(KEYS.enc_key, KEYS.id_key, 3, LIMIT, 2)
    yield pool
    pool.close()


def test_results_decode_to_the_files_bytes_and_problems_are_said(
    tmp_path: Path, readers: FileReaders
) -> None:
    codec = Codec(Cipher(KEYS), 3)
    files = []
    for i in range(150):
        path = tmp_path / f"f{i:03}"
        path.write_bytes(os.urandom(i * 7) if i % 2 else b"text line\n" * i)
        files.append(path)
    jobs = [_job(p) for p in files]
    gone = tmp_path / "gone"
    gone.write_bytes(b"soon gone")
    jobs.append(_job(gone))
    gone.unlink()
    grown = tmp_path / "grown"
    grown.write_bytes(b"x")
    jobs.append(_job(grown))
    grown.write_bytes(b"y" * (LIMIT + 1))
    changed = tmp_path / "changed"
    changed.write_bytes(b"before")
    jobs.append(_job(changed))
    changed.write_bytes(b"after!!")

    # Several batches in flight on two readers: each future gets its own results, in order.
    futures = [readers.submit(jobs[i : i + 20]) for i in range(0, len(jobs), 20)]
    results = [r for fut in futures for r in fut.result(timeout=30)]
    assert len(results) == len(jobs)
    for path, res in zip(files, results, strict=False):
        data = path.read_bytes()
        assert res[0] == OK and res[1] == len(data) and res[4] is None
        if data:
            assert res[2] == codec.cipher.blob_id(data)
            assert codec.decode_blob(res[2], res[3], len(data), "test") == data
        else:
            assert res[2] is None and res[3] is None
    gone_res, grown_res, changed_res = results[-3:]
    assert gone_res[0] == SKIP and gone_res[1].startswith("vanished or unreadable")
    assert grown_res == (LARGE,)
    assert changed_res[0] == OK and changed_res[1] == len(b"after!!")
    assert changed_res[4] == "changed while being read; stored as read"


def test_a_reader_gets_no_secrets_in_argv_or_environment(
    readers: FileReaders, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-for-readers")
    pool = FileReaders(KEYS.enc_key, KEYS.id_key, 3, LIMIT, 1)
    try:
        pid = pool._readers[0].proc.pid
        argv = Path(f"/proc/{pid}/cmdline").read_bytes()
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    finally:
        pool.close()
    assert b"not-for-readers" not in environ
    for secret in (KEYS.enc_key, KEYS.id_key, KEYS.enc_key.hex().encode(), KEYS.id_key.hex().encode()):
        assert secret not in argv and secret not in environ
    assert b"backupctl.backups.filereaders" in argv


def test_a_reader_that_dies_fails_its_batches(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"content")
    pool = FileReaders(KEYS.enc_key, KEYS.id_key, 3, LIMIT, 1)
    try:
        reader = pool._readers[0]
        os.kill(reader.proc.pid, signal.SIGKILL)
        reader.proc.wait()
        with pytest.raises(ReaderDied, match="file reader process"):
            pool.submit([_job(path)]).result(timeout=30)
    finally:
        pool.close(abort=True)


def _tree(root: Path, count: int) -> None:
    for d in range(4):
        sub = root / f"d{d}"
        sub.mkdir(parents=True)
        for i in range(count // 4):
            (sub / f"{i:04}.txt").write_bytes(f"file {d}/{i}\n".encode() * (i % 50))
    (root / "d0" / "big.bin").write_bytes(os.urandom(700 * 1024))  # a large file between batches
    (root / "d1" / ("n" * 255)).write_bytes(b"a name of 255 bytes")


def _service(base: Path, src: Path) -> Any:
    """The engine on a config backing up `src` to a local repository under `base`."""
    config = helpers.write_config(
        base / "config.yaml",
        sources=[{"type": "files", "paths": [str(src)]}],
        repository=base / "repo",
        settings={"state_dir": str(base / "state")},
    )
    return helpers.service(config)


def test_a_backup_through_reader_processes_restores_byte_for_byte(monkeypatch: pytest.MonkeyPatch) -> None:
    submitted: list[int] = []
    real_submit = FileReaders.submit

    def counting_submit(self: FileReaders, jobs: list[Any]) -> Any:
        submitted.append(len(jobs))
        return real_submit(self, jobs)

    monkeypatch.setattr(archiver, "READERS_AFTER", 10)
    monkeypatch.setattr(FileReaders, "submit", counting_submit)
    with tempfile.TemporaryDirectory(prefix="backupctl-readers-") as tmp:
        base = Path(tmp)
        src = base / "src"
        _tree(src, 800)
        expected = helpers.snapshot_tree(src)
        svc = _service(base, src)
        try:
            record = svc.create_backup("app", type="full")
            assert record["status"] == "Completed" and record["warnings"] == 0
            # Nearly every small file went to the readers (the first 10 were read inline).
            assert sum(submitted) >= 800 - 10
            target = base / "restore"
            svc.restore_backup(record["id"][:10], target_dir=target)
            helpers.assert_same_tree(expected, helpers.snapshot_tree(helpers.restored(target, src)))
            assert svc.verify_backup(record["id"])["ok"]
        finally:
            svc.close()


def test_a_backup_whose_reader_dies_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    real_submit = FileReaders.submit

    def kill_then_submit(self: FileReaders, jobs: list[Any]) -> Any:
        for reader in self._readers:
            reader.proc.kill()
            reader.proc.wait()
        return real_submit(self, jobs)

    monkeypatch.setattr(archiver, "READERS_AFTER", 0)
    monkeypatch.setattr(FileReaders, "submit", kill_then_submit)
    with tempfile.TemporaryDirectory(prefix="backupctl-readers-") as tmp:
        base = Path(tmp)
        src = base / "src"
        _tree(src, 100)
        svc = _service(base, src)
        try:
            with pytest.raises(ReaderDied):
                svc.create_backup("app", type="full")
            assert [b["status"] for b in svc.list_backups("app")] == ["Failed"]
        finally:
            svc.close()


def test_a_file_replaced_since_the_scan_is_left_out_with_a_warning(
    tmp_path: Path, readers: FileReaders
) -> None:
    """Readers open by path well after the walk: a symlink is not followed, a FIFO does not
    block, another file at the same path is not stored under the walked one's metadata."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"TOP SECRET CONTENT")
    names = ("to_symlink", "to_fifo", "to_other")
    jobs = []
    for name in names:
        path = tmp_path / name
        path.write_bytes(b"walked content")
        jobs.append(_job(path))
    for name in ("to_symlink", "to_fifo"):
        (tmp_path / name).unlink()
    (tmp_path / "to_symlink").symlink_to(secret)
    os.mkfifo(tmp_path / "to_fifo")
    other = tmp_path / "other"
    other.write_bytes(b"walked content")  # same bytes, another inode (made while the first exists)
    other.replace(tmp_path / "to_other")
    results = readers.submit(jobs).result(timeout=30)
    assert [r[0] for r in results] == [SKIP, SKIP, SKIP], results
    assert "symlink" in results[0][1]
    assert "other than a regular file" in results[1][1]
    assert "another file" in results[2][1]


def test_nothing_is_imported_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    evil = tmp_path / "cwd"
    evil.mkdir()
    marker = tmp_path / "ran"
    for module in ("pickle", "json", "struct", "signal"):
        (evil / f"{module}.py").write_text(f"open({str(marker)!r}, 'a').write('{module}\\n')\n")
    data = tmp_path / "f"
    data.write_bytes(b"content")
    monkeypatch.chdir(evil)
    pool = FileReaders(KEYS.enc_key, KEYS.id_key, 3, LIMIT, 1)
    try:
        result = pool.submit([_job(data)]).result(timeout=30)
    finally:
        pool.close()
    assert result[0][0] == OK
    assert not marker.exists()


def test_a_reader_dies_with_its_parent_even_when_not_reading(tmp_path: Path) -> None:
    """kill -9 of the backup: a reader stopped (or blocked anywhere) goes too."""
    data = tmp_path / "f"
    data.write_bytes(b"content")
    script = (
        "import os, sys, time\n"
        "from backupctl.backups.filereaders import FileReaders\n"
        f"pool = FileReaders(os.urandom(32), os.urandom(32), 3, {LIMIT}, 2)\n"
        f"for fut in [pool.submit([{_job(data)!r}]) for _ in range(2)]: fut.result(30)\n"  # both started
        "print(' '.join(str(r.proc.pid) for r in pool._readers), flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    pids = [int(p) for p in parent.stdout.readline().split()]
    assert len(pids) == 2
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # not at its read of stdin: EOF alone would not end it
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead and waiting for init to reap it, does not)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def test_a_dead_readers_error_says_how_it_ended(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"content")
    pool = FileReaders(KEYS.enc_key, KEYS.id_key, 3, LIMIT, 1)
    try:
        os.kill(pool._readers[0].proc.pid, signal.SIGKILL)
        with pytest.raises(ReaderDied, match="killed by signal 9"):
            pool.submit([_job(path)]).result(timeout=30)
    finally:
        pool.close(abort=True)
