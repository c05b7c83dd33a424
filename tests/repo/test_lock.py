"""docs/design.md "Locks": the lock object, the staleness rule and acquisition, on a real
local destination."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backupctl.destinations.local import LocalDestination, LocalOptions
from backupctl.errors import LockedError
from backupctl.repo.lock import REFRESH, STALE, RepositoryLock, list_locks, remove_locks


@pytest.fixture
def dest(tmp_path: Path) -> LocalDestination:
    return LocalDestination("local", LocalOptions(type="local", path=tmp_path / "repo", fsync=False))


@pytest.fixture
def live_pid() -> Iterator[int]:
    """A live process of this host other than the test itself."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # reaped: the pid names no process now
    return proc.pid


def _put(dest: LocalDestination, name: str, **doc: object) -> None:
    base: dict[str, object] = {"hostname": socket.gethostname(), "exclusive": False, "operation": "backup"}
    dest.put_metadata(f"locks/{name}", json.dumps({**base, **doc}).encode())


def _stale(dest: LocalDestination) -> dict[str, bool]:
    return {d["name"].removeprefix("locks/"): d["stale"] for d in list_locks(dest)}


def test_the_documented_times() -> None:
    assert (STALE, REFRESH) == (30 * 60, 5 * 60)


def test_the_lock_object(dest: LocalDestination) -> None:
    with RepositoryLock(dest, exclusive=True, operation="prune") as lock:
        names = [i.name for i in dest.list("locks/")]
        assert names == [lock.name]
        assert len(lock.name.removeprefix("locks/")) == 32
        doc = json.loads(dest.get(lock.name))
        assert list(doc) == ["hostname", "pid", "exclusive", "operation", "time"]
        assert doc["hostname"] == socket.gethostname()
        assert doc["pid"] == os.getpid()
        assert doc["exclusive"] is True
        assert doc["operation"] == "prune"
        assert abs(doc["time"] - time.time()) < 60
    assert list(dest.list("locks/")) == []


def test_staleness_rule(dest: LocalDestination, live_pid: int, dead_pid: int) -> None:
    now = time.time()
    _put(dest, "fresh-live", pid=live_pid, time=now)
    _put(dest, "fresh-dead-here", pid=dead_pid, time=now)
    _put(dest, "fresh-dead-elsewhere", pid=dead_pid, time=now, hostname="another-host.invalid")
    _put(dest, "old-live", pid=live_pid, time=now - STALE - 60)
    _put(dest, "almost-old-elsewhere", pid=12345, time=now - STALE + 60, hostname="another-host.invalid")
    _put(dest, "garbage-time", pid=live_pid, time="yesterday")
    dest.put_metadata("locks/not-json", b"{")
    assert _stale(dest) == {
        "fresh-live": False,
        "fresh-dead-here": True,  # same host, process gone
        "fresh-dead-elsewhere": False,  # cannot be told from a live one until STALE
        "old-live": True,  # older than STALE, whatever the process
        "almost-old-elsewhere": False,
        "garbage-time": True,
        "not-json": True,
    }
    removed = remove_locks(dest, remove_all=False)
    assert sorted(d["name"] for d in removed) == [
        "locks/fresh-dead-here",
        "locks/garbage-time",
        "locks/not-json",
        "locks/old-live",
    ]
    assert sorted(_stale(dest)) == ["almost-old-elsewhere", "fresh-dead-elsewhere", "fresh-live"]
    remove_locks(dest, remove_all=True)
    assert list(dest.list("locks/")) == []


def test_an_exclusive_lock_is_taken_over_stale_locks(dest: LocalDestination, dead_pid: int) -> None:
    _put(dest, "dead", pid=dead_pid, time=time.time(), exclusive=True)
    _put(dest, "old", pid=1, time=time.time() - STALE - 1, hostname="another-host.invalid")
    with RepositoryLock(dest, exclusive=True, operation="prune") as lock:
        assert [i.name for i in dest.list("locks/")] == [lock.name]  # the stale ones were removed


def test_a_live_shared_lock_refuses_an_exclusive_one(dest: LocalDestination, live_pid: int) -> None:
    _put(dest, "backup", pid=live_pid, time=time.time())
    with pytest.raises(
        LockedError, match=rf"locked by backup \(pid {live_pid} on {socket.gethostname()}"
    ) as err:
        RepositoryLock(dest, exclusive=True, operation="prune").acquire()
    assert "stale at" in str(err.value)
    assert [i.name for i in dest.list("locks/")] == ["locks/backup"]  # the refused lock is gone
    # shared locks coexist
    with RepositoryLock(dest, exclusive=False, operation="backup"):
        assert len(list(dest.list("locks/"))) == 2


def test_a_live_exclusive_lock_refuses_a_shared_one(dest: LocalDestination, live_pid: int) -> None:
    _put(dest, "prune", pid=live_pid, time=time.time(), exclusive=True, operation="prune")
    with pytest.raises(LockedError, match="locked exclusively by prune"):
        RepositoryLock(dest, exclusive=False, operation="backup").acquire()


def test_a_lock_of_another_host_holds_until_stale(dest: LocalDestination) -> None:
    _put(dest, "remote", pid=1, time=time.time() - STALE + 120, hostname="another-host.invalid")
    with pytest.raises(LockedError):
        RepositoryLock(dest, exclusive=True, operation="delete").acquire()


def test_a_lock_object_that_is_json_but_not_an_object_blocks_nobody(dest: LocalDestination) -> None:
    dest.put_metadata("locks/damaged", b"[1]")
    assert _stale(dest) == {"damaged": True}
    with RepositoryLock(dest, exclusive=True, operation="prune") as lock:
        assert [i.name for i in dest.list("locks/")] == [lock.name]
