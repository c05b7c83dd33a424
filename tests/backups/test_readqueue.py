"""backups/readqueue.py: items reach the stream in scan order, and a read that fails or a queue
that is cancelled loses nothing silently."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from backupctl.backups import readqueue
from backupctl.backups.readqueue import InScanOrder
from backupctl.repo.items import Item
from backupctl.sources.base import Entry


class _Stream:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def add(self, item: Item) -> None:
        self.paths.append(item.path)


def _item(path: str, kind: str = "dir") -> Item:
    return Item.from_entry(Entry(path=path, kind=kind), 0, [])  # type: ignore[arg-type]


def _run(ops: list[tuple[str, str]], read_delay: Any = None) -> tuple[list[str], list[str]]:
    """Feed `ops` ((kind, path), kind in known/large/here/skip) through a queue, draining to
    4 waiting slots after each; the stream's paths and the emitted paths."""
    stream = _Stream()
    emitted: list[str] = []

    def read(entry: Entry) -> Item | None:
        if read_delay:
            time.sleep(read_delay())
        return None if entry.path.startswith("skip") else _item(entry.path, "file")

    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: emitted.append(item.path))  # type: ignore[arg-type]
        for kind, path in ops:
            entry = Entry(path=path, kind="file", size=10 << 20)
            if kind == "known":
                queue.known(_item(path))
            elif kind in ("large", "skip"):
                queue.read_large(entry)
            else:
                queue.read_here(entry)
            queue.drain(4)
        queue.drain(0)
    return stream.paths, emitted


def test_items_keep_scan_order_whatever_finishes_first() -> None:
    rng = random.Random(7)
    kinds = ["known"] * 10 + ["large"] * 3 + ["here", "skip"]
    ops = [
        (k, f"{k if k == 'skip' else 'p'}{i:04}") for i, k in enumerate(rng.choice(kinds) for _ in range(700))
    ]
    paths, emitted = _run(ops, read_delay=lambda: rng.random() / 2000)
    expected = [p for k, p in ops if k != "skip"]
    assert paths == expected
    assert emitted == expected


def test_known_items_wait_behind_a_pending_read_and_go_straight_in_otherwise() -> None:
    stream = _Stream()
    release = threading.Event()

    def read(entry: Entry) -> Item | None:
        release.wait(5)
        return _item(entry.path, "file")

    with ThreadPoolExecutor(1) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: None)  # type: ignore[arg-type]
        queue.known(_item("a"))
        assert stream.paths == ["a"]  # nothing waited before it
        queue.read_large(Entry(path="b", kind="file", size=10 << 20))
        queue.known(_item("c"))
        assert stream.paths == ["a"]  # c waits behind b's read
        release.set()
        queue.drain(0)
    assert stream.paths == ["a", "b", "c"]


def test_a_failed_read_reaches_the_caller_and_cancel_drops_the_rest() -> None:
    stream = _Stream()

    def read(entry: Entry) -> Item | None:
        if entry.path == "bad":
            raise OSError("disk on fire")
        return _item(entry.path, "file")

    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, read, lambda item: None)  # type: ignore[arg-type]
        for path in ("ok1", "bad", "ok2"):
            queue.read_large(Entry(path=path, kind="file", size=10 << 20))
        with pytest.raises(OSError, match="disk on fire"):
            queue.drain(0)
        queue.cancel()
        queue.drain(0)
    # ok1 went in before the failure; nothing after the failed read did
    assert stream.paths == ["ok1"]


def test_batches_keep_scan_order_with_known_items_between_and_stay_bounded() -> None:
    """read_batched: reads are grouped (with the known items scanned between them), each
    batch's results are turned into items in scan order, and no more than BATCHES_AHEAD
    batches wait for the stream."""
    stream = _Stream()
    batches: list[list[str]] = []
    in_flight: list[int] = []
    pending: list[Future[list[Any]]] = []

    def submit(entries: list[Entry]) -> Future[list[Any]]:
        batches.append([e.path for e in entries])
        fut: Future[list[Any]] = Future()
        fut.set_result([("read", e.path) for e in entries])
        pending.append(fut)
        in_flight.append(queue._batches)
        return fut

    def finish(entry: Entry, result: Any) -> Item | None:
        assert result == ("read", entry.path)
        return None if entry.path.startswith("skip") else _item(entry.path, "file")

    rng = random.Random(3)
    ops = [
        (k, f"{k}{i:05}")
        for i, k in enumerate(rng.choice(["small"] * 6 + ["known", "skip", "large"]) for _ in range(3000))
    ]
    with ThreadPoolExecutor(2) as pool:
        queue = InScanOrder(stream, pool, lambda e: _item(e.path, "file"), lambda item: None, submit, finish)  # type: ignore[arg-type]
        for kind, path in ops:
            if kind == "known":
                queue.known(_item(path))
            elif kind == "large":
                queue.read_large(Entry(path=path, kind="file", size=10 << 20))
            else:
                queue.read_batched(Entry(path=path, kind="file", size=100))
            queue.drain(10_000)  # only the batch bound drains
        queue.drain(0)
    assert stream.paths == [p for k, p in ops if k != "skip"]
    reads = sum(k in ("small", "skip") for k, _ in ops)
    assert sum(len(b) for b in batches) == reads
    assert max(len(b) for b in batches) <= readqueue.BATCH_READS
    assert max(in_flight) <= readqueue.BATCHES_AHEAD
